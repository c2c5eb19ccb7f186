"""Galaxy's destinations proved on the cluster (DRMAA runner, the session's deployed lab).

- A destination Slurm would never start is refused before job_conf.xml changes:
  one asking more time than its partition's MaxTime (Slurm would queue it
  forever with reason PartitionTimeLimit), one asking more CPUs than a node has
  (sbatch --test-only: "Requested node configuration is not available").
- Two Slurm destinations: a job through each, both named in the report, both ok.
- A destination Slurm accepts but whose Galaxy job fails (a destination param
  Galaxy enforces: require_container, and the upload tool has no container) has
  its job_conf.xml rolled back byte for byte and the handlers restarted.
The lab's default partitions and destinations are deployed again at the end (on both releases:
later tests start from them; test_08 leaves another destination on Debian 13). The destination
cases do not depend on the release (sbatch --test-only answers alike on Slurm 22.05 and 24.11):
they run on Debian 12, the sudo-user lab.
"""

from __future__ import annotations

import re

import pytest

from tests.lab.conftest import HOST_NAMES, NOTES, ON_DEBIAN_12_ONLY, TIMINGS

GALAXY = HOST_NAMES[0]
JOB_CONF = "/srv/galaxy/config/job_conf.xml"
pytestmark = [pytest.mark.lab]

DEFAULT_PARTITION = {"name": "debug", "nodes": "ALL", "default": True, "max_time": "INFINITE"}
SHORT_PARTITION = {"name": "short", "nodes": "ALL", "default": False, "max_time": "00:05:00"}
LOCAL = {"id": "local", "runner": "local"}
SLURM = {"id": "slurm", "runner": "slurm", "native_specification": "--ntasks=1"}


@pytest.fixture(scope="module")
def galaxy_host(galaxy_jobs, lab_host):
    return lab_host(GALAXY)


def live_state(host, galaxy_jobs) -> tuple[str, str]:
    return host.check_output(f"sha1sum {JOB_CONF}").split()[0], galaxy_jobs.handler_pid()


@ON_DEBIAN_12_ONLY
def test_destination_slurm_would_never_start_is_refused_before_job_conf_changes(galaxy_jobs, galaxy_host, deploy):
    before = live_state(galaxy_host, galaxy_jobs)
    destinations = [SLURM, LOCAL,
                    {"id": "long", "runner": "slurm", "native_specification": "--partition=short --time=0:10"},
                    {"id": "wide", "runner": "slurm", "native_specification": "--cpus-per-task=64"}]
    run = deploy(*galaxy_jobs.deploy_args(slurm_partitions=[DEFAULT_PARTITION, SHORT_PARTITION],
                                          galaxy_destinations=destinations))
    TIMINGS["destination refused (test-only)"] = run.seconds
    assert run.returncode != 0
    assert ("galaxy_destinations[2].native_specification (long: '--partition=short --time=0:10'): asks a time limit "
            "of 0:10:00 but partition short has MaxTime=00:05:00") in run.log
    assert "keeps it PENDING forever with reason PartitionTimeLimit" in run.log
    assert ("galaxy_destinations[3].native_specification (wide: '--cpus-per-task=64'): Slurm refuses its jobs: "
            "Requested node configuration is not available") in run.log
    # Refused at once, not after a Galaxy job waited in the queue (300 s before this check).
    assert run.seconds < 120, run.seconds
    assert not re.search(r"Galaxy job \w+ \(", run.log)  # no Galaxy job was sent
    # The partition of this run was in place for the check; Galaxy was left alone.
    assert "MaxTime=00:05:00" in galaxy_host.check_output("scontrol show partition short --oneliner")
    assert live_state(galaxy_host, galaxy_jobs) == before
    assert galaxy_jobs.handler_ready()


@ON_DEBIAN_12_ONLY
def test_job_conf_failing_verification_is_rolled_back(galaxy_jobs, galaxy_host, deploy):
    job_conf = galaxy_host.file(JOB_CONF).content_string
    pid = galaxy_jobs.handler_pid()
    gated = {**SLURM, "params": {"require_container": "true"}}
    run = deploy(*galaxy_jobs.deploy_args(galaxy_destinations=[gated, LOCAL]))
    TIMINGS["job_conf.xml rolled back after its verification"] = run.seconds
    assert run.returncode != 0
    assert re.search(r"Galaxy's job configuration failed its verification \(a Galaxy job through Slurm did not end ok\) "
                     r"and is rolled back after this run changed /srv/galaxy/config/job_conf.xml; restored the previous "
                     r"version .* and restarted: it runs again with the previous configuration", run.log), run.log[-4000:]
    assert '"dataset_state": "error"' in run.log
    assert galaxy_host.file(JOB_CONF).content_string == job_conf
    assert "require_container" not in job_conf
    assert galaxy_jobs.handler_pid() != pid  # restarted twice: with the new file, then with the restored one
    assert galaxy_jobs.handler_ready()


@ON_DEBIAN_12_ONLY
def test_every_slurm_destination_runs_a_job(galaxy_jobs, galaxy_host, deploy):
    """Two Slurm destinations: the upload goes to the default, the verification's own tool to the other;
    the report names both, each job COMPLETED in Slurm with its destination's partition and time limit;
    the tool saw in GALAXY_SLOTS and GALAXY_MEMORY_MB the CPUs and memory its destination asked of Slurm."""
    short = {"id": "short-jobs", "runner": "slurm",
             "native_specification": "--partition=short --time=0:04 --cpus-per-task=2 --mem=700"}
    args = galaxy_jobs.deploy_args(slurm_partitions=[DEFAULT_PARTITION, SHORT_PARTITION],
                                   galaxy_destinations=[SLURM, short, LOCAL])
    run = deploy(*args)
    TIMINGS["two Slurm destinations verified"] = run.seconds
    assert run.returncode == 0, run.log[-5000:]
    assert re.search(r"Galaxy job \w+ \(destination slurm, runner slurm, handler handler\d\) = Slurm job \d+ .* on \S+-c\d "
                     r"as galaxy: COMPLETED", run.log), run.log[-4000:]
    line = re.search(r"destination short-jobs: Galaxy job \w+ \(tool pgs_verify_short_jobs\) = Slurm job (\d+) on \S+-c\d, "
                     r"partition short, time limit 00:04:00, GALAXY_SLOTS=2 GALAXY_MEMORY_MB=700 "
                     r"\(Slurm gave cpu=2,mem=700M,node=1,billing=2\): COMPLETED, dataset ok in ([\d.]+) s", run.log)
    assert line, run.log[-4000:]
    assert '<tool id="pgs_verify_short_jobs" destination="short-jobs"/>' in galaxy_host.file(JOB_CONF).content_string
    rerun = deploy(*args)
    assert rerun.returncode == 0 and rerun.changes == 0, rerun.changed_operations()


def test_default_destinations_again(galaxy_jobs, galaxy_host, deploy, first_deploy):
    """The lab's own settings back (later tests see the default cluster); the verification job ends ok."""
    run = deploy(*galaxy_jobs.deploy_args())
    assert run.returncode == 0, run.log[-5000:]
    line = re.search(r"Galaxy job \w+ \(destination slurm, runner slurm, handler handler\d+\) = Slurm job \d+ .* as galaxy: "
                     r"COMPLETED, .*upload to dataset ok in ([\d.]+) s", run.log)
    assert line, run.log[-4000:]
    NOTES.append(f"DRMAA runner: upload to dataset ok in {line[1]} s (destination slurm)")
    cli = re.search(r"Galaxy job \w+ \(destination slurm, runner slurm, .*upload to dataset ok in ([\d.]+) s", first_deploy.log)
    NOTES.append(f"CLI runner (the fresh rollout): upload to dataset ok in {cli[1] if cli else '?'} s")
    assert "short" not in galaxy_host.check_output("scontrol show partition --oneliner | cut -d' ' -f1")
    assert "require_container" not in galaxy_host.file(JOB_CONF).content_string
    assert galaxy_jobs.handler_ready()
