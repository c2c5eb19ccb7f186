"""Slurm accounting (slurmdbd + MariaDB, on by default): sacct sees the deploy's
verification jobs, and a Galaxy job that finished while its handler was down
ends ok once the handler is back, after slurmctld has forgotten the job.

The handler-outage case (DRMAA runner, needs SLURM_DRMAA_TARBALL): MinJobAge=10
(slurm_config_extra) so that a finished job leaves slurmctld's memory within a
minute or two; the handler is stopped with supervisorctl while its Galaxy job
runs in Slurm (the handler that owns it: there are two), the job is released and completes, ages out of slurmctld, and
the handler is started again. With accounting, slurm-drmaa
(SLURM_DRMAA_USE_SLURMDBD=1) reads the finished job from slurmdbd: the dataset
must end ok. Without accounting the outage case ends in error: measured and written down
(docs/operations.md, "What Galaxy does without accounting"), no longer repeated here, nor is
accounting turned off and on again on the running cluster (unit-tested: tests/unit/test_slurm_conf.py):
together they cost CI four minutes, which the reboot tests (test_14) use.
"""

from __future__ import annotations

import os
import re
import time

import pytest

from tests.lab.conftest import DRMAA_TARBALL, HOST_NAMES, NOTES, ON_DEBIAN_13_ONLY, REQUIRE_DRMAA, SLURM_ONLY, TIMINGS

pytestmark = [pytest.mark.lab]
CONTROLLER = HOST_NAMES[0]
SHORT_MIN_JOB_AGE = {"MinJobAge": 10}
AGE_OUT_TIMEOUT = 240  # MinJobAge 10 s, plus slurmctld's purge, which runs about once a minute
NEEDS_DRMAA = pytest.mark.skipif(not os.path.isfile(DRMAA_TARBALL) and not REQUIRE_DRMAA,
                                 reason="SLURM_DRMAA_TARBALL does not name a slurm-drmaa release tarball on this machine")


def sacct_record(host, job_id: str) -> list[str]:
    return host.check_output(f"sacct -j {job_id} -n -P -X -o State,ExitCode").split()


def test_sacct_has_the_verification_job(first_deploy, lab_host):
    controller = lab_host(CONTROLLER)
    found = re.search(r"sacct: job (\d+) COMPLETED 0:0 in the accounting database", first_deploy.log)
    assert found, "the deploy did not read its sbatch test job back from sacct"
    assert sacct_record(controller, found.group(1)) == ["COMPLETED|0:0"]
    assert controller.check_output("stat -c '%a %U' /etc/slurm/slurmdbd.conf") == "600 slurm"
    assert controller.service("slurmdbd").is_running and controller.service("mariadb").is_running
    assert "galaxy" in controller.check_output("sacctmgr -n -P list cluster format=Cluster").split()
    galaxy_job = re.search(r"= Slurm job (\d+) ", first_deploy.log)
    if not SLURM_ONLY:
        assert galaxy_job and f"sacct: job {galaxy_job.group(1)} COMPLETED 0:0" in first_deploy.log, \
            "the Galaxy check did not find its Slurm job in sacct"
    rss = controller.check_output("ps -o rss= -C slurmdbd,mariadbd -o comm=")
    NOTES.append("accounting memory (RSS kB): " + ", ".join(" ".join(line.split()[::-1]) for line in rss.splitlines()))


@ON_DEBIAN_13_ONLY  # the model's and the hosts' checks before any change: release-independent
def test_bad_accounting_input_refused_before_any_change(first_deploy, deploy, lab_host, tmp_path):
    """No database at the given address; an empty password file; a database holding
    another cluster's tables: each refused, nothing changed."""
    controller = lab_host(CONTROLLER)
    before = controller.check_output("sha1sum /etc/slurm/slurmdbd.conf /etc/slurm/slurm.conf")
    empty, some = tmp_path / "empty", tmp_path / "some"
    for path, text in ((empty, ""), (some, "some-password\n")):
        path.write_text(text)
        path.chmod(0o600)
    cases = {
        "does not answer from": ["slurm_accounting_storage_host=127.0.0.1", "slurm_accounting_storage_port=3399",
                                 f"slurm_accounting_storage_pass_file={some}"],
        "is empty; put the database password on its first line": [f"slurm_accounting_storage_pass_file={empty}"],
        "already holds the accounting of cluster galaxy, not other": ["slurm_cluster_name=other"],
    }
    for expected, settings in cases.items():
        run = deploy(*[arg for setting in settings for arg in ("--data", setting)])
        assert run.returncode != 0 and expected in run.log, (settings, run.log[-3000:])
        assert run.result is None or run.changes == 0, run.changed_operations()
    assert controller.check_output("sha1sum /etc/slurm/slurmdbd.conf /etc/slurm/slurm.conf") == before


def test_slurmdbd_that_does_not_come_back_is_rolled_back(first_deploy, deploy, lab_host, tmp_path):
    """The same MariaDB as an existing server with a wrong password: slurmdbd cannot log in and
    stops; the previous slurmdbd.conf comes back, slurmdbd runs again, the run fails saying so."""
    controller = lab_host(CONTROLLER)
    before = controller.check_output("sha1sum /etc/slurm/slurmdbd.conf")
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password\n")
    wrong.chmod(0o600)
    run = deploy("--data", "slurm_accounting_storage_host=127.0.0.1", "--data", f"slurm_accounting_storage_pass_file={wrong}")
    assert run.returncode != 0
    assert "slurmdbd did not come back after this run changed /etc/slurm/slurmdbd.conf" in run.log, run.log[-5000:]
    assert "it runs again with the previous configuration" in run.log
    assert controller.check_output("sha1sum /etc/slurm/slurmdbd.conf") == before
    assert controller.service("slurmdbd").is_running


def test_slurmctld_schedules_while_slurmdbd_is_down_and_a_rerun_catches_up(first_deploy, deploy, lab_host):
    controller = lab_host(CONTROLLER)
    controller.check_output("systemctl stop slurmdbd")
    try:
        job = controller.check_output("sbatch --parsable -J pgs-acct-down --mem=16 --wrap true").split(";")[0]
        deadline = time.monotonic() + 60
        while "JobState=COMPLETED" not in controller.run(f"scontrol show job {job}").stdout:
            assert time.monotonic() < deadline, controller.run(f"scontrol show job {job}").stdout
            time.sleep(1)
    finally:
        run = deploy()
    assert run.returncode == 0, run.log[-5000:]
    assert "Start or restart slurmdbd" in " ".join(run.changed_operations())
    deadline = time.monotonic() + 60
    while sacct_record(controller, job) != ["COMPLETED|0:0"]:
        assert time.monotonic() < deadline, f"job {job} (run while slurmdbd was down) never reached sacct"
        time.sleep(2)


def handler_outage(galaxy_jobs, deploy, controller) -> dict:
    """One Galaxy job finishes in Slurm while its handler is stopped and ages out of
    slurmctld before the handler starts again; its final state."""
    run = deploy(*galaxy_jobs.deploy_args(slurm_config_extra=SHORT_MIN_JOB_AGE))
    assert run.returncode == 0, run.log[-5000:]
    env = galaxy_jobs.ssh("cat /etc/supervisor/conf.d/galaxy.conf")
    assert 'SLURM_DRMAA_USE_SLURMDBD="1"' in env
    jobs = galaxy_jobs.submit(1)
    held = galaxy_jobs.wait_running(jobs)
    slurm_id = next(iter(held.values()))["external_id"]
    handler = galaxy_jobs.handler_of(slurm_id)  # either handler may own it: stopping the other proves nothing
    assert handler.startswith("handler"), f"Slurm job {slurm_id}: Galaxy job handler {handler!r}"
    galaxy_jobs.ssh(f"supervisorctl stop gx:{handler}", timeout=120)
    started = time.monotonic()
    try:
        galaxy_jobs.release(jobs)
        deadline = time.monotonic() + AGE_OUT_TIMEOUT
        while controller.run(f"scontrol show job {slurm_id}").rc == 0:
            assert time.monotonic() < deadline, f"Slurm job {slurm_id} still known to slurmctld after {AGE_OUT_TIMEOUT} s"
            time.sleep(3)
        aged_out = time.monotonic() - started
    finally:
        galaxy_jobs.ssh(f"supervisorctl start gx:{handler}", timeout=120)
    final = next(iter(galaxy_jobs.wait_finished(jobs).values()))
    sacct = controller.run(f"sacct -j {slurm_id} -n -P -X -o State,ExitCode")
    outcome = {"handler": handler, "dataset_state": final["dataset_state"], "galaxy_state": final["state"], "slurm_job": slurm_id,
               "aged_out_after_s": round(aged_out), "sacct": (sacct.stdout or sacct.stderr).strip()}
    NOTES.append(f"handler outage, accounting on: {outcome}")
    return outcome


@NEEDS_DRMAA
@ON_DEBIAN_13_ONLY
def test_handler_outage_with_accounting(galaxy_jobs, deploy, lab_host):
    controller = lab_host(CONTROLLER)
    try:
        with_accounting = handler_outage(galaxy_jobs, deploy, controller)
        assert with_accounting["dataset_state"] == "ok", with_accounting
        assert with_accounting["sacct"] == "COMPLETED|0:0", with_accounting
    finally:
        restored = deploy(*galaxy_jobs.deploy_args())
        assert restored.returncode == 0, restored.log[-5000:]
    TIMINGS["MinJobAge back to Slurm's default (re-run after the outage case)"] = restored.seconds
    again = deploy(*galaxy_jobs.deploy_args())
    assert again.returncode == 0 and again.changes == 0, again.changed_operations()
