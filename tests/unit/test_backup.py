"""Scheduled backups: what each host backs up, the settings checked."""

from __future__ import annotations

import shlex

import pytest

from tasks.backup import backup_conf, render_backup_conf, render_units
from tasks.model import ClusterConfigError, build_cluster
from tests.unit.conftest import CLI_RUNNER, small_cluster


def test_each_host_backs_up_what_it_holds():
    cluster = build_cluster(small_cluster(1), {})
    head, compute = (backup_conf(cluster, cluster.host(name)) for name in ("head", "c1"))
    assert head["GALAXY_POSTGRESQL_DB"] == "galaxy" and head["ACCOUNTING_DB"] == "slurm_acct_db"
    assert head["STATE_SAVE"] == "/var/lib/slurm/slurmctld"
    assert {"/srv/galaxy/config", "/etc/pyinfra-galaxy-slurm", "/etc/munge/munge.key", "/etc/slurm",
            "/etc/supervisor/conf.d/galaxy.conf"} <= set(head["CONFIG_PATHS"].split())
    assert compute == {"BACKUP_DIR": "/var/backups/pyinfra-galaxy-slurm", "KEEP": "14",
                       "CONFIG_PATHS": "/etc/slurm /etc/munge/munge.key /etc/pyinfra-galaxy-slurm"}
    # the file the script sources: shell words, one variable a line
    text = render_backup_conf(head)
    assert dict(line.split("=", 1) for line in text.splitlines()[1:]) == {k: shlex.quote(v) for k, v in head.items()}


def test_sqlite_and_existing_servers():
    sqlite = build_cluster(small_cluster(1, galaxy={**CLI_RUNNER, "galaxy_database": "sqlite", "galaxy_handlers": 1}),
                           {"slurm_accounting": False})
    conf = backup_conf(sqlite, sqlite.host("head"))
    assert conf["GALAXY_SQLITE"] == "/srv/galaxy/data/universe.sqlite"
    assert "ACCOUNTING_DB" not in conf and "GALAXY_POSTGRESQL_DB" not in conf


def test_timer_at_the_schedule():
    cluster = build_cluster(small_cluster(1), {"backup_schedule": "daily", "backup_keep": 3})
    service, timer = render_units(cluster.backups.schedule)
    assert "OnCalendar=daily\n" in timer and "Persistent=true" in timer and "ExecStart=/usr/local/sbin/pgs-backup" in service
    assert backup_conf(cluster, cluster.host("c1"))["KEEP"] == "3"
    assert build_cluster(small_cluster(1), {"backup_schedule": None}).backups is None


@pytest.mark.parametrize(("settings", "expected"), [
    ({"backup_schedule": "daily; rm -rf /"}, "backup_schedule: 'daily; rm -rf /' is not a systemd calendar event"),
    ({"backup_dir": "backups"}, "backup_dir: 'backups' is not an absolute path of its own"),
    ({"backup_dir": "/"}, "backup_dir: '/' is not an absolute path of its own"),
    ({"backup_keep": 0}, "backup_keep: 0 is not a whole number of backups (1 or more)"),
])
def test_backup_settings_refused_with_the_fix(settings, expected):
    with pytest.raises(ClusterConfigError) as error:
        build_cluster(small_cluster(1), settings)
    assert expected in str(error.value)


def test_old_copies_of_replaced_files_expire():
    import time as clock
    from tasks.backup import expired_copies, replaced_file_dirs
    from tasks.operations import RUN_STAMP
    now = clock.mktime(clock.strptime("20261207T120000", "%Y%m%dT%H%M%S"))
    paths = ["/etc/slurm/slurm.conf.20261101T100000.pgs-backup",  # 36 days: gone
             "/srv/galaxy/venv.20261001T000000.pgs-backup",  # a venv moved aside: gone
             "/etc/slurm/slurm.conf.20261201T100000.pgs-backup",  # 6 days: kept
             f"/etc/slurm/cgroup.conf.{RUN_STAMP}.pgs-backup",  # this run's: kept whatever the clock says
             "/etc/slurm/notes.pgs-backup"]  # not the deploy's stamp: kept
    assert expired_copies(paths, 30, now) == ["/etc/slurm/slurm.conf.20261101T100000.pgs-backup",
                                              "/srv/galaxy/venv.20261001T000000.pgs-backup"]
    cluster = build_cluster(small_cluster(1), {})
    assert {"/srv/galaxy", "/srv/galaxy/config", "/etc/slurm", "/var/lib/slurm/slurmctld"} <= set(
        replaced_file_dirs(cluster, cluster.host("head")))
    assert "/srv/galaxy" not in replaced_file_dirs(cluster, cluster.host("c1"))


def test_replaced_files_keep_days_checked():
    assert build_cluster(small_cluster(1), {"replaced_files_keep_days": None}).replaced_files_keep_days is None
    with pytest.raises(ClusterConfigError) as error:
        build_cluster(small_cluster(1), {"replaced_files_keep_days": 0})
    assert "replaced_files_keep_days: 0 is not a whole number of days" in str(error.value)
