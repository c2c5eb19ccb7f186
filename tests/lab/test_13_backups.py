"""Scheduled backups (tasks/backup.py, files/pgs-backup) on the session's deployed lab.

Every host has pgs-backup.timer enabled and waiting; one run of pgs-backup.service on each host
(what the timer starts) writes a backup only root can read, holding what the host holds: on the
controller + Galaxy host Galaxy's PostgreSQL dump (pg_restore reads its table of contents), the
accounting database's dump, slurmctld's state and the configuration with its secrets; on a
compute host its configuration. The oldest backups beyond backup_keep go. Release-independent
(bash, tar, pg_dump and mysqldump alike on both): run on Debian 12, the sudo-user lab.
"""

from __future__ import annotations

import time

import pytest

from tests.lab.conftest import COMPUTE_NAMES, HOST_NAMES, NOTES, ON_DEBIAN_12_ONLY

pytestmark = [pytest.mark.lab, ON_DEBIAN_12_ONLY]

HEAD = HOST_NAMES[0]
BACKUP_DIR = "/var/backups/pyinfra-galaxy-slurm"
KEEP = 14  # backup_keep's default
OLD = [f"2020010{day}T000000Z" for day in range(1, 10)] + [f"202001{day}T000000Z" for day in range(10, 15)]


def newest(host) -> str:
    return host.check_output(f"ls -1d {BACKUP_DIR}/*Z | sort | tail -n 1")


def test_timer_waits_on_every_host(first_deploy, lab_host):
    for name in HOST_NAMES:
        host = lab_host(name)
        assert host.service("pgs-backup.timer").is_enabled, name
        assert host.run("systemctl is-active pgs-backup.timer").stdout.strip() == "active", name
        assert "pgs-backup.timer" in host.check_output("systemctl list-timers --all --no-legend pgs-backup.timer")


def test_one_backup_run_on_each_host_holds_what_it_holds(first_deploy, lab_host):
    head = lab_host(HEAD)
    # Backups the timer made already (backup_schedule 03:15: a test run across it has one).
    made_by_timer = len(head.run(f"ls -1d {BACKUP_DIR}/*Z 2>/dev/null").stdout.split())
    # 14 old backups already there: the run adds one, and the oldest go (backup_keep).
    head.check_output(f"mkdir -p -m 0700 {BACKUP_DIR} && cd {BACKUP_DIR} && mkdir -m 0700 " + " ".join(OLD))
    seconds = {}
    for name in HOST_NAMES:
        started = time.monotonic()
        result = lab_host(name).run("systemctl start pgs-backup.service")
        seconds[name] = round(time.monotonic() - started, 1)
        assert result.rc == 0, lab_host(name).run("journalctl -u pgs-backup --no-pager -n 30").stdout
    backup = newest(head)
    manifest = head.check_output(f"cat {backup}/MANIFEST")
    NOTES.append(f"backups: seconds per host {seconds}; {HEAD}: {manifest}")
    files = {line.split()[-1] for line in manifest.splitlines()}
    assert files == {"config.tar.gz", "galaxy.pgdump", "accounting.sql.gz", "slurmctld-state.tar.gz"}, manifest
    # Only root reads a backup: the directories 0700, the files 0600, nothing open to others.
    assert head.check_output(f"stat -c '%U %a' {BACKUP_DIR} {backup}").split("\n") == ["root 700", "root 700"]
    assert head.check_output(f"find {BACKUP_DIR} -perm /077 -not -path {BACKUP_DIR}") == ""
    assert head.check_output(f"cd {backup} && awk '{{print $2 \"  \" $3}}' MANIFEST | sha256sum --quiet -c - && echo ok") == "ok"
    # Each part restores: pg_restore reads the dump's contents, the SQL and the tars are whole.
    assert "TABLE public galaxy_user" in head.check_output(f"pg_restore --list {backup}/galaxy.pgdump")
    assert head.check_output(f"zcat {backup}/accounting.sql.gz | grep -c 'CREATE TABLE `galaxy_job_table`'") == "1"
    assert "slurmctld/job_state" in head.check_output(f"tar -tzf {backup}/slurmctld-state.tar.gz")
    config = head.check_output(f"tar -tzf {backup}/config.tar.gz")
    for path in ("etc/munge/munge.key", "srv/galaxy/config/galaxy.yml", "etc/slurm/slurmdbd.conf",
                 "etc/pyinfra-galaxy-slurm/backup.conf"):
        assert path in config.split(), config
    assert ".pgs-backup" not in config  # the deploy's own copies of replaced files are left out
    # backup_keep: the run removed the oldest of those it found (one, unless the timer made some).
    kept = head.check_output(f"ls -1 {BACKUP_DIR}").split()
    gone = made_by_timer + 1
    assert len(kept) == KEEP and not set(OLD[:gone]) & set(kept) and OLD[gone] in kept, (made_by_timer, kept)
    head.check_output(f"cd {BACKUP_DIR} && rm -rf " + " ".join(OLD))
    for name in COMPUTE_NAMES:
        node = lab_host(name)
        listing = node.check_output(f"cat {newest(node)}/MANIFEST")
        assert {line.split()[-1] for line in listing.splitlines()} == {"config.tar.gz"}, listing
        assert "etc/munge/munge.key" in node.check_output(f"tar -tzf {newest(node)}/config.tar.gz").split()
