"""Every setting of the deploy, declared once: name, scope, default, meaning.

Scopes say whose inventory data a setting is read from:
- "cluster": the controller's (group_data/all.py, or the controller's groups);
  one value for the whole cluster.
- "galaxy": the Galaxy host's (group_data/galaxy.py).
- "host": each host's own (its dict in inventory.py), e.g. cluster_address.

`settings_problems` refuses keys the deploy would never read: a misspelled
name (with the closest known one) and a setting given where it is not read
(e.g. a cluster setting in group_data/galaxy.py while the Galaxy host is not
the controller: the controller's value would win, silently). The README's
settings table is `markdown_table()`: `python -m tasks.model.settings` prints it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tasks.model.galaxy_releases import galaxy_releases, newest_release

CLUSTER, GALAXY, HOST = "cluster", "galaxy", "host"
SCOPE_SOURCES = {
    CLUSTER: "group_data/all.py (read from the controller's data)",
    GALAXY: "group_data/galaxy.py (read from the Galaxy host's data)",
    HOST: "the host's own dict in the inventory",
}


@dataclass(frozen=True)
class Setting:
    name: str
    scope: str  # CLUSTER, GALAXY or HOST
    default: Any
    meaning: str  # one line, for the README's table and error messages
    shown_default: str | None = None  # the README's words for a default that is computed


SETTINGS: tuple[Setting, ...] = (
    # Slurm and MUNGE: the whole cluster.
    Setting("slurm_cluster_name", CLUSTER, "galaxy", "Slurm's `ClusterName`"),
    Setting("slurm_partitions", CLUSTER,
            [{"name": "debug", "nodes": "ALL", "default": True, "max_time": "INFINITE"}],
            "partitions: list of `{name, nodes (\"ALL\" or node names), default, max_time, extra}`",
            "one partition `debug`, all nodes, default"),
    Setting("slurm_select_type", CLUSTER, "select/cons_tres",
            "`SelectType`; `select/cons_res` (gone in Slurm 23.11) is mapped to `select/cons_tres` with a warning"),
    Setting("slurm_select_type_parameters", CLUSTER, "CR_CPU_Memory",
            "`SelectTypeParameters`: one of `CR_CPU_Memory`, `CR_Core_Memory`, `CR_CPU`, ... with modifiers; "
            "a `_Memory` base schedules memory as well as CPUs"),
    Setting("slurm_def_mem_per_cpu", CLUSTER, None,
            "`DefMemPerCPU` (MB): the memory a job that asks for none gets per CPU, with memory scheduled; "
            "None: the smallest node's `RealMemory` / CPUs, so such jobs can use every CPU",
            "smallest node's RealMemory / CPUs"),
    Setting("slurm_memory_reserved", CLUSTER, None,
            "MB each compute node keeps back from jobs for the system and daemons (`RealMemory` = MemTotal - this); "
            "None: 5 % of the node's memory, at least 512 MB, and on a node that also runs Galaxy half of the rest "
            "too; a node's `slurm_node.real_memory` wins",
            "5 %, at least 512 MB (Galaxy host: + half the rest)"),
    Setting("slurm_proctrack_type", CLUSTER, None,
            "`ProctrackType`; None: `proctrack/cgroup` when every host has writable cgroups, else `proctrack/linuxproc`",
            "chosen from the hosts' cgroups"),
    Setting("slurm_task_plugin", CLUSTER, None,
            "`TaskPlugin`; None: `task/cgroup,task/affinity` with writable cgroups, else `task/affinity`",
            "chosen from the hosts' cgroups"),
    Setting("slurm_config_extra", CLUSTER, {}, "more `slurm.conf` lines, key -> value, e.g. `{\"MaxJobCount\": 10000}`"),
    Setting("slurm_return_to_service", CLUSTER, 2, "`ReturnToService`: 2 returns a node DOWN for being unresponsive once it registers valid"),
    Setting("slurm_health_check_interval", CLUSTER, 300,
            "`HealthCheckInterval` (s) of the node health check (with Galaxy): a compute node whose Galaxy shared "
            "directory is gone is drained, naming it, and resumed once it is back; 0: no health check"),
    Setting("slurm_resume_nodes", CLUSTER, False, "True: resume reachable nodes left DOWN or DRAINED (by an admin or Slurm)"),
    Setting("manage_etc_hosts", CLUSTER, True, "write every cluster host into `/etc/hosts`; False when DNS resolves every host"),
    Setting("munge_key_file", CLUSTER, None,
            "None: the controller's munge key (or a new random one) is the cluster's; a path: this key file (32-1024 bytes) goes everywhere"),
    # Slurm accounting (slurmdbd): the whole cluster.
    Setting("slurm_accounting", CLUSTER, True,
            "slurmdbd with MariaDB on the controller (or the `slurm_dbd` group's host); `sacct`; False: no accounting"),
    Setting("slurm_accounting_storage_host", CLUSTER, None,
            "an existing MySQL/MariaDB server for slurmdbd (its database and user made by you); None: MariaDB from "
            "Debian on slurmdbd's host", "MariaDB on slurmdbd's host"),
    Setting("slurm_accounting_storage_port", CLUSTER, 3306, "that server's port (slurmdbd.conf `StoragePort`)"),
    Setting("slurm_accounting_storage_user", CLUSTER, "slurm", "slurmdbd's database user (`StorageUser`)"),
    Setting("slurm_accounting_storage_loc", CLUSTER, "slurm_acct_db", "slurmdbd's database (`StorageLoc`)"),
    Setting("slurm_accounting_storage_pass_file", CLUSTER, None,
            "a local file (0600) with the database password on its first line; None: one made once and kept in "
            "slurmdbd.conf (0600 slurm); required with `slurm_accounting_storage_host`", "made once"),
    Setting("slurm_accounting_purge", CLUSTER,
            {"PurgeEventAfter": "12month", "PurgeJobAfter": "12month", "PurgeResvAfter": "1month",
             "PurgeStepAfter": "1month", "PurgeSuspendAfter": "1month", "PurgeTXNAfter": "12month",
             "PurgeUsageAfter": "24month"},
            "slurmdbd.conf `Purge*After`: how long accounting records are kept (`N` + `hours`/`days`/`months`); "
            "keys given replace the default's, None keeps that kind forever",
            "jobs 12 months, steps 1 month, usage 24 months, ..."),
    Setting("slurm_accounting_archive_dir", CLUSTER, "/var/lib/slurm/accounting-archive",
            "purged records are archived here first on slurmdbd's host (0700 slurm; `sacctmgr archive load` "
            "brings them back); None: purged records are gone"),
    Setting("backup_schedule", CLUSTER, "*-*-* 03:15:00",
            "when every host backs up what it holds (systemd `OnCalendar`; Galaxy's database, the accounting "
            "database, slurmctld's state, the deploy's configuration and secrets); None: no scheduled backups"),
    Setting("backup_dir", CLUSTER, "/var/backups/pyinfra-galaxy-slurm", "where each host keeps its backups (0700 root)"),
    Setting("backup_keep", CLUSTER, 14, "how many backups each host keeps (the oldest go first)"),
    Setting("replaced_files_keep_days", CLUSTER, 30,
            "the deploy's own copies of what it replaced (`*.<time>.pgs-backup`: config files, a venv moved aside) "
            "are removed after this many days; None: kept"),
    Setting("deploy_galaxy", CLUSTER, True, "False: the Slurm layers only"),
    Setting("verify_galaxy_job", CLUSTER, True, "False: skip the Galaxy upload job at the end of a run (~15 s)"),
    # Galaxy: the Galaxy host.
    Setting("galaxy_version", GALAXY, newest_release(),
            "Galaxy from PyPI, every package pinned to the release: one of "
            f"{', '.join(galaxy_releases())} (`tasks/model/galaxy_releases.json`)", "the newest of those"),
    Setting("galaxy_install", GALAXY, True, "False: keep the Galaxy already in the venv"),
    Setting("galaxy_rebuild_venv", GALAXY, False,
            "True: a venv made by another Python is moved aside (`venv.<time>.pgs-backup`) and rebuilt; else refused"),
    Setting("galaxy_root", GALAXY, "/srv/galaxy", "venv, config, data and logs; shared with the compute hosts"),
    Setting("galaxy_user", GALAXY, "galaxy", "the account Galaxy and its jobs run as, on every host"),
    Setting("galaxy_uid", GALAXY, 1500, "its uid, the same on every host"),
    Setting("galaxy_gid", GALAXY, 1500, "its gid, the same on every host"),
    Setting("galaxy_bind", GALAXY, "127.0.0.1:8080", "gunicorn's address (host:port), loopback only: nginx is in front"),
    Setting("galaxy_admin_email", GALAXY, "admin@example.org", "Galaxy's admin user"),
    Setting("galaxy_verify_email", GALAXY, None,
            "the verification's own ordinary Galaxy user (its API key kept in `/etc/pyinfra-galaxy-slurm/`, 0600 root)",
            "`pgs-verify@` the admin's domain"),
    Setting("galaxy_handlers", GALAXY, 2,
            "job handler processes (`db-skip-locked` assignment); more than one needs PostgreSQL; one that holds jobs is not removed"),
    Setting("galaxy_database", GALAXY, "postgresql",
            "`postgresql`: Debian's on the Galaxy host (peer authentication, no password) or `galaxy_database_url`'s; "
            "`sqlite`: a one-host trial with one handler"),
    Setting("galaxy_database_url", GALAXY, None,
            "an existing PostgreSQL server, `postgresql://USER:PASSWORD@HOST:PORT/DB` (a secret: only in `galaxy.yml`, 0600)"),
    Setting("galaxy_database_fresh", GALAXY, False,
            "True: start on an empty database although the one in use holds data (that one is left, not moved)"),
    Setting("galaxy_database_pool_size", GALAXY, 5,
            "database connections each Galaxy process keeps open (`database_engine_option_pool_size`)"),
    Setting("galaxy_database_max_overflow", GALAXY, 10,
            "more each process may open under load (`database_engine_option_max_overflow`)"),
    Setting("postgresql_max_connections", GALAXY, None,
            "the Galaxy host's PostgreSQL `max_connections`; refused below what Galaxy's processes can open "
            "(processes x (pool + overflow) + 13); changing it restarts PostgreSQL (Galaxy reconnects: `pool_pre_ping`)",
            "100, or what Galaxy's processes need if more"),
    Setting("galaxy_http_port", GALAXY, 80, "nginx's port for Galaxy (with TLS it redirects to `galaxy_https_port`)"),
    Setting("galaxy_https_port", GALAXY, 443, "nginx's HTTPS port, with `galaxy_tls_certificate` and `galaxy_tls_key`"),
    Setting("galaxy_tls_certificate", GALAXY, None, "TLS certificate (PEM, chain included): a path on the Galaxy host"),
    Setting("galaxy_tls_key", GALAXY, None, "its key: a path on the Galaxy host (made 0600 root)"),
    Setting("galaxy_server_name", GALAXY, "_", "nginx `server_name` (`_`: any name the host is reached by)"),
    Setting("galaxy_upload_max_size", GALAXY, "10g", "nginx `client_max_body_size` for uploads"),
    Setting("galaxy_job_runner", GALAXY, "drmaa",
            "`drmaa`: Galaxy's Slurm runner through slurm-drmaa; `cli`: sbatch/squeue through Galaxy's shell runner"),
    Setting("galaxy_job_workers", GALAXY, 4, "worker threads per runner plugin"),
    Setting("galaxy_destinations", GALAXY,
            [{"id": "slurm", "runner": "slurm", "native_specification": "--ntasks=1"}, {"id": "local", "runner": "local"}],
            "job destinations: `{id, runner (\"slurm\" or \"local\"), native_specification, params}`",
            "`slurm` (`--ntasks=1`) and `local`"),
    Setting("galaxy_default_destination", GALAXY, "slurm", "the destination jobs go to"),
    Setting("galaxy_config_extra", GALAXY, {}, "more `galaxy.yml` settings"),
    Setting("shared_fs", GALAXY, "nfs",
            "`nfs`: the Galaxy host exports `galaxy_root` and compute hosts mount it; `existing`: already shared"),
    Setting("slurm_drmaa", GALAXY, {}, "where `libdrmaa.so.1` comes from (DRMAA runner): see below", "build 1.1.6 from source"),
    # Per host.
    Setting("cluster_address", HOST, None, "the address other cluster hosts reach this one on (for `/etc/hosts`)",
            "the SSH address"),
    Setting("slurm_node", HOST, {}, "node overrides: `cpus`, `sockets`, `cores_per_socket`, `threads_per_core`, "
            "`real_memory` (MB), each at most what the host has; `gres`: its GPUs and other generic resources, "
            "a list of `{name, count, type, file}` (e.g. `{\"name\": \"gpu\", \"type\": \"a100\", \"count\": 2, "
            "\"file\": \"/dev/nvidia[0-1]\"}`)", "detected"),
)

# slurm_drmaa's own keys (a mapping setting of the Galaxy host).
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

BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}


def defaults(scope: str) -> dict[str, Any]:
    """name -> default of the settings of one scope."""
    return {s.name: s.default for s in SETTINGS if s.scope == scope}


def read(data: Mapping[str, Any], scope: str) -> dict[str, Any]:
    """The settings of one scope from an inventory host's data, defaults filled in."""
    return {name: data.get(name, default) for name, default in defaults(scope).items()}


@dataclass(frozen=True)
class DataSource:
    """One inventory host's data as the settings check sees it."""

    name: str
    data: Mapping[str, Any]
    connector_keys: frozenset[str] = frozenset()  # its connector's own keys (ssh_user, ...)


def settings_problems(hosts: Iterable[DataSource], controller: str | None, galaxy_host: str | None) -> list[str]:
    """Unknown keys (with the closest known name) and settings given where they are not read.

    `controller`/`galaxy_host`: the inventory names whose data cluster/Galaxy settings
    are read from (None: that scope is not read this run, so not checked).
    Keys starting with "_" are pyinfra's own arguments (e.g. `_sudo`); a host's
    connector keys (e.g. `ssh_port`) are its connector's.
    """
    hosts = list(hosts)
    readers = {CLUSTER: controller, GALAXY: galaxy_host}
    read_values = {scope: next((h.data for h in hosts if h.name == name), None) for scope, name in readers.items()}
    problems: list[str] = []
    for host in hosts:
        for key, value in host.data.items():
            if key.startswith("_") or key in host.connector_keys:
                continue
            setting = BY_NAME.get(key)
            if setting is None:
                problems.append(_unknown(host.name, key, host.connector_keys))
                continue
            reader = readers.get(setting.scope)
            values = read_values.get(setting.scope)
            if reader is None or values is None or host.name == reader:
                continue
            if key not in values or values[key] != value:
                problems.append(
                    f"host {host.name}: {key} is a {setting.scope} setting, read from {reader}'s data only, so "
                    f"{value!r} here is ignored; set it in {SCOPE_SOURCES[setting.scope].split(' (')[0]} "
                    f"(or a group {reader} is in)"
                )
    return problems


def _unknown(host: str, key: str, connector_keys: frozenset[str]) -> str:
    close = difflib.get_close_matches(key, [*BY_NAME, *connector_keys], n=1, cutoff=0.75)
    hint = f"did you mean {close[0]}?" if close else "see the README's settings table"
    return f"host {host}: unknown setting {key}; {hint}"


def markdown_table() -> str:
    """The README's settings table."""
    lines = ["| setting | scope | default | meaning |", "|---|---|---|---|"]
    for s in SETTINGS:
        default = s.shown_default or f"`{s.default!r}`"
        lines.append(f"| `{s.name}` | {s.scope} | {default} | {s.meaning} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table())
