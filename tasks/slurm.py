"""Slurm: packages by role, one slurm.conf on every host, daemons by role.

A changed configuration reaches a running cluster controller first, and is rolled
back everywhere when a daemon rejects it: tasks.slurm_rollout holds that protocol;
this layer runs its operations in order.

No daemon starts without its configuration: on a first install the packages
came in the stack's one apt run with their starts held (tasks.packages);
otherwise the files are in place before the daemon packages are installed, so
their first start has them (Debian 13's slurmd otherwise hangs 90 s and fails).
A daemon that started after its files were written is checked, not restarted
(`started_after`). On a first install (`first_install`: no host has Slurm, so no
daemon runs and nothing can be disturbed) every host takes its files with the
controller, and every daemon is started and checked in the same operation as
slurmctld, without the settling time that guards a rollback (there is nothing
to roll back to; the verification follows); a rejected first configuration
fails the run as before.

Gating per role: every host runs the same sequence of operations, and the ones
that are not for its roles are skipped with `_if`. pyinfra orders operations
across hosts by each host's sequence, and this is what makes "controller first"
hold: an operation that only some hosts ran would shift the others' order.
"""

from __future__ import annotations

import shlex

from pyinfra import host
from pyinfra.api import deploy, operation
from pyinfra.operations import apt, files, systemd

from tasks.common import project_file, render
from tasks.model import Cluster
from tasks.operations import config_absent, config_file, restart_checked
from tasks.packages import first_install, packages_at_once, packages_for
from tasks.platform import ACCOUNTING_STORAGE_TYPE, CGROUP_CONF, GRES_CONF, HEALTH_CHECK_CONF, HEALTH_CHECK_PROGRAM, HEALTH_CHECK_REASON, PATHS
from tasks.slurm_rollout import (
    APPLIED_MARK, SLURMCTLD_UP, Rollout, Written, controller_apply, decide_how_to_apply, oldest_platform,
    reconfigure_checked, rejected_change_report, resume_nodes_drained_by_rollout, roll_back_slurm_config,
    slurmd_restart_arguments,
)
from tasks.slurm_status import STOPPED_STATES, base_state, node_states

SLURMD_DROP_IN = "/etc/systemd/system/slurmd.service.d/pgs-killmode.conf"
SLURMD_MOUNTS_DROP_IN = "/etc/systemd/system/slurmd.service.d/pgs-shared-fs.conf"
SLURMD_MOUNTS_TEXT = ("# Managed by pyinfra-galaxy-slurm: slurmd starts once Galaxy's shared directory is mounted.\n"
                      "[Unit]\nRequiresMountsFor={path}\n")


def render_slurm_conf(cluster: Cluster) -> str:
    return render("slurm.conf.j2", cluster=cluster, paths=PATHS, accounting_storage_type=ACCOUNTING_STORAGE_TYPE,
                  health_check_program=HEALTH_CHECK_PROGRAM)


def render_health_check_conf(cluster: Cluster) -> str:
    marker, text = cluster.shared_marker
    return ("# What pgs-node-health checks on this node (pyinfra-galaxy-slurm; overwritten by the deploy).\n"
            f"SHARED_DIR={shlex.quote(cluster.galaxy.root)}\nVENV={shlex.quote(cluster.galaxy.venv)}\n"
            f"VENV_PYTHON={shlex.quote(cluster.galaxy.python)}\n"
            f"MARKER={shlex.quote(marker)}\n"
            f"MARKER_TEXT={shlex.quote(text)}\nREASON_PREFIX={shlex.quote(HEALTH_CHECK_REASON)}\n")


def render_cgroup_conf(cluster: Cluster) -> str | None:
    return render("cgroup.conf.j2", cluster=cluster) if cluster.cgroup_conf else None


def render_gres_conf(cluster: Cluster) -> str | None:
    return render("gres.conf.j2", cluster=cluster) if cluster.gres_types else None


@deploy("Slurm")
def install_slurm(cluster: Cluster) -> None:
    me = cluster.host(host.name)
    is_controller = "controller" in me.roles
    is_compute = "compute" in me.roles
    config_dir = me.platform.config_dir
    written = Written([f"{config_dir}/slurm.conf", f"{config_dir}/cgroup.conf", f"{config_dir}/gres.conf"])
    # A first install: every host in the controller's wave, its slurmd checked beside slurmctld.
    fresh = first_install(cluster)
    installed = packages_at_once(cluster)  # the stack's packages came in one apt run (tasks.packages)
    # Settling guards the rollback to the previous configuration; a first install has none, and
    # the Slurm verification (nodes healthy, a job) follows at once.
    settle = 0 if fresh else 3
    in_first_wave = is_controller or fresh
    slurmd_with_controller = fresh and is_compute and not is_controller

    def first_wave() -> bool:
        return in_first_wave

    def follows_controller() -> bool:
        return not in_first_wave and Rollout.accepted()

    def controller_changed() -> bool:
        return bool(Rollout.controller_changed)

    files.directory(name="Slurm configuration directory", path=config_dir, user="root", group="root", mode="0755")
    # The health check slurm.conf names is on every compute host before any slurm.conf names it.
    health_check = bool(cluster.health_check_interval)
    files.put(name=f"Node health check {HEALTH_CHECK_PROGRAM} (drains a node whose Galaxy shared directory is gone)",
              src=project_file("pgs-node-health"), dest=HEALTH_CHECK_PROGRAM, user="root", group="root", mode="0755",
              _if=lambda: is_compute and health_check)
    if health_check:
        config_file(name=f"What the node health check checks ({HEALTH_CHECK_CONF})",
                    content=render_health_check_conf(cluster), dest=HEALTH_CHECK_CONF, mode="0600",
                    _if=lambda: is_compute)

    # 1. The controller (every host on a first install): configuration, packages, slurmctld;
    # how to apply a change.
    _configuration(cluster, config_dir, "on the controller first", first_wave, written)
    apt.packages(name="Install the controller's Slurm packages (every host's on a first install)",
                 packages=packages_for(me.roles if fresh else frozenset({"controller"})),
                 no_recommends=True, _if=lambda: first_wave() and not installed)
    _owned_dir("Slurm log directory", PATHS.log_dir, _if=lambda: in_first_wave and (is_controller or is_compute))
    _owned_dir("slurmctld state directory", PATHS.state_save, _if=lambda: is_controller)
    systemd.service(name="slurmctld enabled and running", service="slurmctld", running=True, enabled=True,
                    _if=lambda: is_controller)
    decide_how_to_apply(
        name="Decide: scontrol reconfigure, or restarts (by what changed and the Slurm release)",
        platform=oldest_platform(cluster),
        new_conf=render_slurm_conf(cluster),
        slurm_conf=written.paths[0],
        # the controller's cgroup.conf and gres.conf
        files_changed=lambda: [key for key, meta in ((CGROUP_CONF, written.metas[1]), (GRES_CONF, written.metas[2]))
                               if meta.did_change()],
        _if=lambda: is_controller and written.changed(),
    )
    # slurmctld takes it first (a restart, or `scontrol reconfigure` while the other hosts
    # still have the old files), or it is rolled back there and the run stops. On a first
    # install every slurmd is checked in the same operation (a failure recorded for the rollback).
    restart_checked(
        **(dict(name="slurmctld takes the new configuration first (restart or scontrol reconfigure; rolled back if it does not)",
                restart=lambda: controller_apply(Rollout.method, written.paths, Rollout.joins_accounting),
                healthy=f"test -e {APPLIED_MARK} && {SLURMCTLD_UP}",
                broken=f"! test -e {APPLIED_MARK} || systemctl is-failed --quiet slurmctld",
                configs=written.paths,
                log=f"{PATHS.log_dir}/slurmctld.log",
                what="slurmctld",
                unit="slurmctld",
                settle=settle,
                on_rollback=Rollout.reject_controller)
           if is_controller else dict(name="slurmd took its first configuration, beside slurmctld (checked; recorded for the rollback)",
                                      **slurmd_restart_arguments(written.paths), settle=settle)),
        _if=lambda: (is_controller or slurmd_with_controller) and written.changed(),
    )

    # 2. Every other host, once slurmctld accepted the configuration.
    _configuration(cluster, config_dir, "on the other hosts once slurmctld accepted it", follows_controller, written)
    # Reconfigure path: one more `scontrol reconfigure` now that every host has the files.
    reconfigure_checked(
        name="scontrol reconfigure, checked: slurmctld and every running slurmd took the new configuration",
        cluster=cluster,
        platform=oldest_platform(cluster),
        _if=lambda: controller_changed() and is_controller and Rollout.method == "reconfigure",
    )
    apt.packages(name="Install the Slurm packages of this host's roles", packages=packages_for(me.roles),
                 no_recommends=True, _if=lambda: not fresh and (is_controller or Rollout.accepted()))
    _owned_dir("Slurm log directory", PATHS.log_dir, _if=lambda: is_compute and follows_controller())
    _owned_dir("slurmd spool directory", PATHS.slurmd_spool, _if=lambda: is_compute)
    kill_mode = files.put(name="slurmd restarts never kill running jobs (systemd drop-in: KillMode=process)",
                          src=project_file("slurmd-killmode.conf"), dest=SLURMD_DROP_IN, _if=lambda: is_compute)
    # At boot slurmd starts only once Galaxy's shared directory is mounted: a node whose network
    # mount failed stays out of the cluster instead of registering idle and failing Galaxy's jobs.
    # (Ordering only: it takes effect at slurmd's next start, and a re-run restarts nothing for it.)
    shared_root = cluster.galaxy.root if cluster.galaxy else None
    mounts = (config_file(name=f"slurmd starts once {shared_root} is mounted (systemd drop-in: RequiresMountsFor)",
                          content=SLURMD_MOUNTS_TEXT.format(path=shared_root), dest=SLURMD_MOUNTS_DROP_IN,
                          _if=lambda: is_compute)
              if shared_root else
              config_absent(name="No shared-directory ordering for slurmd (no Galaxy)", path=SLURMD_MOUNTS_DROP_IN,
                            _if=lambda: is_compute))
    systemd.daemon_reload(name="Reload systemd for the slurmd drop-ins",
                          _if=lambda: kill_mode.did_change() or mounts.did_change())
    systemd.service(name="slurmd enabled and running", service="slurmd", running=True, enabled=True,
                    _if=lambda: is_compute and (is_controller or Rollout.accepted()))
    # Restart path (or this host's own stale files): every slurmd, a failure recorded for the rollback.
    restart_checked(
        name="Restart slurmd for its changed configuration (checked; rolled back if it does not come back)",
        **slurmd_restart_arguments(written.paths),
        _if=lambda: is_compute and not slurmd_with_controller and written.changed() and not Rollout.rolling_back()
        and (Rollout.method == "restart" or not controller_changed()),
    )

    resume_nodes_drained_by_rollout(
        name="Resume nodes drained for a GRES count while the change reached them (this run's drains only)",
        node_names=cluster.reachable_nodes,
        _if=lambda: is_controller and controller_changed() and not Rollout.rolling_back(),
    )

    # 3. A rejected change: back to the previous files on every host, then fail saying so.
    roll_back_slurm_config(
        name="Roll back this run's Slurm configuration on every host (a daemon rejected it)",
        written=written,
        daemons=[d for d, role in (("slurmctld", "controller"), ("slurmd", "compute")) if role in me.roles],
        _if=Rollout.rolling_back,
    )
    rejected_change_report(name="Report the rejected Slurm configuration change", written=written,
                           _if=lambda: is_controller and Rollout.rolling_back())
    resume_stopped_nodes(name="Resume DOWN or DRAINED nodes (slurm_resume_nodes)", node_names=cluster.reachable_nodes,
                         _if=lambda: is_controller and cluster.resume_nodes)
    if not health_check:
        # Turned off (slurm_health_check_interval = 0): gone once slurm.conf no longer names it.
        for path in (HEALTH_CHECK_PROGRAM, HEALTH_CHECK_CONF):
            files.file(name=f"No node health check: {path} removed", path=path, present=False,
                       _if=lambda: is_compute and not Rollout.rolling_back())


@operation(is_idempotent=True)
def resume_stopped_nodes(node_names: list[str]):
    """Resume the nodes among `node_names` that are DOWN or DRAINED (on request only)."""
    if not host.state.is_executing:
        return
    for name, state in node_states().items():
        if name in node_names and base_state(state) in STOPPED_STATES:
            yield f"scontrol update nodename={name} state=resume"


def _configuration(cluster: Cluster, config_dir: str, when: str, condition, written: Written) -> None:
    """slurm.conf, cgroup.conf and gres.conf (or none) for this host, added to `written`."""
    slurm_conf = config_file(
        name=f"slurm.conf (identical on every host) {when}",
        content=render_slurm_conf(cluster),
        dest=f"{config_dir}/slurm.conf",
        _if=condition,
    )
    cgroup_conf = _file_or_none(f"{config_dir}/cgroup.conf", render_cgroup_conf(cluster), "cgroup plugins unused",
                                when, condition)
    gres_conf = _file_or_none(f"{config_dir}/gres.conf", render_gres_conf(cluster), "no node has GRES", when, condition)
    written.metas.extend([slurm_conf, cgroup_conf, gres_conf])


def _file_or_none(path: str, text: str | None, why_none: str, when: str, condition):
    """The file with `text`, or none at `path` (backed up first) when there is nothing to say."""
    name = path.rsplit("/", 1)[1]
    if text:
        return config_file(name=f"{name} {when}", content=text, dest=path, _if=condition)
    return config_absent(name=f"No {name} ({why_none}) {when}", path=path, _if=condition)


def _owned_dir(name: str, path: str, _if) -> None:
    files.directory(name=name, path=path, user="slurm", group="slurm", mode="0755", _if=_if)
