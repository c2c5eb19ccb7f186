"""The deploy refuses a Galaxy job runner switch that would strand jobs in flight,
and reads those jobs from what GalaxyDatabaseNow prints."""

from __future__ import annotations

import pytest

from tasks.facts import parse_galaxy_jobs
from tasks.model import ClusterConfigError, GalaxyJob, build_cluster, runner_switch_problems
from tests.unit.conftest import small_cluster

DRMAA_JOB = GalaxyJob(12, "queued", "slurm", "drmaa", "345")
CLI_JOB = GalaxyJob(13, "running", "slurm", "cli", "346")
LOCAL_JOB = GalaxyJob(14, "running", "local", "", None)


def test_switch_with_jobs_of_the_other_runner_is_refused_naming_them():
    (problem,) = runner_switch_problems("cli", [GalaxyJob(20, "running", "slurm", "drmaa", "400"), DRMAA_JOB])
    assert problem.startswith("galaxy_job_runner: 'cli' would strand 2 Galaxy jobs in flight under the 'drmaa' runner")
    assert "12 (queued, Slurm job 345), 20 (running, Slurm job 400)" in problem
    assert "keep galaxy_job_runner = 'drmaa'" in problem and "squeue -u galaxy" in problem


def test_jobs_of_the_same_runner_local_jobs_and_jobs_not_yet_in_slurm_do_not_block():
    assert runner_switch_problems("drmaa", [DRMAA_JOB, LOCAL_JOB]) == []
    # Galaxy queues a job without an external id again as new: the new runner takes it.
    assert runner_switch_problems("cli", [GalaxyJob(21, "queued", "slurm", "drmaa", None)]) == []
    assert runner_switch_problems("cli", [CLI_JOB, LOCAL_JOB]) == []
    assert runner_switch_problems("cli", []) == []


def test_build_cluster_refuses_before_any_host_is_touched():
    with pytest.raises(ClusterConfigError) as error:
        build_cluster(small_cluster(galaxy={"galaxy_job_runner": "cli"}), {}, galaxy_jobs=[DRMAA_JOB])
    assert "would strand 1 Galaxy job in flight under the 'drmaa' runner" in str(error.value)
    cluster = build_cluster(small_cluster(galaxy={"galaxy_job_runner": "cli"}), {}, galaxy_jobs=[CLI_JOB])
    assert cluster.galaxy.job_runner == "cli"


def test_no_galaxy_no_rule():
    cluster = build_cluster(small_cluster(), {"deploy_galaxy": False}, galaxy_jobs=[DRMAA_JOB])
    assert cluster.galaxy is None


def test_fact_lines_give_plugin_and_runner_class():
    jobs = parse_galaxy_jobs([
        "12\tqueued\tslurm\t345\t0",
        "13\trunning\tslurm\t346\t1",
        "14\trunning\tlocal:///\t-\t0",
        "15\tqueued\t-\t-\t0",
        "not a job line",
    ])
    assert jobs == [DRMAA_JOB, CLI_JOB, LOCAL_JOB, GalaxyJob(15, "queued", "", "", None)]


@pytest.mark.parametrize(("setting", "expected"), [
    (None, "pgs-verify@example.org"),
    ("check@galaxy.example.net", "check@galaxy.example.net"),
])
def test_verification_user_email(setting, expected):
    cluster = build_cluster(small_cluster(galaxy={"galaxy_verify_email": setting}), {})
    assert cluster.galaxy.verify_email == expected


@pytest.mark.parametrize(("setting", "expected"), [
    ("admin@example.org", "is the admin's own address"),
    ("not-an-address", "is not an email address"),
])
def test_verification_user_email_refused(setting, expected):
    with pytest.raises(ClusterConfigError, match=f"galaxy_verify_email: .*{expected}"):
        build_cluster(small_cluster(galaxy={"galaxy_verify_email": setting}), {})
