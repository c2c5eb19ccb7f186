"""Galaxy jobs in flight survive what a deploy (or a crash) does to Galaxy's handlers,
and a runner switch never strands them.

The handler case holds 2 Galaxy jobs running in Slurm and at least 4 held Slurm
jobs on every CPU left (tests/lab/inflight.py Workload) across a job_conf.xml change
and a killed handler, releases them and asserts every job's final state (Galaxy: dataset ok on the Slurm job it
started with; Slurm: COMPLETED exit 0:0). The DRMAA runner (Galaxy's default) needs SLURM_DRMAA_TARBALL.
"""

from __future__ import annotations

import os
import re
import shlex
import time

import pytest

from tests.lab.conftest import COMPUTE_NAMES, DRMAA_TARBALL, HOST_NAMES, NOTES, ON_DEBIAN_13_ONLY, REQUIRE_DRMAA, TIMINGS
from tests.lab.galaxy_jobs import PSQL_AS_GALAXY, VENV_PYTHON as VERIFY_PYTHON
from tests.lab.inflight import InFlightJobs, Workload

pytestmark = [
    pytest.mark.lab,
    ON_DEBIAN_13_ONLY,
    pytest.mark.skipif(not os.path.isfile(DRMAA_TARBALL) and not REQUIRE_DRMAA,
                       reason="SLURM_DRMAA_TARBALL does not name a slurm-drmaa release tarball on this machine"),
]
JOBS_IN_FLIGHT = 2
# A destination change that rewrites job_conf.xml, so the deploy restarts the handlers.
LONGER_TIME_LIMIT = [
    {"id": "slurm", "runner": "slurm", "native_specification": "--ntasks=1 --time=02:00:00"},
    {"id": "local", "runner": "local"},
]

# The verification user's histories and the datasets not purged in them.
VERIFICATION_LEFTOVERS = """
import json
from bioblend.galaxy import GalaxyInstance
key = json.load(open("/etc/pyinfra-galaxy-slurm/galaxy-verify-user.json"))["api_key"]
galaxy = GalaxyInstance("http://127.0.0.1", key=key)
histories = galaxy.histories.get_histories()
contents = [c for h in histories for c in galaxy.histories.show_history(h["id"], contents=True) if not c["purged"]]
print(f"histories={len(histories)} datasets={len(contents)}")
"""


def assert_all_ok(final: dict[str, dict], held: dict[str, dict]) -> None:
    for job_id, state in final.items():
        assert state["dataset_state"] == "ok" and state["slurm_state"] == "COMPLETED", (job_id, state)
        assert state["external_id"] == held[job_id]["external_id"], "the job was not followed but submitted again"


@pytest.fixture
def workload(request, galaxy_jobs, lab_host) -> Workload:
    """2 Galaxy jobs running in Slurm and at least 4 held Slurm jobs on every CPU left."""
    slurm = InFlightJobs(lab_host(HOST_NAMES[0]))
    slurm.assert_queue_empty()
    held = Workload(slurm, galaxy_jobs, COMPUTE_NAMES, galaxy_count=JOBS_IN_FLIGHT)
    yield held
    held.cancel()
    NOTES.append(f"{request.node.name}: {held.summary()}")


def test_handler_restart_and_kill_keep_running_jobs(workload, galaxy_jobs, deploy):
    """One workload across both: a job_conf.xml change (the deploy restarts the handlers),
    then a handler killed with -9 (supervisor brings it back); the jobs finish ok after both."""
    workload.start()
    handler_before = galaxy_jobs.handler_pid()
    run = deploy(*galaxy_jobs.deploy_args(galaxy_destinations=LONGER_TIME_LIMIT))
    TIMINGS[f"job_conf change with {JOBS_IN_FLIGHT} Galaxy jobs running"] = run.seconds
    assert run.returncode == 0, run.log[-5000:]
    assert galaxy_jobs.handler_pid() != handler_before, "the handler was not restarted"
    workload.assert_in_flight()

    starts_before = galaxy_jobs.handler_starts()
    started = time.monotonic()
    galaxy_jobs.ssh(f"kill -9 {galaxy_jobs.handler_pid()}")
    deadline = time.monotonic() + 240
    while galaxy_jobs.handler_starts() <= starts_before or not galaxy_jobs.handler_ready():
        assert time.monotonic() < deadline, "supervisor did not bring the killed handler back with its runners within 240 s"
        time.sleep(2)
    TIMINGS["handler back after kill -9 (supervisor)"] = time.monotonic() - started
    workload.assert_in_flight()
    workload.finish()


def test_runner_switch_is_refused_while_jobs_are_in_flight_then_goes_through(galaxy_jobs, deploy):
    jobs = galaxy_jobs.submit(JOBS_IN_FLIGHT)
    held = galaxy_jobs.wait_running(jobs)
    job_conf = galaxy_jobs.ssh(f"sha1sum {galaxy_jobs.root}/config/job_conf.xml")
    refused = deploy(*galaxy_jobs.deploy_args(galaxy_destinations=LONGER_TIME_LIMIT, galaxy_job_runner="cli"))
    assert refused.returncode != 0
    assert f"galaxy_job_runner: 'cli' would strand {JOBS_IN_FLIGHT} Galaxy jobs in flight under the 'drmaa' runner" in refused.log
    for state in held.values():
        assert f"Slurm job {state['external_id']})" in refused.log
    assert refused.result is None or refused.changes == 0
    assert galaxy_jobs.ssh(f"sha1sum {galaxy_jobs.root}/config/job_conf.xml") == job_conf
    galaxy_jobs.release(jobs)
    assert_all_ok(galaxy_jobs.wait_finished(jobs), held)

    switched = deploy(*galaxy_jobs.deploy_args(galaxy_destinations=LONGER_TIME_LIMIT, galaxy_job_runner="cli"))
    TIMINGS["runner switch drmaa -> cli once drained"] = switched.seconds
    assert switched.returncode == 0, switched.log[-5000:]
    assert "Loaded job runner 'galaxy.jobs.runners.cli:ShellJobRunner' as 'slurm'" in switched.log
    assert "= Slurm job" in switched.log  # the deploy's own Galaxy job ran under the CLI runner
    back = deploy(*galaxy_jobs.deploy_args(galaxy_destinations=LONGER_TIME_LIMIT))
    assert back.returncode == 0, back.log[-5000:]


def test_verification_keeps_its_own_user_key_and_history(galaxy_jobs, deploy):
    run = deploy(*galaxy_jobs.deploy_args(galaxy_destinations=LONGER_TIME_LIMIT))
    assert run.returncode == 0 and run.changes == 0, run.changed_operations()
    assert "Galaxy user pgs-verify@example.org (kept key)" in run.log
    assert galaxy_jobs.ssh("stat -c '%a %U' /etc/pyinfra-galaxy-slurm /etc/pyinfra-galaxy-slurm/galaxy-verify-user.json").split() \
        == ["700", "root", "600", "root"]
    left = galaxy_jobs.ssh(f"{VERIFY_PYTHON} -c {shlex.quote(VERIFICATION_LEFTOVERS)}").split()
    assert left == ["histories=1", "datasets=0"], left


def test_verification_on_a_full_cluster_proves_galaxy_reaches_slurm_and_leaves_nothing(galaxy_jobs, deploy):
    cpus = int(galaxy_jobs.ssh("sinfo --noheader --format=%C").strip().split("/")[-1])  # allocated/idle/other/total
    fill = galaxy_jobs.ssh(f"for i in $(seq {cpus}); do sbatch --parsable --ntasks=1 --job-name=pgs-fill --wrap 'sleep 600'; done")
    try:
        run = deploy(*galaxy_jobs.deploy_args(galaxy_destinations=LONGER_TIME_LIMIT))
    finally:
        galaxy_jobs.ssh("scancel " + " ".join(fill.split()))
    TIMINGS["deploy on a full cluster (no change)"] = run.seconds
    assert run.returncode == 0, run.log[-5000:]
    match = re.search(r"= Slurm job (\d+) \(g\d+_+DATA_FETCH_+\w+\) as galaxy: PENDING \(Resources\) for [\d.]+ s: the cluster is "
                      r"full, Galaxy reaches Slurm; Galaxy job deleted, Slurm job removed by (Galaxy|scancel)", run.log)
    assert match, run.log[-3000:]
    assert galaxy_jobs.ssh(f"squeue --noheader --jobs={match[1]} --format=%T 2>/dev/null || true").strip() in ("", "CANCELLED")
    left = galaxy_jobs.ssh(f"{VERIFY_PYTHON} -c {shlex.quote(VERIFICATION_LEFTOVERS)}").split()
    assert left == ["histories=1", "datasets=0"], left


def test_handler_holding_jobs_is_not_removed(galaxy_jobs, deploy):
    """Jobs held in flight until released (the lab's wait_for_release tool), one on handler1:
    galaxy_handlers = 1 is refused naming handler1 and its job, nothing changes, and every
    job still ends ok on its own handler."""
    in_flight = PSQL_AS_GALAXY + shlex.quote("SELECT id, handler FROM job WHERE tool_id = 'pgs_wait_for_release' "
                                   "AND state IN ('new', 'queued', 'running')")
    held: list[dict] = []
    try:
        # A handler takes every unassigned job it sees (db-skip-locked), and in CI handler0 took four in a
        # row: with handler0 stopped for the moment of submission, handler1 takes the job.
        galaxy_jobs.ssh("supervisorctl stop gx:handler0", timeout=120)
        try:
            held += galaxy_jobs.submit(1)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                rows = [line.split("|") for line in galaxy_jobs.ssh(in_flight).split()]
                if rows and all(handler.startswith("handler") for _, handler in rows):
                    break
                time.sleep(2)
        finally:
            galaxy_jobs.ssh("supervisorctl start gx:handler0", timeout=120)
        on_handler1 = [job_id for job_id, handler in rows if handler == "handler1"]
        assert on_handler1, f"no job went to handler1: {rows}"
        before = galaxy_jobs.ssh("sha1sum /srv/galaxy/config/job_conf.xml /etc/supervisor/conf.d/galaxy.conf")
        refused = deploy(*galaxy_jobs.deploy_args(galaxy_handlers=1))
        assert refused.returncode != 0
        assert "galaxy_handlers: 1 would remove job handler handler1, which still holds jobs" in refused.log, refused.log[-3000:]
        assert f"handler1 holds Galaxy job{'s' if len(on_handler1) > 1 else ''} {', '.join(sorted(on_handler1, key=int))}" \
            in refused.log
        assert galaxy_jobs.ssh("sha1sum /srv/galaxy/config/job_conf.xml /etc/supervisor/conf.d/galaxy.conf") == before
        assert "RUNNING" in galaxy_jobs.ssh("supervisorctl status gx:handler1")
    finally:
        galaxy_jobs.release(held)
    final = galaxy_jobs.wait_finished(held)
    assert all(state["dataset_state"] == "ok" for state in final.values()), final
    NOTES.append(f"test_12 handler removal refused while handler1 held Galaxy jobs {on_handler1}; "
                 f"{len(held)} held jobs ended {sorted(s['dataset_state'] for s in final.values())}")
