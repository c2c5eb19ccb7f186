"""Slurm: packages by role, one slurm.conf on every host, daemons by role.

slurm.conf goes in place before the daemon packages are installed, so their
first start already has a configuration (Debian 13's slurmd otherwise hangs 90 s
and fails). Daemons restart only when their configuration changed; a new node
changes slurm.conf everywhere, so every daemon learns of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from io import StringIO

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import apt, files, systemd

from tasks.common import any_changed, render
from tasks.model import Cluster
from tasks.platform import PACKAGES_BY_ROLE


@dataclass(frozen=True)
class SlurmPaths:
    state_save: str = "/var/lib/slurm/slurmctld"  # controller only
    slurmd_spool: str = "/var/lib/slurm/slurmd"  # never the same as state_save
    log_dir: str = "/var/log/slurm"


PATHS = SlurmPaths()


def render_slurm_conf(cluster: Cluster) -> str:
    return render("slurm.conf.j2", cluster=cluster, paths=PATHS)


def render_cgroup_conf(cluster: Cluster) -> str | None:
    return render("cgroup.conf.j2", cluster=cluster) if cluster.cgroup_conf else None


def packages_for(roles: frozenset[str]) -> list[str]:
    return sorted({package for role in roles for package in PACKAGES_BY_ROLE[role]})


@deploy("Slurm")
def install_slurm(cluster: Cluster) -> None:
    me = cluster.host(host.name)
    config_dir = me.platform.config_dir
    files.directory(name="Slurm configuration directory", path=config_dir, user="root", group="root", mode="0755")
    slurm_conf = files.put(
        name="slurm.conf (identical on every host)",
        src=StringIO(render_slurm_conf(cluster)),
        dest=f"{config_dir}/slurm.conf",
        user="root",
        group="root",
        mode="0644",
    )
    cgroup_text = render_cgroup_conf(cluster)
    cgroup_conf = (
        files.put(name="cgroup.conf", src=StringIO(cgroup_text), dest=f"{config_dir}/cgroup.conf", mode="0644")
        if cgroup_text
        else files.file(name="No cgroup.conf (cgroup plugins unused)", path=f"{config_dir}/cgroup.conf", present=False)
    )
    apt.packages(
        name="Install the Slurm packages of this host's roles",
        packages=packages_for(me.roles),
        no_recommends=True,
    )
    files.directory(name="Slurm log directory", path=PATHS.log_dir, user="slurm", group="slurm", mode="0755")
    config_changed = any_changed(slurm_conf, cgroup_conf)
    if "controller" in me.roles:
        _daemon("slurmctld", PATHS.state_save, config_changed)
    if "compute" in me.roles:
        _daemon("slurmd", PATHS.slurmd_spool, config_changed)


def _daemon(service: str, state_dir: str, config_changed) -> None:
    files.directory(name=f"{service} state directory", path=state_dir, user="slurm", group="slurm", mode="0755")
    systemd.service(name=f"{service} enabled and running", service=service, running=True, enabled=True)
    systemd.service(
        name=f"Restart {service} for its changed configuration",
        service=service,
        restarted=True,
        _if=config_changed,
    )
