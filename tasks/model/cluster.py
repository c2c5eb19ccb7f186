"""The cluster model: one typed description of the cluster that every task reads.

`build_cluster` turns inventory hosts (groups + data) and the facts read from
them into a `Cluster`, checking everything first. It is pure (no pyinfra, no
network), so the unit tests exercise it directly; `tasks.cluster` feeds it from
a live pyinfra run. Every problem found is reported at once, each naming the
host or setting, what is wrong and how to fix it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tasks.model.jobconf import build_job_conf, check_job_conf
from tasks.model.accounting import Accounting, accounting_from
from tasks.model.settings import CLUSTER, DataSource, read, settings_problems
from tasks.model.database import GalaxyDatabaseState, database_switch_problems
from tasks.model.galaxy import (
    Galaxy, GalaxyJob, galaxy_from, handler_removal_problems, runner_switch_problems, with_database_now,
)
from tasks.model.hosts import (
    COMPUTE_GROUP, CONTROLLER_GROUP, GALAXY_GROUP, ClusterHost, InventoryHost, check_versions, cluster_host,
    node_name, platform_or_none,
)
from tasks.model.problems import ClusterConfigError, check_name, check_unique
from tasks.model.backup import Backups, backups_from, replaced_files_keep_days
from tasks.model.memory import CGROUP_MEMORY_CONF, MemoryPolicy, NodeMemory, memory_policy, reserve_problems
from tasks.model.slurm import (
    Node, Partition, check_munge_key_file, gres_request_problems, gres_requests, node_from, partitions_from,
    select_type_from, select_type_parameters_from,
)
from tasks.native_specification import sbatch_arguments
from tasks.platform import Platform, choose_cgroup, jobacct_gather_type

# slurm.conf keys of the node health check (tasks/slurm.py writes them with Galaxy).
HEALTH_CHECK_CONF_KEYS = ("HealthCheckProgram", "HealthCheckInterval", "HealthCheckNodeState")

@dataclass(frozen=True)
class Cluster:
    name: str
    hosts: tuple[ClusterHost, ...]
    nodes: tuple[Node, ...]
    partitions: tuple[Partition, ...]
    select_type: str
    select_type_parameters: str
    proctrack_type: str
    task_plugin: str
    cgroup_conf: Mapping[str, str] | None
    job_acct_gather_type: str  # samples jobs' use (sstat, sacct's MaxRSS) and, without cgroups, enforces memory
    memory: MemoryPolicy
    return_to_service: int
    config_extra: Mapping[str, str]
    manage_etc_hosts: bool
    munge_key_file: str | None
    galaxy: Galaxy | None = None
    resume_nodes: bool = False
    verify_galaxy_job: bool = True
    accounting: Accounting | None = None  # None: slurm_accounting is off
    backups: Backups | None = None  # None: no scheduled backups
    replaced_files_keep_days: int | None = 30  # None: the deploy's *.pgs-backup copies are kept
    health_check_interval: int = 0  # s; 0: no node health check (always 0 without Galaxy)

    @property
    def shared_marker(self) -> tuple[str, str] | None:
        """(path, first line) of the file the Galaxy host writes in its shared directory and every compute
        host must read the same: a node that does not is not sharing Galaxy's directory (None: no Galaxy)."""
        if self.galaxy is None:
            return None
        return f"{self.galaxy.root}/.pgs-shared", f"pyinfra-galaxy-slurm: Galaxy's shared directory of cluster {self.name}"
    warnings: tuple[str, ...] = ()

    @property
    def gres_types(self) -> list[str]:
        """slurm.conf's GresTypes: every GRES name a node offers."""
        return sorted({g.name for node in self.nodes for g in node.gres})

    @property
    def controller(self) -> ClusterHost:
        return next(h for h in self.hosts if "controller" in h.roles)

    @property
    def compute_hosts(self) -> tuple[ClusterHost, ...]:
        return tuple(h for h in self.hosts if "compute" in h.roles)

    @property
    def reachable_nodes(self) -> list[str]:
        """Nodes whose hosts this run reached: the ones verification expects idle."""
        reachable = {h.node_name for h in self.compute_hosts if h.reachable}
        return [n.name for n in self.nodes if n.name in reachable]

    @property
    def unreachable_hosts(self) -> list[str]:
        return [h.inventory_name for h in self.hosts if not h.reachable]

    @property
    def galaxy_hosts(self) -> tuple[ClusterHost, ...]:
        return tuple(h for h in self.hosts if "galaxy" in h.roles)

    @property
    def platform(self) -> Platform:
        """slurm.conf is rendered for the controller's Slurm: it is the newest allowed."""
        return self.controller.platform

    def host(self, inventory_name: str) -> ClusterHost:
        return next(h for h in self.hosts if h.inventory_name == inventory_name)


def build_cluster(hosts: list[InventoryHost], settings: Mapping[str, Any],
                  known_nodes: Mapping[str, Node] | None = None,
                  galaxy_jobs: list[GalaxyJob] | tuple[GalaxyJob, ...] = (),
                  galaxy_database_now: GalaxyDatabaseState = GalaxyDatabaseState()) -> Cluster:
    """Check the inventory and the hosts' facts, and build the cluster from them.

    A host without facts could not be reached: the run goes on without it, and
    its slurm.conf entry is kept from `known_nodes` (the controller's current
    slurm.conf) so that the other hosts' configuration does not change.
    `galaxy_jobs`: the jobs Galaxy's handlers follow now (see runner_switch_problems,
    handler_removal_problems); `galaxy_database_now`: what Galaxy's database in use
    holds (see database_switch_problems).
    """
    problems: list[str] = []
    warnings: list[str] = []
    config = read(settings, CLUSTER)

    controllers = [h for h in hosts if CONTROLLER_GROUP in h.groups]
    computes = [h for h in hosts if COMPUTE_GROUP in h.groups]
    galaxy_hosts = [h for h in hosts if GALAXY_GROUP in h.groups] if config["deploy_galaxy"] else []
    problems.extend(settings_problems(
        (DataSource(h.name, h.data, h.connector_keys) for h in hosts),
        controller=controllers[0].name if len(controllers) == 1 else None,
        galaxy_host=galaxy_hosts[0].name if len(galaxy_hosts) == 1 else None,
    ))
    for host in hosts:
        if host.facts is None and (CONTROLLER_GROUP in host.groups or (GALAXY_GROUP in host.groups and config["deploy_galaxy"])):
            role = "the controller" if CONTROLLER_GROUP in host.groups else "the Galaxy host"
            problems.append(f"host {host.name} ({role}) is unreachable; the deploy needs it: bring it back and re-run")
    fallback_platform = next((p for h in controllers if (p := platform_or_none(h)) is not None), None)
    if len(controllers) != 1:
        listed = ", ".join(h.name for h in controllers) or "none"
        problems.append(
            f"group {CONTROLLER_GROUP}: needs exactly one host, has {len(controllers)} ({listed}); "
            f"list the one host that runs slurmctld in {CONTROLLER_GROUP} in inventory.py"
        )
    if not computes:
        problems.append(
            f"group {COMPUTE_GROUP}: has no host; list at least one host that runs jobs "
            f"(the controller may be one too) in {COMPUTE_GROUP} in inventory.py"
        )

    cluster_hosts = [cluster_host(h, config, problems, fallback_platform) for h in hosts]
    cluster_hosts = [h for h in cluster_hosts if h is not None]
    check_unique([h.node_name for h in cluster_hosts], "host name (uname -n)", problems,
                  fix="give each host a unique hostname")

    reserve_wrong = reserve_problems(config["slurm_memory_reserved"])
    problems.extend(reserve_wrong)
    reserve = 0 if reserve_wrong else config["slurm_memory_reserved"]
    nodes = tuple(n for n in (node_from(h, problems, warnings, known_nodes or {}, reserve,
                                        runs_galaxy=h in galaxy_hosts) for h in computes) if n is not None)
    node_names = [n.name for n in nodes]
    partitions = partitions_from(config["slurm_partitions"], node_names, problems)
    select_type = select_type_from(config["slurm_select_type"], problems, warnings)
    select_params = select_type_parameters_from(config["slurm_select_type_parameters"], problems)
    check_name(str(config["slurm_cluster_name"]), "slurm_cluster_name", problems)
    check_munge_key_file(config["munge_key_file"], problems)
    check_versions(cluster_hosts, problems)

    slurm_hosts = [h for h in computes + controllers if h.facts is not None]
    cgroup = choose_cgroup(
        all(h.facts.cgroup_writable for h in slurm_hosts),
        all(h.facts.cgroup_fs == "cgroup2fs" for h in slurm_hosts),
    )
    proctrack = config["slurm_proctrack_type"] or cgroup.proctrack_type
    task_plugin = config["slurm_task_plugin"] or cgroup.task_plugin
    uses_cgroup = "cgroup" in proctrack or "cgroup" in task_plugin
    cgroup_conf = (cgroup.cgroup_conf or {"CgroupPlugin": "autodetect"}) if uses_cgroup else None
    # Only task/cgroup applies cgroup.conf's Constrain* lines (cgroup.conf(5)).
    cgroup_constrains = cgroup_conf is not None and "task/cgroup" in task_plugin
    if cgroup_constrains:
        cgroup_conf = {**cgroup_conf, **CGROUP_MEMORY_CONF}
        if any(g.file for node in nodes for g in node.gres):
            cgroup_conf["ConstrainDevices"] = "yes"  # a job sees only the GPUs (device files) it was given
    extra = config["slurm_config_extra"]
    if not isinstance(extra, Mapping):
        problems.append("slurm_config_extra: must be a mapping of slurm.conf keys to values, e.g. {'MaxJobCount': 10000}")
        extra = {}
    nodes_by_name = {n.name: n for n in nodes}
    node_memory = {node_name(h): NodeMemory(h.facts.memory_mb, h.facts.memory_mb - nodes_by_name[node_name(h)].real_memory,
                                            "real_memory" in (h.data.get("slurm_node") or {}))
                   for h in computes if h.facts is not None and node_name(h) in nodes_by_name}
    memory = memory_policy(select_params, config["slurm_def_mem_per_cpu"],
                           [(n.name, n.cpus, n.real_memory) for n in nodes], node_memory, cgroup_constrains,
                           extra, problems, warnings)

    accounting = accounting_from(config, hosts, cluster_hosts, problems)
    backups = backups_from(config, problems)
    keep_days = replaced_files_keep_days(config["replaced_files_keep_days"], problems)
    interval = config["slurm_health_check_interval"]
    if isinstance(interval, bool) or not isinstance(interval, int) or interval < 0:
        problems.append(f"slurm_health_check_interval: {interval!r} is not a number of seconds (0 or more); "
                        "give e.g. 300, or 0 for no health check")
        interval = 0
    for key in HEALTH_CHECK_CONF_KEYS:
        if key in extra and interval and config["deploy_galaxy"]:
            problems.append(f"slurm_config_extra: {key} is written by the deploy while its node health check is on; "
                            "to run your own (e.g. NHC), set slurm_health_check_interval = 0 and give HealthCheck* here")
    galaxy = galaxy_from(hosts, cluster_hosts, config["deploy_galaxy"], problems)
    if galaxy and not any(p.startswith(("galaxy_handlers", "galaxy_job_workers")) for p in problems):
        # The job_conf.xml Galaxy would get, checked as Galaxy needs it.
        problems.extend(f"galaxy_destinations: {p}" for p in check_job_conf(build_job_conf(galaxy)))
    if galaxy is not None:
        for index, destination in enumerate(galaxy.destinations):
            requests = gres_requests(sbatch_arguments(destination.native_specification, galaxy.job_runner))
            problems.extend(f"galaxy_destinations[{index}].native_specification ({destination.id}): {problem}"
                            for problem in gres_request_problems(requests, nodes))
        problems.extend(runner_switch_problems(galaxy.job_runner, galaxy_jobs))
        if isinstance(galaxy.handlers, int):
            problems.extend(handler_removal_problems(galaxy.handler_names, galaxy_jobs))
        problems.extend(database_switch_problems(galaxy.database, galaxy_database_now))
        galaxy = with_database_now(galaxy, galaxy_database_now)

    if problems:
        raise ClusterConfigError(problems)
    return Cluster(
        name=str(config["slurm_cluster_name"]),
        hosts=tuple(cluster_hosts),
        nodes=nodes,
        partitions=partitions,
        select_type=select_type,
        select_type_parameters=select_params,
        proctrack_type=proctrack,
        task_plugin=task_plugin,
        cgroup_conf=cgroup_conf,
        job_acct_gather_type=jobacct_gather_type(proctrack),
        memory=memory,
        return_to_service=int(config["slurm_return_to_service"]),
        config_extra={str(k): str(v) for k, v in extra.items()},
        manage_etc_hosts=bool(config["manage_etc_hosts"]),
        munge_key_file=config["munge_key_file"],
        galaxy=galaxy,
        resume_nodes=bool(config["slurm_resume_nodes"]),
        verify_galaxy_job=bool(config["verify_galaxy_job"]),
        accounting=accounting,
        backups=backups,
        replaced_files_keep_days=keep_days,
        health_check_interval=interval if galaxy is not None else 0,
        warnings=tuple(warnings),
    )
