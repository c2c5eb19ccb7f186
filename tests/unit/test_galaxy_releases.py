"""Galaxy releases: every package of the chosen release pinned, and a galaxy_version the deploy has
no pinned set for, or whose packages do not install on the Galaxy host's python3, refused by the
model before any host is changed. (Checked against PyPI in test_galaxy_releases_pypi.py.)"""

from __future__ import annotations

import pytest
from packaging.utils import canonicalize_name

import tasks.model.galaxy_releases as galaxy_releases_module
from tasks.model import ClusterConfigError, build_cluster
from tasks.model.galaxy_releases import (
    DATA_FILE,
    DEPLOY_PYTHONS,
    ENTRY_PACKAGES,
    GalaxyRelease,
    galaxy_release,
    galaxy_releases,
    load_releases,
    release_json,
    versions_for_python,
)
from tasks.model.settings import SETTINGS
from tasks.platform import PYTHON_BY_CODENAME
from tests.unit.conftest import small_cluster

DEFAULT_VERSION = next(s.default for s in SETTINGS if s.name == "galaxy_version")


def galaxy_of(python: str = "3.11", **galaxy_data):
    return build_cluster(small_cluster(galaxy=galaxy_data, python=python), {}).galaxy


def problems_of(python: str = "3.11", **galaxy_data) -> list[str]:
    with pytest.raises(ClusterConfigError) as caught:
        build_cluster(small_cluster(galaxy=galaxy_data, python=python), {})
    return caught.value.problems


@pytest.fixture
def releases(monkeypatch):
    """Stand-in releases: 27.0.0 needs Python 3.12 or newer."""
    fake = {
        "27.0.0": GalaxyRelease("27.0.0", ">=3.12", {"galaxy-app": "27.0.0", "galaxy-web-apps": "27.0.0",
                                                     "galaxy-web-client": "27.0.0", "gravity": "1.3.0"}),
        "26.1.2": galaxy_release("26.1.2"),
    }
    monkeypatch.setattr(galaxy_releases_module, "_releases", lambda: fake)
    return fake


def test_default_version_is_supported_on_every_deploy_python():
    release = galaxy_release(DEFAULT_VERSION)
    assert release is not None
    assert all(release.supports(python) for python in DEPLOY_PYTHONS)
    assert DEPLOY_PYTHONS == ("3.11", "3.13") and PYTHON_BY_CODENAME["trixie"] == "3.13"


def test_each_release_pins_its_own_packages_only():
    releases = galaxy_releases()
    assert list(releases) == sorted(releases, key=lambda v: tuple(map(int, v.split("."))), reverse=True)
    for version, release in releases.items():
        assert release.version == version
        assert set(ENTRY_PACKAGES) <= set(release.packages)
        galaxy = {n: v for n, v in release.packages.items() if n.startswith("galaxy-")}
        assert set(galaxy.values()) == {version}, f"Galaxy {version} pins other releases: {galaxy}"
        assert set(release.packages) - set(galaxy) == {"gravity"}
        assert all(canonicalize_name(n) == n for n in release.packages), "names as `uv pip freeze` shows them"


def test_data_file_is_written_as_it_is_read():
    """`python -m tasks.galaxy_releases_pypi add` rewrites the file: no hand edits it would lose."""
    releases = load_releases()
    assert DATA_FILE.read_text() == release_json(sorted(releases.values(), key=lambda r: tuple(map(int, r.version.split("."))),
                                                        reverse=True))


def test_pip_packages_pin_every_package_of_the_release():
    release = galaxy_release(DEFAULT_VERSION)
    packages = galaxy_of().pip_packages
    assert packages == [f"{n}=={v}" for n, v in release.packages.items()] + ["fissix", "drmaa", "psycopg2-binary"]
    assert all("==" in p for p in packages[:-3])
    assert galaxy_of(galaxy_install=False).pip_packages == ["fissix", "drmaa", "psycopg2-binary"]


@pytest.mark.parametrize("version", list(galaxy_releases()))
def test_every_supported_version_installs_its_own_release(version):
    for python in DEPLOY_PYTHONS:
        if galaxy_release(version).supports(python):
            packages = galaxy_of(python=python, galaxy_version=version).pip_packages
            assert f"galaxy-web-apps=={version}" in packages and f"galaxy-app=={version}" in packages


def test_unknown_version_is_refused_naming_the_supported_ones():
    (problem,) = problems_of(galaxy_version="25.1.9")
    assert problem == (
        "galaxy_version: '25.1.9' is not a Galaxy release this deploy has pinned (tasks/model/galaxy_releases.json: every "
        "galaxy-* package of a release at that release, each release tested by a fresh deploy); for python3 3.11 on head "
        f"use one of {', '.join(versions_for_python('3.11'))} (to add a release: `python -m tasks.galaxy_releases_pypi add "
        "25.1.9`, then a fresh lab deploy of it)"
    )


def test_version_for_another_python_is_refused(releases):
    (problem,) = problems_of(python="3.11", galaxy_version="27.0.0")
    assert problem == (
        "galaxy_version: Galaxy 27.0.0 needs Python >=3.12, and python3 on head is 3.11; for python3 3.11 on head use "
        "one of 26.1.2, or put Galaxy on a Debian release whose python3 Galaxy 27.0.0 supports"
    )
    assert galaxy_of(python="3.13", galaxy_version="27.0.0").pip_packages[:4] == [
        "galaxy-app==27.0.0", "galaxy-web-apps==27.0.0", "galaxy-web-client==27.0.0", "gravity==1.3.0"]


def test_no_release_for_the_hosts_python(releases):
    (problem,) = problems_of(python="3.9", galaxy_version="26.1.2")
    assert problem.startswith("galaxy_version: Galaxy 26.1.2 needs Python >=3.10, and python3 on head is 3.9; "
                              "no pinned release installs on python3 3.9 on head: put Galaxy on a Debian release")


def test_versions_for_python(releases):
    assert versions_for_python("3.11") == ["26.1.2"]
    assert versions_for_python("3.13") == ["27.0.0", "26.1.2"]
    assert versions_for_python("") == ["27.0.0", "26.1.2"]  # facts not read: any


def test_kept_galaxy_is_not_checked():
    """galaxy_install = False keeps the Galaxy in the venv, whatever galaxy_version says."""
    assert galaxy_of(galaxy_install=False, galaxy_version="25.1.9").pip_packages == ["fissix", "drmaa", "psycopg2-binary"]


def test_refused_with_other_problems_before_any_host_changes():
    """build_cluster (the deploy's first step, before any operation) collects it beside the others."""
    problems = problems_of(galaxy_version="1.0", galaxy_bind="nowhere")
    assert any(p.startswith("galaxy_bind: ") for p in problems)
    assert any(p.startswith("galaxy_version: '1.0' is not a Galaxy release") for p in problems)
