"""Everything that differs between Debian releases and Slurm versions, in one place.

Tasks never test a release or version themselves: they read the `Platform` of a
host (what that host runs) or the cluster-wide choices made here from all hosts.
"""

from __future__ import annotations

from dataclasses import dataclass

# Slurm releases in order: compatibility between daemons counts steps in this list.
SLURM_RELEASES = ("20.11", "21.08", "22.05", "23.02", "23.11", "24.05", "24.11", "25.05", "25.11", "26.05")

# The Slurm a Debian release ships, used to plan a host that has no Slurm yet.
SLURM_BY_CODENAME = {"bullseye": "20.11", "bookworm": "22.05", "trixie": "24.11"}
# The PostgreSQL major version that Debian's `postgresql` package brings.
POSTGRESQL_BY_CODENAME = {"bookworm": "15", "trixie": "17"}
# The python3 a Debian release ships: Galaxy's venv is made by it.
PYTHON_BY_CODENAME = {"bookworm": "3.11", "trixie": "3.13"}


@dataclass(frozen=True)
class SlurmPaths:
    """Where Slurm keeps its state and logs on every Debian release (slurm.conf's directory is
    `Platform.config_dir`)."""

    state_save: str = "/var/lib/slurm/slurmctld"  # controller only
    slurmd_spool: str = "/var/lib/slurm/slurmd"  # never the same as state_save
    log_dir: str = "/var/log/slurm"


PATHS = SlurmPaths()


def slurm_release(version: str) -> str:
    """'22.05.8-4+deb12u3' -> '22.05'."""
    return ".".join(version.split(".")[:2])


def release_index(release: str) -> int:
    if release not in SLURM_RELEASES:
        raise ValueError(f"unknown Slurm release {release}")
    return SLURM_RELEASES.index(release)


@dataclass(frozen=True)
class Platform:
    """What one host runs, and what follows from it for the deploy."""

    codename: str
    slurm: str  # Slurm release, e.g. "22.05"
    slurm_installed: bool

    @property
    def postgresql(self) -> str:
        """The PostgreSQL major version Debian's `postgresql` package brings on this release."""
        return POSTGRESQL_BY_CODENAME.get(self.codename, "")

    @property
    def postgresql_conf_dir(self) -> str:
        """Debian's main cluster reads this directory after postgresql.conf (include_dir = 'conf.d')."""
        return f"/etc/postgresql/{self.postgresql}/main/conf.d"

    @property
    def slurm_index(self) -> int:
        return release_index(self.slurm)

    @property
    def config_dir(self) -> str:
        # Debian moved /etc/slurm-llnl to /etc/slurm with Slurm 20.11.
        return "/etc/slurm" if self.slurm_index >= release_index("20.11") else "/etc/slurm-llnl"

    @property
    def slurmd_leaves_out_efficiency_cores(self) -> bool:
        """From 23.11 slurmd describes an Intel hybrid CPU by its performance cores only
        (xcpuinfo.c `_remove_ecores`; SlurmdParameters=allow_ecores keeps the others)."""
        return self.slurm_index >= release_index("23.11")

    @property
    def has_cons_res(self) -> bool:
        return self.slurm_index < release_index("23.11")

    @property
    def has_cgroup_plugin_disabled(self) -> bool:
        return self.slurm_index >= release_index("24.11")

    @property
    def slurmdbd_pid_file(self) -> str | None:
        """slurmdbd.conf PidFile. Debian 13's slurmdbd.service (24.11) runs as User=slurm with
        RuntimeDirectory=slurmdbd: the default /run/slurmdbd.pid is not writable there. Before
        (Debian 12, 22.05) it starts as root and the unit expects the default (None)."""
        return "/run/slurmdbd/slurmdbd.pid" if self.slurm_index >= release_index("24.11") else None

    @property
    def max_versions_behind(self) -> int:
        """How many releases older than slurmctld a slurmd or client may be."""
        return 3 if self.slurm_index >= release_index("24.11") else 2

    @property
    def reconfigure_reexecs(self) -> bool:
        """From 23.11 `scontrol reconfigure` starts new slurmctld/slurmd processes with the
        new files and hands over only when they start; a daemon that rejects them keeps
        running the old ones (logs "Resuming operation, reconfigure failed", keeps its
        SlurmdStartTime). Before, it re-reads the files in place (scontrol(1))."""
        return self.slurm_index >= release_index("23.11")

    def how_to_apply(self, changed: frozenset[str]) -> tuple[str, list[str]]:
        """("reconfigure" | "restart", why) for a slurm.conf/cgroup.conf change.

        `changed` holds the slurm.conf keys whose value changed, plus the pseudo keys
        of `NODES_ADDED_OR_REMOVED`, `NODE_ATTRIBUTES`, `PARTITIONS`, `CGROUP_CONF`.
        From 23.11 every change but `RESTART_KEYS` is taken by `scontrol reconfigure`
        (scontrol(1)), and a rejected file is seen: the old daemon keeps running.
        Before 23.11 reconfigure re-reads the files inside the running daemons and
        says nothing of what it could not apply (measured on 22.05: a bogus
        PriorityType was "reconfigured" with exit 0, and would have stopped slurmctld
        at its next start): every change restarts the daemons, checked one by one.
        """
        if not self.reconfigure_reexecs:
            return "restart", [f"Slurm {self.slurm} (reconfigure cannot show a rejected file before 23.11)"]
        why = sorted(key for key in changed if key in RESTART_KEYS)
        if why:
            return "restart", why
        return "reconfigure", sorted(changed)


# Pseudo keys for changes that are not one slurm.conf key (see Platform.how_to_apply).
NODES_ADDED_OR_REMOVED = "NodeName (nodes added or removed)"
NODE_ATTRIBUTES = "NodeName (a node's attributes)"
PARTITIONS = "PartitionName"
CGROUP_CONF = "cgroup.conf"
GRES_CONF = "gres.conf"

# What `scontrol reconfigure` cannot change on any release: the daemons' listening
# ports and authentication (scontrol(1) 24.11: "will not be able to change the daemons'
# listening TCP port settings or authentication mechanism"; slurm.conf(5) AuthType:
# "All Slurm daemons and commands must be terminated prior to changing the value").
RESTART_KEYS = frozenset({
    "AuthType", "AuthAltTypes", "AuthAltParameters", "AuthInfo", "CredType",
    "SlurmctldPort", "SlurmdPort", "SrunPortRange", "CommunicationParameters",
    "SlurmUser", "SlurmdUser",
    # slurmctld keeps the ClusterID of its state files across a reconfigure; a slurmdbd it meets
    # for the first time has given the cluster an id of its own, and slurmctld stops on the
    # mismatch (measured on 24.11: "fatal: CLUSTER ID MISMATCH ... Resuming operation, reconfigure
    # failed"). Turning accounting on restarts it, with its own id moved aside (tasks/slurm.py).
    "AccountingStorageType",
})


def platform_for(codename: str, slurm_installed_version: str | None) -> Platform:
    """The platform of a host from its release and the Slurm it has (if any)."""
    if slurm_installed_version:
        return Platform(codename, slurm_release(slurm_installed_version), True)
    if codename not in SLURM_BY_CODENAME:
        raise ValueError(
            f"release '{codename}' is not one this deploy knows "
            f"({', '.join(sorted(SLURM_BY_CODENAME))}); install Slurm on it first or use a known release"
        )
    return Platform(codename, SLURM_BY_CODENAME[codename], False)


# Files of the stack on the hosts that more than one layer names (the backups read them all).
MUNGE_KEY = "/etc/munge/munge.key"
PRIVATE_DIR = "/etc/pyinfra-galaxy-slurm"  # the deploy's own secrets and keys on a host, 0700 root
SUPERVISOR_CONF = "/etc/supervisor/conf.d/galaxy.conf"
NGINX_SITE = "/etc/nginx/sites-available/galaxy"
HEALTH_CHECK_PROGRAM = "/usr/local/sbin/pgs-node-health"  # slurm.conf HealthCheckProgram (files/pgs-node-health)
# How the health check's drain reasons begin: it resumes only the nodes it drained itself.
HEALTH_CHECK_REASON = "pgs-health:"
HEALTH_CHECK_CONF = f"{PRIVATE_DIR}/node-health.conf"  # what it checks on a node (0600 root)

# Packages a host needs, by role. Recommends are not installed: on Debian they pull
# in every optional Slurm plugin (hdf5, rsmi, mysql, ...) that a role does not use.
PACKAGES_ALL = ("munge",)
PACKAGES_BY_ROLE = {
    "controller": ("slurmctld", "slurm-client"),
    "compute": ("slurmd", "slurm-client"),
    # Galaxy's job runners submit with sbatch/scontrol (CLI) or libslurm (DRMAA).
    "galaxy": ("slurm-client",),
}
# Accounting: slurmdbd (it depends on slurm-wlm-mysql-plugin on bookworm and trixie) on its
# host, and Debian's MariaDB there unless an existing server is given.
PACKAGES_DBD = ("slurmdbd",)
PACKAGES_DATABASE = ("mariadb-server",)
DATABASE_SERVICE = "mariadb"
# The Galaxy host's: Galaxy's venv is made by the host's python3, its processes run under supervisor;
# slurm-drmaa built from its release needs a compiler and Slurm's headers; Galaxy's PostgreSQL (unless
# an existing server is given) and nginx in front come from Debian.
PACKAGES_GALAXY = ("python3-venv", "supervisor")
PACKAGES_DRMAA_BUILD = ("build-essential", "libslurm-dev")
PACKAGES_POSTGRESQL = ("postgresql",)
PACKAGES_WEB = ("nginx",)
# A first install's policy-rc.d (tasks.packages), and the line that tells it from an admin's (tasks.facts).
POLICY_RC_D = "/usr/sbin/policy-rc.d"
POLICY_MARKER = "pyinfra-galaxy-slurm: first install"
# slurmdbd.conf StorageType for MySQL/MariaDB (the only storage plugin since 15.08).
STORAGE_TYPE = "accounting_storage/mysql"
ACCOUNTING_STORAGE_TYPE = "accounting_storage/slurmdbd"


@dataclass(frozen=True)
class CgroupChoice:
    proctrack_type: str
    task_plugin: str
    cgroup_conf: dict[str, str] | None  # None: no cgroup.conf is needed


def choose_cgroup(all_hosts_have_writable_cgroups: bool, cgroup_v2: bool) -> CgroupChoice:
    """Process tracking and task plugins for the whole cluster (slurm.conf is shared).

    cgroup plugins need a writable cgroup hierarchy on every node; containers
    with read-only cgroups (this lab) get linuxproc, which works everywhere.
    """
    if all_hosts_have_writable_cgroups:
        conf = {"CgroupPlugin": "cgroup/v2" if cgroup_v2 else "autodetect", "ConstrainCores": "yes"}
        return CgroupChoice("proctrack/cgroup", "task/cgroup,task/affinity", conf)
    return CgroupChoice("proctrack/linuxproc", "task/affinity", None)


def jobacct_gather_type(proctrack_type: str) -> str:
    """JobAcctGatherType for the cluster's process tracking: jobacct_gather/cgroup goes with
    proctrack/cgroup (slurm.conf(5)); jobacct_gather/linux reads /proc and works everywhere,
    read-only cgroups (this lab's containers) included."""
    return "jobacct_gather/cgroup" if "cgroup" in proctrack_type else "jobacct_gather/linux"
