"""Memory is scheduled and enforced (tasks/model/memory.py), on both releases (22.05 and 24.11).

On the lab's first deploy, with the defaults: jobs that ask for no memory get DefMemPerCPU and
fill every CPU of every node at once; a job over its --mem is stopped while a job beside it on
the same node completes. The lab's containers have read-only cgroups, so the enforcement is
jobacct_gather's OverMemoryKill (cgroup v2 hosts get cgroup.conf's ConstrainRAMSpace: a VM's
case). Slurm jobs only (no deploy), a few seconds each: they leave the queue empty.
"""

from __future__ import annotations

import re
import shlex
import time

import pytest

from tests.lab.conftest import COMPUTE_NAMES, HOST_NAMES, NOTES

pytestmark = pytest.mark.lab

CONTROLLER = HOST_NAMES[0]
JOB_NAME = "pgs-memory-test"
FINAL_WAIT = 90  # for the jobs here to end and reach sacct (the longest sleeps 15 s)
# The over-memory job: 300 MB written (every page touched) against a 64 MB request, held a minute.
HOG = "python3 -c 'import time; b = bytes(range(256)) * (300 * 4096); time.sleep(60)'"
REQUEST_MB = 64


def sbatch(ctl, *args: str, command: str) -> str:
    return ctl.check_output(f"sbatch --parsable --job-name={JOB_NAME} {' '.join(args)} --wrap {shlex.quote(command)}")


def final_states(ctl, job_ids: list[str]) -> dict[str, tuple[str, str, str]]:
    """job id -> (State, ExitCode, Elapsed) from sacct, once every job has ended (FINAL_WAIT at most)."""
    deadline = time.monotonic() + FINAL_WAIT
    while True:
        lines = ctl.check_output(f"sacct -X -n -P -o JobID,State,ExitCode,Elapsed -j {','.join(job_ids)}").splitlines()
        states = {job: (state, code, elapsed) for job, state, code, elapsed in (line.split("|") for line in lines)}
        ended = [job for job in job_ids if job in states and states[job][0] not in ("PENDING", "RUNNING", "COMPLETING")]
        if len(ended) == len(job_ids) or time.monotonic() > deadline:
            return states
        time.sleep(1)


def test_first_deploy_says_how_memory_is_scheduled_and_enforced(first_deploy):
    line = next((line for line in first_deploy.log.splitlines() if "Slurm memory:" in line), "")
    NOTES.append(line.strip())
    assert "consumable; a job asking for none gets DefMemPerCPU=" in line, first_deploy.log[:3000]
    assert "stopped by jobacct_gather's OverMemoryKill every 10 s" in line  # read-only cgroups in the containers


def test_jobs_asking_for_no_memory_fill_every_cpu_at_once(first_deploy, lab_host):
    ctl = lab_host(CONTROLLER)
    default_mb = int(re.search(r"^DefMemPerCPU=(\d+)$", ctl.file("/etc/slurm/slurm.conf").content_string, re.M)[1])
    cpus = {name: int(ctl.check_output(f"sinfo -h -N -n {name} -o %c")) for name in COMPUTE_NAMES}
    jobs = [sbatch(ctl, "--ntasks=1", "--output=/dev/null", command="sleep 10") for _ in range(sum(cpus.values()))]
    deadline = time.monotonic() + 30
    while True:
        running = ctl.check_output(f"squeue -h -t RUNNING -n {JOB_NAME} -o %i").split()
        if len(running) == len(jobs) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    # Slurm 24.11 shows a running job's allocation as AllocTRES=, 22.05 as TRES=.
    allocated = {job: re.search(r"(?:^|\s)(?:Alloc)?TRES=(\S*)", ctl.check_output(f"scontrol -o show job {job}"))[1]
                 for job in running}
    states = final_states(ctl, jobs)
    NOTES.append(f"{len(jobs)} one-CPU jobs without --mem on {cpus}: {len(running)} ran at once, {allocated}")
    assert sorted(running) == sorted(jobs), ctl.check_output("squeue")
    assert all(f"cpu=1,mem={default_mb}M" in tres for tres in allocated.values()), allocated
    assert {job: states[job][:2] for job in jobs} == dict.fromkeys(jobs, ("COMPLETED", "0:0"))


def test_job_over_its_memory_is_stopped_and_its_neighbour_completes(first_deploy, lab_host):
    ctl, node = lab_host(CONTROLLER), COMPUTE_NAMES[0]
    error_file = f"/tmp/{JOB_NAME}-over.err"
    lab_host(node).run(f"rm -f {error_file}")
    over = sbatch(ctl, f"--nodelist={node}", f"--mem={REQUEST_MB}M", "--output=/dev/null", f"--error={error_file}",
                  command=HOG)
    beside = sbatch(ctl, f"--nodelist={node}", f"--mem={REQUEST_MB}M", "--output=/dev/null", command="sleep 15")
    states = final_states(ctl, [over, beside])
    error = lab_host(node).file(error_file).content_string
    slurmd_log = lab_host(node).check_output(f"grep -F 'StepId={over}.batch' /var/log/slurm/slurmd.log || true")
    NOTES.append(f"over its memory: sacct {states[over]}, stderr {error.strip()!r}; beside it: {states[beside]}")
    state, code, elapsed = states[over]
    # OverMemoryKill kills the step at a sample over its limit: the job FAILED on signal 9, well before its 60 s.
    assert (state, code) == ("FAILED", "0:9"), states
    assert elapsed < "00:00:30", states
    # slurmstepd says why in the job's stderr and in slurmd's log (22.05 and 24.11 alike).
    assert f"error: StepId={over}.batch exceeded memory limit (" in error and "being killed" in error, error
    assert "exceeded memory limit" in slurmd_log
    assert states[beside][:2] == ("COMPLETED", "0:0"), states
