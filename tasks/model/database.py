"""Galaxy's database: PostgreSQL (Debian's on the Galaxy host, or an existing server) or SQLite.

Pure, like the rest of the model. The rule that protects a running Galaxy when the
database changes: a switch that would leave its data behind is refused.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

DATABASES = ("postgresql", "sqlite")
# Where Debian's PostgreSQL listens locally; peer authentication maps the galaxy
# OS user to the role of the same name (pg_hba.conf: "local all all peer").
POSTGRESQL_SOCKET_DIR = "/var/run/postgresql"
DATABASE_NAME = "galaxy"


@dataclass(frozen=True)
class GalaxyDatabase:
    kind: str = "postgresql"  # or "sqlite"
    url: str | None = None  # an existing server's URL (secret), None: the Galaxy host's own PostgreSQL
    fresh: bool = False  # allowed to start empty although the database in use holds data
    switching: bool = False  # Galaxy uses another kind of database now (its accounts are not in this one)

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


def database_from(config: Mapping[str, Any], handlers: Any, problems: list[str]) -> GalaxyDatabase:
    """Check galaxy_database* (each problem names its setting and the fix; the URL, a secret, is never repeated)."""
    kind = config["galaxy_database"]
    url = config["galaxy_database_url"]
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
                          fresh=bool(config["galaxy_database_fresh"]))


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
