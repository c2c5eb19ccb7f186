"""Slurm: packages by role, one slurm.conf on every host, daemons by role.

The controller takes a new configuration first: slurmctld restarts with it and
must answer `scontrol ping`, or the previous files come back and the run stops
there; only then do the other hosts get it. On every host the configuration is
in place before the daemon packages are installed, so their first start has it
(Debian 13's slurmd otherwise hangs 90 s and fails). Daemons restart only when
their configuration changed; a new node changes slurm.conf everywhere, so every
daemon learns of it.

Every host runs the same sequence of operations (role-specific ones are skipped
with `_if`): pyinfra orders operations across hosts by each host's sequence,
and this is what makes "controller first" hold.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import apt, files, systemd

from tasks.common import any_changed, render
from tasks.model import Cluster
from tasks.operations import config_file, restart_checked
from tasks.platform import PACKAGES_BY_ROLE


@dataclass(frozen=True)
class SlurmPaths:
    state_save: str = "/var/lib/slurm/slurmctld"  # controller only
    slurmd_spool: str = "/var/lib/slurm/slurmd"  # never the same as state_save
    log_dir: str = "/var/log/slurm"


PATHS = SlurmPaths()


class ControllerVerdict:
    """Whether slurmctld accepted this run's configuration. Set at execution by the
    controller's checked restart, read by the other hosts' later operations (each
    operation finishes on every host before the next one starts)."""

    rejected = False

    @classmethod
    def reject(cls) -> None:
        cls.rejected = True

    @classmethod
    def accepted(cls) -> bool:
        return not cls.rejected


def render_slurm_conf(cluster: Cluster) -> str:
    return render("slurm.conf.j2", cluster=cluster, paths=PATHS)


def render_cgroup_conf(cluster: Cluster) -> str | None:
    return render("cgroup.conf.j2", cluster=cluster) if cluster.cgroup_conf else None


def packages_for(roles: frozenset[str]) -> list[str]:
    return sorted({package for role in roles for package in PACKAGES_BY_ROLE[role]})


@deploy("Slurm")
def install_slurm(cluster: Cluster) -> None:
    me = cluster.host(host.name)
    is_controller = "controller" in me.roles
    is_compute = "compute" in me.roles
    config_dir = me.platform.config_dir
    configs = [f"{config_dir}/slurm.conf", f"{config_dir}/cgroup.conf"]

    def on_controller() -> bool:
        return is_controller

    def follows_controller() -> bool:
        return not is_controller and ControllerVerdict.accepted()

    files.directory(name="Slurm configuration directory", path=config_dir, user="root", group="root", mode="0755")

    # 1. The controller: configuration, packages, slurmctld (checked, rolled back on failure).
    controller_changes = _configuration(cluster, config_dir, "on the controller first", on_controller)
    apt.packages(name="Install the controller's Slurm packages", packages=packages_for(frozenset({"controller"})),
                 no_recommends=True, _if=on_controller)
    _owned_dir("Slurm log directory", PATHS.log_dir, _if=on_controller)
    _owned_dir("slurmctld state directory", PATHS.state_save, _if=on_controller)
    systemd.service(name="slurmctld enabled and running", service="slurmctld", running=True, enabled=True, _if=on_controller)
    _checked_restart(
        "slurmctld",
        healthy="systemctl is-active --quiet slurmctld && scontrol ping | grep -q 'is UP'",
        configs=configs,
        on_rollback=ControllerVerdict.reject,
        _if=lambda: is_controller and controller_changes(),
    )

    # 2. Every other host, once slurmctld accepted the configuration.
    other_changes = _configuration(cluster, config_dir, "on the other hosts once slurmctld accepted it", follows_controller)
    apt.packages(name="Install the Slurm packages of this host's roles", packages=packages_for(me.roles),
                 no_recommends=True, _if=lambda: is_controller or ControllerVerdict.accepted())
    _owned_dir("Slurm log directory", PATHS.log_dir, _if=lambda: is_compute and follows_controller())
    _owned_dir("slurmd spool directory", PATHS.slurmd_spool, _if=lambda: is_compute)
    systemd.service(name="slurmd enabled and running", service="slurmd", running=True, enabled=True,
                    _if=lambda: is_compute and (is_controller or ControllerVerdict.accepted()))
    _checked_restart(
        "slurmd",
        healthy="systemctl is-active --quiet slurmd",
        configs=configs,
        _if=lambda: is_compute and (controller_changes() or other_changes()),
    )


def _configuration(cluster: Cluster, config_dir: str, when: str, condition):
    """slurm.conf and cgroup.conf (or none) for this host; returns a 'did it change' test."""
    slurm_conf = config_file(
        name=f"slurm.conf (identical on every host) {when}",
        content=render_slurm_conf(cluster),
        dest=f"{config_dir}/slurm.conf",
        _if=condition,
    )
    cgroup_text = render_cgroup_conf(cluster)
    cgroup_conf = (
        config_file(name=f"cgroup.conf {when}", content=cgroup_text, dest=f"{config_dir}/cgroup.conf", _if=condition)
        if cgroup_text
        else files.file(name=f"No cgroup.conf (cgroup plugins unused) {when}", path=f"{config_dir}/cgroup.conf",
                        present=False, _if=condition)
    )
    return any_changed(slurm_conf, cgroup_conf)


def _checked_restart(daemon: str, healthy: str, configs: list[str], _if, on_rollback=None) -> None:
    restart_checked(
        name=f"Restart {daemon} for its changed configuration (rolled back if it does not come back)",
        restart=f"systemctl restart {daemon}",
        healthy=healthy,
        configs=configs,
        log=f"{PATHS.log_dir}/{daemon}.log",
        what=daemon,
        unit=daemon,
        on_rollback=on_rollback,
        _if=_if,
    )


def _owned_dir(name: str, path: str, _if) -> None:
    files.directory(name=name, path=path, user="slurm", group="slurm", mode="0755", _if=_if)
