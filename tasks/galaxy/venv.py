"""Galaxy's venv: made by the host's python3, Galaxy and DRMAA Python installed by uv as the
galaxy user; on a first install built ahead, in the background, while the Slurm layers install.
A venv made by another Python (an upgrade of Debian) is refused before any change, or rebuilt
when asked. The deploy's own venv beside it holds uv and bioblend (the Galaxy checks)."""

from __future__ import annotations

import shlex

from pyinfra import host
from pyinfra.api import deploy, operation
from pyinfra.operations import apt, pip
from pyinfra.operations.util.packaging import PkgInfo, ensure_packages

from tasks.checks import SHARE_DIR
from tasks.facts import PythonVenv, VenvFacts, VenvPackages
from tasks.model import Cluster, Galaxy
from tasks.operations import backup_of, started_in_background
from tasks.platform import PACKAGES_GALAXY

# The deploy's own venv on the Galaxy host: uv (which installs Galaxy's) and bioblend (the
# Galaxy checks); Galaxy's venv stays Galaxy's.
DEPLOY_VENV = f"{SHARE_DIR}/venv"
BIOBLEND = "bioblend==1.9.0"  # pyinfra's pip.packages compares one exact version: a range would reinstall every run
# uv installs Galaxy's venv (parallel downloads: 14 s where pip took ~60 s on the lab).
# One exact version: pip.packages compares it, a range would reinstall every run.
UV = "uv==0.13.9"
UV_BIN = f"{DEPLOY_VENV}/bin/uv"
VENV_AHEAD_UNIT = "pgs-galaxy-venv"  # the transient unit of build_galaxy_venv_ahead


def venv_problems(galaxy: Galaxy, venv: VenvFacts) -> list[str]:
    """Why the deploy refuses Galaxy's venv as it is (read before any change), or nothing.

    A venv made by another Python than the host's python3 (Debian 12 -> 13 leaves a
    3.11 venv beside python3 3.13) breaks pip inside it, so every run would fail in
    pip's fact. It is rebuilt only when asked (`galaxy_rebuild_venv`), since that
    reinstalls Galaxy and whatever else was installed into the venv.
    """
    if not venv.stale:
        return []
    made_by = f"Python {venv.made_by}" if venv.made_by else "another Python"
    if venv.made_by_executable:
        made_by += f" ({venv.made_by_executable})"
    runs = f"its bin/python3 runs {venv.runs}" if venv.runs else "its bin/python3 does not start"
    found = (f"Galaxy's venv {galaxy.venv} on {galaxy.host.inventory_name} was made by {made_by}; {runs}, "
             f"and the host's python3 is {venv.host_python}, so pip cannot run in it (as after an upgrade "
             f"from Debian 12 to 13)")
    if not galaxy.rebuild_venv:
        return [f"galaxy_rebuild_venv: {found}. Set galaxy_rebuild_venv = True (group_data/galaxy.py, or "
                f"--data galaxy_rebuild_venv=true) to move it aside to {galaxy.venv}.<time>.pgs-backup and "
                f"install Galaxy {galaxy.version} into a new venv with python3 {venv.host_python}; Galaxy's "
                f"config, data and secrets under {galaxy.root} stay as they are"]
    if not galaxy.install:
        return [f"galaxy_install: {found}, and galaxy_rebuild_venv would rebuild it, but galaxy_install = False "
                f"would leave the new venv without Galaxy; set galaxy_install = True for the rebuild"]
    return []


def check_galaxy_venv(galaxy: Galaxy, galaxy_host) -> list[str]:
    """Read Galaxy's venv on its host (read-only) and apply `venv_problems`."""
    return venv_problems(galaxy, galaxy_host.get_fact(PythonVenv, path=galaxy.venv))


@operation(is_idempotent=False)
def venv_rebuilt_if_stale(venv: str, rebuild: bool):
    """Move a venv made by another Python aside (`<venv>.<time>.pgs-backup`), so that the
    pip install after this makes a new one. The deploy refused before any change unless
    `rebuild`; a healthy venv is left alone."""
    if rebuild and host.get_fact(PythonVenv, path=venv).stale:
        yield f"mv {shlex.quote(venv)} {shlex.quote(backup_of(venv))}"


def uv_install_command(venv: str) -> str:
    """uv's install into the venv at `venv` (append the requirements). `--compile-bytecode`
    writes the installed modules' .pyc files as pip does by default (uv otherwise leaves them to
    the first import): Galaxy's web server and handlers, starting at once, would each compile
    the ~7,000 modules they import, and a job on a compute node whose share of the venv it
    cannot write would compile its imports in every job."""
    return (f"{UV_BIN} pip install --no-config --quiet --system-certs --no-cache --compile-bytecode "
            f"--python {shlex.quote(venv)}/bin/python")


@operation()
def venv_packages(venv: str, packages: list[str], with_uv: bool = True):
    """`packages` (pip requirement strings) in the venv at `venv`, made first with the host's
    python3 (a Python the galaxy user and every compute node can run) when it is missing.
    Compared with `uv pip freeze` as pip.packages compares with `pip freeze`; installed with uv
    (`with_uv=False`: with the venv's pip, for uv itself), which uses the system's CA
    certificates as pip does (`--system-certs`), reads no uv.toml (the galaxy user may not
    read the working directory's) and leaves no cache."""
    yield from pip.virtualenv._inner(path=venv, venv=True, python="/usr/bin/python3")
    current = {name.lower(): versions for name, versions in host.get_fact(VenvPackages, venv=venv, uv=UV_BIN).items()}
    if with_uv:
        install = uv_install_command(venv)
        uninstall = f"{UV_BIN} pip uninstall --no-config --python {shlex.quote(venv)}/bin/python"
    else:
        install, uninstall = f"{shlex.quote(venv)}/bin/pip install --quiet", f"{shlex.quote(venv)}/bin/pip uninstall --yes"
    yield from ensure_packages(
        host, [info for info in map(PkgInfo.from_pep508, packages) if info], current, True,
        install_command=install, uninstall_command=uninstall, upgrade_command=f"{install} --upgrade", latest=False,
    )


def python_venv_and_uv() -> None:
    """Python's venv module and supervisor; the deploy's own venv with uv (which installs Galaxy's)
    and bioblend (the Galaxy checks), in one pip run."""
    apt.packages(name="Python venv and supervisor", packages=list(PACKAGES_GALAXY), no_recommends=True)
    venv_packages(name=f"uv and bioblend in the deploy's own venv {DEPLOY_VENV}", venv=DEPLOY_VENV, packages=[UV, BIOBLEND],
                  with_uv=False)


@deploy("Galaxy's venv, built ahead")
def build_galaxy_venv_ahead(cluster: Cluster) -> None:
    """On a first install (no venv yet), Galaxy's venv is built in the background (a transient
    systemd unit, as the galaxy user) while the Slurm layers install: it needs nothing of theirs.
    `install_galaxy` waits for it, then installs whatever it did not (all of it, if it failed).
    An existing venv (an upgrade, a rebuild) is changed in place, in order, by `install_galaxy`."""
    galaxy = cluster.galaxy
    if galaxy is None or host.name != galaxy.host.inventory_name or not galaxy.install:
        return
    if host.get_fact(PythonVenv, path=galaxy.venv).present:
        return
    python_venv_and_uv()
    started_in_background(name=f"Galaxy {galaxy.version}'s venv {galaxy.venv}: built in the background by uv, as {galaxy.user}",
                          unit=VENV_AHEAD_UNIT, command=venv_build_command(galaxy.venv, galaxy.pip_packages),
                          user=galaxy.user, directory=galaxy.root)


def venv_build_command(venv: str, packages: list[str]) -> str:
    """The venv made by the host's python3 and `packages` installed into it by uv."""
    return f"/usr/bin/python3 -m venv {shlex.quote(venv)} && {uv_install_command(venv)} {' '.join(shlex.quote(p) for p in packages)}"
