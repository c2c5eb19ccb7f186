"""Galaxy releases as PyPI tells them: the pins of `tasks/model/galaxy_releases.json`, made and checked.

Galaxy's packages require one another without versions (galaxy-web-apps requires galaxy-app,
galaxy-tool-util, ...), so an install of an older release next to a newer one on PyPI mixes
releases. The deploy pins every galaxy-* package of a release, and gravity to the version the
release's own `galaxy` metapackage pins; this module computes those pins from the packages'
metadata on PyPI (their Requires-Dist, followed over galaxy-* names) and writes them. A
maintainer adds a release (then proves it with a fresh lab deploy: tasks/model/galaxy_releases.py) with

    .venv/bin/python -m tasks.galaxy_releases_pypi add 26.2.0
    .venv/bin/python -m tasks.galaxy_releases_pypi add 26.2.0 --replace 26.1.2   # a newer patch of a minor

and `check` compares the committed set with PyPI (the unit tests do the same).

Metadata is read through PyPI's simple API (PEP 691 JSON): a wheel's METADATA file from its
`.metadata` sibling (PEP 658) where the index offers one, else out of the wheel itself with HTTP
range requests (its zip directory and the one member), so no wheel is downloaded whole.
Standard library and `packaging` only (pyinfra's own dependency).
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import re
import ssl
import struct
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from email.parser import HeaderParser
from functools import cache

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from tasks.model.galaxy_releases import DATA_FILE, DEPLOY_PYTHONS, ENTRY_PACKAGES, GalaxyRelease, load_releases, release_json

INDEX = os.environ.get("PGS_PYPI_SIMPLE", "https://pypi.org/simple").rstrip("/")
TIMEOUT = 30
RETRY_PAUSES = (0.5, 1, 2, 4, None)  # seconds before each retry of a request that got no answer
GALAXY_PREFIX = "galaxy-"
METAPACKAGE = "galaxy"  # pins every dependency of a release exactly, gravity among them
GRAVITY = "gravity"


class PyPIUnreachable(RuntimeError):
    """PyPI (or the index at PGS_PYPI_SIMPLE) did not answer."""


_CONTEXT = ssl.create_default_context()
_LOCAL = threading.local()  # each thread's open connections, by host: a request costs no new TLS handshake
_PROXIED = bool(urllib.request.getproxies().get("https"))


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, Mapping[str, str], bytes]:
    """GET `url`: (status, headers, body); redirects followed. Raises PyPIUnreachable when no
    answer comes."""
    headers = {"User-Agent": "pyinfra-galaxy-slurm", **(headers or {})}
    for _ in range(5):
        for pause in RETRY_PAUSES:  # a name lookup or a connection that fails once in a while
            try:
                status, answer, body = (_get_proxied if _PROXIED else _get_direct)(url, headers)
                break
            except (OSError, http.client.HTTPException) as error:
                if pause is None:
                    raise PyPIUnreachable(f"PyPI cannot be reached ({url}): {error}") from error
                time.sleep(pause)
        if status in (301, 302, 303, 307, 308) and answer.get("Location"):
            url = urllib.parse.urljoin(url, answer["Location"])
            continue
        return status, answer, body
    raise PyPIUnreachable(f"PyPI redirects {url} in circles")


def _get_direct(url: str, headers: dict[str, str]) -> tuple[int, Mapping[str, str], bytes]:
    parts = urllib.parse.urlsplit(url)
    connections = _LOCAL.__dict__.setdefault("connections", {})
    for attempt in (1, 2):  # a kept connection the server closed meanwhile: once more on a new one
        connection = connections.get(parts.netloc)
        if connection is None:
            connection = connections[parts.netloc] = http.client.HTTPSConnection(parts.netloc, timeout=TIMEOUT,
                                                                                  context=_CONTEXT)
        try:
            connection.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""), headers=headers)
            response = connection.getresponse()
            return response.status, response.headers, response.read()
        except (OSError, http.client.HTTPException):
            connection.close()
            del connections[parts.netloc]
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _get_proxied(url: str, headers: dict[str, str]) -> tuple[int, Mapping[str, str], bytes]:
    """Through the https proxy the environment names (urllib: one connection a request)."""
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT, context=_CONTEXT) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def _open(url: str, headers: dict[str, str] | None = None) -> bytes:
    status, _, body = _get(url, headers)
    if status not in (200, 206):
        raise PyPIUnreachable(f"PyPI answered {status} for {url}")
    return body


@cache
def project(name: str) -> dict:
    """The simple API's page of a project, as JSON (PEP 691); no files when PyPI has no such project."""
    url = f"{INDEX}/{canonicalize_name(name)}/"
    status, _, body = _get(url, {"Accept": "application/vnd.pypi.simple.v1+json"})
    if status == 404:
        return {"name": name, "files": [], "versions": []}
    if status != 200:
        raise PyPIUnreachable(f"PyPI answered {status} for {url}")
    return json.loads(body)


def _wheel(name: str, version: str) -> dict | None:
    """The project's pure-Python wheel of `version`, as the simple API lists it."""
    prefix = f"{canonicalize_name(name).replace('-', '_')}-{version}-"
    wheels = [f for f in project(name)["files"]
              if f["filename"].lower().startswith(prefix) and f["filename"].endswith(".whl") and not f.get("yanked")]
    return next((f for f in wheels if f["filename"].endswith("-py3-none-any.whl")), wheels[0] if wheels else None)


def exists(name: str, version: str) -> bool:
    return _wheel(name, version) is not None


def requires_python(name: str, version: str) -> str:
    wheel = _wheel(name, version)
    return (wheel or {}).get("requires-python") or ""


def _metadata_from_wheel(url: str) -> bytes:
    """The wheel's *.dist-info/METADATA, read with range requests: the end of the zip (its
    directory), then the one member. A server that ignores ranges sends the whole wheel."""
    status, headers, tail = _get(url, {"Range": "bytes=-65536"})
    if status == 200:
        with zipfile.ZipFile(io.BytesIO(tail)) as wheel:
            name = next(n for n in wheel.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n))
            return wheel.read(name)
    if status != 206:
        raise PyPIUnreachable(f"PyPI answered {status} for the end of {url}")
    total = int(headers["Content-Range"].rsplit("/", 1)[1])
    end = tail.rfind(b"PK\x05\x06")
    if end < 0:
        raise ValueError(f"{url}: no zip directory in its last 64 KiB")
    directory_size, directory_offset = struct.unpack("<II", tail[end + 12:end + 20])
    tail_start = total - len(tail)
    if directory_offset >= tail_start:
        directory = tail[directory_offset - tail_start:directory_offset - tail_start + directory_size]
    else:
        directory = _open(url, {"Range": f"bytes={directory_offset}-{directory_offset + directory_size - 1}"})
    position = 0
    while position + 46 <= len(directory) and directory[position:position + 4] == b"PK\x01\x02":
        method, = struct.unpack("<H", directory[position + 10:position + 12])
        compressed, = struct.unpack("<I", directory[position + 20:position + 24])
        name_length, extra_length, comment_length = struct.unpack("<HHH", directory[position + 28:position + 34])
        local_offset, = struct.unpack("<I", directory[position + 42:position + 46])
        member = directory[position + 46:position + 46 + name_length].decode()
        position += 46 + name_length + extra_length + comment_length
        if re.fullmatch(r"[^/]+\.dist-info/METADATA", member):
            if local_offset >= tail_start:
                part = tail[local_offset - tail_start:]
            else:
                part = _open(url, {"Range": f"bytes={local_offset}-{local_offset + 30 + name_length + 1024 + compressed}"})
            local_name, local_extra = struct.unpack("<HH", part[26:30])
            data = part[30 + local_name + local_extra:30 + local_name + local_extra + compressed]
            return zlib.decompress(data, -15) if method == 8 else data
    raise ValueError(f"{url}: no *.dist-info/METADATA in the wheel")


@cache
def requires_dist(name: str, version: str) -> tuple[str, ...]:
    """The Requires-Dist lines of `name` `version`'s wheel."""
    wheel = _wheel(name, version)
    if wheel is None:
        raise LookupError(f"{name} {version} has no wheel on PyPI")
    if wheel.get("core-metadata") or wheel.get("data-dist-info-metadata"):
        raw = _open(wheel["url"].split("#")[0] + ".metadata")
    else:
        raw = _metadata_from_wheel(wheel["url"].split("#")[0])
    return tuple(HeaderParser().parsestr(raw.decode("utf-8")).get_all("Requires-Dist") or ())


def _applies(requirement: Requirement, extras: frozenset[str]) -> bool:
    """Whether a requirement applies on any Python the deploy supports, with these extras."""
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate({"python_version": python, "python_full_version": f"{python}.0",
                                            "sys_platform": "linux", "platform_system": "Linux",
                                            "extra": extra})
               for python in DEPLOY_PYTHONS for extra in (extras or {""}))


@cache
def release_names(version: str) -> frozenset[str]:
    """The packages of Galaxy release `version`: the galaxy-* packages its `galaxy` metapackage pins
    at `version` (other galaxy-* projects, e.g. galaxy-sequence-utils, have releases of their own)."""
    names = set()
    for line in requires_dist(METAPACKAGE, version):
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        if name.startswith(GALAXY_PREFIX) and [(s.operator, s.version) for s in requirement.specifier] == [("==", version)]:
            names.add(name)
    return frozenset(names)


def galaxy_closure(version: str) -> dict[str, str]:
    """Every galaxy-* package of release `version` (pinned at `version` by its `galaxy` metapackage, or
    published at `version`) that galaxy-web-apps and galaxy-web-client `version` require, directly or
    through one another, each at `version`: {name: version}. Raises
    LookupError when one of them has no wheel of `version`, or requires another at a version
    `version` does not satisfy."""
    members = release_names(version)
    with ThreadPoolExecutor(max_workers=8) as pool:  # every member's metadata at once: the walk below reads them
        list(pool.map(lambda name: _quietly(requires_dist, name, version), sorted(members)))
    found: dict[str, str] = {}
    wanted: dict[str, frozenset[str]] = {name: frozenset() for name in ENTRY_PACKAGES}
    done: set[tuple[str, frozenset[str]]] = set()
    while True:
        todo = [(name, extras) for name, extras in wanted.items() if (name, extras) not in done]
        if not todo:
            return dict(sorted(found.items()))
        for name, extras in todo:
            lines = requires_dist(name, version)
            done.add((name, extras))
            found[name] = version
            for line in lines:
                requirement = Requirement(line)
                child = canonicalize_name(requirement.name)
                if not child.startswith(GALAXY_PREFIX) or not _applies(requirement, extras):
                    continue
                if child not in members and not exists(child, version):
                    continue  # a project with releases of its own (galaxy-sequence-utils 1.x): not this release's
                if requirement.specifier and not requirement.specifier.contains(version, prereleases=True):
                    raise LookupError(f"{name} {version} requires {line}: not the same release")
                wanted[child] = wanted.get(child, frozenset()) | frozenset(requirement.extras)


def _quietly(function, *args):
    """Prefetch: a failure is raised again, with its message, where the result is used."""
    try:
        return function(*args)
    except (LookupError, ValueError):
        return None


def gravity_pin(version: str) -> str:
    """The gravity version the `galaxy` metapackage of `version` pins (the one its release was tested with)."""
    for line in requires_dist(METAPACKAGE, version):
        requirement = Requirement(line)
        if canonicalize_name(requirement.name) == GRAVITY:
            pins = [s.version for s in requirement.specifier if s.operator == "=="]
            if len(pins) == 1:
                return pins[0]
            raise LookupError(f"{METAPACKAGE} {version} requires {line}, not one exact gravity")
    raise LookupError(f"{METAPACKAGE} {version} does not require gravity")


def release_from_pypi(version: str) -> GalaxyRelease:
    """A Galaxy release's pins and the Pythons it supports (the intersection of its packages' Requires-Python)."""
    packages = {**galaxy_closure(version), GRAVITY: gravity_pin(version)}
    specifiers = SpecifierSet()
    for name, pinned in packages.items():
        specifiers &= SpecifierSet(requires_python(name, pinned))
    return GalaxyRelease(version=version, requires_python=str(_simplest(specifiers)), packages=packages)


def _simplest(specifiers: SpecifierSet) -> SpecifierSet:
    """`>=3.8,>=3.10` as `>=3.10`: of several lower bounds only the highest."""
    lower = [s for s in specifiers if s.operator == ">="]
    rest = [str(s) for s in specifiers if s.operator != ">="]
    highest = max(lower, key=lambda s: Version(s.version), default=None)
    return SpecifierSet(",".join(sorted(rest + ([str(highest)] if highest else []))))


def release_problems(release: GalaxyRelease) -> list[str]:
    """How the committed release differs from what PyPI tells (empty when it agrees)."""
    problems = []
    try:
        expected = release_from_pypi(release.version)
    except LookupError as error:
        return [f"Galaxy {release.version}: {error}"]
    for name in sorted(set(expected.packages) | set(release.packages)):
        have, want = release.packages.get(name), expected.packages.get(name)
        if have != want:
            problems.append(f"Galaxy {release.version}: {name} is pinned to {have or 'nothing'}, PyPI's metadata "
                            f"says {want or 'not part of this release'}")
    missing = [f"{name}=={pinned}" for name, pinned in release.packages.items() if not exists(name, pinned)]
    if missing:
        problems.append(f"Galaxy {release.version}: no wheel on PyPI for {', '.join(missing)}")
    if SpecifierSet(release.requires_python) != SpecifierSet(expected.requires_python):
        problems.append(f"Galaxy {release.version}: requires_python is '{release.requires_python}', PyPI's packages "
                        f"say '{expected.requires_python}'")
    return problems


def _write(releases: dict[str, GalaxyRelease]) -> None:
    ordered = sorted(releases.values(), key=lambda r: Version(r.version), reverse=True)
    with open(DATA_FILE, "w") as handle:
        handle.write(release_json(ordered))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tasks.galaxy_releases_pypi", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    add = commands.add_parser("add", help="add (or refresh) a Galaxy release's pins from PyPI")
    add.add_argument("version")
    add.add_argument("--replace", metavar="VERSION", help="remove this release (e.g. the older patch of the same minor)")
    commands.add_parser("check", help="compare every committed release with PyPI")
    args = parser.parse_args(argv)
    releases = load_releases()
    if args.command == "add":
        release = release_from_pypi(args.version)
        releases[release.version] = release
        if args.replace:
            releases.pop(args.replace, None)
        _write(releases)
        print(f"Galaxy {release.version} (Python {release.requires_python}): {len(release.packages)} pins in {DATA_FILE}")
        return 0
    problems = [p for release in releases.values() for p in release_problems(release)]
    print("\n".join(problems) or f"{len(releases)} Galaxy releases agree with PyPI: {', '.join(releases)}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
