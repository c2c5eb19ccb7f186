"""Galaxy's DRMAA runner through slurm-drmaa built from a release tarball.

The lab reaches no release downloads, so this needs SLURM_DRMAA_TARBALL (a
slurm-drmaa release tarball on this machine; `make` finds the project's test data
in ../shared/slurm-drmaa/). Without it the tests are skipped with that reason, or
fail with REQUIRE_DRMAA=1 (CI).
"""

from __future__ import annotations

import os
import re

import pytest

from tests.lab.conftest import DRMAA_TARBALL, FIRST_RUNNER, GALAXY_THROUGH_SLURM, HOST_NAMES, LAB_INVENTORY_FILE, REQUIRE_DRMAA, TIMINGS
from tests.lab.check_runs import make_check

GALAXY = HOST_NAMES[0]
LIBDRMAA = "/opt/slurm-drmaa/lib/libdrmaa.so.1"
NO_TARBALL = "SLURM_DRMAA_TARBALL does not name a slurm-drmaa release tarball on this machine"
pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(not os.path.isfile(DRMAA_TARBALL) and not REQUIRE_DRMAA, reason=NO_TARBALL),
]


@pytest.fixture(scope="module")
def drmaa_deploy(first_deploy, deploy):
    """The run that put Galaxy on the DRMAA runner: the first deploy when the lab was made with it
    (FIRST_RUNNER), else a switch from the CLI runner, which builds slurm-drmaa on a running cluster."""
    if not os.path.isfile(DRMAA_TARBALL):
        pytest.fail(f"{NO_TARBALL} (REQUIRE_DRMAA=1: the DRMAA tests must run)")
    if FIRST_RUNNER == "drmaa":
        return first_deploy
    deploy.drmaa_tarball = DRMAA_TARBALL
    run = deploy()
    TIMINGS["switch to the DRMAA runner (build slurm-drmaa)"] = run.seconds
    assert run.returncode == 0, run.log[-5000:]
    return run


def test_galaxy_job_runs_through_drmaa(drmaa_deploy):
    assert "Loaded job runner 'galaxy.jobs.runners.slurm:SlurmJobRunner' as 'slurm'" in drmaa_deploy.log
    assert re.search(r"Galaxy job \w+ \(destination slurm, runner slurm, handler handler\d+\) = Slurm job \d+ .* as galaxy: COMPLETED", drmaa_deploy.log)


def test_libdrmaa_built_against_the_installed_libslurm(drmaa_deploy, lab_host):
    host = lab_host(GALAXY)
    assert host.file(LIBDRMAA).exists
    libslurm = host.check_output("basename $(readlink -f /usr/lib/x86_64-linux-gnu/libslurm.so)")
    assert host.file("/opt/slurm-drmaa/.pyinfra-galaxy-slurm-build").content_string.strip().endswith(f"built against {libslurm}")
    assert "libslurm.so.38 =>" in host.check_output(f"ldd {LIBDRMAA}") or "libslurm.so.42 =>" in host.check_output(f"ldd {LIBDRMAA}")


def test_checks_pass_with_the_drmaa_runner(drmaa_deploy, deploy, tmp_path):
    """`make check` after the switch: the handlers run with DRMAA_LIBRARY_PATH, `import drmaa` works as galaxy."""
    run = make_check(deploy, tmp_path, f"INVENTORY={LAB_INVENTORY_FILE}")
    assert run.returncode == 0 and not run.failed, run.output[-5000:]
    assert ("test_drmaa_importable", GALAXY) not in run.skipped, run.report()


def test_rerun_with_drmaa_changes_nothing(drmaa_deploy, deploy):
    """The session's no-change re-run (on the runner the lab keeps from here on)."""
    rerun = deploy()
    TIMINGS["no-change re-run"] = rerun.seconds
    assert rerun.returncode == 0 and rerun.changes == 0, rerun.changed_operations()
    assert "sbatch job" in rerun.log  # verification ran again
    # The Galaxy job check started ahead and was kept: nothing changed (deploy.py's start_galaxy_check_ahead).
    match = GALAXY_THROUGH_SLURM.search(rerun.log)
    assert match and "(run beside this run's checks, which changed nothing)" in rerun.log, rerun.log[-3000:]
