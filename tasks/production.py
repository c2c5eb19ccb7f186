"""Production Galaxy: its database, its job handlers and nginx in front (the model's part).

Pure, like tasks.model (no pyinfra): the settings below, their checks, and the
rules that protect a running Galaxy when they change (a handler removed while
it holds jobs; a switch of database that would leave data behind).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

# Settings of the Galaxy host, their defaults and meaning (README's settings table).
PRODUCTION_DEFAULTS: dict[str, Any] = {
    # "postgresql": Debian's PostgreSQL on the Galaxy host (or galaxy_database_url's server);
    # "sqlite": one file, for a one-host trial with one handler.
    "galaxy_database": "postgresql",
    # An existing PostgreSQL server: postgresql://user:password@host:port/db (a secret: never printed).
    "galaxy_database_url": None,
    # True: start on an empty database although the one in use now holds data (it is left, not moved).
    "galaxy_database_fresh": False,
    "galaxy_http_port": 80,  # nginx's port for Galaxy (with TLS: redirects to galaxy_https_port)
    "galaxy_https_port": 443,  # with galaxy_tls_certificate and galaxy_tls_key
    "galaxy_tls_certificate": None,  # path on the Galaxy host (PEM, chain included)
    "galaxy_tls_key": None,  # path on the Galaxy host; made 0600 root
    "galaxy_server_name": "_",  # nginx server_name ("_": any name the host is reached by)
    "galaxy_upload_max_size": "10g",  # nginx client_max_body_size for uploads
}
DATABASES = ("postgresql", "sqlite")
# Where Debian's PostgreSQL listens locally; peer authentication maps the galaxy
# OS user to the role of the same name (pg_hba.conf: "local all all peer").
POSTGRESQL_SOCKET_DIR = "/var/run/postgresql"
DATABASE_NAME = "galaxy"
# Job states in which a handler still has work to do for a job (Galaxy's model.Job.states).
JOB_STATES_IN_FLIGHT = ("new", "queued", "running", "stopped", "deleting")
HANDLER_NAME = re.compile(r"handler\d+")


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
class GalaxyFront:
    """nginx in front of Galaxy's gunicorn (which listens on loopback only)."""

    http_port: int = 80
    https_port: int = 443
    tls_certificate: str | None = None
    tls_key: str | None = None
    server_name: str = "_"
    upload_max_size: str = "10g"

    @property
    def tls(self) -> bool:
        return bool(self.tls_certificate)

    @property
    def url(self) -> str:
        """Galaxy through nginx, as seen on the Galaxy host (the deploy's checks use it)."""
        if self.tls:
            return f"https://127.0.0.1:{self.https_port}"
        return f"http://127.0.0.1:{self.http_port}"


@dataclass(frozen=True)
class GalaxyDatabaseState:
    """What Galaxy's database in use holds now (fact GalaxyDatabaseNow): kind "" when
    Galaxy has no galaxy.yml yet."""

    kind: str = ""  # "sqlite" or "postgresql" (from galaxy.yml's database_connection)
    users: int = 0
    jobs: int = 0


def production_settings(config: Mapping[str, Any], handlers: Any, problems: list[str]) -> tuple[GalaxyDatabase, GalaxyFront]:
    """Check the settings above (each problem names its setting and the fix) and build them."""
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
    ports = {}
    for key in ("galaxy_http_port", "galaxy_https_port"):
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
            problems.append(f"{key}: '{value}' is not a TCP port (1-65535)")
        ports[key] = value
    if ports["galaxy_http_port"] == ports["galaxy_https_port"]:
        problems.append("galaxy_https_port: is galaxy_http_port's port too; give each its own")
    certificate, key = config["galaxy_tls_certificate"], config["galaxy_tls_key"]
    if bool(certificate) != bool(key):
        problems.append("galaxy_tls_certificate, galaxy_tls_key: TLS needs both (paths on the Galaxy host), or neither")
    for name, path in (("galaxy_tls_certificate", certificate), ("galaxy_tls_key", key)):
        if path and not str(path).startswith("/"):
            problems.append(f"{name}: '{path}' is not an absolute path on the Galaxy host")
    server_name = str(config["galaxy_server_name"])
    if not re.fullmatch(r"[A-Za-z0-9_.*~^$-]+( [A-Za-z0-9_.*~^$-]+)*", server_name):
        problems.append(f"galaxy_server_name: '{server_name}' is not an nginx server_name (names separated by spaces, or _)")
    size = str(config["galaxy_upload_max_size"])
    if not re.fullmatch(r"\d+[kKmMgG]?", size):
        problems.append(f"galaxy_upload_max_size: '{size}' is not an nginx size; e.g. 10g, 500m or 0 (no limit)")
    database = GalaxyDatabase(kind=kind if kind in DATABASES else "postgresql", url=url or None,
                              fresh=bool(config["galaxy_database_fresh"]))
    front = GalaxyFront(
        http_port=ports["galaxy_http_port"], https_port=ports["galaxy_https_port"],
        tls_certificate=certificate or None, tls_key=key or None, server_name=server_name, upload_max_size=size,
    )
    return database, front


def check_loopback_bind(bind: str, problems: list[str]) -> None:
    """gunicorn listens where only nginx (on the same host) reaches it."""
    address = bind.rsplit(":", 1)[0].strip("[]")
    if not (address.startswith("127.") or address in ("localhost", "::1")):
        problems.append(f"galaxy_bind: '{bind}' would let other hosts reach gunicorn past nginx; "
                        "bind to loopback, e.g. 127.0.0.1:8080 (nginx serves Galaxy on galaxy_http_port)")


def handler_removal_problems(handler_names: list[str], jobs) -> list[str]:
    """Refuse to remove a job handler that still holds jobs.

    Galaxy does not hand a job to another handler by itself (read in Galaxy 26.1.2):
    a new job's `handler` is the pool tag (galaxy/web_stack/handlers.py
    `_assign_db_tag`: "job-handlers" here); a handler takes it with
    `UPDATE job SET handler = <its server name>` over a `SELECT ... FOR UPDATE
    SKIP LOCKED` of jobs tagged for it (galaxy/jobs/handler.py `setup_query`,
    `grab_unhandled_items`), and from then on follows only jobs whose `handler`
    is its own name (`model.Job.handler == self.app.config.server_name`), at
    start-up too (`__check_jobs_at_startup`). A removed handler's jobs would
    stay queued or running forever.

    Refused rather than reassigned: an UPDATE of `job.handler` is safe only while
    the old handler is stopped and before the new one starts (else two handlers
    follow one job, or none recovers it), which supervisor's `update` does not
    order; the jobs finish on their own handler within their run time.
    `jobs`: GalaxyJob objects (tasks.model) in flight, with their `handler`.
    """
    kept = set(handler_names)
    held: dict[str, list[int]] = {}
    for job in jobs:
        if job.handler and HANDLER_NAME.fullmatch(job.handler) and job.handler not in kept:
            held.setdefault(job.handler, []).append(job.id)
    if not held:
        return []
    listed = "; ".join(f"{name} holds Galaxy job{'s' if len(ids) > 1 else ''} {', '.join(map(str, sorted(ids)))}"
                       for name, ids in sorted(held.items()))
    return [
        f"galaxy_handlers: {len(handler_names)} would remove job handler{'s' if len(held) > 1 else ''} "
        f"{', '.join(sorted(held))}, which still hold{'s' if len(held) == 1 else ''} jobs ({listed}); Galaxy does not "
        f"hand them to another handler. Keep galaxy_handlers until they finish (to stop new jobs meanwhile, lock "
        f"Galaxy's job queue: Admin > Jobs > lock), then re-run with fewer handlers"
    ]


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
        f"{' (with galaxy_handlers = 1)' if now.kind == 'sqlite' else ''}; or migrate first (Galaxy has "
        f"no supported SQLite -> PostgreSQL migration: copy the tables with pgloader into the new database before the "
        f"switch, or export the histories users need and import them after); or set galaxy_database_fresh = True to "
        f"start empty (the old database is left in place, not deleted)"
    ]


def with_database_now(galaxy, now: GalaxyDatabaseState):
    """The Galaxy model, knowing whether this run moves it to another kind of database."""
    switching = bool(now.kind) and now.kind != galaxy.database.kind
    return replace(galaxy, database=replace(galaxy.database, switching=switching))
