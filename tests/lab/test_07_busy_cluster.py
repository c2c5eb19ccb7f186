"""Healthy is not idle: a deploy on a cluster full of running jobs verifies it
without waiting for it to empty, and its changes (slurm.conf, a new compute
host) keep every job in flight running to completion.

One workload for the whole sequence (tests/lab/inflight.py Workload): 2 Galaxy
jobs running in Slurm, then at least 4 held Slurm batch jobs that take every CPU
left (the ones that find none wait for them). With them in flight: a no-change
re-run, a partition added and removed again (slurm.conf changes), a compute host
added, and a re-run after it; after each deploy every job is still where it was.
Then they are released: each Slurm job COMPLETED with exit 0:0, each Galaxy
job's dataset ok on the Slurm job it started with. The cluster grows by one
compute host here (so the lab grows once).
"""

from __future__ import annotations

import json

import pytest

from tests.lab.conftest import COMPUTE_NAMES, HOST_NAMES, LAB_NAME, NODES, NOTES, RELEASE, SSH_USER, TIMINGS, lab
from tests.lab.inflight import InFlightJobs, Workload

pytestmark = pytest.mark.lab

CONTROLLER = HOST_NAMES[0]
PARTITION_NAMES = "scontrol --oneliner show partition | grep -o '^PartitionName=[^ ]*' | cut -d= -f2"
TWO_PARTITIONS = [
    {"name": "debug", "nodes": "ALL", "default": True, "max_time": "INFINITE"},
    {"name": "long", "nodes": "ALL", "max_time": "7-00:00:00"},
]


@pytest.fixture
def jobs(request, galaxy_jobs, lab_host):
    held = InFlightJobs(lab_host(CONTROLLER))
    held.assert_queue_empty()  # a job left by an earlier test would hold a CPU this case counts on
    # One compute host (the Debian 12 run) has 2 CPUs: one Galaxy job leaves a CPU for a Slurm job to run.
    workload = Workload(held, galaxy_jobs, COMPUTE_NAMES, galaxy_count=2 if NODES > 1 else 1)
    yield workload
    workload.cancel()  # whatever a failing test left behind
    NOTES.append(f"{request.node.name}: {workload.summary()}")


@pytest.fixture
def busy(galaxy_jobs) -> list[str]:
    """--data that every deploy of these cases passes: the lab's test tool stays loaded."""
    return galaxy_jobs.deploy_args()


def verify_jobs_left(lab_host) -> str:
    return lab_host(CONTROLLER).check_output("squeue --noheader --name=pgs-verify")


def daemon_pids(lab_host) -> dict[str, str]:
    """slurmctld's and each slurmd's main PID: a restart changes it."""
    units = {CONTROLLER: "slurmctld", **{name: "slurmd" for name in COMPUTE_NAMES}}
    return {f"{unit} on {name}": lab_host(name).check_output(f"systemctl show --property=MainPID --value {unit}")
            for name, unit in units.items()}


def note_restarts(what: str, before: dict[str, str], after: dict[str, str]) -> None:
    """Which daemons the change restarted while the jobs ran (recorded, not asserted:
    how a change is applied is tasks/slurm.py's business; that jobs survive it is this module's)."""
    restarted = [daemon for daemon in before if before[daemon] != after[daemon]]
    NOTES.append(f"{what}: restarted with jobs in flight: {', '.join(restarted) or 'nothing'}")


def note_verification(what: str, run) -> None:
    lines = [line.strip() for line in run.log.splitlines()
             if "] " in line and any(key in line for key in ("sinfo:", "srun", "sbatch job"))]
    NOTES.append(f"{what} ({run.seconds:.1f} s): " + " | ".join(lines))


def assert_full_cluster_verified(run) -> None:
    assert "accepted and PENDING (" in run.log and "job cancelled" in run.log, run.log[-3000:]
    assert "busy but healthy" in run.log
    assert "the cluster is full, Galaxy reaches Slurm" in run.log, run.log[-3000:]


def test_changes_on_a_full_cluster_keep_every_job_running(jobs, busy, deploy, lab_host):
    new_node = f"{LAB_NAME}-c{NODES + 1}"
    jobs.start()
    before = daemon_pids(lab_host)
    leftovers = {}  # the verification's own jobs left in the queue after each deploy

    # A no-change re-run restarts nothing and proves a full cluster healthy.
    rerun = deploy(*busy)
    TIMINGS["no-change re-run, cluster full"] = rerun.seconds
    note_verification("no-change re-run", rerun)
    jobs.assert_in_flight()
    leftovers["no-change re-run"] = verify_jobs_left(lab_host)
    unchanged = daemon_pids(lab_host)

    # slurm.conf changes: a partition added, then removed again.
    added = deploy(*busy, "--data", f"slurm_partitions={json.dumps(TWO_PARTITIONS)}")
    TIMINGS["add a partition, cluster full"] = added.seconds
    jobs.assert_in_flight()
    leftovers["add a partition"] = verify_jobs_left(lab_host)
    partitions = lab_host(CONTROLLER).check_output(PARTITION_NAMES)
    between = daemon_pids(lab_host)
    removed = deploy(*busy)
    TIMINGS["remove it again, cluster full"] = removed.seconds
    jobs.assert_in_flight()
    leftovers["remove it again"] = verify_jobs_left(lab_host)
    partitions_after = lab_host(CONTROLLER).check_output(PARTITION_NAMES)
    note_restarts("add a partition", unchanged, between)
    note_verification("add a partition", added)
    note_verification("remove it again", removed)
    after_partitions = daemon_pids(lab_host)
    note_restarts("remove it again", between, after_partitions)

    # A compute host joins.
    lab("up", "--nodes", str(NODES + 1), "--release", RELEASE, "--ssh-user", SSH_USER)
    grown = deploy(*busy)
    TIMINGS["add a compute host, cluster full"] = grown.seconds
    jobs.assert_in_flight()
    leftovers["add a compute host"] = verify_jobs_left(lab_host)
    note_restarts("add a compute host", after_partitions, daemon_pids(lab_host))
    note_verification("add a compute host", grown)
    rerun_grown = deploy(*busy)  # still busy: the old nodes are full, the new one is not
    jobs.assert_in_flight()
    leftovers["re-run after adding it"] = verify_jobs_left(lab_host)
    note_verification("re-run after adding it", rerun_grown)
    jobs.finish()

    assert rerun.returncode == 0, rerun.log[-5000:]
    assert rerun.changes == 0, rerun.changed_operations()
    assert unchanged == before  # a re-run restarts nothing
    assert f"sinfo: {NODES} nodes healthy" in rerun.log
    assert_full_cluster_verified(rerun)
    for run in (added, removed):
        assert run.returncode == 0, run.log[-5000:]
        assert any("slurm.conf" in op for op in run.changed_operations()), run.changed_operations()
        assert_full_cluster_verified(run)
    assert partitions.split() == ["debug", "long"]
    assert partitions_after.split() == ["debug"]
    assert grown.returncode == 0, grown.log[-5000:]
    assert f"sinfo: {NODES + 1} nodes healthy" in grown.log
    # The only free CPUs are on the new node: the checks run there, the others are busy.
    assert f"srun -N1: ran on {new_node}; busy but healthy: " in grown.log, grown.log[-3000:]
    assert f"completed on {new_node}" in grown.log
    assert rerun_grown.returncode == 0 and rerun_grown.changes == 0, rerun_grown.changed_operations()
    assert leftovers == dict.fromkeys(leftovers, ""), leftovers
