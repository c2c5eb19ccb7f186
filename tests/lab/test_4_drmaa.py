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

from tests.lab.conftest import DRMAA_TARBALL, HOST_NAMES, TIMINGS

GALAXY = HOST_NAMES[0]
LIBDRMAA = "/opt/slurm-drmaa/lib/libdrmaa.so.1"
NO_TARBALL = "SLURM_DRMAA_TARBALL does not name a slurm-drmaa release tarball on this machine"
pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(not os.path.isfile(DRMAA_TARBALL) and os.environ.get("REQUIRE_DRMAA") != "1", reason=NO_TARBALL),
]


@pytest.fixture(scope="module")
def drmaa_deploy(first_deploy, deploy):
    if not os.path.isfile(DRMAA_TARBALL):
        pytest.fail(f"{NO_TARBALL} (REQUIRE_DRMAA=1: the DRMAA tests must run)")
    deploy.drmaa_tarball = DRMAA_TARBALL
    run = deploy()
    TIMINGS["switch to the DRMAA runner (build slurm-drmaa)"] = run.seconds
    assert run.returncode == 0, run.log[-5000:]
    return run


def test_galaxy_job_runs_through_drmaa(drmaa_deploy):
    assert "Loaded job runner 'galaxy.jobs.runners.slurm:SlurmJobRunner' as 'slurm'" in drmaa_deploy.log
    assert re.search(r"Galaxy job \w+ \(runner slurm, handler handler0\) = Slurm job \d+ .* as galaxy: COMPLETED", drmaa_deploy.log)


def test_libdrmaa_built_against_the_installed_libslurm(drmaa_deploy, lab_host):
    host = lab_host(GALAXY)
    assert host.file(LIBDRMAA).exists
    libslurm = host.check_output("basename $(readlink -f /usr/lib/x86_64-linux-gnu/libslurm.so)")
    assert host.file("/opt/slurm-drmaa/.pyinfra-galaxy-slurm-build").content_string.strip().endswith(f"built against {libslurm}")
    assert "libslurm.so.38 =>" in host.check_output(f"ldd {LIBDRMAA}") or "libslurm.so.42 =>" in host.check_output(f"ldd {LIBDRMAA}")


def test_handlers_carry_drmaa_library_path(drmaa_deploy, lab_host):
    host = lab_host(GALAXY)
    assert f'DRMAA_LIBRARY_PATH="{LIBDRMAA}"' in host.file("/etc/supervisor/conf.d/galaxy.conf").content_string
    environ = host.check_output("tr '\\0' '\\n' < /proc/$(pgrep -f 'server-name=handler0' | head -1)/environ")
    assert f"DRMAA_LIBRARY_PATH={LIBDRMAA}" in environ.splitlines()
    imported = host.run(f"DRMAA_LIBRARY_PATH={LIBDRMAA} /srv/galaxy/venv/bin/python -c 'import drmaa; print(drmaa.__name__)'")
    assert imported.rc == 0 and imported.stdout.strip() == "drmaa"


def test_rerun_with_drmaa_changes_nothing(drmaa_deploy, deploy):
    rerun = deploy()
    assert rerun.returncode == 0 and rerun.changes == 0, rerun.changed_operations()
