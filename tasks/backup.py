"""Scheduled backups: every host backs up what it holds, on a systemd timer.

`files/pgs-backup` does the work (pgs-backup.service, started by pgs-backup.timer at
`backup_schedule`); this layer tells it, in /etc/pyinfra-galaxy-slurm/backup.conf (0600
root), what the host holds: the deploy's configuration and secrets (every host), Galaxy's
database (the Galaxy host: pg_dump of its own PostgreSQL, or the SQLite file; an existing
server given by `galaxy_database_url` is that server's to back up), slurmdbd's database (its
host, with the MariaDB this deploy installs), slurmctld's state (the controller). Backups
stay on the host that made them, 0700 root, `backup_keep` of them (copy them elsewhere:
docs/operations.md, "Backups"). A run never backs up by itself: the timer does.
"""

from __future__ import annotations

import re
import shlex
import time

from pyinfra import host
from pyinfra.api import deploy, operation
from pyinfra.facts.files import File
from pyinfra.operations import files, server, systemd

from tasks.common import project_file
from tasks.model import Cluster, ClusterHost
from tasks.model.database import DATABASE_NAME
from tasks.operations import BACKUP_MARK, RUN_STAMP, STAMP_FORMAT, config_file, fail, run
from tasks.platform import MUNGE_KEY, NGINX_SITE, PATHS, PRIVATE_DIR, SUPERVISOR_CONF

# Where the deploy leaves `<file>.<time>.pgs-backup` copies of what it replaced (tasks.operations).
STAMPED_COPY = re.compile(r"\.(\d{8}T\d{6})" + re.escape(BACKUP_MARK) + "$")

BACKUP_SCRIPT = "/usr/local/sbin/pgs-backup"
BACKUP_CONF = f"{PRIVATE_DIR}/backup.conf"
BACKUP_UNIT = "pgs-backup"
SYSTEMD_DIR = "/etc/systemd/system"


def backup_conf(cluster: Cluster, me: ClusterHost) -> dict[str, str]:
    """backup.conf's variables for one host (files/pgs-backup says what each means)."""
    backups = cluster.backups
    assert backups is not None
    config_paths = [me.platform.config_dir, MUNGE_KEY, PRIVATE_DIR]
    parts: dict[str, str] = {}
    galaxy = cluster.galaxy
    if galaxy is not None and galaxy.host.inventory_name == me.inventory_name:
        config_paths += [galaxy.config_dir, SUPERVISOR_CONF, NGINX_SITE]
        if galaxy.database.local_postgresql:
            parts["GALAXY_POSTGRESQL_DB"] = DATABASE_NAME
        elif galaxy.database.kind == "sqlite":
            parts["GALAXY_SQLITE"] = f"{galaxy.data_dir}/universe.sqlite"
    accounting = cluster.accounting
    if accounting is not None and accounting.local_database and accounting.dbd_host.inventory_name == me.inventory_name:
        parts["ACCOUNTING_DB"] = accounting.storage_loc
    if "controller" in me.roles:
        parts["STATE_SAVE"] = PATHS.state_save
    return {"BACKUP_DIR": backups.dir, "KEEP": str(backups.keep), "CONFIG_PATHS": " ".join(config_paths), **parts}


def render_backup_conf(values: dict[str, str]) -> str:
    return ("# What pgs-backup backs up on this host (pyinfra-galaxy-slurm; overwritten by the deploy).\n"
            + "".join(f"{key}={shlex.quote(value)}\n" for key, value in values.items()))


def render_units(schedule: str) -> tuple[str, str]:
    service = ("[Unit]\nDescription=pyinfra-galaxy-slurm backup of this host (/etc/pyinfra-galaxy-slurm/backup.conf)\n"
               "After=postgresql.service mariadb.service\n\n"
               f"[Service]\nType=oneshot\nExecStart={BACKUP_SCRIPT}\nNice=10\nIOSchedulingClass=idle\n")
    timer = ("[Unit]\nDescription=pyinfra-galaxy-slurm backups at backup_schedule\n\n"
             f"[Timer]\nOnCalendar={schedule}\nRandomizedDelaySec=10min\nPersistent=true\n\n"
             "[Install]\nWantedBy=timers.target\n")
    return service, timer


@operation(is_idempotent=True)
def calendar_accepted(schedule: str):
    """The host's systemd reads `schedule` as a calendar event (systemd-analyze calendar), or the run
    fails here, before the timer is written."""
    if not host.state.is_executing:
        return
    ok, output = run(f"systemd-analyze calendar {shlex.quote(schedule)}")
    if not ok:
        yield fail(f"backup_schedule: systemd does not take {schedule!r} as a calendar event "
                   f"(systemd.time(7); e.g. 'daily' or '*-*-* 03:15:00'): {output.strip()[-300:]}")


def replaced_file_dirs(cluster: Cluster, me: ClusterHost) -> list[str]:
    """The directories the deploy keeps its copies of replaced files in, on one host."""
    dirs = [me.platform.config_dir, "/etc/systemd/system", "/etc/systemd/system/slurmd.service.d", PRIVATE_DIR]
    if "controller" in me.roles:
        dirs.append(PATHS.state_save)  # the ClusterID file set aside when accounting is turned on
    galaxy = cluster.galaxy
    if galaxy is not None and galaxy.host.inventory_name == me.inventory_name:
        dirs += [galaxy.root, galaxy.config_dir, SUPERVISOR_CONF.rsplit("/", 1)[0], NGINX_SITE.rsplit("/", 1)[0]]
    return dirs


def expired_copies(paths: list[str], keep_days: int, now: float) -> list[str]:
    """The `*.<time>.pgs-backup` paths made more than `keep_days` days before `now` (their own stamp:
    `cp -p` keeps the original's mtime), never this run's."""
    expired = []
    for path in paths:
        stamp = STAMPED_COPY.search(path)
        if not stamp or stamp[1] == RUN_STAMP:
            continue
        made = time.mktime(time.strptime(stamp[1], STAMP_FORMAT))
        if now - made > keep_days * 86400:
            expired.append(path)
    return sorted(expired)


@operation(is_idempotent=True)
def prune_replaced_files(dirs: list[str], keep_days: int):
    """Remove the deploy's copies of replaced files older than `keep_days` (a venv moved aside among them)."""
    if not host.state.is_executing:
        return
    quoted = " ".join(shlex.quote(d) for d in dirs)
    _, found = run(f"find {quoted} -maxdepth 1 -name '*{BACKUP_MARK}' 2>/dev/null || true")
    expired = expired_copies(found.split(), keep_days, time.time())
    if expired:
        yield "rm -rf " + " ".join(shlex.quote(p) for p in expired)


@deploy("Backups")
def install_backups(cluster: Cluster) -> None:
    me = cluster.host(host.name)
    if cluster.replaced_files_keep_days is not None:
        prune_replaced_files(name=f"The deploy's copies of replaced files older than {cluster.replaced_files_keep_days} "
                                  "days removed", dirs=replaced_file_dirs(cluster, me),
                             keep_days=cluster.replaced_files_keep_days)
    service_path, timer_path = f"{SYSTEMD_DIR}/{BACKUP_UNIT}.service", f"{SYSTEMD_DIR}/{BACKUP_UNIT}.timer"
    if cluster.backups is None:
        # Turned off: the timer goes; backups already made stay (they are the admin's).
        if host.get_fact(File, path=timer_path):
            server.shell(name=f"Stop and disable {BACKUP_UNIT}.timer (backup_schedule is None)",
                         commands=[f"systemctl disable --now {BACKUP_UNIT}.timer"])
        for path in (timer_path, service_path, BACKUP_CONF):
            files.file(name=f"No {path}", path=path, present=False)
        return
    calendar_accepted(name=f"systemd takes backup_schedule {cluster.backups.schedule!r}", schedule=cluster.backups.schedule)
    files.put(name=f"Backup script {BACKUP_SCRIPT}", src=project_file("pgs-backup"), dest=BACKUP_SCRIPT,
              user="root", group="root", mode="0755")
    config_file(name=f"What this host backs up ({BACKUP_CONF}, 0600 root)",
                content=render_backup_conf(backup_conf(cluster, me)), dest=BACKUP_CONF, mode="0600")
    service, timer = render_units(cluster.backups.schedule)
    units = [config_file(name=f"{BACKUP_UNIT}.service", content=service, dest=service_path),
             config_file(name=f"{BACKUP_UNIT}.timer at {cluster.backups.schedule}", content=timer, dest=timer_path)]
    systemd.daemon_reload(name="Reload systemd for the backup units", _if=lambda: any(u.did_change() for u in units))
    systemd.service(name=f"{BACKUP_UNIT}.timer enabled and running", service=f"{BACKUP_UNIT}.timer", running=True,
                    enabled=True)
