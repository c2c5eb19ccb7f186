"""Galaxy's configuration and processes: galaxy.yml, job_conf.xml and supervisor's galaxy.conf
written (checked, backed up), Galaxy's database created by one process, its programs updated
or restarted only for what changed (rolled back if Galaxy does not come back), and Galaxy ready:
every program running, each handler with its runners loaded, the API answering through nginx."""

from __future__ import annotations

import json
import shlex
import time

from pyinfra import host
from pyinfra.api import deploy, operation
from pyinfra.facts.files import File
from pyinfra.operations import files, systemd

from tasks.checks import file_present, report
from tasks.common import any_changed, render
from tasks.destinations import destinations_schedulable
from tasks.facts import PythonVenv
from tasks.galaxy.keys import bootstrap_needed, galaxy_accounts, galaxy_secrets, install_verification_tools, verify_command
from tasks.galaxy.venv import VENV_AHEAD_UNIT, python_venv_and_uv, venv_packages, venv_rebuilt_if_stale
from tasks.model.jobconf import build_job_conf, verification_tools
from tasks.model import Cluster, Galaxy
from tasks.operations import config_file, fail, finished_in_background, log_tail, restart_checked, run, wait_until
from tasks.platform import SUPERVISOR_CONF

SUPERVISOR_GROUP = "gx"
# Measured: a first start on a new SQLite database took 4 min with the 2 cores shared by 5 labs (30 s alone).
GALAXY_START_TIMEOUT = 480


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

    secret_values = galaxy_secrets(galaxy)
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
        """One restart of what changed. `update` rereads galaxy.conf, environment included (a
        plain `restart` keeps the old environment), and restarts a changed group whole: it stops,
        removes and re-adds it (supervisorctl's do_update), so every program starts on every new
        file and nothing more is restarted after it. Only when it changed no program (a comment)
        do the restarts for the other files follow. Programs started for the first time already
        read the new files: no second start."""
        first_start = "no such" in run(f"supervisorctl status {SUPERVISOR_GROUP}:web")[1]
        steps = [create_database_command(galaxy)] if first_start or galaxy.database.switching else []
        if not first_start and restart_all():
            restart = f"supervisorctl restart '{SUPERVISOR_GROUP}:*'"
        elif not first_start and job_conf.did_change():
            restart = handlers_restart(galaxy, SUPERVISOR_GROUP)
        else:
            restart = ""
        if supervisor_conf.did_change():
            updated = f"{SUPERVISOR_GROUP}: updated process group"
            steps.append("out=$(supervisorctl update) && echo \"$out\""
                         + (f" && {{ echo \"$out\" | grep -q '{updated}' || {restart}; }}" if restart else ""))
        elif restart:
            steps.append(restart)
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


def runners_loaded(log: str) -> str:
    """A command that succeeds when a handler loaded its job runners since its last start
    (older lines in the log may be from before a restart)."""
    return f"awk '/will load all configured runner plugins/ {{n = 0}} /Loaded job runner/ {{n++}} END {{exit n == 0}}' {log}"


def galaxy_ready(galaxy: Galaxy, group: str) -> tuple[str, str]:
    """Shell checks for Galaxy under supervisor group `group`: (ready, broken).

    Ready: every program RUNNING, each handler loaded its job runners since its
    last start (older log lines may be from before a restart), the API answers.
    Broken: a program has given up starting.
    """
    handlers = " && ".join(
        f"supervisorctl status {group}:{name} | grep -q RUNNING && {runners_loaded(f'{galaxy.log_dir}/{name}.log')}"
        for name in galaxy.handler_names
    )
    # Through nginx (galaxy.url: plain HTTP on loopback).
    api = f"python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5)' {galaxy.url}/api/version"
    ready = f"! supervisorctl status '{group}:*' | grep -qv RUNNING && {handlers} && {api}"
    broken = f"supervisorctl status '{group}:*' | grep -qE 'FATAL|BACKOFF|EXITED'"
    return ready, broken


@operation(is_idempotent=True)
def galaxy_answers(galaxy: Galaxy, group: str):
    """Wait until Galaxy is ready (see galaxy_ready); else fail with the log tails."""
    if not host.state.is_executing:
        return
    started = time.monotonic()
    ready, broken = galaxy_ready(galaxy, group)
    handler_logs = " ".join(f"{galaxy.log_dir}/{name}.log" for name in galaxy.handler_names)
    if wait_until(ready, GALAXY_START_TIMEOUT, broken=broken):
        _, loaded = run(
            f"for log in {handler_logs}; do tac $log | awk '/Loaded job runner/ {{print}} "
            f"/will load all configured runner plugins/ {{exit}}'; done | grep -o \"Loaded job runner '[^']*' as '[^']*'\" | sort -u"
        )
        report(f"Galaxy answers {galaxy.url}/api/version after {time.monotonic() - started:.1f} s; "
               f"{', '.join(loaded.splitlines())}; users open {galaxy.public_url}")
        return
    _, status = run(f"supervisorctl status '{group}:*' || true")
    logs = [f"{galaxy.log_dir}/{name}.log" for name in ["web", *galaxy.handler_names]]
    yield fail(f"Galaxy did not come up within {GALAXY_START_TIMEOUT} s ({galaxy.url}, through nginx):\n{status}\n"
               + "\n".join(map(log_tail, logs)))


def handlers_restart(galaxy: Galaxy, group: str) -> str:
    """The command that restarts Galaxy's job handlers (they read job_conf.xml at start)."""
    return "supervisorctl restart " + " ".join(f"{group}:{name}" for name in galaxy.handler_names)


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
