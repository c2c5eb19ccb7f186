"""Galaxy's database: PostgreSQL (Debian's on the Galaxy host, or an existing server) or SQLite.

Pure, like the rest of the model. The rule that protects a running Galaxy when the
database changes: a switch that would leave its data behind is refused. The rule that
keeps Galaxy scheduling jobs: PostgreSQL admits every connection Galaxy's processes can
open (galaxy#17893: handlers stop taking new jobs when the server's slots run out).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tasks.model.problems import check_positive_int

DATABASES = ("postgresql", "sqlite")
# Where Debian's PostgreSQL listens locally; peer authentication maps the galaxy
# OS user to the role of the same name (pg_hba.conf: "local all all peer").
POSTGRESQL_SOCKET_DIR = "/var/run/postgresql"
DATABASE_NAME = "galaxy"
# PostgreSQL's own defaults (postgresql.conf): connections, and those only superusers may use.
POSTGRESQL_DEFAULT_MAX_CONNECTIONS = 100
POSTGRESQL_SUPERUSER_RESERVED = 3
# Connections kept free beyond Galaxy's pools: the nightly pg_dump (pgs-backup), the deploy's own
# queries, an admin's psql sessions and Galaxy's maintenance scripts.
CONNECTIONS_HEADROOM = 10


@dataclass(frozen=True)
class ConnectionBudget:
    """The database connections Galaxy's processes can hold at once, against PostgreSQL's
    max_connections. Each process has its own SQLAlchemy pool of `pool_size` connections kept
    open plus `max_overflow` opened under load (Galaxy's database_engine_option_pool_size /
    _max_overflow, defaults 5 and 10); gunicorn's master counts (it loads Galaxy before it forks
    its worker: --preload)."""

    processes: int  # Galaxy processes with a pool: gunicorn's master and worker, the job handlers
    pool_size: int
    max_overflow: int
    max_connections: int | None = None  # the admin's postgresql_max_connections; None: computed

    @property
    def galaxy(self) -> int:
        """At most this many connections from Galaxy."""
        return self.processes * (self.pool_size + self.max_overflow)

    @property
    def needed(self) -> int:
        """The least max_connections that admits them all, with headroom and PostgreSQL's reserved slots."""
        return self.galaxy + CONNECTIONS_HEADROOM + POSTGRESQL_SUPERUSER_RESERVED

    @property
    def postgresql_max_connections(self) -> int:
        """What the Galaxy host's PostgreSQL gets: the admin's, else its default or what is needed if more."""
        return self.max_connections or max(POSTGRESQL_DEFAULT_MAX_CONNECTIONS, self.needed)

    def summary(self, local_postgresql: bool) -> str:
        opened = (f"Galaxy's database connections: at most {self.galaxy} ({self.processes} processes x (pool "
                  f"{self.pool_size} + overflow {self.max_overflow}))")
        if not local_postgresql:
            return f"{opened}: galaxy_database_url's server must admit them"
        return (f"{opened} of PostgreSQL's max_connections {self.postgresql_max_connections} "
                f"({CONNECTIONS_HEADROOM} kept for backups and admins, {POSTGRESQL_SUPERUSER_RESERVED} for superusers)")


@dataclass(frozen=True)
class GalaxyDatabase:
    kind: str = "postgresql"  # or "sqlite"
    url: str | None = None  # an existing server's URL (secret), None: the Galaxy host's own PostgreSQL
    fresh: bool = False  # allowed to start empty although the database in use holds data
    switching: bool = False  # Galaxy uses another kind of database now (its accounts are not in this one)
    connections: ConnectionBudget = ConnectionBudget(processes=4, pool_size=5, max_overflow=10)

    @property
    def local_postgresql(self) -> bool:
        """The deploy installs PostgreSQL on the Galaxy host and makes its role and database."""
        return self.kind == "postgresql" and not self.url

    def connection(self, data_dir: str) -> str:
        """Galaxy's database_connection (a secret when it is an existing server's URL)."""
        if self.kind == "sqlite":
            return f"sqlite:///{data_dir}/universe.sqlite?isolation_level=IMMEDIATE"
        if self.url:
            return self.url
        # Peer authentication over the local socket: no password exists at all.
        return f"postgresql:///{DATABASE_NAME}?host={POSTGRESQL_SOCKET_DIR}"


@dataclass(frozen=True)
class GalaxyDatabaseState:
    """What Galaxy's database in use holds now (fact GalaxyDatabaseNow): kind "" when
    Galaxy has no galaxy.yml yet."""

    kind: str = ""  # "sqlite" or "postgresql" (from galaxy.yml's database_connection)
    users: int = 0
    jobs: int = 0


# Galaxy processes with a database pool besides the job handlers: gunicorn's master and its one worker.
WEB_PROCESSES = 2
# galaxy.yml keys the deploy writes from settings (galaxy_config_extra may not set them too).
DATABASE_KEYS = {
    "database_connection": "galaxy_database / galaxy_database_url",
    "database_engine_option_pool_size": "galaxy_database_pool_size",
    "database_engine_option_max_overflow": "galaxy_database_max_overflow",
    "database_engine_option_pool_pre_ping": "(always on with PostgreSQL)",
}


def database_from(config: Mapping[str, Any], handlers: Any, problems: list[str]) -> GalaxyDatabase:
    """Check galaxy_database*, the pool sizes and postgresql_max_connections (each problem names
    its setting and the fix; the URL, a secret, is never repeated)."""
    kind = config["galaxy_database"]
    url = config["galaxy_database_url"]
    connections = _connections_from(config, handlers, url, problems)
    for key, setting in DATABASE_KEYS.items():
        if key in config["galaxy_config_extra"]:
            problems.append(f"galaxy_config_extra: '{key}' is the deploy's to write; use {setting} instead")
    if kind not in DATABASES:
        problems.append(f"galaxy_database: '{kind}' is unknown; use 'postgresql' (the default) or 'sqlite' (a one-host trial)")
    if url is not None:
        # The URL holds a password: never repeat it in a message.
        if kind != "postgresql":
            problems.append("galaxy_database_url: is set, but galaxy_database is not 'postgresql'; "
                            "remove the URL or set galaxy_database = 'postgresql'")
        elif not isinstance(url, str) or not re.match(r"postgres(ql)?(\+psycopg2)?://", url):
            problems.append("galaxy_database_url: is not a PostgreSQL URL; give postgresql://USER:PASSWORD@HOST:PORT/DATABASE")
    if kind == "sqlite" and isinstance(handlers, int) and handlers > 1:
        problems.append(
            f"galaxy_handlers: {handlers} handlers need PostgreSQL: they share jobs with db-skip-locked "
            "(SELECT ... FOR UPDATE SKIP LOCKED), which SQLite lacks; set galaxy_handlers = 1 for SQLite, "
            "or galaxy_database = 'postgresql'"
        )
    return GalaxyDatabase(kind=kind if kind in DATABASES else "postgresql", url=url or None,
                          fresh=bool(config["galaxy_database_fresh"]), connections=connections)


def _connections_from(config: Mapping[str, Any], handlers: Any, url: Any, problems: list[str]) -> ConnectionBudget:
    pool_size, max_overflow = config["galaxy_database_pool_size"], config["galaxy_database_max_overflow"]
    max_connections = config["postgresql_max_connections"]
    known = len(problems)
    check_positive_int(pool_size, "galaxy_database_pool_size", problems)
    if isinstance(max_overflow, bool) or not isinstance(max_overflow, int) or max_overflow < 0:
        problems.append(f"galaxy_database_max_overflow: {max_overflow!r} is not a whole number of 0 or more")
    if max_connections is not None:
        check_positive_int(max_connections, "postgresql_max_connections", problems)
    if len(problems) > known or not isinstance(handlers, int) or isinstance(handlers, bool):
        return ConnectionBudget(processes=WEB_PROCESSES + 1, pool_size=5, max_overflow=10)
    budget = ConnectionBudget(WEB_PROCESSES + handlers, pool_size, max_overflow, max_connections)
    if max_connections is not None and url:
        problems.append("postgresql_max_connections: applies to the Galaxy host's own PostgreSQL; the server of "
                        "galaxy_database_url is its admins' to size: remove the setting (that server must admit "
                        f"{budget.galaxy} connections from Galaxy: {budget.processes} processes x "
                        f"{pool_size + max_overflow})")
    elif max_connections is not None and max_connections < budget.needed:
        problems.append(
            f"postgresql_max_connections: {max_connections} is fewer than Galaxy's processes can open: "
            f"{budget.processes} processes (gunicorn's master and worker, {handlers} job handlers) x (pool "
            f"{pool_size} + overflow {max_overflow}) = {budget.galaxy}, plus {CONNECTIONS_HEADROOM} for backups and "
            f"admins and PostgreSQL's {POSTGRESQL_SUPERUSER_RESERVED} reserved = {budget.needed}; set it to at least "
            f"{budget.needed} (or leave it unset: computed), or lower galaxy_database_pool_size, "
            "galaxy_database_max_overflow or galaxy_handlers"
        )
    return budget


def database_switch_problems(database: GalaxyDatabase, now: GalaxyDatabaseState) -> list[str]:
    """Refuse to point a Galaxy that has data at another, empty database.

    Galaxy creates an empty schema in a new database and starts on it: users,
    histories and jobs stay in the old one, unseen. Galaxy ships no tool that
    moves a database from SQLite to PostgreSQL; pgloader can copy the tables
    before the switch.
    """
    if not now.kind or now.kind == database.kind or not (now.users or now.jobs) or database.fresh:
        return []
    return [
        f"galaxy_database: '{database.kind}' would start Galaxy on an empty database, but its {now.kind} database "
        f"holds {now.users} user{'s' if now.users != 1 else ''} and {now.jobs} job{'s' if now.jobs != 1 else ''}, "
        f"which Galaxy would no longer see. Either keep galaxy_database = '{now.kind}'"
        f"{' (with galaxy_handlers = 1)' if now.kind == 'sqlite' else ''}; or migrate first (Galaxy ships "
        f"no SQLite -> PostgreSQL migration: copy the tables with pgloader into the new database before the "
        f"switch, or export the histories users need and import them after); or set galaxy_database_fresh = True to "
        f"start empty (the old database is left in place, not deleted)"
    ]
