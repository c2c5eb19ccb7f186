"""The rollout on bare lab hosts verifies itself (a re-run that changes nothing: test_04, on the
runner the lab keeps), and a run that changes something checks Galaxy again."""

from __future__ import annotations


import pytest

from tests.lab.conftest import COMPUTE_NAMES, FIRST_RUNNER, GALAXY_THROUGH_SLURM, HOST_NAMES, NODES, ON_DEBIAN_13_ONLY

pytestmark = pytest.mark.lab




def test_fresh_rollout_verifies_the_cluster(first_deploy):
    log = first_deploy.log
    assert f"sinfo: {NODES} nodes healthy" in log
    assert f"srun -N{NODES}: ran on" in log
    assert "sbatch job" in log and "completed on" in log
    assert first_deploy.changes > 0


def test_first_install_leaves_no_start_policy_and_every_daemon_enabled(first_deploy, lab_host):
    """The first install's one apt run held the daemons' starts with a policy-rc.d (tasks.packages):
    it is gone afterwards, and every daemon its layers started is enabled for the next boot."""
    for name in HOST_NAMES:
        host = lab_host(name)
        assert not host.file("/usr/sbin/policy-rc.d").exists, name
        daemons = ["munge"] + (["slurmctld", "slurmdbd", "mariadb"] if name == HOST_NAMES[0] else []) + \
            (["slurmd"] if name in COMPUTE_NAMES else [])
        for daemon in daemons:
            assert host.service(daemon).is_enabled and host.service(daemon).is_running, (name, daemon)


def test_fresh_rollout_ran_a_galaxy_job_through_slurm(first_deploy):
    runner = {"cli": "galaxy.jobs.runners.cli:ShellJobRunner", "drmaa": "galaxy.jobs.runners.slurm:SlurmJobRunner"}
    assert f"Loaded job runner '{runner[FIRST_RUNNER]}' as 'slurm'" in first_deploy.log
    match = GALAXY_THROUGH_SLURM.search(first_deploy.log)
    assert match, first_deploy.log[-3000:]
    assert match["node"] in COMPUTE_NAMES


@ON_DEBIAN_13_ONLY  # the verification's own logic: release-independent
def test_a_run_that_changes_something_checks_galaxy_again(first_deploy, deploy, lab_host):
    """The check started ahead is stopped when the run changes something (its job withdrawn,
    nothing left in the verification history), and a fresh one runs at the end."""
    galaxy = lab_host(HOST_NAMES[0])
    galaxy.check_output("rm /usr/local/share/pyinfra-galaxy-slurm/slurm-verify.sbatch")  # the run puts it back
    run = deploy()
    assert run.returncode == 0, run.log[-3000:]
    assert run.changes == 1, run.changed_operations()
    assert GALAXY_THROUGH_SLURM.search(run.log) and "run beside this run's checks" not in run.log, run.log[-3000:]
    assert galaxy.run("systemctl is-active pgs-galaxy-check-ahead").stdout.strip() != "active"
    assert not galaxy.file("/run/pyinfra-galaxy-slurm/galaxy-check-ahead.json").exists
