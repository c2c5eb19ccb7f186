"""The Slurm check: every reachable node healthy (busy or not), srun on each free node, a
batch job done (with accounting: in sacct), or on a full cluster a job Slurm holds for CPUs."""

from __future__ import annotations

import time

from pyinfra import host
from pyinfra.api import deploy, operation
from pyinfra.operations import files

from tasks.checks import SHARE_DIR, BoundedWait, CheckFailed, report
from tasks.common import project_file
from tasks.model import Cluster
from tasks.operations import fail, run
from tasks.platform import HEALTH_CHECK_PROGRAM, HEALTH_CHECK_REASON
from tasks.slurm_status import NodeStatus, job_record, node_states, node_table

VERIFY_SCRIPT = f"{SHARE_DIR}/slurm-verify.sbatch"
JOB_TIMEOUT = 120
SLURMD_ANSWER_WAIT = 10  # seconds a compute host's slurmd has to answer (slurm.conf's MessageTimeout default)

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
ACCOUNTING_WAIT = 30  # for a finished job's record to reach slurmdbd and sacct
# Everything the verification submits carries this name (squeue --name=pgs-verify).
VERIFY_JOB_NAME = "pgs-verify"
# Test jobs ask for little memory, so they fit beside other jobs under CR_*_Memory.
TEST_JOB_MEMORY_MB = 16
# Why a pending job waits for capacity (squeue(1) JOB REASON CODES): Slurm accepted
# and ranked it, which is what a full cluster can prove.
CAPACITY_REASONS = ("Resources", "Priority")


# What a process state letter of `ps -o stat` means for a daemon that does not answer (ps(1)).
PROCESS_STATES = {
    "T": "stopped (SIGSTOP, or a debugger holds it)",
    "t": "stopped by a debugger",
    "D": "waiting in the kernel (often a hung filesystem, e.g. an NFS server away)",
    "Z": "a zombie (it exited; its parent has not reaped it)",
}


@operation(is_idempotent=True)
def slurmd_answers(wait: int = SLURMD_ANSWER_WAIT):
    """Fail the host within `wait` seconds when its slurmd does not answer `scontrol show slurmd`
    (its own RPC, as slurmctld reaches it), naming its process state and systemd's view of it.
    slurmctld would only mark it not responding after SlurmdTimeout (300 s) and meanwhile give it jobs."""
    if not host.state.is_executing:
        return
    answered, said = run(f"timeout {wait} scontrol show slurmd", timeout=wait + 5)
    if answered:
        return
    _, processes = run("ps -o pid=,stat= -C slurmd")
    states = [line.split() for line in processes.splitlines() if len(line.split()) == 2]
    described = "; ".join(f"pid {pid}, state {stat} ({PROCESS_STATES.get(stat[0], 'running or sleeping')})"
                          for pid, stat in states) or "no slurmd process"
    _, status = run("systemctl status slurmd --no-pager --lines=5 2>&1")
    yield fail(f"node {host.name}: slurmd does not answer within {wait} s (`scontrol show slurmd`): {described}. "
               "slurmctld would go on giving it jobs until SlurmdTimeout; restart it "
               f"(`systemctl restart slurmd`; a state D process waits on the kernel: fix the mount first) and re-run. "
               f"scontrol said: {said.strip()[-300:] or 'nothing (timed out)'}\n{status}")


@operation(is_idempotent=True)
def slurm_works(node_names: list[str], unreachable: list[str], accounting: bool = False,
                host_of_node: dict[str, str] | None = None):
    """Every reachable node healthy (busy or not), srun on each one with a free CPU,
    a batch job completed with its output (with `accounting`: and `sacct` has it
    COMPLETED 0:0); on a full cluster, a batch job Slurm accepted and holds PENDING
    for resources, then cancelled. A node whose host failed a check earlier in this run
    (`host_of_node`: node name -> inventory name) is left out, as unreachable ones are: the
    failure above names it."""
    if not host.state.is_executing:
        return
    if not node_names:
        yield fail(f"no compute node was reachable this run (unreachable: {', '.join(unreachable)})")
        return
    failed = {failed_host.name for failed_host in host.state.failed_hosts}
    failed_nodes = [name for name in node_names if (host_of_node or {}).get(name) in failed]
    try:
        nodes = _nodes_healthy(node_names)
        if failed_nodes:
            # Slurm may still take them for healthy (a slurmd that does not answer): no test job there.
            report("no test job on " + ", ".join(failed_nodes) + " (failed above in this run)")
            if len(failed_nodes) == len(node_names):
                return
        capacity = BoundedWait(CAPACITY_WAIT)
        _srun_everywhere([name for name in node_names if name not in failed_nodes], capacity)
        # Slurm may not know yet that an unreachable node is gone: keep the test job off it.
        job_id = _batch_job([name for name in [*unreachable, *failed_nodes] if name in nodes], capacity)
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
    if all(reason.get(name, "").startswith(HEALTH_CHECK_REASON) for name in node_names if health[name] != "healthy"):
        way_back = (f"the node health check ({HEALTH_CHECK_PROGRAM}) resumes a node it drained once what it names is "
                    "back: a re-run has it do so at once (else it does within slurm_health_check_interval).")
    else:
        way_back = ("re-run with `--data slurm_resume_nodes=true` (or set it in group_data/all.py) to resume DOWN or "
                    "DRAINED nodes.")
    raise CheckFailed(f"nodes not healthy: {not_healthy}\n{listing}\nOnce the cause is fixed, {way_back}")


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


@deploy("Verify")
def verify_slurm(cluster: Cluster) -> None:
    # Every host runs each operation, gated with _if: the compute hosts' check must come first.
    is_controller = host.name == cluster.controller.inventory_name
    is_compute = host.name in {h.inventory_name for h in cluster.compute_hosts}
    slurmd_answers(name=f"slurmd answers here within {SLURMD_ANSWER_WAIT} s (a stopped or hung slurmd is named)",
                   _if=lambda: is_compute)
    files.put(name="Slurm test job script", src=project_file("slurm-verify.sbatch"), dest=VERIFY_SCRIPT, mode="0755",
              _if=lambda: is_controller)
    slurm_works(
        name="Slurm works: nodes healthy, srun on free nodes, sbatch job done (or pending on a full cluster)",
        node_names=cluster.reachable_nodes,
        unreachable=[h.node_name for h in cluster.compute_hosts if not h.reachable],
        accounting=cluster.accounting is not None,
        host_of_node={h.node_name: h.inventory_name for h in cluster.compute_hosts},
        _if=lambda: is_controller,
    )
