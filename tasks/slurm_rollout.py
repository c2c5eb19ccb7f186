"""How a changed Slurm configuration reaches a running cluster: controller first, rollback everywhere.

A changed configuration is applied the way that disturbs running jobs least
that the Slurm release allows (`Platform.how_to_apply`): one `scontrol
reconfigure`, or restarts of slurmctld and every slurmd (Debian's slurmd.service
has KillMode=process: job steps outlive a slurmd restart). Either way the
controller takes the files first: slurmctld restarts, or `scontrol reconfigure`
runs while the other hosts still have the old files (their slurmd re-read those),
and slurmctld must take them and answer `scontrol ping`, or the previous files
come back and the run stops there; only then do the other hosts get them. Then
every slurmd restarts, or one more `scontrol reconfigure` must reach every
running slurmd (a new SlurmdStartTime from 23.11 on).

A change that any daemon rejects (a slurmd that does not come back, a node that
keeps its old configuration after reconfigure) is rolled back on every host,
controller included: each host puts back this run's backups (or removes the
files this run made), restarts its daemon, and the run fails naming the hosts
that rejected it, with their daemon's log. A failed host would be dropped from
later operations, so the rejection is recorded (`Rollout`) and the hosts fail
only after the rollback.

The Slurm layer (tasks.slurm) calls these operations in one sequence on every
host; this module holds what they decide and record.
"""

from __future__ import annotations

import calendar
import re
import shlex
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from pyinfra import host
from pyinfra.api import StringCommand, operation
from pyinfra.api.operation import OperationMeta

from tasks.checks import report
from tasks.model import Cluster
from tasks.operations import backup_of, fail, restore_commands, run, wait_until
from tasks.platform import ACCOUNTING_STORAGE_TYPE, NODE_ATTRIBUTES, NODES_ADDED_OR_REMOVED, PARTITIONS, PATHS, Platform

SLURMCTLD_ANSWERS = "scontrol ping | grep -q 'is UP'"
SLURMCTLD_UP = f"systemctl is-active --quiet slurmctld && {SLURMCTLD_ANSWERS}"


class Rollout:
    """How this run applies a changed Slurm configuration, and who rejected it.

    One pyinfra run per process: every host's greenlet sees this class. It is filled at
    execution by the controller's and the nodes' operations and read by later operations
    on other hosts (each operation finishes on every host before the next one starts).
    """

    method = "restart"  # or "reconfigure"
    why: list[str] = []  # the changed settings that decided it
    changed: list[str] = []  # every changed setting
    controller_rejected = False  # slurmctld did not take it (restart path: rolled back there)
    rejected_by: dict[str, str] = {}  # inventory host -> its daemon's log lines
    restored: dict[str, str] = {}  # inventory host -> what its rollback did
    started_epoch = 0  # the controller's clock (seconds) when it decided how to apply the change
    controller_changed = False  # the controller's files changed this run
    joins_accounting = False  # this change turns accounting on: slurmctld takes slurmdbd's ClusterID

    @classmethod
    def reject_controller(cls) -> None:
        cls.controller_rejected = True

    @classmethod
    def reject(cls, host_name: str, log: str) -> None:
        cls.rejected_by[host_name] = log

    @classmethod
    def accepted(cls) -> bool:
        return not cls.controller_rejected

    @classmethod
    def rolling_back(cls) -> bool:
        return bool(cls.rejected_by)


def conf_sections(text: str) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """slurm.conf text -> (settings key -> value, node name -> NodeName line, partition -> line).
    Keys are compared as Slurm reads them: case-insensitive, comments and blanks dropped."""
    settings: dict[str, str] = {}
    nodes: dict[str, str] = {}
    partitions: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line or "=" not in line:
            continue
        key, _, value = line.partition("=")
        if key.lower() == "nodename":
            nodes[value.split()[0]] = line
        elif key.lower() == "partitionname":
            partitions[value.split()[0]] = line
        else:
            settings[key.strip()] = value.strip()
    return settings, nodes, partitions


def changed_settings(old: str, new: str, files_changed: Iterable[str] = ()) -> frozenset[str]:
    """What differs between two slurm.conf texts, as `Platform.how_to_apply` takes it, with the
    other files that changed (CGROUP_CONF, GRES_CONF)."""
    old_settings, old_nodes, old_parts = conf_sections(old)
    new_settings, new_nodes, new_parts = conf_sections(new)
    lower_old = {k.lower(): v for k, v in old_settings.items()}
    lower_new = {k.lower(): v for k, v in new_settings.items()}
    names = {k.lower(): k for k in (*old_settings, *new_settings)}
    changed = {names[k] for k in names if lower_old.get(k) != lower_new.get(k)}
    if set(old_nodes) != set(new_nodes):
        changed.add(NODES_ADDED_OR_REMOVED)
    if any(old_nodes[n] != new_nodes[n] for n in set(old_nodes) & set(new_nodes)):
        changed.add(NODE_ATTRIBUTES)
    if old_parts != new_parts:
        changed.add(PARTITIONS)
    changed.update(files_changed)
    return frozenset(changed)


def oldest_platform(cluster: Cluster) -> Platform:
    """The rules of the oldest Slurm in the cluster hold for a change to all of it."""
    return min((h.platform for h in cluster.hosts if h.reachable), key=lambda p: p.slurm_index)


@dataclass
class Written:
    """This host's configuration operations: slurm.conf, then cgroup.conf and gres.conf (or their
    removal), for each wave of `_configuration` (tasks/slurm.py)."""

    paths: list[str]
    metas: list[OperationMeta] = field(default_factory=list)

    def changed(self) -> bool:
        """Any of them changed so far (the later ones may not have run yet)."""
        return bool(self.changed_paths())

    def changed_paths(self) -> list[str]:
        return [path for path, meta in zip(self.paths * 2, self.metas) if meta.is_complete() and meta.did_change()]


def started_after(daemon: str, configs: list[str]) -> str:
    """A shell test: `daemon` is active and its process started after every one of
    `configs` was last written (whole seconds, strictly later), so it runs them:
    a restart would change nothing (a first install: the package started it)."""
    paths = " ".join(shlex.quote(p) for p in configs)
    return (f"systemctl is-active --quiet {daemon} && "
            f"started=$(date -d \"$(systemctl show -p ExecMainStartTimestamp --value {daemon})\" +%s) && "
            f"written=$(stat -c %Y {paths} 2>/dev/null | sort -n | tail -n 1) && [ \"$started\" -gt \"${{written:-0}}\" ]")


@operation(is_idempotent=False)
def decide_how_to_apply(platform: Platform, new_conf: str, slurm_conf: str, files_changed):
    """Set `Rollout.method` from the controller's previous slurm.conf (this run's backup)
    and the new one. No previous file: a first install, its daemons start with it."""
    if not host.state.is_executing:
        return
    Rollout.controller_changed = True
    Rollout.started_epoch = int(run("date +%s")[1].strip() or 0)
    has_old, old_conf = run(f"cat {shlex.quote(backup_of(slurm_conf))}")
    if not has_old and not files_changed():
        Rollout.method, Rollout.why = "restart", ["first configuration"]
    else:
        changed = changed_settings(old_conf if has_old else new_conf, new_conf, files_changed())
        Rollout.method, Rollout.why = platform.how_to_apply(changed)
        Rollout.changed = sorted(changed)
        Rollout.joins_accounting = "AccountingStorageType" in changed and f"={ACCOUNTING_STORAGE_TYPE}" in new_conf
    report(f"Slurm {platform.slurm}: {Rollout.method} for {', '.join(Rollout.why) or 'no setting'}"
           + (f" (changed: {', '.join(Rollout.changed)})" if Rollout.changed != Rollout.why else ""))
    yield from ()


# slurmctld's first step, by method. The mark says the daemon took the files: a 23.11+
# slurmctld that rejects them on reconfigure keeps running the old ones (`scontrol
# reconfigure` exits 1); one that died on them (before 23.11) is restarted, so that the
# rollback's second run of the same command brings it back on the old files.
APPLIED_MARK = "/run/slurmctld.pgs-applied"


CLUSTER_ID_FILE = f"{PATHS.state_save}/clustername"  # "ClusterName|ClusterID", made by slurmctld


def controller_apply(method: str, configs: list[str], joins_accounting: bool = False) -> str:
    """slurmctld's first step for `method` ("restart" | "reconfigure"); a restart is left
    out when slurmctld already started after `configs` were written (`started_after`).
    `joins_accounting`: the ClusterID a slurmctld without accounting made for itself is moved
    aside (kept as a backup) so that it takes slurmdbd's on this start: slurmctld's own advice
    in its CLUSTER ID MISMATCH message ("Remove .../clustername to override this safety check
    if this is intentional"); the check guards against two clusters sharing one
    StateSaveLocation, and here one cluster meets its accounting for the first time."""
    if method == "restart":
        adopt = f"mv -f {CLUSTER_ID_FILE} {backup_of(CLUSTER_ID_FILE)} 2>/dev/null; " if joins_accounting else ""
        return (f"rm -f {APPLIED_MARK}; {started_after('slurmctld', configs)} || "
                f"{{ {adopt}systemctl restart slurmctld; }}; touch {APPLIED_MARK}")
    return (f"rm -f {APPLIED_MARK}; if scontrol reconfigure; then touch {APPLIED_MARK}; "
            f"elif ! {SLURMCTLD_ANSWERS}; then systemctl restart slurmctld && touch {APPLIED_MARK}; fi")

# Node states in which slurmd is not answering slurmctld.
_NOT_RESPONDING = re.compile(r"\b(DOWN|NOT_RESPONDING|FUTURE|UNKNOWN)", re.IGNORECASE)


def _slurmd_start_times() -> dict[str, str]:
    """node -> SlurmdStartTime, for nodes whose slurmd answers slurmctld."""
    ok, out = run("scontrol show node --oneliner")
    times = {}
    for line in out.splitlines() if ok else []:
        name = re.search(r"NodeName=(\S+)", line)
        state = re.search(r"State=(\S+)", line)
        start = re.search(r"SlurmdStartTime=(\S+)", line)
        if name and state and start and not _NOT_RESPONDING.search(state.group(1)) and start.group(1) != "None":
            times[name.group(1)] = start.group(1)
    return times


RECONFIGURE_TIMEOUT = 30  # a re-exec takes under a second; a rejecting slurmd never changes
RUN_STARTED = time.monotonic()


@operation(is_idempotent=False)
def reconfigure_checked(cluster: Cluster, platform: Platform):
    """`scontrol reconfigure`, then wait until slurmctld answers and every slurmd that
    answered before has taken the new files (from 23.11 a new process, seen as a new
    SlurmdStartTime; before, it answers again). A node that does not is recorded in
    `Rollout.rejected_by`: the rollback after this puts the old files back everywhere.
    The command runs here, not as a yielded command, so that its failure is recorded
    rather than failing (and dropping) the controller before the rollback."""
    if not host.state.is_executing:
        yield StringCommand("scontrol reconfigure")
        return
    before = _slurmd_start_times()
    started = time.monotonic()
    since = run("date +%Y-%m-%dT%H:%M:%S")[1].strip()
    ok, out = run("scontrol reconfigure")
    yield StringCommand("true  # scontrol reconfigure ran above")
    if not ok:
        Rollout.reject(host.name, f"scontrol reconfigure: {out.strip()}\n" + daemon_logs(["slurmctld"]))
        return

    def pending() -> list[str]:
        now = _slurmd_start_times()
        if platform.reconfigure_reexecs:
            return [node for node, start in before.items() if now.get(node) in (None, start)]
        return [node for node in before if node not in now]

    def known_to_refuse() -> set[str]:
        """Nodes that registered again with another slurm.conf since the reconfigure: they
        kept the old one (slurmctld logs "Node X appears to have a different slurm.conf")."""
        lines = run(f"awk -v t='[{since}' '$1 >= t' {PATHS.log_dir}/slurmctld.log "
                    "| grep -o 'Node [^ ]* appears to have a different slurm.conf' || true")[1]
        return {line.split()[1] for line in lines.splitlines() if line.startswith("Node ")}

    wait_until(SLURMCTLD_ANSWERS, RECONFIGURE_TIMEOUT)
    while time.monotonic() - started < RECONFIGURE_TIMEOUT:
        waiting = set(pending())
        if not waiting or waiting <= known_to_refuse():
            break
        time.sleep(1)
    by_node = {h.node_name: h.inventory_name for h in cluster.hosts}
    for node in pending():
        Rollout.reject(by_node.get(node, node), "")  # its own log is read on that host by the rollback
    if not run(SLURMCTLD_ANSWERS)[0]:
        Rollout.reject(host.name, daemon_logs(["slurmctld"]))
    if not Rollout.rolling_back():
        report(f"scontrol reconfigure: slurmctld and {len(before)} slurmd took the new configuration "
                f"in {time.monotonic() - started:.1f} s")


@operation(is_idempotent=False)
def roll_back_slurm_config(written: Written, daemons: list[str]):
    """Put back this run's backups of slurm.conf/cgroup.conf/gres.conf (or remove the ones this
    run made), restart this host's daemons and wait until they are active."""
    if not host.state.is_executing:
        yield StringCommand("true  # roll back, decided at execution")
        return
    if host.name in Rollout.rejected_by and not Rollout.rejected_by[host.name]:
        Rollout.rejected_by[host.name] = daemon_logs(daemons)
    backed_up = [p for p in written.paths if run(f"test -e {shlex.quote(backup_of(p))}")[0]]
    created = [p for p in written.changed_paths() if p not in backed_up]
    commands = restore_commands(backed_up, created)
    if not commands:
        return  # this host's files did not change this run
    yield StringCommand(" && ".join(commands))
    for daemon in daemons:
        yield StringCommand(f"systemctl restart {daemon} || true")
    checks = {"slurmctld": SLURMCTLD_UP,
              "slurmd": "systemctl is-active --quiet slurmd"}
    states = [f"{d} {'active' if wait_until(checks[d], 60, 2, f'systemctl is-failed --quiet {d}') else 'STILL DOWN'}"
              for d in daemons]
    what = [f"restored {p}" for p in backed_up] + [f"removed {p} (new this run)" for p in created]
    Rollout.restored[host.name] = f"{', '.join(what)}; restarted: {', '.join(states) or 'no daemon'}"


def daemon_logs(daemons: list[str], lines: int = 12) -> str:
    """The error lines of each daemon's log file and journal since this run started
    (where it says why it refused a configuration), not its routine job messages.
    "Since" is counted back on the host's own clock, so clock skew does not matter."""
    pattern = "error|fatal|failed|invalid|unable"
    since = f"$(( $(date +%s) - {int(time.monotonic() - RUN_STARTED) + 5} ))"
    return "\n".join(run(
        f"since={since}; echo '--- {PATHS.log_dir}/{d}.log and journal of {d}: errors this run'; "
        f"{{ awk -v t=\"[$(date -d @$since +%Y-%m-%dT%H:%M:%S)\" '$1 >= t' {PATHS.log_dir}/{d}.log; "
        f"journalctl -u {d} --since @$since --no-pager -o cat; }} 2>/dev/null "
        f"| grep -i -E '{pattern}' | tail -n {lines}")[1].rstrip() for d in daemons)


@operation(is_idempotent=False)
def rejected_change_report(written: Written):
    """Fail the controller with the whole story: who rejected the change, their daemon's
    log, what each host put back. Only the controller fails, so the other hosts go on
    and pyinfra still writes its results."""
    if not host.state.is_executing:
        return
    rejected = ", ".join(sorted(Rollout.rejected_by))
    restored = "\n".join(f"  {name}: {what}" for name, what in sorted(Rollout.restored.items()))
    logs = "\n".join(f"--- {name} ---\n{log}" for name, log in sorted(Rollout.rejected_by.items()))
    message = (f"the new Slurm configuration was rejected by {rejected} after {Rollout.method} "
               f"(changed: {', '.join(Rollout.changed or Rollout.why)}); rolled back on every host that had it:\n{restored}\n"
               f"Every host has its previous slurm.conf/cgroup.conf/gres.conf again. Fix the inventory and re-run. "
               f"Log of the rejecting daemon{'s' if len(Rollout.rejected_by) > 1 else ''}:\n{logs}")
    yield fail(message)


def slurmd_restart_arguments(configs: list[str]) -> dict:
    """restart_checked's arguments for this host's slurmd: restarted unless it already
    started after `configs` were written; a failure is recorded for the rollback."""
    return dict(
        restart=f"{started_after('slurmd', configs)} || systemctl restart slurmd",
        healthy="systemctl is-active --quiet slurmd",
        configs=configs,
        log=f"{PATHS.log_dir}/slurmd.log",
        what="slurmd",
        unit="slurmd",
        on_failure=lambda _log: Rollout.reject(host.name, daemon_logs(["slurmd"])),
    )


# Why slurmctld drains a node whose slurmd registered with fewer GRES than slurm.conf gives it
# (24.11: "gres/gpu count reported lower than configured (0 < 1)").
GRES_COUNT_DRAIN = "count reported lower than configured"


def drained_during_rollout(sinfo_lines: str, since_epoch: int, node_names: list[str]) -> list[str]:
    """Nodes among `node_names` that slurmctld drained for a GRES count at or after `since_epoch`:
    `TZ=UTC sinfo --noheader --Node --format='%N|%T|%H|%E'` lines (name, state, drain time as
    YYYY-MM-DDTHH:MM:SS in UTC, reason) -> node names."""
    drained = []
    for line in sinfo_lines.splitlines():
        name, state, when, reason = (line.split("|", 3) + ["", "", ""])[:4]
        if name not in node_names or "drain" not in state.lower() or GRES_COUNT_DRAIN not in reason:
            continue
        try:
            drained_at = calendar.timegm(time.strptime(when.strip(), "%Y-%m-%dT%H:%M:%S"))
        except ValueError:
            continue
        if drained_at >= since_epoch - 1:
            drained.append(name)
    return sorted(set(drained))


@operation(is_idempotent=False)
def resume_nodes_drained_by_rollout(node_names: list[str]):
    """Resume the nodes slurmctld drained for a GRES count while this change reached them.

    slurmctld takes the new slurm.conf first, and its reconfigure (or restart) has every slurmd
    register again while the compute hosts still have their old gres.conf: a node given GRES
    reports none and is drained ("gres/gpu count reported lower than configured"), and stays
    drained after its slurmd took the new files (seen on 24.11; stackhpc/ansible-role-openhpc#199
    is the same with CoreSpec). Only drains from this run are undone, once every host has the
    files; a node that still reports too few is drained again at its next registration, and
    the verification names it.
    """
    if not host.state.is_executing or not Rollout.started_epoch:
        return
    ok, out = run("TZ=UTC sinfo --noheader --Node --format='%N|%T|%H|%E'")
    if not ok:
        return
    drained = drained_during_rollout(out, Rollout.started_epoch, node_names)
    if drained:
        report(f"resuming {', '.join(drained)}: drained for a GRES count while the new gres.conf reached them")
        yield f"scontrol update nodename={','.join(drained)} state=resume"
