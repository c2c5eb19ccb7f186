"""The Galaxy releases the deploy installs, each with every one of its packages pinned.

Galaxy's packages on PyPI require one another without versions (galaxy-web-apps requires
galaxy-app, galaxy-tool-util, ...): installed by name and version alone, an older release gets
the newest of the others and does not start (25.1.3 beside 26.1.2's galaxy-app: "Unknown Galaxy
parameter type file"). So every galaxy-* package of a release is pinned to that release, and
gravity to the version the release's `galaxy` metapackage pins, from `galaxy_releases.json`
beside this file: the one place they are kept. Other packages are not pinned (the newest that fit
the release's requirements): a release whose code no longer runs with them is not supported (Galaxy
25.0.4: gxformat2 0.28 lacks ImporterGalaxyInterface, fastapi's _compat lacks GenerateJsonSchema).

A release is listed only once a fresh deploy of it ran its Galaxy upload job through Slurm. To add
one (a maintainer, on a machine that reaches PyPI):

    .venv/bin/python -m tasks.galaxy_releases_pypi add 26.2.0 [--replace 26.1.2]
    # a fresh lab of Debian 13 (and 12), deployed with --data galaxy_version=26.2.0: its report line
    # for the Galaxy job says COMPLETED and "upload to dataset ok"
    .venv/bin/pytest -q tests/unit     # the set against PyPI's metadata, and resolved for each Python

`python -m tasks.galaxy_releases_pypi check` compares every committed set with PyPI.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from tasks.platform import PYTHON_BY_CODENAME

DATA_FILE = Path(__file__).with_name("galaxy_releases.json")
# The Pythons the deploy's hosts run (python3 of Debian 12 and 13): Galaxy's venv is made by it.
DEPLOY_PYTHONS = tuple(sorted(set(PYTHON_BY_CODENAME.values()), key=Version))
# What the deploy asks for; the rest of a release's galaxy-* packages come with these.
ENTRY_PACKAGES = ("galaxy-web-apps", "galaxy-web-client")


@dataclass(frozen=True)
class GalaxyRelease:
    version: str
    requires_python: str  # the packages' Requires-Python, all of them at once, e.g. ">=3.10"
    packages: Mapping[str, str]  # every galaxy-* package of the release, and gravity: {name: version}

    def supports(self, python: str) -> bool:
        """Whether its packages install on Python `python` ("3.13")."""
        return SpecifierSet(self.requires_python).contains(python, prereleases=True)

    @property
    def requirements(self) -> list[str]:
        """Its pip requirements, exact pins (`uv pip freeze` shows them so: idempotent)."""
        return [f"{name}=={version}" for name, version in self.packages.items()]


def load_releases(path: Path = DATA_FILE) -> dict[str, GalaxyRelease]:
    with open(path) as handle:
        raw = json.load(handle)
    return {version: GalaxyRelease(version=version, requires_python=entry["requires_python"],
                                   packages=dict(sorted(entry["packages"].items())))
            for version, entry in raw.items()}


def release_json(releases: Iterable[GalaxyRelease]) -> str:
    """The data file's text (what `load_releases` reads)."""
    return json.dumps({r.version: {"requires_python": r.requires_python, "packages": dict(sorted(r.packages.items()))}
                       for r in releases}, indent=2) + "\n"


@lru_cache(maxsize=1)
def _releases() -> dict[str, GalaxyRelease]:
    return load_releases()


def galaxy_releases() -> dict[str, GalaxyRelease]:
    """The supported releases, newest first."""
    return dict(sorted(_releases().items(), key=lambda item: _sort_key(item[0]), reverse=True))


def newest_release() -> str:
    """The default galaxy_version: the newest supported release."""
    return next(iter(galaxy_releases()))


def galaxy_release(version: str) -> GalaxyRelease | None:
    return _releases().get(version)


def versions_for_python(python: str) -> list[str]:
    """The supported releases whose packages install on Python `python`, newest first."""
    return [v for v, release in galaxy_releases().items() if not python or release.supports(python)]


def _sort_key(version: str) -> Version:
    try:
        return Version(version)
    except InvalidVersion:
        return Version("0")
