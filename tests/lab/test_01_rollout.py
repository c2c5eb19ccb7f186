"""The rollout on bare lab hosts verifies itself, and a re-run changes nothing."""

from __future__ import annotations

import re

import pytest

from tests.lab.conftest import COMPUTE_NAMES, NODES, TIMINGS

pytestmark = pytest.mark.lab


GALAXY_THROUGH_SLURM = re.compile(
    r"Galaxy job \w+ \(destination slurm, runner slurm, handler handler\d+\) = Slurm job \d+ \(g\d+_+DATA_FETCH_+\w+\) "
    r"on (?P<node>\S+) as galaxy: COMPLETED"
)


def test_fresh_rollout_verifies_the_cluster(first_deploy):
    log = first_deploy.log
    assert f"sinfo: {NODES} nodes healthy" in log
    assert f"srun -N{NODES}: ran on" in log
    assert "sbatch job" in log and "completed on" in log
    assert first_deploy.changes > 0


def test_fresh_rollout_ran_a_galaxy_job_through_slurm(first_deploy):
    assert "Loaded job runner 'galaxy.jobs.runners.cli:ShellJobRunner' as 'slurm'" in first_deploy.log
    match = GALAXY_THROUGH_SLURM.search(first_deploy.log)
    assert match, first_deploy.log[-3000:]
    assert match["node"] in COMPUTE_NAMES


def test_rerun_changes_nothing(first_deploy, deploy):
    rerun = deploy()
    TIMINGS["no-change re-run"] = rerun.seconds
    assert rerun.returncode == 0, rerun.log[-3000:]
    assert rerun.changes == 0, rerun.changed_operations()
    assert "sbatch job" in rerun.log  # verification ran again
