"""Reboots, as real hosts reboot (`lab.py reboot`: systemd's shutdown, then a boot): every daemon
comes back by itself, the node returns to service, queued and requeued jobs complete (none lost),
Galaxy serves and finishes the job it had in flight, and a re-run changes nothing.

Debian 13 only: systemd's unit ordering and Slurm's job recovery are the same on both releases.
A compute host with jobs running does not finish its shutdown in the lab's 30 s (systemd waits for
the jobs' slurmstepd, up to DefaultTimeoutStopSec = 90 s on a real host: "Waiting for process:
slurmstepd"), and is then powered off: the jobs die either way, and slurmctld requeues them.
"""

from __future__ import annotations

import re
import time

import pytest

from tests.lab.conftest import COMPUTE_NAMES, HOST_NAMES, NOTES, ON_DEBIAN_13_ONLY, TEST_LAB, TIMINGS

CONTROLLER = HOST_NAMES[0]
pytestmark = [pytest.mark.lab, ON_DEBIAN_13_ONLY]
IN_SERVICE = ("idle", "mixed", "allocated")
JOB_SECONDS = 10
FINAL_STATES = ("COMPLETED", "FAILED", "CANCELLED", "NODE_FAIL", "BOOT_FAIL", "TIMEOUT", "OUT_OF_MEMORY")


def wait_for(what: str, check, timeout: float, every: float = 2):
    """check()'s first true value within `timeout` seconds; else fail with its last value."""
    deadline, value = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout} s (last: {value!r})")


def job_states(controller, jobs: list[str]) -> dict[str, str]:
    """{job id: "STATE exit restarts"} from slurmctld (jobs stay MinJobAge = 300 s after they end)."""
    states = {}
    for job in jobs:
        record = controller.run(f"scontrol --oneliner show job {job}").stdout
        fields = dict(re.findall(r"(\w+)=(\S+)", record))
        states[job] = f"{fields.get('JobState', '?')} {fields.get('ExitCode', '?')} restarts={fields.get('Restarts', '?')}"
    return states


def test_compute_host_reboot_with_jobs_running_and_queued(first_deploy, deploy, lab_host):
    """Four one-CPU jobs on a two-CPU node: two run, two wait. The node reboots: slurmd comes back
    by itself, the node returns to service, the running jobs are requeued and every job completes.
    slurmctld holds a requeued job for a while before it runs again (about 3 minutes, measured on
    24.11): the test makes them eligible at once (`StartTime=now`) once it has seen them requeued."""
    controller, node = lab_host(CONTROLLER), COMPUTE_NAMES[0]
    jobs = [controller.check_output(f"sbatch --parsable --job-name=pgs-reboot --nodelist={node} --ntasks=1 --mem=16 "
                                    f"--wrap 'sleep {JOB_SECONDS}'").split(";")[0] for _ in range(4)]
    wait_for("two jobs running", lambda: sum("RUNNING" in s for s in job_states(controller, jobs).values()) == 2, 60)
    running = [job for job, state in job_states(controller, jobs).items() if state.startswith("RUNNING")]
    started = time.monotonic()
    ssh_back = TEST_LAB.reboot(node)
    in_service = wait_for(f"{node} back in service", lambda: controller.check_output(
        f"sinfo --noheader --Node --nodes={node} --format=%T").strip() in IN_SERVICE, 300) and time.monotonic() - started
    wait_for("the running jobs requeued", lambda: all("restarts=1" in job_states(controller, running)[job] for job in running),
             120)
    for job in running:
        controller.check_output(f"scontrol update jobid={job} StartTime=now")

    def ended() -> dict[str, str] | None:
        states = job_states(controller, jobs)
        return states if all(state.split()[0] in FINAL_STATES for state in states.values()) else None

    final = wait_for("every job ended", ended, 300, every=3)
    done = time.monotonic() - started
    assert all(state.startswith("COMPLETED 0:0") for state in final.values()), final
    requeued = sum(not state.endswith("restarts=0") for state in final.values())
    assert requeued == 2, final
    assert lab_host(node).check_output("systemctl is-active munge slurmd").split() == ["active", "active"]
    NOTES.append(f"test_14 compute reboot: SSH back {ssh_back:.0f} s, {node} in service {in_service:.0f} s after the "
                 f"reboot began, all 4 jobs COMPLETED 0:0 after {done:.0f} s ({requeued} requeued), 0 lost")
    TIMINGS["compute host reboot, 4 jobs: until all completed"] = done


def test_head_reboot_with_a_galaxy_job_in_flight(galaxy_jobs, deploy, lab_host):
    """The controller and Galaxy host reboots while a Galaxy job runs in Slurm: slurmctld,
    PostgreSQL, supervisor's Galaxy and nginx come back by themselves, the job's handler takes it
    up again, it ends ok, a new run changes nothing."""
    held = galaxy_jobs.submit(1)
    galaxy_jobs.wait_running(held)
    started = time.monotonic()
    ssh_back = TEST_LAB.reboot(CONTROLLER)
    controller = lab_host(CONTROLLER)
    daemons = "munge slurmctld postgresql supervisor nginx"
    wait_for("the head's daemons active", lambda: set(controller.run(f"systemctl is-active {daemons}").stdout.split())
             == {"active"}, 180)
    serving = wait_for("Galaxy's API through nginx", lambda: controller.run(
        "python3 -c 'import urllib.request; urllib.request.urlopen(\"http://127.0.0.1/api/version\", timeout=5)'").rc == 0,
        300) and time.monotonic() - started
    galaxy_jobs.release(held)
    final = next(iter(galaxy_jobs.wait_finished(held).values()))
    assert final["dataset_state"] == "ok", final
    again = deploy(*galaxy_jobs.deploy_args())
    assert again.returncode == 0 and again.changes == 0, again.changed_operations()
    NOTES.append(f"test_14 head reboot: SSH back {ssh_back:.0f} s, Galaxy serving {serving:.0f} s after the reboot began, "
                 f"the Galaxy job in flight ended {final['dataset_state']} on Slurm job {final['external_id']}; "
                 f"re-run {again.seconds:.0f} s, 0 changes")
    TIMINGS["head reboot: Galaxy serving again"] = serving
