"""What Slurm says now, read on the controller: node states and their health (sinfo), jobs
(scontrol). Read by the layers (the destinations' check) and by the verification alike."""

from __future__ import annotations

import re
from dataclasses import dataclass

from tasks.operations import run


# sinfo(1), NODE STATE CODES: `%t` prints a node's state in short form (Slurm's
# node_state_string_compact), followed by flag characters. Base states:
HEALTHY_STATES = frozenset({
    "idle", "mix", "alloc", "comp",  # running jobs or ready to
    "resv", "maint", "plnd", "blocked", "npc",  # reserved, planned by backfill, blocked by a topology job
    "pow_up", "pow_dn", "powering_up", "powered_down", "powering_down", "power_down",  # power saving
})
# An admin has to act (or `--data slurm_resume_nodes=true` once the cause is fixed).
STOPPED_STATES = frozenset({"down", "drain", "drng", "drained", "fail", "failg"})
# Also an admin's work, but resuming does not help: INVAL needs the node's slurmd
# restarted with matching hardware, FUTURE a node configured to come later.
UNUSABLE_STATES = frozenset({"inval", "futr", "future", "err", "error"})
# Flags: * not responding, ~ powered off, # powering up or being configured,
# ! pending power down, % powering down, $ maintenance reservation, @ pending
# reboot, ^ reboot issued, - planned by the backfill scheduler; `+` (ALLOC+)
# some of the node's jobs completing.
STATE_FLAGS = "*~#!%$@^-+"
NOT_RESPONDING = "*"
NOT_POWERED = "~%#"  # no task starts there without waking the node first


def base_state(state: str) -> str:
    """sinfo's short state without its flag suffix (down* = down and not responding)."""
    return state.lower().rstrip(STATE_FLAGS)


def node_health(state: str) -> str:
    """Classify one sinfo `%t` node state (sinfo(1), NODE STATE CODES): "healthy",
    "settling" or "stopped".

    healthy: usable, busy or not (idle, mix, alloc, comp, resv, maint, plnd, power
    saving), whatever power/reboot/maintenance/planned flag follows.
    settling: may become healthy by itself soon, so it is worth a bounded wait:
    unk (slurmctld has just started), any state marked `*` (not responding yet,
    e.g. a slurmd restarting or a new node registering; down* included, which
    ReturnToService brings back once slurmd registers), and states this code
    does not know.
    stopped: an admin has to act: down (while responding: set by an admin or
    after an unexpected reboot), drain/drng, fail/failg, inval, futr, even when
    also not responding.
    """
    base = base_state(state)
    if base in UNUSABLE_STATES or (base in STOPPED_STATES and not (base == "down" and NOT_RESPONDING in state)):
        return "stopped"
    if NOT_RESPONDING in state or base not in HEALTHY_STATES:
        return "settling"
    return "healthy"


@dataclass(frozen=True)
class NodeStatus:
    """One line of `sinfo --Node --format='%N %t %C'`: name, short state, CPUs allocated/idle/other/total."""

    name: str
    state: str
    cpus_allocated: int
    cpus_idle: int
    cpus_total: int

    @property
    def health(self) -> str:
        return node_health(self.state)

    @property
    def takes_a_task_now(self) -> bool:
        """A task could start here at once: healthy, powered, not reserved, an idle CPU."""
        return (self.health == "healthy" and self.cpus_idle > 0 and base_state(self.state) in ("idle", "mix")
                and not any(flag in self.state for flag in NOT_POWERED + "$"))

    def describe(self) -> str:
        return f"{self.name} ({self.state}, {self.cpus_allocated} of {self.cpus_total} CPUs allocated)"


def parse_sinfo_nodes(text: str) -> dict[str, NodeStatus]:
    """Nodes from `sinfo --noheader --Node --format='%N %t %C'` (a node in several
    partitions is listed once per partition; one entry each here)."""
    nodes = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) != 3 or fields[2].count("/") != 3:
            continue
        allocated, idle, _other, total = (int(n) if n.isdigit() else 0 for n in fields[2].split("/"))
        nodes[fields[0]] = NodeStatus(fields[0], fields[1], allocated, idle, total)
    return nodes


def node_table() -> dict[str, NodeStatus]:
    ok, out = run("sinfo --noheader --Node --format='%N %t %C'")
    return parse_sinfo_nodes(out) if ok else {}


def node_states() -> dict[str, str]:
    return {name: node.state for name, node in node_table().items()}


def parse_job(text: str) -> dict[str, str]:
    """`scontrol --oneliner show job ID` as a dict (JobState, Reason, NodeList, ExitCode, ...)."""
    return dict(re.findall(r"(\w+)=(\S*)", text))


def job_record(job_id: str) -> dict[str, str]:
    ok, out = run(f"scontrol --oneliner show job {job_id}")
    return parse_job(out) if ok else {}
