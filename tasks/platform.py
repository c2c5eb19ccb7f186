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
    def slurm_index(self) -> int:
        return release_index(self.slurm)

    @property
    def config_dir(self) -> str:
        # Debian moved /etc/slurm-llnl to /etc/slurm with Slurm 20.11.
        return "/etc/slurm" if self.slurm_index >= release_index("20.11") else "/etc/slurm-llnl"

    @property
    def has_cons_res(self) -> bool:
        return self.slurm_index < release_index("23.11")

    @property
    def has_cgroup_plugin_disabled(self) -> bool:
        return self.slurm_index >= release_index("24.11")

    @property
    def max_versions_behind(self) -> int:
        """How many releases older than slurmctld a slurmd or client may be."""
        return 3 if self.slurm_index >= release_index("24.11") else 2


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


# Packages a host needs, by role. Recommends are not installed: on Debian they pull
# in every optional Slurm plugin (hdf5, rsmi, mysql, ...) that a role does not use.
PACKAGES_ALL = ("munge",)
PACKAGES_BY_ROLE = {
    "controller": ("slurmctld", "slurm-client"),
    "compute": ("slurmd", "slurm-client"),
    # Galaxy's job runners submit with sbatch/scontrol (CLI) or libslurm (DRMAA).
    "galaxy": ("slurm-client",),
}


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
