"""Galaxy: its account on every host, the shared directory, Galaxy in its venv,
job_conf.xml, and its processes under supervisor.

Jobs run as the galaxy user on compute nodes and read and write Galaxy's data
and venv at the same paths there, so the account has the same uid/gid on every
host and the Galaxy root is shared: over NFS from the Galaxy host
(`shared_fs: nfs`) or by a filesystem the site already has (`existing`).
"""

from __future__ import annotations

import json
import secrets
import shlex

from pyinfra import host, inventory
from pyinfra.api import deploy, operation
from pyinfra.facts.files import File
from pyinfra.operations import apt, files, pip, server, systemd
from pyinfra.operations.util.packaging import PkgInfo, ensure_packages

from tasks.common import any_changed, once, render
from tasks.destinations import destinations_schedulable
from tasks.facts import PythonVenv, VenvFacts, VenvPackages
from tasks.jobconf import build_job_conf, verification_tools
from tasks.model import Cluster, ClusterHost, Galaxy
from tasks.operations import (
    backup_of, config_file, finished_in_background, read_secret, restart_checked, run, started_in_background,
)
from tasks.platform import PACKAGES_GALAXY
from tasks.verify.common import file_present
from tasks.verify.galaxy import (
    BIOBLEND, GALAXY_ADMIN_KEY, GALAXY_START_TIMEOUT, VERIFY_VENV, galaxy_accounts, galaxy_answers, galaxy_ready,
    handlers_restart, install_verification_tools, verify_command,
)

SUPERVISOR_GROUP = "gx"
SUPERVISOR_CONF = "/etc/supervisor/conf.d/galaxy.conf"
NFS_OPTIONS = "rw,sync,no_subtree_check"
# uv installs Galaxy's venv (parallel downloads: 14 s where pip took ~60 s on the lab); it lives in
# the deploy's own venv. One exact version: pip.packages compares it, a range would reinstall every run.
UV = "uv==0.13.9"
UV_BIN = f"{VERIFY_VENV}/bin/uv"
VENV_AHEAD_UNIT = "pgs-galaxy-venv"  # the transient unit of build_galaxy_venv_ahead


@deploy("Galaxy account and shared directory")
def prepare_galaxy_hosts(cluster: Cluster) -> None:
    galaxy = cluster.galaxy
    if galaxy is None:
        return
    me = cluster.host(host.name)
    server.group(name=f"Group {galaxy.user} (gid {galaxy.gid})", group=galaxy.user, gid=galaxy.gid)
    server.user(
        name=f"User {galaxy.user} (uid {galaxy.uid})",
        user=galaxy.user,
        uid=galaxy.uid,
        group=galaxy.user,
        home=galaxy.root,
        shell="/bin/bash",
        comment="Galaxy server and its jobs",
        ensure_home=False,
    )
    if me == galaxy.host:
        files.directory(name="Galaxy root", path=galaxy.root, user=galaxy.user, group=galaxy.user, mode="0755")
        if galaxy.shared_fs == "nfs":
            _export_galaxy_root(cluster, galaxy)
    elif "compute" in me.roles:
        if galaxy.shared_fs == "nfs":
            _mount_galaxy_root(galaxy)
        file_present(name=f"Galaxy's shared {galaxy.root} is here", path=f"{galaxy.root}/.")


def _nfs_clients(cluster: Cluster, galaxy: Galaxy) -> list[ClusterHost]:
    return [h for h in cluster.compute_hosts if h != galaxy.host]


def _export_galaxy_root(cluster: Cluster, galaxy: Galaxy) -> None:
    clients = _nfs_clients(cluster, galaxy)
    if not clients:
        return
    apt.packages(name="NFS server", packages=["nfs-kernel-server"], no_recommends=True)
    exports = files.block(
        name=f"Export {galaxy.root} to the compute hosts",
        path="/etc/exports",
        content=nfs_exports_line(galaxy.root, clients),
        marker="# {mark} pyinfra-galaxy-slurm galaxy",
    )
    systemd.service(name="NFS server enabled and running", service="nfs-server", running=True, enabled=True)
    server.shell(name="Re-export NFS shares", commands=["exportfs -ra"], _if=exports.did_change)


def nfs_exports_line(root: str, clients: list[ClusterHost]) -> str:
    return f"{root} " + " ".join(f"{client.address or client.node_name}({NFS_OPTIONS})" for client in clients)


def _mount_galaxy_root(galaxy: Galaxy) -> None:
    device = f"{galaxy.host.address or galaxy.host.node_name}:{galaxy.root}"
    apt.packages(name="NFS client", packages=["nfs-common"], no_recommends=True)
    files.directory(name="Mount point for Galaxy's root", path=galaxy.root)
    files.block(
        name=f"{galaxy.root} from the Galaxy host in /etc/fstab",
        path="/etc/fstab",
        content=f"{device} {galaxy.root} nfs defaults,_netdev 0 0",
        marker="# {mark} pyinfra-galaxy-slurm galaxy",
    )
    server.mount(name=f"Mount {galaxy.root} from the Galaxy host", path=galaxy.root, device=device, fs_type="nfs",
                 options=["defaults", "_netdev"])


@once
def galaxy_secrets() -> dict[str, str]:
    """Galaxy's id_secret and bootstrap admin API key: made on the first run, then
    read back from the Galaxy host (through a command's stdout, never printed)."""
    from tasks.cluster import current_cluster

    galaxy = current_cluster().galaxy
    kept = read_secret(galaxy.secrets_file, inventory.get_host(galaxy.host.inventory_name))
    if kept:
        return json.loads(kept)
    return {"id_secret": secrets.token_hex(16), "admin_api_key": secrets.token_hex(32)}


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
    venv_packages(name=f"uv and bioblend in the deploy's own venv {VERIFY_VENV}", venv=VERIFY_VENV, packages=[UV, BIOBLEND],
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


@deploy("Galaxy")
def install_galaxy(cluster: Cluster) -> None:
    galaxy = cluster.galaxy
    if galaxy is None or host.name != galaxy.host.inventory_name:
        return
    owner = {"user": galaxy.user, "group": galaxy.user}
    # Before any Galaxy file changes, after slurm.conf (a partition added in this run exists).
    destinations_schedulable(name="Slurm would start every destination's jobs (sbatch --test-only, partition MaxTime)",
                             galaxy=galaxy)
    python_venv_and_uv()
    for path, mode in ((galaxy.config_dir, "0750"), (galaxy.data_dir, "0755"), (galaxy.log_dir, "0750")):
        files.directory(name=f"Galaxy directory {path}", path=path, mode=mode, **owner)
    venv_rebuilt_if_stale(name=f"A venv made by another Python moved aside, to be rebuilt ({galaxy.venv})",
                          venv=galaxy.venv, rebuild=galaxy.rebuild_venv)
    finished_in_background(name=f"Galaxy's venv built ahead, in the background: finished ({VENV_AHEAD_UNIT})",
                           unit=VENV_AHEAD_UNIT, what="Galaxy's venv built ahead")
    packages = venv_packages(
        name=f"Galaxy {galaxy.version if galaxy.install else '(kept)'} and DRMAA Python in {galaxy.venv}, as {galaxy.user} (uv)",
        venv=galaxy.venv,
        packages=galaxy.pip_packages,
        _su_user=galaxy.user,
        _su_shell="/bin/sh",
    )
    file_present(name="Galaxy is in the venv", path=f"{galaxy.venv}/bin/galaxy-main")

    secret_values = galaxy_secrets()
    secrets_file = config_file(
        name="Galaxy's secrets (kept on the Galaxy host)",
        content=json.dumps(secret_values, indent=2) + "\n",
        dest=galaxy.secrets_file,
        mode="0600",
        secret=True,
        **owner,
    )
    bootstrap = bootstrap_needed(galaxy)
    galaxy_yml = config_file(
        name="galaxy.yml (holds Galaxy's secrets)" + (" with the bootstrap admin API key, for this run only" if bootstrap else ""),
        content=render("galaxy.yml.j2", galaxy=galaxy, secrets=secret_values, bootstrap=bootstrap,
                       tool_configs=tool_config_files(galaxy)),
        dest=galaxy.galaxy_yml,
        mode="0600",
        secret=True,
        **owner,
    )
    tools = verification_tool_files(galaxy, owner)
    job_conf = config_file(
        name="job_conf.xml (checked before it replaces the live file)",
        content=build_job_conf(galaxy),
        dest=galaxy.job_conf,
        mode="0640",
        **owner,
    )
    supervisor_conf = config_file(
        name="supervisor's galaxy.conf",
        content=render("supervisor-galaxy.conf.j2", galaxy=galaxy, group=SUPERVISOR_GROUP,
                       # slurm-drmaa reads jobs gone from slurmctld (MinJobAge) from accounting
                       slurm_drmaa_use_slurmdbd=bool(cluster.accounting and galaxy.drmaa_library_path)),
        dest=SUPERVISOR_CONF,
    )
    systemd.service(name="supervisor enabled and running", service="supervisor", running=True, enabled=True)

    ready, broken = galaxy_ready(galaxy, SUPERVISOR_GROUP)
    restart_all = any_changed(packages, secrets_file, galaxy_yml, *tools)

    def apply_changes() -> str:
        """`update` rereads galaxy.conf and restarts the programs whose section changed,
        environment included (a plain `restart` keeps the old environment). Programs it
        starts for the first time already read the new files: no second start."""
        first_start = "no such" in run(f"supervisorctl status {SUPERVISOR_GROUP}:web")[1]
        steps = [create_database_command(galaxy)] if first_start or galaxy.database.switching else []
        steps += ["supervisorctl update"] if supervisor_conf.did_change() else []
        if not first_start and restart_all():
            steps.append(f"supervisorctl restart '{SUPERVISOR_GROUP}:*'")
        elif not first_start and job_conf.did_change():
            steps.append(handlers_restart(galaxy, SUPERVISOR_GROUP))
        return " && ".join(steps) or "true"

    restart_checked(
        name="Apply Galaxy's changes: supervisorctl update / restart (rolled back if Galaxy does not come back)",
        restart=apply_changes,
        healthy=ready,
        broken=broken,
        configs=[SUPERVISOR_CONF, galaxy.galaxy_yml, galaxy.job_conf],
        log=f"{galaxy.log_dir}/{galaxy.handler_names[0]}.log",
        what="Galaxy",
        timeout=GALAXY_START_TIMEOUT,
        settle=0,
        _if=any_changed(supervisor_conf, packages, secrets_file, galaxy_yml, job_conf, *tools),
    )
    galaxy_answers(name="Galaxy answers its API and its handlers run", galaxy=galaxy, group=SUPERVISOR_GROUP)
    install_verification_tools()
    if bootstrap:
        _retire_bootstrap_key(galaxy, secret_values, owner)


# Galaxy's own database creation (what its scripts/create_db.py does): creates the tables of an
# empty database, leaves a current one as it is, refuses an outdated one (as Galaxy's start would).
CREATE_DATABASE = (
    "from galaxy.model.migrations import verify_databases_via_script as verify; "
    "from galaxy.model.migrations.scripts import get_configuration_from_file as config; "
    "gxy, tsi, auto = config({root!r}, {galaxy_yml!r}); verify(gxy, tsi, auto)"
)


def create_database_command(galaxy: Galaxy) -> str:
    """Galaxy's database made by one process, as the galaxy user, before its programs start: web and
    handlers started together on an empty database each create the tables, and all but one fail
    (PostgreSQL: UniqueViolation on pg_type; supervisor restarts them; seen on the lab's first start)."""
    code = CREATE_DATABASE.format(root=galaxy.root, galaxy_yml=galaxy.galaxy_yml)
    return (f"cd {shlex.quote(galaxy.root)} && runuser -u {shlex.quote(galaxy.user)} -- "
            f"{shlex.quote(galaxy.venv)}/bin/python -c {shlex.quote(code)}")


def bootstrap_needed(galaxy: Galaxy) -> bool:
    """galaxy.yml gets bootstrap_admin_api_key only until the admin account has its own
    key (read at collection): on a first run, and when Galaxy moves to another database
    (the accounts are not in the new one). Galaxy's config schema: set it only to
    bootstrap, and not on a production server."""
    return galaxy.database.switching or host.get_fact(File, path=GALAXY_ADMIN_KEY) is None


def _retire_bootstrap_key(galaxy: Galaxy, secret_values: dict, owner: dict) -> None:
    """Make the admin's and the verification user's own keys with the bootstrap key, then
    take the bootstrap key out of galaxy.yml and restart Galaxy's web server (checked, rolled back)."""
    galaxy_accounts(name="Galaxy admin's own API key (made with the bootstrap key) and the verification user's",
                    command=verify_command(galaxy, "--bootstrap", "--accounts-only"))
    final = config_file(
        name="galaxy.yml without the bootstrap admin API key (the admin's own key is kept, 0600 root)",
        content=render("galaxy.yml.j2", galaxy=galaxy, secrets=secret_values, bootstrap=False,
                       tool_configs=tool_config_files(galaxy)),
        dest=galaxy.galaxy_yml,
        mode="0600",
        secret=True,
        **owner,
    )
    ready, broken = galaxy_ready(galaxy, SUPERVISOR_GROUP)
    # Only the web server: the key opens Galaxy's API, which the job handlers (webless
    # galaxy-main) do not serve; restarting them too would double the cost of this start.
    restart_checked(
        name="Restart Galaxy's web server without the bootstrap key (rolled back if Galaxy does not come back)",
        restart=f"supervisorctl restart {SUPERVISOR_GROUP}:web",
        healthy=ready,
        broken=broken,
        configs=[galaxy.galaxy_yml],
        log=f"{galaxy.log_dir}/{galaxy.handler_names[0]}.log",
        what="Galaxy",
        timeout=GALAXY_START_TIMEOUT,
        settle=0,
        _if=final.did_change,
    )
    galaxy_answers(name="Galaxy answers without the bootstrap key", galaxy=galaxy, group=SUPERVISOR_GROUP)


def verification_tool_dir(galaxy: Galaxy) -> str:
    return f"{galaxy.config_dir}/pgs-verify-tools"


def tool_config_files(galaxy: Galaxy) -> list[str]:
    """galaxy.yml's tool_config_file when the verification has tools of its own (else [] and
    Galaxy's default stays): the admin's (galaxy_config_extra), or Galaxy's default (config/tool_conf.xml
    if it exists, else the sample in the venv), then the verification's tool_conf.xml."""
    if not verification_tools(galaxy):
        return []
    given = galaxy.config_extra.get("tool_config_file")
    if given:
        base = [path.strip() for path in given.split(",")] if isinstance(given, str) else list(given)
    elif host.get_fact(File, path=f"{galaxy.config_dir}/tool_conf.xml"):
        base = [f"{galaxy.config_dir}/tool_conf.xml"]
    else:
        python = host.get_fact(PythonVenv, path=galaxy.venv).host_python
        base = [f"{galaxy.venv}/lib/python{python}/site-packages/galaxy/config/sample/tool_conf.xml.sample"]
    return base + [f"{verification_tool_dir(galaxy)}/tool_conf.xml"]


def verification_tool_files(galaxy: Galaxy, owner: dict) -> list:
    """The verification's tool for each further Slurm destination, and their tool_conf.xml."""
    verification = verification_tools(galaxy)
    if not verification:
        return []
    directory = verification_tool_dir(galaxy)
    changes = [files.directory(name="Directory of the verification's tools", path=directory, mode="0755", **owner)]
    for destination_id, tool_id in verification:
        changes.append(config_file(
            name=f"Verification tool {tool_id} (job_conf.xml maps it to destination {destination_id})",
            content=render("galaxy-verify-tool.xml.j2", tool_id=tool_id, destination=destination_id),
            dest=f"{directory}/{tool_id}.xml", mode="0644", **owner,
        ))
    changes.append(config_file(
        name="tool_conf.xml of the verification's tools (hidden from the tool panel)",
        content=render("galaxy-verify-tool-conf.xml.j2", tools=verification, directory=directory),
        dest=f"{directory}/tool_conf.xml", mode="0644", **owner,
    ))
    return changes
