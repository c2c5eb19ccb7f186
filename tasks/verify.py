"""Verification at the end of the deploy: the cluster works, not just its files.

Checks are operations that change nothing (a re-run still reports zero
changes); they run only at execution, poll with a deadline instead of sleeping
a fixed time, and fail the host with what an admin needs to see.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import time
from dataclasses import dataclass

from lxml import etree
from pyinfra import host, logger
from pyinfra.api import StringCommand, deploy, operation
from pyinfra.api.state import BaseStateCallback
from pyinfra.facts.files import Sha1File
from pyinfra.operations import files

from tasks.accounting import cluster_registered
from tasks.common import project_file
from tasks.jobconf import build_job_conf, verification_tools
from tasks.model import Cluster, Galaxy
from tasks.operations import changed_operations, fail, log_tail, privilege_arguments, rolled_back, run, wait_until

SHARE_DIR = "/usr/local/share/pyinfra-galaxy-slurm"
VERIFY_SCRIPT = f"{SHARE_DIR}/slurm-verify.sbatch"
GALAXY_VERIFY_SCRIPT = f"{SHARE_DIR}/galaxy-verify.py"
JOB_TIMEOUT = 120
# Measured: a first start on a new SQLite database took 4 min with the 2 cores shared by 5 labs (30 s alone).
GALAXY_START_TIMEOUT = 480
# The Galaxy check runs bioblend from a venv of the deploy's own (Galaxy's venv stays Galaxy's).
VERIFY_VENV = f"{SHARE_DIR}/venv"
BIOBLEND = "bioblend==1.9.0"  # pyinfra's pip.packages compares one exact version: a range would reinstall every run
# The verification user's API key, made once by galaxy-verify.py; root only.
PRIVATE_DIR = "/etc/pyinfra-galaxy-slurm"
GALAXY_VERIFY_KEY = f"{PRIVATE_DIR}/galaxy-verify-user.json"
# The Galaxy admin account's own API key (and first password), made once with the
# bootstrap key, which then leaves galaxy.yml; root only.
GALAXY_ADMIN_KEY = f"{PRIVATE_DIR}/galaxy-admin.json"

# The Galaxy job check started ahead on a re-run (start_galaxy_check_ahead): its systemd unit, and
# its report, in a directory only root reads.
RUN_DIR = "/run/pyinfra-galaxy-slurm"
AHEAD_UNIT = "pgs-galaxy-check-ahead"
AHEAD_REPORT = f"{RUN_DIR}/galaxy-check-ahead.json"
GALAXY_CHECK_TIMEOUT = 600  # galaxy-verify.py's own --timeout is 300 s per job

# Bounded waits of the Slurm check (seconds).
# For nodes UNKNOWN or not responding to register (a restarted slurmd, a new node, a node whose munged
# was just fixed). slurmctld pings a node it marked not responding every SlurmdTimeout/3 (100 s by
# default, slurm.conf(5)), so a wait shorter than that fails on a node that is coming back (seen on the
# Debian 12 lab: comp* for 60 s after munged was repaired).
SETTLE_WAIT = 150
CAPACITY_WAIT = 20  # for a free CPU on a busy cluster, shared by the srun and sbatch checks
SCHEDULE_WAIT = 10  # past CAPACITY_WAIT, for slurmctld to start or rank the test job (reason other than None)
STEP_WAIT = 30  # for a step of a running test job, and for a cancelled job to leave the queue
IMMEDIATE = 5  # srun --immediate: a CPU seen free a moment ago may be taken; look again after this
LOG_EVERY = 10  # a longer wait says what it waits for this often
POLL = 0.25  # a test job starts and ends within a fraction of a second: a 1 s poll doubled the check
ACCOUNTING_WAIT = 30  # for a finished job's record to reach slurmdbd and sacct
# Everything the verification submits carries this name (squeue --name=pgs-verify).
VERIFY_JOB_NAME = "pgs-verify"
# Test jobs ask for little memory, so they fit beside other jobs under CR_*_Memory.
TEST_JOB_MEMORY_MB = 16
# Why a pending job waits for capacity (squeue(1) JOB REASON CODES): Slurm accepted
# and ranked it, which is what a full cluster can prove.
CAPACITY_REASONS = ("Resources", "Priority")


class CheckFailed(Exception):
    pass


def report(message: str) -> None:
    logger.info(f"{host.print_prefix}{message}")


class BoundedWait:
    """A wait of at most `seconds` that logs what it waits for every LOG_EVERY seconds."""

    def __init__(self, seconds: float):
        self.started = time.monotonic()
        self.deadline = self.started + seconds
        self.next_log = self.started + LOG_EVERY

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def expired(self) -> bool:
        return time.monotonic() >= self.deadline

    def pause(self, waiting_for: str) -> None:
        """Sleep one poll interval; `waiting_for` is logged when the wait has lasted a while."""
        if time.monotonic() >= self.next_log:
            report(f"waiting for {waiting_for} ... {self.elapsed:.0f} s")
            self.next_log += LOG_EVERY
        time.sleep(POLL)


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


@operation(is_idempotent=True)
def resume_stopped_nodes(node_names: list[str]):
    """Resume the nodes among `node_names` that are DOWN or DRAINED (on request only)."""
    if not host.state.is_executing:
        return
    for name, state in node_states().items():
        if name in node_names and base_state(state) in STOPPED_STATES:
            yield f"scontrol update nodename={name} state=resume"


@operation(is_idempotent=True)
def slurm_works(node_names: list[str], unreachable: list[str], accounting: bool = False):
    """Every reachable node healthy (busy or not), srun on each one with a free CPU,
    a batch job completed with its output (with `accounting`: and `sacct` has it
    COMPLETED 0:0); on a full cluster, a batch job Slurm accepted and holds PENDING
    for resources, then cancelled."""
    if not host.state.is_executing:
        return
    if not node_names:
        yield fail(f"no compute node was reachable this run (unreachable: {', '.join(unreachable)})")
        return
    try:
        nodes = _nodes_healthy(node_names)
        capacity = BoundedWait(CAPACITY_WAIT)
        _srun_everywhere(node_names, capacity)
        # Slurm may not know yet that an unreachable node is gone: keep the test job off it.
        job_id = _batch_job([name for name in unreachable if name in nodes], capacity)
        if accounting and job_id:
            report(job_accounted(job_id))
    except CheckFailed as error:
        yield fail(str(error))
        return
    if unreachable:
        states = node_states()
        report("not verified, unreachable this run: " + ", ".join(f"{n} ({states.get(n, 'not in slurm.conf')})" for n in unreachable))


def _nodes_healthy(node_names: list[str]) -> dict[str, NodeStatus]:
    """Wait (SETTLE_WAIT at most) while nodes settle; fail at once on a stopped one."""
    wait = BoundedWait(SETTLE_WAIT)
    while True:
        nodes = node_table()
        health = {name: nodes[name].health if name in nodes else "settling" for name in node_names}
        settling = [name for name in node_names if health[name] == "settling"]
        if "stopped" not in health.values() and not settling:
            states = ", ".join(f"{name} {nodes[name].state}" for name in node_names)
            report(f"sinfo: {len(node_names)} nodes healthy ({states}) after {wait.elapsed:.1f} s")
            return nodes
        if "stopped" in health.values() or wait.expired():
            break  # a stopped node needs an admin: no point in waiting
        wait.pause(", ".join(f"{name} ({nodes[name].state if name in nodes else 'not in sinfo'})" for name in settling)
                   + " to register with slurmctld")
    _, reasons = run("sinfo --list-reasons --noheader --Node --format='%N|%E'")
    reason = dict(line.split("|", 1) for line in reasons.splitlines() if "|" in line)
    not_healthy = ", ".join(
        f"{name}={nodes[name].state if name in nodes else 'missing'}" + (f" ({reason[name]})" if name in reason else "")
        for name in node_names if health[name] != "healthy"
    )
    _, listing = run("sinfo --list-reasons --long")
    raise CheckFailed(
        f"nodes not healthy: {not_healthy}\n{listing}\nOnce the cause is fixed, re-run with "
        "`--data slurm_resume_nodes=true` (or set it in group_data/all.py) to resume DOWN or DRAINED nodes."
    )


def _busy(nodes: list[NodeStatus]) -> str:
    allocated = sum(node.cpus_allocated for node in nodes)
    total = sum(node.cpus_total for node in nodes)
    return f"{allocated} of {total} CPUs allocated on {', '.join(node.name for node in nodes)}"


def _srun_everywhere(node_names: list[str], capacity: BoundedWait) -> None:
    """One task on every node with a free CPU (srun --immediate, retried while
    capacity lasts); busy nodes are reported, not failed."""
    while True:
        nodes = node_table()
        mine = [nodes[name] for name in node_names if name in nodes]
        free = [node for node in mine if node.takes_a_task_now]
        busy = [node for node in mine if not node.takes_a_task_now]
        if free:
            names = ",".join(node.name for node in free)
            ok, out = run(
                f"srun --job-name={VERIFY_JOB_NAME} --nodes={len(free)} --nodelist={names} --ntasks-per-node=1 "
                f"--mem={TEST_JOB_MEMORY_MB} --time=1 --immediate={IMMEDIATE} hostname -s",
                timeout=JOB_TIMEOUT,
            )
            ran_on = sorted(out.split()) if ok else []
            if ok and ran_on == sorted(node.name for node in free):
                busy_note = f"; busy but healthy: {', '.join(node.describe() for node in busy)}" if busy else ""
                report(f"srun -N{len(free)}: ran on {', '.join(ran_on)}{busy_note}")
                return
            if ok or "Unable to allocate resources" not in out:
                raise CheckFailed(f"srun on {names} ran on {ran_on or 'no node'}:\n{out}")
            # Another job took the CPU between sinfo and srun: look again.
        if capacity.expired():
            report(f"srun: no free CPU within {capacity.elapsed:.0f} s (busy but healthy: "
                   f"{', '.join(node.describe() for node in busy)}); the batch job below checks scheduling")
            return
        capacity.pause(f"a free CPU for srun: {_busy(mine)}")


def _batch_job(exclude: list[str], capacity: BoundedWait) -> str | None:
    """A batch job runs on some node and writes its output there (read back by a
    step inside the job, so no second allocation is needed); or, on a cluster
    full until the capacity wait ends, it stays PENDING for resources (proof that
    slurmctld, munge and the scheduler work) and is cancelled. The id of the job
    that completed (None: pending, cancelled)."""
    started = time.monotonic()
    exclude_option = f"--exclude={','.join(exclude)} " if exclude else ""
    # --deadline: should this run die before cancelling it, Slurm drops the job itself.
    ok, out = run(f"sbatch --parsable --job-name={VERIFY_JOB_NAME} --mem={TEST_JOB_MEMORY_MB} {exclude_option}"
                  f"--deadline=now+{CAPACITY_WAIT + SCHEDULE_WAIT + 180}seconds {VERIFY_SCRIPT}")
    job_id = out.strip().split(";")[0]
    if not ok or not job_id.isdigit():
        raise CheckFailed(f"sbatch test job failed:\n{out}")
    finished = False
    try:
        job = _wait_while_pending(job_id, capacity)
        if job.get("JobState") == "PENDING":
            busy = _busy(list(node_table().values()))
            finished = _cancel(job_id)
            report(f"sbatch job {job_id} accepted and PENDING ({job.get('Reason')}) for {time.monotonic() - started:.0f} s, "
                   f"no free CPU ({busy}): slurmctld, munge and the scheduler work; job cancelled")
            return None
        node = job.get("NodeList", "")
        output = _read_output(job_id) if job.get("JobState") == "RUNNING" else ""
        run(f"scancel --batch --signal=USR1 {job_id}")  # the job's release: it exits 0
        job = _wait_for_end(job_id)
        finished = job.get("JobState") in ("COMPLETED", "FAILED", "TIMEOUT", "CANCELLED", "DEADLINE", "NODE_FAIL", "OUT_OF_MEMORY")
        expected = f"node={node} user=root job={job_id}"
        if job.get("JobState") != "COMPLETED" or job.get("ExitCode") != "0:0" or output != expected:
            raise CheckFailed(f"sbatch job {job_id} on {node or '?'}: {job.get('JobState', 'no record')} "
                              f"exit {job.get('ExitCode', '?')} ({job.get('Reason', '')}), output {output!r}, expected {expected!r}")
        report(f"sbatch job {job_id} completed on {node} in {time.monotonic() - started:.1f} s")
        return job_id
    finally:
        if not finished:
            _cancel(job_id)


def parse_sacct(text: str) -> list[tuple[str, str]]:
    """`sacct -n -P -X -o State,ExitCode` output -> [(state, exit code)] (one line per job)."""
    return [tuple(line.split("|", 1)) for line in text.splitlines() if "|" in line]


def job_accounted(job_id: str) -> str:
    """Wait (ACCOUNTING_WAIT) until `sacct` has the job COMPLETED with exit code 0:0: slurmctld
    sends the record to slurmdbd a moment after the job ends. Raises CheckFailed."""
    wait = BoundedWait(ACCOUNTING_WAIT)
    while True:
        ok, out = run(f"sacct -j {job_id} -n -P -X -o State,ExitCode")
        records = parse_sacct(out) if ok else []
        if records == [("COMPLETED", "0:0")]:
            return f"sacct: job {job_id} COMPLETED 0:0 in the accounting database after {wait.elapsed:.1f} s"
        if wait.expired():
            raise CheckFailed(f"sacct has no COMPLETED 0:0 record of job {job_id} after {ACCOUNTING_WAIT} s: "
                              f"{out.strip() or 'no record'}; see slurmdbd.log and slurmctld.log on the controller")
        wait.pause(f"job {job_id} in sacct ({out.strip() or 'no record yet'})")


def _wait_while_pending(job_id: str, capacity: BoundedWait) -> dict[str, str]:
    """The job once it left PENDING; or, PENDING for capacity when the wait ends,
    the job as it stands; else CheckFailed."""
    schedule = BoundedWait(SCHEDULE_WAIT)
    while True:
        job = job_record(job_id)
        state, reason = job.get("JobState"), job.get("Reason")
        if state != "PENDING":
            return job
        if capacity.expired() and reason in CAPACITY_REASONS:
            return job
        if capacity.expired() and schedule.expired():
            raise CheckFailed(f"sbatch job {job_id} still PENDING ({reason}) after {schedule.elapsed:.0f} s, "
                              f"not for lack of free CPUs:\n{run(f'scontrol show job {job_id}')[1]}")
        capacity.pause(f"a free CPU for sbatch job {job_id} (PENDING, {reason}): {_busy(list(node_table().values()))}")


def _read_output(job_id: str) -> str:
    """The test job's output, read (and removed) by a step inside the job itself."""
    path = f"/tmp/pgs-verify-{job_id}.out"
    ok, output = run(
        f"srun --jobid={job_id} --overlap --ntasks=1 --immediate={STEP_WAIT} sh -c "
        f"'timeout {STEP_WAIT} sh -c \"until [ -s {path} ]; do sleep 0.2; done\"; cat {path} && rm -f {path}'",
        timeout=JOB_TIMEOUT,
    )
    return output.strip() if ok else f"(not read: {output.strip()})"


def _wait_for_end(job_id: str) -> dict[str, str]:
    wait = BoundedWait(STEP_WAIT)
    while True:
        job = job_record(job_id)
        if job.get("JobState") not in ("RUNNING", "COMPLETING", "PENDING", "CONFIGURING") or wait.expired():
            return job
        wait.pause(f"sbatch job {job_id} to end ({job.get('JobState')})")


def _cancel(job_id: str) -> bool:
    """Cancel a test job and wait (bounded) until it has left the queue: whether it has."""
    run(f"scancel {job_id}")
    wait = BoundedWait(STEP_WAIT)
    while run(f"squeue --noheader --jobs={job_id} --states=PENDING,RUNNING,COMPLETING,CONFIGURING")[1].strip():
        if wait.expired():
            report(f"sbatch job {job_id} cancelled but still in the queue after {STEP_WAIT} s")
            return False
        wait.pause(f"cancelled sbatch job {job_id} to leave the queue")
    return True


@operation(is_idempotent=True)
def file_present(path: str):
    """Fail the host when `path` does not exist (a file the deploy relies on but does not make)."""
    if host.state.is_executing and not run(f"test -e {shlex.quote(path)}")[0]:
        yield fail(f"{path} does not exist on {host.name}")


def runners_loaded(log: str) -> str:
    """A command that succeeds when a handler loaded its job runners since its last start
    (older lines in the log may be from before a restart)."""
    return f"awk '/will load all configured runner plugins/ {{n = 0}} /Loaded job runner/ {{n++}} END {{exit n == 0}}' {log}"


def galaxy_ready(galaxy: Galaxy, group: str) -> tuple[str, str]:
    """Shell checks for Galaxy under supervisor group `group`: (ready, broken).

    Ready: every program RUNNING, each handler loaded its job runners since its
    last start (older log lines may be from before a restart), the API answers.
    Broken: a program has given up starting.
    """
    handlers = " && ".join(
        f"supervisorctl status {group}:{name} | grep -q RUNNING && {runners_loaded(f'{galaxy.log_dir}/{name}.log')}"
        for name in galaxy.handler_names
    )
    # Through nginx (galaxy.url: plain HTTP on loopback).
    api = f"python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5)' {galaxy.url}/api/version"
    ready = f"! supervisorctl status '{group}:*' | grep -qv RUNNING && {handlers} && {api}"
    broken = f"supervisorctl status '{group}:*' | grep -qE 'FATAL|BACKOFF|EXITED'"
    return ready, broken


@operation(is_idempotent=True)
def galaxy_answers(galaxy: Galaxy, group: str):
    """Wait until Galaxy is ready (see galaxy_ready); else fail with the log tails."""
    if not host.state.is_executing:
        return
    started = time.monotonic()
    ready, broken = galaxy_ready(galaxy, group)
    handler_logs = " ".join(f"{galaxy.log_dir}/{name}.log" for name in galaxy.handler_names)
    if wait_until(ready, GALAXY_START_TIMEOUT, broken=broken):
        _, loaded = run(
            f"for log in {handler_logs}; do tac $log | awk '/Loaded job runner/ {{print}} "
            f"/will load all configured runner plugins/ {{exit}}'; done | grep -o \"Loaded job runner '[^']*' as '[^']*'\" | sort -u"
        )
        report(f"Galaxy answers {galaxy.url}/api/version after {time.monotonic() - started:.1f} s; "
               f"{', '.join(loaded.splitlines())}; users open {galaxy.public_url}")
        return
    _, status = run(f"supervisorctl status '{group}:*' || true")
    logs = [f"{galaxy.log_dir}/{name}.log" for name in ["web", *galaxy.handler_names]]
    yield fail(f"Galaxy did not come up within {GALAXY_START_TIMEOUT} s ({galaxy.url}, through nginx):\n{status}\n"
               + "\n".join(map(log_tail, logs)))


def destination_params(galaxy: Galaxy, destination_id: str) -> dict[str, str]:
    """The params job_conf.xml gives a destination (its Slurm options: nativeSpecification for
    the DRMAA runner, job_<option> for the CLI one), read from the file the deploy writes."""
    root = etree.fromstring(build_job_conf(galaxy))
    destination = next(d for d in root.iterfind("destinations/destination") if d.get("id") == destination_id)
    return {param.get("id"): param.text or "" for param in destination.iterfind("param")}


def handlers_restart(galaxy: Galaxy, group: str) -> str:
    """The command that restarts Galaxy's job handlers (they read job_conf.xml at start)."""
    return "supervisorctl restart " + " ".join(f"{group}:{name}" for name in galaxy.handler_names)


@operation(is_idempotent=True)
def galaxy_job_through_slurm(command: str, compute_nodes: list[str], expected_user: str, galaxy: Galaxy,
                             group: str, accounting: bool = False):
    """A Galaxy upload job ran through Slurm on a compute node, as the galaxy user; or, on
    a full cluster, it waits in Slurm (PENDING for CPUs) and was withdrawn (see galaxy-verify.py).

    When it failed and this run replaced job_conf.xml, the previous one is put back and the
    handlers restarted (like slurm.conf after slurmctld refused it); the run fails saying so."""
    if not host.state.is_executing:
        return
    ok, result, ahead = galaxy_check_result(command)
    problems = [] if ok and result.get("ok") else [str(result.get("error", "verification failed"))]
    if result.get("runner") and not result.get("busy") and result.get("node") not in compute_nodes:
        problems.append(f"ran on {result.get('node')!r}, not a compute node ({', '.join(compute_nodes)})")
    if result.get("slurm_user") and result["slurm_user"] != expected_user:
        problems.append(f"the Slurm job ran as {result['slurm_user']}, not {expected_user}")
    problems += _galaxy_job_accounted(result) if accounting and not problems else []
    if problems:
        ready, broken = galaxy_ready(galaxy, group)
        yield from rolled_back(
            handlers_restart(galaxy, group), ready, [galaxy.job_conf], "Galaxy's job configuration",
            "failed its verification (a Galaxy job through Slurm did not end ok) and is rolled back",
            "Galaxy upload job through Slurm failed: " + "; ".join(problems) + f"\n{json.dumps(result, indent=1)}",
            timeout=GALAXY_START_TIMEOUT, settle=0, broken=broken,
        )
        return
    report(galaxy_report_line(result) + (f" ({ahead})" if ahead else ""))
    for line in destination_report_lines(result):
        report(line)


def destination_report_lines(result: dict) -> list[str]:
    """One line per further destination's job (galaxy-verify.py's report["destinations"][1:])."""
    lines = []
    for job in result.get("destinations", [])[1:]:
        where = f"Galaxy job {job['galaxy_job_id']} (tool {job['tool']}) = Slurm job {job.get('slurm_job_id')}"
        if job.get("busy"):
            lines.append(f"destination {job['destination']}: {where} PENDING ({job.get('pending_reason')}): the cluster "
                         "is full, Galaxy reaches Slurm; withdrawn")
        else:
            lines.append(f"destination {job['destination']}: {where} on {job.get('node')}, partition {job.get('partition')}, "
                         f"time limit {job.get('time_limit')}: {job.get('slurm_state')}, dataset ok in {job.get('seconds_to_ok')} s")
    return lines


def _galaxy_job_accounted(result: dict) -> list[str]:
    """The Galaxy job's Slurm job in `sacct` (COMPLETED 0:0), reported; or the problem.
    A job withdrawn on a full cluster was cancelled: nothing to look for."""
    if result.get("busy") or not str(result.get("slurm_job_id", "")).isdigit():
        return []
    try:
        report(job_accounted(str(result["slurm_job_id"])))
    except CheckFailed as error:
        return [str(error)]
    return []


def galaxy_report_line(result: dict) -> str:
    """The line an admin reads, from galaxy-verify.py's JSON report."""
    where = f"destination {result['destination']}, " if result.get("destination") else ""
    job = (f"Galaxy job {result['galaxy_job_id']} ({where}runner {result['runner']}, handler {result['handler']}) "
           f"= Slurm job {result['slurm_job_id']} ({result['slurm_job_name']})")
    user = f"Galaxy user {result['user']} ({result['user_key']}), verification {result['seconds']} s"
    if result.get("busy"):
        return (f"{job} as {result['slurm_user']}: PENDING ({result['pending_reason']}) for {result['pending_seconds']} s: "
                f"the cluster is full, Galaxy reaches Slurm; Galaxy job deleted, Slurm job removed by "
                f"{result['slurm_removed_by']}; {user}")
    return (f"{job} on {result['node']} as {result['slurm_user']}: {result['slurm_state']}, "
            f"Slurm run time {result['slurm_runtime']}, upload to dataset ok in {result['seconds_to_ok']} s; {user}")


@deploy("Verify")
def verify_slurm(cluster: Cluster) -> None:
    if host.name != cluster.controller.inventory_name:
        return
    files.put(name="Slurm test job script", src=project_file("slurm-verify.sbatch"), dest=VERIFY_SCRIPT, mode="0755")
    if cluster.resume_nodes:
        resume_stopped_nodes(name="Resume DOWN or DRAINED nodes (slurm_resume_nodes)", node_names=cluster.reachable_nodes)
    if cluster.accounting:
        cluster_registered(name=f"Cluster {cluster.name} registered in accounting (sacctmgr)", cluster_name=cluster.name)
    slurm_works(
        name="Slurm works: nodes healthy, srun on free nodes, sbatch job done (or pending on a full cluster)",
        node_names=cluster.reachable_nodes,
        unreachable=[h.node_name for h in cluster.compute_hosts if not h.reachable],
        accounting=cluster.accounting is not None,
    )


def galaxy_check_wanted(cluster: Cluster, say_why_not: bool = True) -> bool:
    """Whether the Galaxy job check runs on this host (the Galaxy host), saying why not."""
    galaxy = cluster.galaxy
    if galaxy is None or host.name != galaxy.host.inventory_name:
        return False
    if not cluster.verify_galaxy_job:
        if say_why_not:
            logger.info("Galaxy job verification skipped (verify_galaxy_job is off)")
        return False
    if any(not h.reachable for h in cluster.compute_hosts):
        # Slurm may place the job on a node it does not yet know is gone.
        if say_why_not:
            logger.warning(f"Galaxy job verification skipped: {', '.join(cluster.unreachable_hosts)} unreachable")
        return False
    return True


def galaxy_check_command(galaxy: Galaxy) -> str:
    """galaxy-verify.py's command for the upload through the default destination and a job
    through each further one, with the params job_conf.xml gives them."""
    tool_destinations = [[destination_id, tool_id, destination_params(galaxy, destination_id)]
                         for destination_id, tool_id in verification_tools(galaxy)]
    return verify_command(
        galaxy, f"--destination {shlex.quote(galaxy.default_destination)}",
        f"--destination-params {shlex.quote(json.dumps(destination_params(galaxy, galaxy.default_destination)))}",
        f"--tool-destinations {shlex.quote(json.dumps(tool_destinations))}",
    )


class GalaxyCheckAhead:
    """The Galaxy hosts whose job check runs ahead in this run (filled at execution)."""

    started: set[str] = set()
    watching = False  # StopCheckAheadOnFailure is registered


class StopCheckAheadOnFailure(BaseStateCallback):
    """A host that fails an operation runs none after it, so its check started ahead would outlive
    the run (and its Galaxy job would count as in flight for the next run's refusals): stop it
    then (galaxy-verify.py withdraws its job)."""

    @staticmethod
    def operation_host_error(state, host, op_hash, retry_count=0, max_retries=0):
        if retry_count < max_retries or host.name not in GalaxyCheckAhead.started:
            return
        GalaxyCheckAhead.started.discard(host.name)
        try:
            host.run_shell_command(StringCommand(stop_check_ahead()), _timeout=120, **privilege_arguments(host))
        except Exception as error:  # noqa: BLE001 - a callback must not break pyinfra's run
            logger.warning(f"{host.print_prefix}could not stop the Galaxy job check started ahead: {error}")


@deploy("Galaxy job check, started ahead")
def start_galaxy_check_ahead(cluster: Cluster) -> None:
    """On a re-run, the Galaxy job check (a minute's worth of Galaxy and Slurm round trips) starts
    before the layers are checked and runs beside them; `verify_galaxy` keeps its result only when
    no operation on any host changed anything, so that it saw the cluster as the run leaves it.
    Otherwise it is stopped (its job withdrawn) and the check runs again at the end.

    Not when this run rewrites job_conf.xml: a runner switch or a removed handler would strand
    the check's own job (what the deploy refuses for jobs in flight, judged before this job
    exists); in the lab a DRMAA job left in flight across a switch to the CLI runner kept that
    runner from ever finishing the next job."""
    if not galaxy_check_wanted(cluster, say_why_not=False):
        return
    job_conf = hashlib.sha1(build_job_conf(cluster.galaxy)).hexdigest()  # the bytes config_file writes
    if host.get_fact(Sha1File, path=cluster.galaxy.job_conf) != job_conf:
        return
    galaxy_check_started(name="The Galaxy job check starts now, in the background (kept if nothing changes)",
                         command=galaxy_check_command(cluster.galaxy), galaxy=cluster.galaxy, group=supervisor_group())


def stop_check_ahead() -> str:
    """Stop a check started ahead (galaxy-verify.py withdraws its job on SIGTERM), drop its report."""
    return f"systemctl stop {AHEAD_UNIT} 2>/dev/null; rm -f {AHEAD_REPORT}; true"


@operation(is_idempotent=True)
def galaxy_check_started(command: str, galaxy: Galaxy, group: str):
    """galaxy-verify.py started as a transient systemd unit, its report in a root-only file;
    only on a Galaxy that answers and has its accounts (not on a first install)."""
    yield from ()  # no command of pyinfra's: the check is not a change
    if not host.state.is_executing:
        return
    run(stop_check_ahead(), timeout=120)  # one a failed run left behind
    ready, _ = galaxy_ready(galaxy, group)
    installed = " && ".join(f"test -s {path}" for path in (GALAXY_ADMIN_KEY, GALAXY_VERIFY_KEY, GALAXY_VERIFY_SCRIPT))
    if not run(f"{installed} && {ready}")[0]:
        return
    job = f"exec {command} > {AHEAD_REPORT} 2>&1"
    ok, output = run(f"install -d -m 0700 {RUN_DIR} && systemd-run --quiet --collect --unit {AHEAD_UNIT} "
                     f"--property UMask=0077 /bin/sh -c {shlex.quote(job)}")
    if ok:
        GalaxyCheckAhead.started.add(host.name)
        if not GalaxyCheckAhead.watching:
            GalaxyCheckAhead.watching = True
            host.state.add_callback_handler(StopCheckAheadOnFailure())
    else:
        logger.warning(f"The Galaxy job check could not start ahead (it runs at the end): {output[-500:]}")


def galaxy_check_result(command: str) -> tuple[bool, dict, str]:
    """galaxy-verify.py's (exit status, report) and where they come from: the check started
    ahead when this run changed nothing and it passed; else a check run now (a failed ahead
    check is not trusted alone: it is confirmed by a fresh one)."""
    if host.name in GalaxyCheckAhead.started:
        GalaxyCheckAhead.started.discard(host.name)
        if changed_operations():
            run(stop_check_ahead(), timeout=120)
        else:
            wait_until(f"! systemctl is-active --quiet {AHEAD_UNIT}", GALAXY_CHECK_TIMEOUT)
            ok, result = galaxy_verify_report(*run(f"cat {AHEAD_REPORT} && rm -f {AHEAD_REPORT}"))
            if ok and result.get("ok"):
                return ok, result, "run beside this run's checks, which changed nothing"
    ok, result = run_galaxy_verify(command, timeout=GALAXY_CHECK_TIMEOUT)
    return ok, result, ""


@deploy("Verify Galaxy")
def verify_galaxy(cluster: Cluster) -> None:
    if not galaxy_check_wanted(cluster):
        return
    galaxy = cluster.galaxy
    galaxy_job_through_slurm(
        name="A Galaxy upload job runs through Slurm (or waits in Slurm on a full cluster)",
        command=galaxy_check_command(galaxy),
        compute_nodes=cluster.reachable_nodes,
        expected_user=galaxy.user,
        galaxy=galaxy,
        group=supervisor_group(),
        accounting=cluster.accounting is not None,
    )


def supervisor_group() -> str:
    from tasks.galaxy import SUPERVISOR_GROUP  # tasks.galaxy imports this module

    return SUPERVISOR_GROUP


def install_verification_tools() -> None:
    """galaxy-verify.py and the root-only key directory (bioblend is in the deploy's own venv:
    tasks.galaxy.python_venv_and_uv)."""
    files.directory(name="Private directory for the Galaxy admin's and verification user's API keys", path=PRIVATE_DIR,
                    mode="0700")
    files.put(name="Galaxy verification script", src=project_file("galaxy-verify.py"), dest=GALAXY_VERIFY_SCRIPT, mode="0755")


def verify_command(galaxy: Galaxy, *options: str) -> str:
    """galaxy-verify.py's command line (no secret on it: keys are read from root-only files)."""
    return (
        f"{VERIFY_VENV}/bin/python {GALAXY_VERIFY_SCRIPT} --url {galaxy.url} --secrets {galaxy.secrets_file} "
        f"--admin-email {shlex.quote(galaxy.admin_email)} --admin-key-file {GALAXY_ADMIN_KEY} "
        f"--user-email {shlex.quote(galaxy.verify_email)} --key-file {GALAXY_VERIFY_KEY} {' '.join(options)}"
    ).rstrip()


def run_galaxy_verify(command: str, timeout: int) -> tuple[bool, dict]:
    """Run galaxy-verify.py (`verify_command`): its exit status and the JSON report it prints last
    ({"ok": False, "error": <its output's tail>} when there is none)."""
    return galaxy_verify_report(*run(command, timeout=timeout))


def galaxy_verify_report(ok: bool, output: str) -> tuple[bool, dict]:
    """galaxy-verify.py's output -> (ok, the JSON report it prints last, or {"ok": False, "error": tail})."""
    try:
        return ok, json.loads(output.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return ok, {"ok": False, "error": output[-3000:]}


@operation(is_idempotent=True)
def galaxy_accounts(command: str):
    """The admin's own API key made with the bootstrap key, and the verification user's."""
    if not host.state.is_executing:
        return
    ok, result = run_galaxy_verify(command, timeout=300)
    if not ok or not result.get("ok"):
        yield fail(f"Galaxy's admin and verification accounts: {result.get('error', 'failed')}")
        return
    report(f"Galaxy admin {result['admin']} has its own API key ({GALAXY_ADMIN_KEY}); "
           f"verification user {result['user']} ({result['user_key']})")
