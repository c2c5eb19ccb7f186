"""Host checks of the Galaxy layer (pytest-testinfra over SSH) after the deploy."""

from __future__ import annotations

import pytest

from tests.lab.conftest import COMPUTE_NAMES, HOST_NAMES

GALAXY = HOST_NAMES[0]
pytestmark = pytest.mark.lab


def test_supervisor_runs_galaxy_as_galaxy(lab_host):
    host = lab_host(GALAXY)
    assert host.service("supervisor").is_running and host.service("supervisor").is_enabled
    status = host.check_output("supervisorctl status")
    programs = {line.split()[0]: line.split()[1] for line in status.splitlines()}
    assert programs == {"gx:handler0": "RUNNING", "gx:handler1": "RUNNING", "gx:web": "RUNNING"}, status
    processes = host.check_output("ps -eo user=,args=").splitlines()
    owners = {line.split()[0] for line in processes if "/srv/galaxy/venv/bin/" in line}
    assert owners == {"galaxy"}, processes


def test_galaxy_files_owned_and_private(lab_host):
    host = lab_host(GALAXY)
    expected = {
        "/srv/galaxy/config/galaxy.yml": ("galaxy", "galaxy", 0o600),
        "/srv/galaxy/config/secrets.json": ("galaxy", "galaxy", 0o600),
        "/srv/galaxy/config/job_conf.xml": ("galaxy", "galaxy", 0o640),
        "/srv/galaxy/config": ("galaxy", "galaxy", 0o750),
        "/etc/supervisor/conf.d/galaxy.conf": ("root", "root", 0o644),
    }
    for path, (user, group, mode) in expected.items():
        item = host.file(path)
        assert (item.user, item.group, item.mode) == (user, group, mode), path


def test_galaxy_is_in_its_venv_with_drmaa_python(lab_host):
    host = lab_host(GALAXY)
    packages = host.pip.get_packages(pip_path="/srv/galaxy/venv/bin/pip")
    assert packages["galaxy-web-apps"]["version"] == "26.1.2"
    assert "drmaa" in packages and "fissix" in packages
    assert host.file("/srv/galaxy/venv").user == "galaxy"


def test_galaxy_answers_its_api(lab_host):
    version = lab_host(GALAXY).check_output(
        "python3 -c 'import urllib.request; print(urllib.request.urlopen(\"http://127.0.0.1/api/version\").read().decode())'"
    )
    assert '"version_major":"26.1"' in version.replace(" ", "")


@pytest.mark.parametrize("name", HOST_NAMES)
def test_galaxy_account_is_the_same_everywhere(lab_host, name):
    user = lab_host(name).user("galaxy")
    assert (user.uid, user.gid, user.home) == (1500, 1500, "/srv/galaxy")


@pytest.mark.parametrize("name", COMPUTE_NAMES)
def test_compute_hosts_see_galaxys_venv_and_data(lab_host, name):
    host = lab_host(name)
    assert host.file("/srv/galaxy/venv/bin/python").exists
    assert host.run("su galaxy -s /bin/sh -c 'test -w /srv/galaxy/data/jobs'").rc == 0


def test_cli_runner_chosen_without_drmaa_library_path(lab_host, deploy):
    if deploy.drmaa_tarball:
        pytest.skip("the DRMAA runner is on (tested in test_4_drmaa)")
    conf = lab_host(GALAXY).file("/etc/supervisor/conf.d/galaxy.conf").content_string
    assert "DRMAA_LIBRARY_PATH" not in conf
    assert "galaxy.jobs.runners.cli:ShellJobRunner" in lab_host(GALAXY).file("/srv/galaxy/config/job_conf.xml").content_string
