"""Galaxy's database: Debian's PostgreSQL on the Galaxy host, its role and database.

The role is named as the galaxy OS user and Galaxy connects over the local
socket, where Debian's pg_hba.conf allows peer authentication ("local all all
peer"): no password exists at all. An existing server (galaxy_database_url)
brings its own role, database and credentials: nothing is installed then.

max_connections admits every connection Galaxy's processes can open (the model's
ConnectionBudget). It takes a restart: only when the running value differs, checked,
the previous file put back if PostgreSQL does not come back; Galaxy's pools test each
connection before use (pool_pre_ping) and reconnect.
"""

from __future__ import annotations

import shlex

from pyinfra import host
from pyinfra.api import deploy, operation
from pyinfra.operations import apt, postgres, systemd

from tasks.model import Cluster
from tasks.model.database import DATABASE_NAME
from tasks.operations import config_file, fail, restart_checked, run
from tasks.packages import packages_at_once
from tasks.platform import PACKAGES_POSTGRESQL

SETTINGS_FILE = "pgs-galaxy.conf"  # in the cluster's conf.d


def render_postgresql_settings(max_connections: int) -> str:
    return ("# Managed by pyinfra-galaxy-slurm (postgresql_max_connections): every connection Galaxy's\n"
            "# processes can open, with headroom. Changing it restarts PostgreSQL.\n"
            f"max_connections = {max_connections}\n")


@deploy("Galaxy's database")
def install_database(cluster: Cluster) -> None:
    galaxy = cluster.galaxy
    if galaxy is None or host.name != galaxy.host.inventory_name or not galaxy.database.local_postgresql:
        return
    version = galaxy.host.platform.postgresql
    if not packages_at_once(cluster):  # a first install: in the stack's apt run (tasks.packages)
        apt.packages(name=f"PostgreSQL {version} (Debian's)", packages=list(PACKAGES_POSTGRESQL), no_recommends=True)
    systemd.service(name=f"PostgreSQL {version} enabled and running", service="postgresql",
                    running=True, enabled=True)
    budget = galaxy.database.connections
    wanted = budget.postgresql_max_connections
    settings_path = f"{galaxy.host.platform.postgresql_conf_dir}/{SETTINGS_FILE}"
    config_file(name=f"PostgreSQL max_connections = {wanted} ({settings_path})",
                content=render_postgresql_settings(wanted), dest=settings_path, user="postgres", group="postgres")
    cluster_unit = f"postgresql@{version}-main"
    restart_checked(
        name=f"Restart PostgreSQL for max_connections = {wanted} (only when it runs with another; checked, rolled back)",
        restart=f"systemctl restart {cluster_unit}",
        healthy="pg_isready -q",
        configs=[settings_path],
        log=f"/var/log/postgresql/postgresql-{version}-main.log",
        what=f"PostgreSQL {version}",
        unit=cluster_unit,
        _if=lambda: _max_connections_now() != str(wanted) and _max_connections_in_files()[1] == settings_path,
    )
    max_connections_applied(name=f"PostgreSQL runs with max_connections = {wanted}", wanted=wanted, ours=settings_path)
    # psql runs as the postgres superuser (peer authentication), through su as this run's root.
    as_postgres = {"_su_user": "postgres", "_su_shell": "/bin/sh"}
    postgres.role(name=f"PostgreSQL role {galaxy.user} (peer authentication, no password)", role=galaxy.user,
                  login=True, **as_postgres)
    postgres.database(name=f"PostgreSQL database {DATABASE_NAME} owned by {galaxy.user}", database=DATABASE_NAME,
                      owner=galaxy.user, encoding="UTF8", template="template0", **as_postgres)


@operation(is_idempotent=True)
def max_connections_applied(wanted: int, ours: str):
    """Fail, naming the file, when PostgreSQL runs with another max_connections than `wanted`
    because a configuration file read after `ours` sets it (ALTER SYSTEM's postgresql.auto.conf,
    a later file in conf.d): a restart would not change it, so none is made."""
    if not host.state.is_executing:
        return
    running = _max_connections_now()
    if running == str(wanted):
        return
    value, source = _max_connections_in_files()
    yield fail(f"PostgreSQL runs with max_connections = {running}, not {wanted}: {source or '?'} sets "
               f"{value or '?'} after {ours}; remove it there (`ALTER SYSTEM RESET max_connections` for "
               "postgresql.auto.conf) or set postgresql_max_connections to that value, and re-run")


def _max_connections_now() -> str:
    """The running server's max_connections (at execution, on the Galaxy host)."""
    return run("runuser -u postgres -- psql -XAtc 'SHOW max_connections'")[1].strip()


def _max_connections_in_files() -> tuple[str, str]:
    """(value, file) of the max_connections the configuration files give now (pg_file_settings reads
    them afresh on each query; the last one read wins), ("", "") when none sets it."""
    query = ("SELECT setting || '|' || sourcefile FROM pg_file_settings WHERE name = 'max_connections' "
             "ORDER BY seqno DESC LIMIT 1")
    value, _, source = run(f"runuser -u postgres -- psql -XAtc {shlex.quote(query)}")[1].strip().partition("|")
    return value, source
