"""The cluster model: one typed description of the cluster that every task reads.

`build_cluster` turns inventory hosts (groups + data) and the facts read from
them into a `Cluster`, checking everything first. It is pure (no pyinfra, no
network), so the unit tests exercise it directly; `tasks.cluster` feeds it from
a live pyinfra run. Every problem found is reported at once, each naming the
host or setting, what is wrong and how to fix it.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tasks.jobconf import RUNNER_PLUGINS, build_job_conf, check_job_conf
from tasks.native_specification import native_specification_problems
from tasks.platform import Platform, choose_cgroup, platform_for
from tasks.production import (
    PRODUCTION_DEFAULTS, GalaxyDatabase, GalaxyDatabaseState, GalaxyFront, check_loopback_bind, database_switch_problems,
    handler_removal_problems, production_settings, with_database_now,
)

CONTROLLER_GROUP = "slurm_controller"
COMPUTE_GROUP = "slurm_compute"
GALAXY_GROUP = "galaxy"

# Cluster-wide settings and their defaults. group_data/all.py documents them;
# any of them may be set there or in the inventory.
DEFAULTS: dict[str, Any] = {
    "slurm_cluster_name": "galaxy",
    "slurm_partitions": [{"name": "debug", "nodes": "ALL", "default": True, "max_time": "INFINITE"}],
    "slurm_select_type": "select/cons_tres",
    "slurm_select_type_parameters": "CR_CPU",
    "slurm_proctrack_type": None,  # None: chosen from the hosts' cgroup mode
    "slurm_task_plugin": None,
    "slurm_config_extra": {},  # more slurm.conf lines, key -> value
    "slurm_return_to_service": 2,
    "manage_etc_hosts": True,
    "munge_key_file": None,  # None: the controller's key is the cluster's key
    "deploy_galaxy": True,
    "slurm_resume_nodes": False,  # True: resume reachable nodes left DOWN or DRAINED
    "verify_galaxy_job": True,  # False: skip the Galaxy upload job at the end of a run (~15 s)
}

# Galaxy settings and their defaults, read from the Galaxy host's data
# (group_data/galaxy.py documents them).
GALAXY_DEFAULTS: dict[str, Any] = {
    "galaxy_user": "galaxy",
    "galaxy_uid": 1500,
    "galaxy_gid": 1500,
    "galaxy_root": "/srv/galaxy",
    "galaxy_install": True,  # False: keep the Galaxy already in the venv
    "galaxy_rebuild_venv": False,  # True: a venv made by another Python is moved aside and rebuilt
    "galaxy_version": "26.1.2",
    "galaxy_bind": "127.0.0.1:8080",
    "galaxy_handlers": 2,
    "galaxy_admin_email": "admin@example.org",
    # The deploy's verification runs its jobs as this ordinary Galaxy user (made once);
    # None: pgs-verify@ the admin's domain.
    "galaxy_verify_email": None,
    "galaxy_job_runner": "drmaa",  # or "cli": sbatch/squeue through Galaxy's shell runner
    "galaxy_job_workers": 4,
    "galaxy_destinations": [
        {"id": "slurm", "runner": "slurm", "native_specification": "--ntasks=1"},
        {"id": "local", "runner": "local"},
    ],
    "galaxy_default_destination": "slurm",
    "galaxy_config_extra": {},  # more galaxy.yml settings
    "shared_fs": "nfs",  # "nfs": exported by the Galaxy host; "existing": already shared
    "slurm_drmaa": {},  # see SLURM_DRMAA_DEFAULTS
    **PRODUCTION_DEFAULTS,  # database, nginx in front: tasks/production.py
}
SLURM_DRMAA_DEFAULTS: dict[str, Any] = {
    "method": "source",  # "source", "package" or "path"
    "version": "1.1.6",
    "url": "https://github.com/natefoo/slurm-drmaa/releases/download/{version}/slurm-drmaa-{version}.tar.gz",
    "sha256": None,  # required for a download
    "tarball": None,  # a local release tarball to upload instead of downloading
    "prefix": "/opt/slurm-drmaa",
    "package": "slurm-drmaa1",
    "path": None,  # method "path": the existing libdrmaa.so.1
}
SHARED_FS_CHOICES = ("nfs", "existing")
JOB_RUNNERS = ("drmaa", "cli")

# Per-host Slurm node settings that the inventory may give instead of detection.
NODE_OVERRIDE_KEYS = ("cpus", "sockets", "cores_per_socket", "threads_per_core", "real_memory")

SELECT_TYPES = ("select/cons_tres", "select/cons_res", "select/linear")
SELECT_TYPE_BASES = ("CR_CPU", "CR_Core", "CR_Socket", "CR_Memory", "CR_CPU_Memory", "CR_Core_Memory", "CR_Socket_Memory")
SELECT_TYPE_MODIFIERS = (
    "CR_ONE_TASK_PER_CORE", "CR_CORE_DEFAULT_DIST_BLOCK", "CR_LLN", "CR_Pack_Nodes", "LL_SHARED_GRES",
    "MULTIPLE_SHARING_GRES_PJ", "ENFORCE_BINDING_GRES", "ONE_TASK_PER_SHARING_GRES",
)
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
MUNGE_KEY_BYTES = (32, 1024)


class ClusterConfigError(Exception):
    """The inventory describes a cluster that cannot be deployed; nothing was changed."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__(
            "the inventory has problems; no host was changed:\n" + "\n".join(f"  - {p}" for p in problems)
        )


@dataclass(frozen=True)
class HostFacts:
    """What the deploy reads from a host before changing anything."""

    hostname: str
    cpus: int
    sockets: int
    cores_per_socket: int
    threads_per_core: int
    memory_mb: int
    codename: str
    slurm_version: str | None  # the installed Debian package version, if any
    cgroup_fs: str  # filesystem type at /sys/fs/cgroup: cgroup2fs on cgroup v2 hosts
    cgroup_writable: bool
    python: str = ""  # python3's "major.minor"
    users: Mapping[str, int] = field(default_factory=dict)  # name -> uid
    groups: Mapping[str, int] = field(default_factory=dict)  # name -> gid


@dataclass(frozen=True)
class GalaxyJob:
    """A Galaxy job a handler follows in a runner (GalaxyDatabaseNow reads them from Galaxy's database)."""

    id: int  # Galaxy's database id (the API shows it encoded)
    state: str  # "queued", "running", "stopped" or "deleting" (its runner still has to stop it)
    plugin: str  # the runner plugin id it was sent to: "slurm" or "local"
    runner: str  # the runner class behind "slurm" when it was sent: "drmaa" or "cli" ("" for other plugins)
    external_id: str | None  # the Slurm job id
    handler: str = ""  # the job handler that follows it ("" while none has taken it)


@dataclass(frozen=True)
class InventoryHost:
    name: str
    groups: frozenset[str]
    data: Mapping[str, Any]
    facts: HostFacts | None  # None: the host could not be reached this run


@dataclass(frozen=True)
class Node:
    """A Slurm compute node, as slurm.conf describes it."""

    name: str
    cpus: int
    sockets: int
    cores_per_socket: int
    threads_per_core: int
    real_memory: int


@dataclass(frozen=True)
class Partition:
    name: str
    nodes: tuple[str, ...]
    default: bool
    max_time: str
    extra: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ClusterHost:
    inventory_name: str
    node_name: str  # the host's short hostname: what Slurm calls it
    address: str | None  # for /etc/hosts; None when DNS is trusted
    roles: frozenset[str]  # controller, compute, galaxy
    platform: Platform
    reachable: bool = True


@dataclass(frozen=True)
class Destination:
    """A Galaxy job destination; `runner` is a plugin id: "slurm" or "local"."""

    id: str
    runner: str
    native_specification: str | None = None
    params: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SlurmDrmaa:
    method: str  # "source", "package" or "path"
    version: str
    url: str | None
    sha256: str | None
    tarball: str | None
    prefix: str
    package: str
    path: str | None

    @property
    def library_path(self) -> str:
        if self.method == "path":
            return str(self.path)
        if self.method == "package":
            return "/usr/lib/slurm-drmaa/lib/libdrmaa.so.1"  # where slurm-drmaa1 packages put it
        return f"{self.prefix}/lib/libdrmaa.so.1"


@dataclass(frozen=True)
class Galaxy:
    host: ClusterHost
    user: str
    uid: int
    gid: int
    root: str
    install: bool
    version: str
    bind: str
    handlers: int
    admin_email: str
    job_runner: str  # "drmaa" or "cli"
    job_workers: int
    destinations: tuple[Destination, ...]
    default_destination: str
    config_extra: Mapping[str, Any]
    shared_fs: str
    drmaa: SlurmDrmaa | None  # None with the CLI runner
    verify_email: str = "pgs-verify@example.org"
    rebuild_venv: bool = False  # a venv made by another Python is moved aside and rebuilt
    database: GalaxyDatabase = GalaxyDatabase()
    front: GalaxyFront = GalaxyFront()
    python: str = "3.13"  # the Galaxy host's python3 ("major.minor"): the venv's lib/pythonX.Y

    @property
    def url(self) -> str:
        """Galaxy through nginx on the Galaxy host: readiness, rollback and verification use it."""
        return self.front.url

    @property
    def public_url(self) -> str:
        """Where users open Galaxy (galaxy_server_name, else the Galaxy host's address)."""
        name = self.front.server_name.split()[0] if self.front.server_name != "_" else (self.host.address or self.host.node_name)
        scheme, port, default = ("https", self.front.https_port, 443) if self.front.tls else ("http", self.front.http_port, 80)
        return f"{scheme}://{name}{'' if port == default else f':{port}'}/"

    @property
    def static_dir(self) -> str:
        """Static files of the galaxy-web-apps package: Galaxy's /static (webapps/base/webapp.py build_url_map)."""
        return f"{self.venv}/lib/python{self.python}/site-packages/galaxy/webapps/base/static"

    @property
    def client_dir(self) -> str:
        """The built web client of the galaxy-web-client package: Galaxy's /static/dist."""
        return f"{self.venv}/lib/python{self.python}/site-packages/galaxy/web_client/dist"

    @property
    def venv(self) -> str:
        return f"{self.root}/venv"

    @property
    def config_dir(self) -> str:
        return f"{self.root}/config"

    @property
    def data_dir(self) -> str:
        return f"{self.root}/data"

    @property
    def log_dir(self) -> str:
        return f"{self.root}/log"

    @property
    def galaxy_yml(self) -> str:
        return f"{self.config_dir}/galaxy.yml"

    @property
    def job_conf(self) -> str:
        return f"{self.config_dir}/job_conf.xml"

    @property
    def secrets_file(self) -> str:
        """id_secret and the bootstrap admin API key, kept on the Galaxy host."""
        return f"{self.config_dir}/secrets.json"

    @property
    def port(self) -> int:
        return int(self.bind.rsplit(":", 1)[1])

    @property
    def local_url(self) -> str:
        """Galaxy's address as seen on the Galaxy host itself."""
        address = self.bind.rsplit(":", 1)[0]
        return f"http://{'127.0.0.1' if address in ('0.0.0.0', '*', '') else address}:{self.port}"

    @property
    def handler_names(self) -> list[str]:
        return [f"handler{i}" for i in range(self.handlers)]

    @property
    def drmaa_library_path(self) -> str | None:
        return self.drmaa.library_path if self.drmaa else None

    @property
    def pip_packages(self) -> list[str]:
        galaxy = [f"galaxy-web-apps=={self.version}", f"galaxy-web-client=={self.version}", "gravity"] if self.install else []
        # fissix: Galaxy's metadata step needs lib2to3 or fissix on every node that runs jobs.
        # psycopg2-binary: Galaxy's PostgreSQL driver (a wheel: no compiler, no libpq-dev).
        database = ["psycopg2-binary"] if self.database.kind == "postgresql" else []
        return galaxy + ["fissix", "drmaa", *database]

    def runner_plugins(self) -> dict[str, str]:
        """Plugin id -> runner class: "slurm" is the DRMAA or the CLI runner, as chosen."""
        return {"local": RUNNER_PLUGINS["local"], "slurm": RUNNER_PLUGINS[self.job_runner]}


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
    return_to_service: int
    config_extra: Mapping[str, str]
    manage_etc_hosts: bool
    munge_key_file: str | None
    galaxy: Galaxy | None = None
    resume_nodes: bool = False
    verify_galaxy_job: bool = True
    warnings: tuple[str, ...] = ()

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
    config = {key: settings.get(key, default) for key, default in DEFAULTS.items()}

    controllers = [h for h in hosts if CONTROLLER_GROUP in h.groups]
    computes = [h for h in hosts if COMPUTE_GROUP in h.groups]
    for host in hosts:
        if host.facts is None and (CONTROLLER_GROUP in host.groups or (GALAXY_GROUP in host.groups and config["deploy_galaxy"])):
            role = "the controller" if CONTROLLER_GROUP in host.groups else "the Galaxy host"
            problems.append(f"host {host.name} ({role}) is unreachable; the deploy needs it: bring it back and re-run")
    fallback_platform = next((p for h in controllers if (p := _platform_or_none(h)) is not None), None)
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

    cluster_hosts = [_cluster_host(h, config, problems, fallback_platform) for h in hosts]
    cluster_hosts = [h for h in cluster_hosts if h is not None]
    _check_unique([h.node_name for h in cluster_hosts], "host name (uname -n)", problems,
                  fix="give each host a unique hostname")

    nodes = tuple(n for n in (_node(h, problems, warnings, known_nodes or {}) for h in computes) if n is not None)
    node_names = [n.name for n in nodes]
    partitions = _partitions(config["slurm_partitions"], node_names, problems)
    select_type = _select_type(config["slurm_select_type"], problems, warnings)
    select_params = _select_type_parameters(config["slurm_select_type_parameters"], problems)
    _check_name(str(config["slurm_cluster_name"]), "slurm_cluster_name", problems)
    _check_munge_key_file(config["munge_key_file"], problems)
    _check_versions(cluster_hosts, problems)

    slurm_hosts = [h for h in computes + controllers if h.facts is not None]
    cgroup = choose_cgroup(
        all(h.facts.cgroup_writable for h in slurm_hosts),
        all(h.facts.cgroup_fs == "cgroup2fs" for h in slurm_hosts),
    )
    proctrack = config["slurm_proctrack_type"] or cgroup.proctrack_type
    task_plugin = config["slurm_task_plugin"] or cgroup.task_plugin
    uses_cgroup = "cgroup" in proctrack or "cgroup" in task_plugin
    cgroup_conf = (cgroup.cgroup_conf or {"CgroupPlugin": "autodetect"}) if uses_cgroup else None

    galaxy = _galaxy(hosts, cluster_hosts, config["deploy_galaxy"], problems)
    if galaxy is not None:
        problems.extend(runner_switch_problems(galaxy.job_runner, galaxy_jobs))
        if isinstance(galaxy.handlers, int):
            problems.extend(handler_removal_problems(galaxy.handler_names, galaxy_jobs))
        problems.extend(database_switch_problems(galaxy.database, galaxy_database_now))
        galaxy = with_database_now(galaxy, galaxy_database_now)

    extra = config["slurm_config_extra"]
    if not isinstance(extra, Mapping):
        problems.append("slurm_config_extra: must be a mapping of slurm.conf keys to values, e.g. {'MaxJobCount': 10000}")
        extra = {}

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
        return_to_service=int(config["slurm_return_to_service"]),
        config_extra={str(k): str(v) for k, v in extra.items()},
        manage_etc_hosts=bool(config["manage_etc_hosts"]),
        munge_key_file=config["munge_key_file"],
        galaxy=galaxy,
        resume_nodes=bool(config["slurm_resume_nodes"]),
        verify_galaxy_job=bool(config["verify_galaxy_job"]),
        warnings=tuple(warnings),
    )


def _cluster_host(host: InventoryHost, config: Mapping[str, Any], problems: list[str],
                  fallback_platform: Platform | None) -> ClusterHost | None:
    roles = {"controller": CONTROLLER_GROUP, "compute": COMPUTE_GROUP, "galaxy": GALAXY_GROUP}
    if host.facts is None:
        if fallback_platform is None:
            return None
        platform = fallback_platform  # unknown this run: assumed like the controller
    else:
        try:
            platform = platform_for(host.facts.codename, host.facts.slurm_version)
        except ValueError as error:
            problems.append(f"host {host.name}: {error}")
            return None
    address = None
    if config["manage_etc_hosts"]:
        address = host.data.get("cluster_address") or host.data.get("ssh_hostname") or host.name
        try:
            ipaddress.ip_address(address)
        except ValueError:
            problems.append(
                f"host {host.name}: cluster_address '{address}' is not an IP address; set cluster_address "
                "to the address other cluster hosts reach it on, or set manage_etc_hosts = False when DNS resolves every host"
            )
    return ClusterHost(
        inventory_name=host.name,
        node_name=_node_name(host),
        address=address,
        roles=frozenset(role for role, group in roles.items() if group in host.groups),
        platform=platform,
        reachable=host.facts is not None,
    )


def _platform_or_none(host: InventoryHost) -> Platform | None:
    try:
        return platform_for(host.facts.codename, host.facts.slurm_version) if host.facts else None
    except ValueError:
        return None


def _node_name(host: InventoryHost) -> str:
    """Slurm's name of a host: its short hostname (the inventory's, when it was not reached)."""
    return (host.facts.hostname if host.facts else host.name).split(".")[0]


def _node(host: InventoryHost, problems: list[str], warnings: list[str], known_nodes: Mapping[str, Node]) -> Node | None:
    """A compute node from its detected hardware, with the inventory's overrides applied."""
    facts = host.facts
    if facts is None:
        known = known_nodes.get(_node_name(host))
        if known is None:
            warnings.append(f"host {host.name} is unreachable and not in the controller's slurm.conf yet: "
                            "it stays out of the cluster until a run reaches it")
        else:
            warnings.append(f"host {host.name} is unreachable: its slurm.conf entry is kept as it is; "
                            "re-run when it is back")
        return known
    detected = {
        "cpus": facts.cpus,
        "sockets": facts.sockets,
        "cores_per_socket": facts.cores_per_socket,
        "threads_per_core": facts.threads_per_core,
        "real_memory": facts.memory_mb,
    }
    overrides = host.data.get("slurm_node") or {}
    values = dict(detected)
    for key, value in overrides.items():
        where = f"host {host.name}: slurm_node.{key}"
        if key not in NODE_OVERRIDE_KEYS:
            problems.append(f"{where}: unknown setting; use one of {', '.join(NODE_OVERRIDE_KEYS)}")
        elif isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            problems.append(f"{where}: {value!r} is not a positive whole number; give e.g. {detected[key]}")
        elif value > detected[key]:
            problems.append(
                f"{where}: {value} is more than the host has ({detected[key]} detected); "
                f"Slurm would drain the node. Use at most {detected[key]}"
            )
        else:
            values[key] = value
    if "cpus" in overrides and not any(k in overrides for k in ("sockets", "cores_per_socket", "threads_per_core")):
        # A smaller CPU count alone: describe it as one socket of single-thread cores.
        values.update(sockets=1, cores_per_socket=values["cpus"], threads_per_core=1)
    topology = values["sockets"] * values["cores_per_socket"] * values["threads_per_core"]
    if topology != values["cpus"]:
        problems.append(
            f"host {host.name}: slurm_node gives cpus={values['cpus']} but sockets x cores_per_socket x "
            f"threads_per_core = {topology}; make them agree"
        )
    return Node(name=_node_name(host), **values)


def parse_node_lines(lines: list[str]) -> dict[str, Node]:
    """NodeName lines of a slurm.conf this deploy wrote -> nodes by name."""
    keys = {"CPUs": "cpus", "Sockets": "sockets", "CoresPerSocket": "cores_per_socket",
            "ThreadsPerCore": "threads_per_core", "RealMemory": "real_memory"}
    nodes = {}
    for line in lines:
        fields = dict(field.split("=", 1) for field in line.split() if "=" in field)
        if "NodeName" in fields and all(key in fields for key in keys):
            nodes[fields["NodeName"]] = Node(name=fields["NodeName"], **{keys[k]: int(fields[k]) for k in keys})
    return nodes


def _partitions(raw: Any, node_names: list[str], problems: list[str]) -> tuple[Partition, ...]:
    if not isinstance(raw, list) or not raw:
        problems.append("slurm_partitions: must be a non-empty list like [{'name': 'debug', 'nodes': 'ALL', 'default': True}]")
        return ()
    partitions = []
    for index, entry in enumerate(raw):
        where = f"slurm_partitions[{index}]"
        if not isinstance(entry, Mapping) or "name" not in entry:
            problems.append(f"{where}: must be a mapping with at least a 'name'")
            continue
        name = str(entry["name"])
        where = f"slurm_partitions[{index}] ({name})"
        _check_name(name, f"{where}.name", problems)
        nodes = entry.get("nodes", "ALL")
        if nodes == "ALL":
            members = tuple(node_names)
        else:
            members = tuple(nodes) if isinstance(nodes, (list, tuple)) else tuple(str(nodes).split(","))
            unknown = [n for n in members if n not in node_names]
            if unknown:
                problems.append(
                    f"{where}.nodes: {', '.join(unknown)} not a compute node; "
                    f"use 'ALL' or names from: {', '.join(node_names) or '(no compute nodes)'}"
                )
        partitions.append(
            Partition(
                name=name,
                nodes=members,
                default=bool(entry.get("default", False)),
                max_time=str(entry.get("max_time", "INFINITE")),
                extra={str(k): str(v) for k, v in entry.get("extra", {}).items()},
            )
        )
    _check_unique([p.name for p in partitions], "slurm_partitions name", problems, fix="rename or merge them")
    defaults = [p.name for p in partitions if p.default]
    if len(defaults) > 1:
        problems.append(f"slurm_partitions: {', '.join(defaults)} are all marked default; mark exactly one")
    return tuple(partitions)


def _select_type(value: Any, problems: list[str], warnings: list[str]) -> str:
    select_type = str(value)
    if select_type not in SELECT_TYPES:
        problems.append(f"slurm_select_type: '{select_type}' is unknown; use select/cons_tres (or select/linear)")
    elif select_type == "select/cons_res":
        # cons_res is gone since Slurm 23.11; cons_tres does all it did, so map it.
        warnings.append("slurm_select_type: select/cons_res was removed in Slurm 23.11; using select/cons_tres")
        return "select/cons_tres"
    return select_type


def _select_type_parameters(value: Any, problems: list[str]) -> str:
    parts = [p.strip() for p in str(value).split(",") if p.strip()]
    bases = [p for p in parts if p in SELECT_TYPE_BASES]
    unknown = [p for p in parts if p not in SELECT_TYPE_BASES and p not in SELECT_TYPE_MODIFIERS]
    if unknown or len(bases) != 1:
        problems.append(
            f"slurm_select_type_parameters: '{value}' is not valid for Slurm: "
            + (f"unknown {', '.join(unknown)}; " if unknown else "")
            + f"give exactly one of {', '.join(SELECT_TYPE_BASES)}, optionally with modifiers like CR_LLN"
        )
    return ",".join(parts)


def _galaxy(hosts: list[InventoryHost], cluster_hosts: list[ClusterHost], enabled: bool,
            problems: list[str]) -> Galaxy | None:
    if not enabled:
        return None
    galaxy_hosts = [h for h in hosts if GALAXY_GROUP in h.groups]
    if len(galaxy_hosts) != 1:
        listed = ", ".join(h.name for h in galaxy_hosts) or "none"
        problems.append(
            f"group {GALAXY_GROUP}: needs exactly one host when deploy_galaxy is on, has {len(galaxy_hosts)} ({listed}); "
            f"list the Galaxy server in {GALAXY_GROUP} in inventory.py, or set deploy_galaxy = False"
        )
        return None
    (inventory_host,) = galaxy_hosts
    cluster_host = next((h for h in cluster_hosts if h.inventory_name == inventory_host.name), None)
    if cluster_host is None:
        return None
    data = inventory_host.data
    config = {key: data.get(key, default) for key, default in GALAXY_DEFAULTS.items()}
    runner = config["galaxy_job_runner"]
    if runner not in JOB_RUNNERS:
        problems.append(f"galaxy_job_runner: '{runner}' is unknown; use 'drmaa' (slurm-drmaa) or 'cli' (sbatch through a shell)")
    if config["shared_fs"] not in SHARED_FS_CHOICES:
        problems.append(
            f"shared_fs: '{config['shared_fs']}' is unknown; use 'nfs' (the Galaxy host exports {config['galaxy_root']}) "
            "or 'existing' (it is already shared at the same path on every compute host)"
        )
    for key in ("galaxy_uid", "galaxy_gid", "galaxy_handlers", "galaxy_job_workers"):
        _check_positive_int(config[key], key, problems)
    bind = str(config["galaxy_bind"])
    if not re.fullmatch(r"[^\s:]+:\d{1,5}", bind):
        problems.append(f"galaxy_bind: '{bind}' is not host:port; e.g. 127.0.0.1:8080")
    else:
        check_loopback_bind(bind, problems)
    database, front = production_settings(config, config["galaxy_handlers"], problems)
    if not str(config["galaxy_root"]).startswith("/"):
        problems.append(f"galaxy_root: '{config['galaxy_root']}' is not an absolute path")
    _check_galaxy_account(hosts, config, problems)
    _check_job_python(hosts, inventory_host, problems)

    destinations = _destinations(config["galaxy_destinations"], runner, problems)
    drmaa = _slurm_drmaa(config["slurm_drmaa"], problems) if runner == "drmaa" else None
    galaxy = Galaxy(
        host=cluster_host,
        user=str(config["galaxy_user"]),
        uid=config["galaxy_uid"],
        gid=config["galaxy_gid"],
        root=str(config["galaxy_root"]).rstrip("/"),
        install=bool(config["galaxy_install"]),
        version=str(config["galaxy_version"]),
        bind=bind,
        handlers=config["galaxy_handlers"],
        admin_email=str(config["galaxy_admin_email"]),
        job_runner=runner if runner in JOB_RUNNERS else "cli",
        job_workers=config["galaxy_job_workers"],
        destinations=destinations,
        default_destination=str(config["galaxy_default_destination"]),
        config_extra=dict(config["galaxy_config_extra"]),
        shared_fs=config["shared_fs"],
        drmaa=drmaa,
        verify_email=_verify_email(config, problems),
        rebuild_venv=bool(config["galaxy_rebuild_venv"]),
        database=database,
        front=front,
        python=(inventory_host.facts.python if inventory_host.facts else "") or "3.13",
    )
    if not any(p.startswith(("galaxy_handlers", "galaxy_job_workers")) for p in problems):
        problems.extend(f"galaxy_destinations: {p}" for p in check_job_conf(build_job_conf(galaxy)))
    return galaxy


def runner_switch_problems(job_runner: str, jobs: list[GalaxyJob] | tuple[GalaxyJob, ...]) -> list[str]:
    """Refuse a galaxy_job_runner that differs from the one Galaxy jobs in flight were sent with.

    Both runners are the plugin id "slurm": after the switch the handlers would
    recover those jobs with the new runner class, which cannot follow them (the
    CLI runner raises "No job plugin parameter found" every monitor cycle, the
    DRMAA runner does not know a CLI job's id); neither they nor new jobs are
    ever finished (measured on the lab). Source: Galaxy's jobs/handler.py
    `_check_job_at_startup` hands a job with a runner name and an external id to
    that plugin's `recover` with the job's stored destination params; one without
    an external id goes back to the queue as new (safe to switch).
    """
    stranded = sorted((j for j in jobs if j.plugin == "slurm" and j.runner and j.external_id and j.runner != job_runner),
                      key=lambda j: j.id)
    if not stranded:
        return []
    old = stranded[0].runner
    listed = ", ".join(f"{j.id} ({j.state}, Slurm job {j.external_id})" for j in stranded)
    return [
        f"galaxy_job_runner: '{job_runner}' would strand {len(stranded)} Galaxy job{'s' if len(stranded) > 1 else ''} "
        f"in flight under the '{old}' runner (Galaxy job ids {listed}): the handlers restarted with the other runner "
        f"class under the same plugin id 'slurm' cannot follow them. Let them finish first: keep "
        f"galaxy_job_runner = '{old}' until `squeue -u galaxy` is empty (to stop new jobs meanwhile, lock Galaxy's job "
        "queue: Admin > Jobs > lock, or bioblend jobs.update_job_lock(active=True)), then re-run with the switch"
    ]


def _verify_email(config: Mapping[str, Any], problems: list[str]) -> str:
    """galaxy_verify_email, or pgs-verify@ the admin's domain; it must not be the admin's own."""
    admin = str(config["galaxy_admin_email"])
    email = str(config["galaxy_verify_email"] or f"pgs-verify@{admin.rpartition('@')[2]}")
    if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", email):
        problems.append(f"galaxy_verify_email: '{email}' is not an email address Galaxy accepts (name@domain.tld)")
    elif email.lower() == admin.lower():
        problems.append("galaxy_verify_email: is the admin's own address; the verification needs a user of its own "
                        "(leave it unset for pgs-verify@ the admin's domain)")
    return email


def _destinations(raw: Any, job_runner: str, problems: list[str]) -> tuple[Destination, ...]:
    if not isinstance(raw, list) or not raw:
        problems.append("galaxy_destinations: must be a non-empty list like [{'id': 'slurm', 'runner': 'slurm'}]")
        return ()
    destinations = []
    for index, entry in enumerate(raw):
        where = f"galaxy_destinations[{index}]"
        if not isinstance(entry, Mapping) or not entry.get("id") or not entry.get("runner"):
            problems.append(f"{where}: must be a mapping with an 'id' and a 'runner' ('slurm' or 'local')")
            continue
        spec = entry.get("native_specification")
        rules = "slurm-drmaa's README, 'Native specification'" if job_runner == "drmaa" else "`man sbatch`"
        for problem in native_specification_problems(str(spec), job_runner) if spec else []:
            problems.append(f"{where} ({entry['id']}).native_specification '{spec}': {problem}; see {rules}")
        destinations.append(Destination(
            id=str(entry["id"]),
            runner=str(entry["runner"]),
            native_specification=str(spec) if spec else None,
            params={str(k): str(v) for k, v in entry.get("params", {}).items()},
        ))
    return tuple(destinations)


def _slurm_drmaa(raw: Any, problems: list[str]) -> SlurmDrmaa | None:
    settings = {**SLURM_DRMAA_DEFAULTS, **(raw or {})}
    unknown = sorted(set(settings) - set(SLURM_DRMAA_DEFAULTS))
    if unknown:
        problems.append(f"slurm_drmaa: unknown setting {', '.join(unknown)}; use {', '.join(SLURM_DRMAA_DEFAULTS)}")
    method = settings["method"]
    sha256 = settings["sha256"]
    tarball = settings["tarball"]
    if method == "source":
        if sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", str(sha256)):
            problems.append(f"slurm_drmaa.sha256: '{sha256}' is not a sha256 (64 lowercase hex digits)")
        elif tarball:
            if not os.path.isfile(tarball):
                problems.append(f"slurm_drmaa.tarball: {tarball} does not exist on this machine")
            elif sha256 and sha256_of(tarball) != sha256:
                problems.append(
                    f"slurm_drmaa.tarball: {tarball} has sha256 {sha256_of(tarball)}, not the {sha256} given in "
                    "slurm_drmaa.sha256; get the genuine release tarball or correct the checksum"
                )
        elif not sha256:
            problems.append(
                "slurm_drmaa.sha256: a download needs the sha256 of the release tarball "
                f"(slurm-drmaa-{settings['version']}.tar.gz: `sha256sum` it); or give slurm_drmaa.tarball, "
                "or use method 'package' or 'path'"
            )
    elif method == "path":
        if not str(settings["path"] or "").startswith("/"):
            problems.append("slurm_drmaa.path: method 'path' needs the absolute path of an existing libdrmaa.so.1")
    elif method != "package":
        problems.append(f"slurm_drmaa.method: '{method}' is unknown; use 'source', 'package' or 'path'")
    return SlurmDrmaa(
        method=method,
        version=str(settings["version"]),
        url=str(settings["url"]).format(version=settings["version"]) if settings["url"] else None,
        sha256=sha256,
        tarball=tarball,
        prefix=str(settings["prefix"]),
        package=str(settings["package"]),
        path=settings["path"],
    )


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_galaxy_account(hosts: list[InventoryHost], config: Mapping[str, Any], problems: list[str]) -> None:
    """The galaxy user and group get the same ids everywhere: refuse ids taken by others."""
    checks = (("user", config["galaxy_user"], config["galaxy_uid"], "galaxy_uid", "users"),
              ("group", config["galaxy_user"], config["galaxy_gid"], "galaxy_gid", "groups"))
    for kind, name, wanted, setting, table in checks:
        for host in (h for h in hosts if h.facts is not None):
            ids: Mapping[str, int] = getattr(host.facts, table)
            if name in ids and ids[name] != wanted:
                problems.append(
                    f"host {host.name}: {kind} {name} exists with id {ids[name]}, not {setting} {wanted}; "
                    f"set {setting} = {ids[name]} if that id is free on every host, or change the {kind} there"
                )
            holders = [n for n, i in ids.items() if i == wanted and n != name]
            if holders:
                problems.append(
                    f"host {host.name}: {setting} {wanted} already belongs to {kind} {holders[0]}; "
                    f"choose a {setting} that is free on every cluster host"
                )


def _check_job_python(hosts: list[InventoryHost], galaxy_host: InventoryHost, problems: list[str]) -> None:
    """Jobs run Galaxy's venv on the compute nodes: its Python must be there too."""
    wanted = galaxy_host.facts.python if galaxy_host.facts else None
    for host in hosts:
        if COMPUTE_GROUP in host.groups and host.facts and host.facts.python and wanted and host.facts.python != wanted:
            problems.append(
                f"host {host.name}: python3 is {host.facts.python} but Galaxy's venv on {galaxy_host.name} uses "
                f"{wanted}, and jobs run that venv on compute hosts; use the same Debian release on both"
            )


def _check_positive_int(value: Any, where: str, problems: list[str]) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        problems.append(f"{where}: {value!r} is not a positive whole number")


def _check_versions(hosts: list[ClusterHost], problems: list[str]) -> None:
    """slurmd and clients may be at most N releases older than slurmctld, never newer."""
    controller = next((h for h in hosts if "controller" in h.roles), None)
    if controller is None:
        return
    newest = controller.platform
    for host in hosts:
        behind = newest.slurm_index - host.platform.slurm_index
        if behind < 0 or behind > newest.max_versions_behind:
            problems.append(
                f"host {host.inventory_name}: Slurm {host.platform.slurm} ({host.platform.codename}) cannot work with "
                f"slurmctld {newest.slurm} on {controller.inventory_name} ({newest.codename}): a node may be at most "
                f"{newest.max_versions_behind} releases older than the controller and never newer; "
                "upgrade the older hosts or keep them in a separate cluster"
            )


def _check_munge_key_file(path: Any, problems: list[str]) -> None:
    if path is None:
        return
    if not os.path.isfile(str(path)):
        problems.append(f"munge_key_file: {path} does not exist; give the path of an existing key or leave it unset")
        return
    size = os.path.getsize(str(path))
    low, high = MUNGE_KEY_BYTES
    if not low <= size <= high:
        problems.append(
            f"munge_key_file: {path} has {size} bytes; munge needs {low} to {high} "
            "(make one with `mungekey -c -k FILE` or `dd if=/dev/urandom bs=1 count=128 of=FILE`)"
        )


def _check_name(name: str, where: str, problems: list[str]) -> None:
    if not NAME_PATTERN.match(name):
        problems.append(f"{where}: '{name}' is not a valid name; use letters, digits, '_', '.' or '-'")


def _check_unique(names: list[str], what: str, problems: list[str], fix: str) -> None:
    seen = set()
    for name in names:
        if name in seen:
            problems.append(f"{what} '{name}' appears more than once; {fix}")
        seen.add(name)


__all__ = [
    "Cluster", "ClusterConfigError", "ClusterHost", "GalaxyJob", "HostFacts", "InventoryHost", "Node", "Partition",
    "build_cluster",
]
