"""The pinned Galaxy releases (tasks/model/galaxy_releases.json) against PyPI itself.

1. Each committed set equals what the packages' own metadata says: the galaxy-* packages of the
   release that galaxy-web-apps and galaxy-web-client require, followed transitively, each at the
   release's version and each on PyPI, gravity at the version the release's `galaxy` metapackage
   pins, and the Pythons they all support.
2. What the deploy installs (`Galaxy.pip_packages`, from the model) resolves, for each release and
   for each Python the deploy's hosts run (Debian 12: 3.11, Debian 13: 3.13), to that one release's
   packages only: `uv pip compile` with the uv the deploy installs Galaxy with, for that Python and
   that Debian's glibc.

These need PyPI, and fail (never skip) when it cannot be reached. The resolutions start before the
module's first test and run while the metadata is compared: per release one universal resolution
(every Python from 3.11 on, online: it brings every index page any of them needs into a uv cache of
its own), then one per deploy Python from that cache (`--offline`, online again if a page is
missing). uv (the deploy's pin) is installed with pip into ~/.cache/pyinfra-galaxy-slurm on the
first run.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest

from tasks.galaxy.venv import UV  # the uv the deploy installs Galaxy with
from tasks.galaxy_releases_pypi import GRAVITY, INDEX, PyPIUnreachable, _open, release_names, release_problems
from tasks.model import build_cluster
from tasks.model.galaxy_releases import DEPLOY_PYTHONS, galaxy_releases
from tasks.platform import PYTHON_BY_CODENAME
from tests.unit.conftest import small_cluster

RELEASES = galaxy_releases()
REFRESH = "`.venv/bin/python -m tasks.galaxy_releases_pypi add VERSION` refreshes a release's set"
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pyinfra-galaxy-slurm"
# Debian 12's glibc is 2.36, Debian 13's 2.41 (uv 0.13 targets manylinux up to 2.40).
GLIBC_BY_PYTHON = {"3.11": "2_36", "3.13": "2_40"}
CODENAME_BY_PYTHON = {python: codename for codename, python in PYTHON_BY_CODENAME.items()}
RESOLVE_TIMEOUT = 240
CASES = [(version, python) for version in RELEASES for python in DEPLOY_PYTHONS]


@pytest.fixture(scope="module")
def pypi():
    """Fail at once, saying so, when PyPI does not answer."""
    try:
        _open(f"{INDEX}/galaxy-web-apps/", {"Accept": "application/vnd.pypi.simple.v1+json"})
    except (PyPIUnreachable, OSError) as error:
        pytest.fail(f"PyPI cannot be reached from this machine, and these tests check the Galaxy pins against it: "
                    f"{error}", pytrace=False)


def uv_binary() -> str:
    """The uv the deploy installs Galaxy with (tasks.galaxy.venv.UV), pip-installed once into a cache directory."""
    target = CACHE / UV.replace("==", "-")
    binary = target / "bin" / "uv"
    if not binary.exists():
        done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                               "--target", str(target), UV], check=False, capture_output=True, text=True, timeout=300)
        if done.returncode or not binary.exists():
            pytest.fail(f"pip could not install {UV} into {target} (PyPI unreachable?): {done.stderr[-2000:]}",
                        pytrace=False)
    return str(binary)


def requirements(version: str, python: str) -> list[str]:
    """What the deploy installs for `version` on a Galaxy host of the Debian release with `python`, from the model."""
    hosts = small_cluster(galaxy={"galaxy_version": version}, python=python, codename=CODENAME_BY_PYTHON[python])
    return build_cluster(hosts, {}).galaxy.pip_packages


class Resolution:
    """uv pip compile's answer for one release and one Python (or all of them: python None)."""

    def __init__(self, command: list[str], file: Path):
        began = time.monotonic()
        self.file = file
        try:
            done = subprocess.run(command + [str(file)], check=False, capture_output=True, text=True,
                                  timeout=RESOLVE_TIMEOUT)
            self.returncode, self.out, self.err = done.returncode, done.stdout, done.stderr
        except subprocess.TimeoutExpired:
            self.returncode, self.out, self.err = -1, "", f"uv pip compile took over {RESOLVE_TIMEOUT} s"
        self.seconds = time.monotonic() - began
        self.note = ""

    @property
    def pins(self) -> dict[str, str]:
        return dict(re.fullmatch(r"([A-Za-z0-9._-]+)==(\S+)", line).groups() for line in self.out.splitlines()
                    if line and not line.startswith("#"))


def resolve_release(uv: str, directory: Path, version: str) -> dict[str | None, Resolution]:
    """{None: the universal resolution, python: the resolution for that Python}."""
    common = [uv, "pip", "compile", "--no-config", "--quiet", "--no-python-downloads", "--system-certs",
              "--cache-dir", str(CACHE / "uv-cache"), "--default-index", INDEX, "--no-header", "--no-annotate"]
    lowest = DEPLOY_PYTHONS[0]
    universal_file = directory / f"galaxy-{version}.txt"
    universal_file.write_text("\n".join(requirements(version, lowest)) + "\n")
    results: dict[str | None, Resolution] = {None: Resolution(common + ["--universal", "--python-version", lowest],
                                                              universal_file)}
    for python in DEPLOY_PYTHONS:
        file = directory / f"galaxy-{version}-py{python}.txt"
        file.write_text("\n".join(requirements(version, python)) + "\n")
        command = common + ["--python-version", python, "--python-platform",
                            f"{platform.machine()}-manylinux_{GLIBC_BY_PYTHON[python]}"]
        result = Resolution(command + ["--offline"], file)
        if result.returncode:
            offline = result
            result = Resolution(command, file)
            result.seconds += offline.seconds
            result.note = f" (offline: {offline.err.strip().splitlines()[-1:]})"
        results[python] = result
    return results


@pytest.fixture(scope="module", autouse=True)
def resolutions(pypi, tmp_path_factory):
    """Every release's resolutions, started side by side before the module's first test: {version: Future}."""
    uv = uv_binary()
    directory = tmp_path_factory.mktemp("resolve")
    pool = ThreadPoolExecutor(max_workers=len(RELEASES))
    futures = {version: pool.submit(resolve_release, uv, directory, version) for version in RELEASES}
    yield futures
    pool.shutdown(wait=True, cancel_futures=True)


def test_deploy_pythons_have_a_glibc():
    assert set(DEPLOY_PYTHONS) <= set(GLIBC_BY_PYTHON)


def test_pinned_sets_equal_pypi_metadata():
    with ThreadPoolExecutor(max_workers=len(RELEASES)) as pool:
        problems = [p for found in pool.map(release_problems, RELEASES.values()) for p in found]
    assert not problems, ("tasks/model/galaxy_releases.json differs from PyPI's metadata:\n  " + "\n  ".join(problems)
                          + f"\n{REFRESH}")


def test_the_comparison_finds_a_missing_and_a_wrong_pin():
    release = RELEASES["26.1.2"]
    packages = {n: v for n, v in release.packages.items() if n != "galaxy-tool-util"} | {"gravity": "1.0.0"}
    assert release_problems(replace(release, packages=packages)) == [
        "Galaxy 26.1.2: galaxy-tool-util is pinned to nothing, PyPI's metadata says 26.1.2",
        "Galaxy 26.1.2: gravity is pinned to 1.0.0, PyPI's metadata says 1.2.4",
    ]


@pytest.mark.parametrize(("version", "python"), CASES, ids=[f"galaxy{v}-py{p}" for v, p in CASES])
def test_pinned_requirements_resolve_to_one_release(resolutions: dict[str, Future], version, python):
    results = resolutions[version].result()
    for label, result in ((f"every Python from {DEPLOY_PYTHONS[0]} on", results[None]), (f"Python {python}", results[python])):
        assert result.returncode == 0, (f"Galaxy {version}'s pinned requirements ({result.file}) do not resolve for "
                                        f"{label}:\n{result.err[-3000:]}\n{REFRESH}")
    resolved = results[python].pins
    release = RELEASES[version]
    members = release_names(version)  # every package of the release, as its `galaxy` metapackage pins them
    galaxy = {name: v for name, v in resolved.items() if name in members or name in release.packages}
    wrong = {name: v for name, v in galaxy.items() if release.packages.get(name) != v}
    assert not wrong, (f"Galaxy {version} for Python {python} resolves to other releases' packages: "
                       + ", ".join(f"{n} {v} (pinned: {release.packages.get(n, 'not pinned')})" for n, v in sorted(wrong.items()))
                       + f"\n{REFRESH}")
    missing = sorted(set(release.packages) - set(galaxy))
    assert not missing, f"Galaxy {version} for Python {python}: pinned but not in the resolution: {', '.join(missing)}"
    assert resolved[GRAVITY] == release.packages[GRAVITY]
    print(f"Galaxy {version}, Python {python}: {len(resolved)} packages, {len(galaxy) - 1} of Galaxy {version} and "
          f"gravity {resolved[GRAVITY]}; resolved in {results[None].seconds:.1f} s (universal) + "
          f"{results[python].seconds:.1f} s{results[python].note}")
