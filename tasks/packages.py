"""A first install's packages: one apt run per host, every host at once.

On a first install (`first_install`: no host has Slurm yet and every host answered)
no daemon runs that an order of installs could protect. Every host then installs
all the Debian packages the layers install on it (MUNGE, accounting and Slurm by
its roles; on the Galaxy host also slurm-drmaa's build tools, PostgreSQL and
nginx) in one apt run (one dependency resolution, one round of dpkg triggers,
instead of one per layer), all hosts at the same time, as an admin would type it.

Debian's packages start their daemons as dpkg configures them: before this deploy
has written their configuration, and in an order accounting forbids (a slurmctld
started before slurmdbd answers makes a ClusterID of its own and then refuses
slurmdbd's: "CLUSTER ID MISMATCH"). So during that apt run a policy-rc.d (Debian's
own way to keep maintainer scripts from starting services, policy-rc.d(8) /
invoke-rc.d(8), honoured by deb-systemd-invoke) refuses the starts of munged,
slurmctld, slurmd and slurmdbd only; the packages still enable them. The policy is
written and removed in the same command as apt, whatever apt's outcome; one left
behind by an interrupted run (it carries POLICY_MARKER) is removed by the next run.
Each layer then configures and starts its own daemon, checked, in the stack's order
(munged, slurmdbd, slurmctld, every slurmd). MariaDB is not held: it needs nothing
from this deploy to start.

A host that already has a policy-rc.d of its own keeps it untouched, and its layers
install their packages one layer at a time, as on a cluster that has Slurm.
"""

from __future__ import annotations

import shlex

from pyinfra import host
from pyinfra.api import StringCommand, deploy, operation
from pyinfra.operations import apt, files

from tasks.facts import HostProfile
from tasks.model import Cluster
from tasks.platform import (
    PACKAGES_ALL,
    PACKAGES_BY_ROLE,
    PACKAGES_DATABASE,
    PACKAGES_DBD,
    PACKAGES_DRMAA_BUILD,
    PACKAGES_GALAXY,
    PACKAGES_POSTGRESQL,
    PACKAGES_WEB,
    POLICY_MARKER,
    POLICY_RC_D,
)

# The daemons whose first start waits for their layer (their configuration, and slurmdbd before slurmctld).
HELD_DAEMONS = ("munge", "slurmdbd", "slurmctld", "slurmd")


def packages_for(roles: frozenset[str]) -> list[str]:
    """The Slurm packages of a host's Slurm roles ("controller", "compute", "galaxy")."""
    return sorted({package for role in roles for package in PACKAGES_BY_ROLE[role]})


def first_install(cluster: Cluster) -> bool:
    """No host has Slurm yet and every host answered: no daemon runs anywhere, so the
    controller-first order (which keeps a bad slurm.conf from running daemons) guards
    nothing, and every host can take its files and packages at once."""
    return all(h.reachable and not h.platform.slurm_installed for h in cluster.hosts)


def _policy_rc_d() -> str:
    """This host's policy-rc.d: "" (none), "ours" (left by an interrupted run) or "other" (the admin's)
    (from the host's profile, read once before any change)."""
    return host.get_fact(HostProfile).policy_rc_d


def packages_at_once(cluster: Cluster) -> bool:
    """This host installs its whole Slurm stack in one apt run (see the module's docstring)."""
    return first_install(cluster) and _policy_rc_d() != "other"


def stack_packages(cluster: Cluster, host_name: str) -> list[str]:
    """Every Debian package the layers install on `host_name` (NFS's aside: its layer runs before this)."""
    me = cluster.host(host_name)
    packages = {*PACKAGES_ALL, *packages_for(me.roles)}
    accounting = cluster.accounting
    if accounting is not None and accounting.dbd_host.inventory_name == host_name:
        packages.update(PACKAGES_DBD)
        if accounting.local_database:
            packages.update(PACKAGES_DATABASE)
    galaxy = cluster.galaxy
    if galaxy is not None and galaxy.host.inventory_name == host_name:
        packages.update(PACKAGES_GALAXY)
        packages.update(PACKAGES_WEB)
        if galaxy.database.local_postgresql:
            packages.update(PACKAGES_POSTGRESQL)
        if galaxy.drmaa is not None and galaxy.drmaa.method == "source":
            packages.update(PACKAGES_DRMAA_BUILD)
        elif galaxy.drmaa is not None and galaxy.drmaa.method == "package":
            packages.add(galaxy.drmaa.package)
    return sorted(packages)


def _hold_policy(daemons: tuple[str, ...]) -> str:
    """policy-rc.d(8): exit 101 refuses the action, 104 allows it; deb-systemd-invoke passes
    the unit name (slurmd.service), invoke-rc.d the script name (slurmd)."""
    return "\n".join([
        "#!/bin/sh",
        f"# {POLICY_MARKER}: these daemons start once this deploy has configured them. Removed after apt.",
        f'case "${{1%.service}}" in {"|".join(daemons)}) exit 101;; esac',
        "exit 104",
        "",
    ])


@operation()
def packages_with_starts_held(packages: list[str], daemons: tuple[str, ...]):
    """apt-get install `packages` (no Recommends) with the starts of `daemons` refused by a
    policy-rc.d that exists only for that command: removed whatever apt's outcome, and the
    command fails as apt did."""
    installs = [str(command) for command in apt.packages._inner(packages=packages, no_recommends=True)]
    if not installs:
        return
    policy = shlex.quote(POLICY_RC_D)
    yield StringCommand(
        f"printf '%s' {shlex.quote(_hold_policy(daemons))} > {policy} && chmod 0755 {policy} && "
        f"{{ {' && '.join(installs)}; status=$?; rm -f {policy}; exit $status; }}"
    )


@deploy("Packages (a first install: one apt run per host)")
def install_stack_packages(cluster: Cluster) -> None:
    if _policy_rc_d() == "ours":
        files.file(name=f"Remove {POLICY_RC_D} left by an interrupted first install", path=POLICY_RC_D, present=False)
    if packages_at_once(cluster):
        packages_with_starts_held(
            name=f"Install every package of this host's layers in one apt run ({', '.join(HELD_DAEMONS)}: "
                 "started by their layers once configured)",
            packages=stack_packages(cluster, host.name),
            daemons=HELD_DAEMONS,
        )
