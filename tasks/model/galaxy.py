"""Galaxy's part of the model: the Galaxy server, its job destinations and slurm-drmaa."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from tasks.model.database import GalaxyDatabase, GalaxyDatabaseState, database_from
from tasks.model.galaxy_releases import galaxy_release, versions_for_python
from tasks.model.hosts import COMPUTE_GROUP, GALAXY_GROUP, ClusterHost, InventoryHost
from tasks.model.problems import check_positive_int
from tasks.model.settings import GALAXY, SLURM_DRMAA_DEFAULTS, read
from tasks.model.web import GalaxyFront, check_loopback_bind, front_from
from tasks.native_specification import native_specification_problems

SHARED_FS_CHOICES = ("nfs", "existing")
JOB_RUNNERS = ("drmaa", "cli")
# Job states in which a handler still has work to do for a job (Galaxy's model.Job.states).
JOB_STATES_IN_FLIGHT = ("new", "queued", "running", "stopped", "deleting")
HANDLER_NAME = re.compile(r"handler\d+")


@dataclass(frozen=True)
class GalaxyJob:
    """A Galaxy job a handler follows (GalaxyDatabaseNow reads them from Galaxy's database)."""

    id: int  # Galaxy's database id (the API shows it encoded)
    state: str  # one of JOB_STATES_IN_FLIGHT
    plugin: str  # the runner plugin id it was sent to: "slurm" or "local"
    runner: str  # the runner class behind "slurm" when it was sent: "drmaa" or "cli" ("" for other plugins)
    external_id: str | None  # the Slurm job id
    handler: str = ""  # the handler that follows it, or the pool tag while none has taken it


@dataclass(frozen=True)
class Destination:
    """A Galaxy job destination; `runner` is a plugin id: "slurm" or "local"."""

    id: str
    runner: str
    native_specification: str | None = None
    params: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SlurmDrmaa:
    method: str  # "source", "package" or "path"
    version: str
    url: str | None
    sha256: str | None
    tarball: str | None
    prefix: str
    package: str
    path: str | None

    @property
    def library_path(self) -> str:
        if self.method == "path":
            return str(self.path)
        if self.method == "package":
            return "/usr/lib/slurm-drmaa/lib/libdrmaa.so.1"  # where slurm-drmaa1 packages put it
        return f"{self.prefix}/lib/libdrmaa.so.1"


@dataclass(frozen=True)
class Galaxy:
    host: ClusterHost
    user: str
    uid: int
    gid: int
    root: str
    install: bool
    version: str
    bind: str
    handlers: int
    admin_email: str
    job_runner: str  # "drmaa" or "cli"
    job_workers: int
    destinations: tuple[Destination, ...]
    default_destination: str
    config_extra: Mapping[str, Any]
    shared_fs: str
    drmaa: SlurmDrmaa | None  # None with the CLI runner
    verify_email: str = "pgs-verify@example.org"
    rebuild_venv: bool = False  # a venv made by another Python is moved aside and rebuilt
    database: GalaxyDatabase = GalaxyDatabase()
    front: GalaxyFront = GalaxyFront()
    python: str = "3.13"  # the Galaxy host's python3 ("major.minor"): the venv's lib/pythonX.Y

    @property
    def url(self) -> str:
        """Galaxy through nginx on the Galaxy host: readiness, rollback and verification use it."""
        return self.front.url

    @property
    def public_url(self) -> str:
        """Where users open Galaxy (galaxy_server_name, else the Galaxy host's address)."""
        name = self.front.server_name.split()[0] if self.front.server_name != "_" else (self.host.address or self.host.node_name)
        scheme, port, default = ("https", self.front.https_port, 443) if self.front.tls else ("http", self.front.http_port, 80)
        return f"{scheme}://{name}{'' if port == default else f':{port}'}/"

    @property
    def static_dir(self) -> str:
        """Static files of the galaxy-web-apps package: Galaxy's /static (webapps/base/webapp.py build_url_map)."""
        return f"{self.venv}/lib/python{self.python}/site-packages/galaxy/webapps/base/static"

    @property
    def client_dir(self) -> str:
        """The built web client of the galaxy-web-client package: Galaxy's /static/dist."""
        return f"{self.venv}/lib/python{self.python}/site-packages/galaxy/web_client/dist"

    @property
    def venv(self) -> str:
        return f"{self.root}/venv"

    @property
    def config_dir(self) -> str:
        return f"{self.root}/config"

    @property
    def data_dir(self) -> str:
        return f"{self.root}/data"

    @property
    def job_working_directory(self) -> str:
        """galaxy.yml's job_working_directory: on the shared filesystem, written by jobs on every node."""
        return f"{self.data_dir}/jobs"

    @property
    def log_dir(self) -> str:
        return f"{self.root}/log"

    @property
    def galaxy_yml(self) -> str:
        return f"{self.config_dir}/galaxy.yml"

    @property
    def job_conf(self) -> str:
        return f"{self.config_dir}/job_conf.xml"

    @property
    def secrets_file(self) -> str:
        """id_secret and the bootstrap admin API key, kept on the Galaxy host."""
        return f"{self.config_dir}/secrets.json"

    @property
    def port(self) -> int:
        return int(self.bind.rsplit(":", 1)[1])

    @property
    def local_url(self) -> str:
        """Galaxy's address as seen on the Galaxy host itself."""
        address = self.bind.rsplit(":", 1)[0]
        return f"http://{'127.0.0.1' if address in ('0.0.0.0', '*', '') else address}:{self.port}"

    @property
    def handler_names(self) -> list[str]:
        return [f"handler{i}" for i in range(self.handlers)]

    @property
    def drmaa_library_path(self) -> str | None:
        return self.drmaa.library_path if self.drmaa else None

    @property
    def pip_packages(self) -> list[str]:
        """Every galaxy-* package of the release and gravity pinned (tasks/model/galaxy_releases.py): Galaxy's
        packages require one another without versions, so unpinned ones would come from the newest release."""
        release = galaxy_release(self.version) if self.install else None
        galaxy = release.requirements if release else []
        # fissix: Galaxy's metadata step needs lib2to3 or fissix on every node that runs jobs.
        # psycopg2-binary: Galaxy's PostgreSQL driver (a wheel: no compiler, no libpq-dev).
        database = ["psycopg2-binary"] if self.database.kind == "postgresql" else []
        return galaxy + ["fissix", "drmaa", *database]


def galaxy_from(hosts: list[InventoryHost], cluster_hosts: list[ClusterHost], enabled: bool,
                problems: list[str]) -> Galaxy | None:
    """The Galaxy server from the Galaxy host's settings, checked; None when deploy_galaxy is off."""
    if not enabled:
        return None
    galaxy_hosts = [h for h in hosts if GALAXY_GROUP in h.groups]
    if len(galaxy_hosts) != 1:
        listed = ", ".join(h.name for h in galaxy_hosts) or "none"
        problems.append(
            f"group {GALAXY_GROUP}: needs exactly one host when deploy_galaxy is on, has {len(galaxy_hosts)} ({listed}); "
            f"list the Galaxy server in {GALAXY_GROUP} in inventory.py, or set deploy_galaxy = False"
        )
        return None
    (inventory_host,) = galaxy_hosts
    cluster_host = next((h for h in cluster_hosts if h.inventory_name == inventory_host.name), None)
    if cluster_host is None:
        return None
    data = inventory_host.data
    config = read(data, GALAXY)
    runner = config["galaxy_job_runner"]
    if runner not in JOB_RUNNERS:
        problems.append(f"galaxy_job_runner: '{runner}' is unknown; use 'drmaa' (slurm-drmaa) or 'cli' (sbatch through a shell)")
    if config["shared_fs"] not in SHARED_FS_CHOICES:
        problems.append(
            f"shared_fs: '{config['shared_fs']}' is unknown; use 'nfs' (the Galaxy host exports {config['galaxy_root']}) "
            "or 'existing' (it is already shared at the same path on every compute host)"
        )
    for key in ("galaxy_uid", "galaxy_gid", "galaxy_handlers", "galaxy_job_workers"):
        check_positive_int(config[key], key, problems)
    bind = str(config["galaxy_bind"])
    if not re.fullmatch(r"[^\s:]+:\d{1,5}", bind):
        problems.append(f"galaxy_bind: '{bind}' is not host:port; e.g. 127.0.0.1:8080")
    else:
        check_loopback_bind(bind, problems)
    database = database_from(config, config["galaxy_handlers"], problems)
    front = front_from(config, problems)
    if not str(config["galaxy_root"]).startswith("/"):
        problems.append(f"galaxy_root: '{config['galaxy_root']}' is not an absolute path")
    _check_galaxy_account(hosts, config, problems)
    _check_job_python(hosts, inventory_host, problems)
    if config["galaxy_install"]:
        _check_galaxy_version(str(config["galaxy_version"]), inventory_host.facts.python if inventory_host.facts else "",
                              inventory_host.name, problems)

    destinations = _destinations(config["galaxy_destinations"], runner, problems)
    drmaa = _slurm_drmaa(config["slurm_drmaa"], problems) if runner == "drmaa" else None
    galaxy = Galaxy(
        host=cluster_host,
        user=str(config["galaxy_user"]),
        uid=config["galaxy_uid"],
        gid=config["galaxy_gid"],
        root=str(config["galaxy_root"]).rstrip("/"),
        install=bool(config["galaxy_install"]),
        version=str(config["galaxy_version"]),
        bind=bind,
        handlers=config["galaxy_handlers"],
        admin_email=str(config["galaxy_admin_email"]),
        job_runner=runner if runner in JOB_RUNNERS else "cli",
        job_workers=config["galaxy_job_workers"],
        destinations=destinations,
        default_destination=str(config["galaxy_default_destination"]),
        config_extra=dict(config["galaxy_config_extra"]),
        shared_fs=config["shared_fs"],
        drmaa=drmaa,
        verify_email=_verify_email(config, problems),
        rebuild_venv=bool(config["galaxy_rebuild_venv"]),
        database=database,
        front=front,
        python=(inventory_host.facts.python if inventory_host.facts else "") or "3.13",
    )
    return galaxy


def runner_switch_problems(job_runner: str, jobs: list[GalaxyJob] | tuple[GalaxyJob, ...]) -> list[str]:
    """Refuse a galaxy_job_runner that differs from the one Galaxy jobs in flight were sent with.

    Both runners are the plugin id "slurm": after the switch the handlers would
    recover those jobs with the new runner class, which cannot follow them (the
    CLI runner raises "No job plugin parameter found" every monitor cycle, the
    DRMAA runner does not know a CLI job's id); neither they nor new jobs are
    ever finished (measured on the lab). Source: Galaxy's jobs/handler.py
    `_check_job_at_startup` hands a job with a runner name and an external id to
    that plugin's `recover` with the job's stored destination params; one without
    an external id goes back to the queue as new (safe to switch).
    """
    stranded = sorted((j for j in jobs if j.plugin == "slurm" and j.runner and j.external_id and j.runner != job_runner),
                      key=lambda j: j.id)
    if not stranded:
        return []
    old = stranded[0].runner
    listed = ", ".join(f"{j.id} ({j.state}, Slurm job {j.external_id})" for j in stranded)
    return [
        f"galaxy_job_runner: '{job_runner}' would strand {len(stranded)} Galaxy job{'s' if len(stranded) > 1 else ''} "
        f"in flight under the '{old}' runner (Galaxy job ids {listed}): the handlers restarted with the other runner "
        f"class under the same plugin id 'slurm' cannot follow them. Let them finish first: keep "
        f"galaxy_job_runner = '{old}' until `squeue -u galaxy` is empty (to stop new jobs meanwhile, lock Galaxy's job "
        "queue: Admin > Jobs > lock, or bioblend jobs.update_job_lock(active=True)), then re-run with the switch"
    ]


def handler_removal_problems(handler_names: list[str], jobs: list[GalaxyJob] | tuple[GalaxyJob, ...]) -> list[str]:
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




def with_database_now(galaxy: Galaxy, now: GalaxyDatabaseState) -> Galaxy:
    """The Galaxy model, knowing whether this run moves it to another kind of database."""
    switching = bool(now.kind) and now.kind != galaxy.database.kind
    return replace(galaxy, database=replace(galaxy.database, switching=switching))


def _verify_email(config: Mapping[str, Any], problems: list[str]) -> str:
    """galaxy_verify_email, or pgs-verify@ the admin's domain; it must not be the admin's own."""
    admin = str(config["galaxy_admin_email"])
    email = str(config["galaxy_verify_email"] or f"pgs-verify@{admin.rpartition('@')[2]}")
    if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", email):
        problems.append(f"galaxy_verify_email: '{email}' is not an email address Galaxy accepts (name@domain.tld)")
    elif email.lower() == admin.lower():
        problems.append("galaxy_verify_email: is the admin's own address; the verification needs a user of its own "
                        "(leave it unset for pgs-verify@ the admin's domain)")
    return email


def _destinations(raw: Any, job_runner: str, problems: list[str]) -> tuple[Destination, ...]:
    if not isinstance(raw, list) or not raw:
        problems.append("galaxy_destinations: must be a non-empty list like [{'id': 'slurm', 'runner': 'slurm'}]")
        return ()
    destinations = []
    for index, entry in enumerate(raw):
        where = f"galaxy_destinations[{index}]"
        if not isinstance(entry, Mapping) or not entry.get("id") or not entry.get("runner"):
            problems.append(f"{where}: must be a mapping with an 'id' and a 'runner' ('slurm' or 'local')")
            continue
        spec = entry.get("native_specification")
        rules = "slurm-drmaa's README, 'Native specification'" if job_runner == "drmaa" else "`man sbatch`"
        for problem in native_specification_problems(str(spec), job_runner) if spec else []:
            problems.append(f"{where} ({entry['id']}).native_specification '{spec}': {problem}; see {rules}")
        destinations.append(Destination(
            id=str(entry["id"]),
            runner=str(entry["runner"]),
            native_specification=str(spec) if spec else None,
            params={str(k): str(v) for k, v in entry.get("params", {}).items()},
        ))
    return tuple(destinations)


def _slurm_drmaa(raw: Any, problems: list[str]) -> SlurmDrmaa | None:
    settings = {**SLURM_DRMAA_DEFAULTS, **(raw or {})}
    unknown = sorted(set(settings) - set(SLURM_DRMAA_DEFAULTS))
    if unknown:
        problems.append(f"slurm_drmaa: unknown setting {', '.join(unknown)}; use {', '.join(SLURM_DRMAA_DEFAULTS)}")
    method = settings["method"]
    sha256 = settings["sha256"]
    tarball = settings["tarball"]
    if method == "source":
        if sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", str(sha256)):
            problems.append(f"slurm_drmaa.sha256: '{sha256}' is not a sha256 (64 lowercase hex digits)")
        elif tarball:
            if not os.path.isfile(tarball):
                problems.append(f"slurm_drmaa.tarball: {tarball} does not exist on this machine")
            elif sha256 and sha256_of(tarball) != sha256:
                problems.append(
                    f"slurm_drmaa.tarball: {tarball} has sha256 {sha256_of(tarball)}, not the {sha256} given in "
                    "slurm_drmaa.sha256; get the genuine release tarball or correct the checksum"
                )
        elif not sha256:
            problems.append(
                "slurm_drmaa.sha256: a download needs the sha256 of the release tarball "
                f"(slurm-drmaa-{settings['version']}.tar.gz: `sha256sum` it); or give slurm_drmaa.tarball, "
                "or use method 'package' or 'path'"
            )
    elif method == "path":
        if not str(settings["path"] or "").startswith("/"):
            problems.append("slurm_drmaa.path: method 'path' needs the absolute path of an existing libdrmaa.so.1")
    elif method != "package":
        problems.append(f"slurm_drmaa.method: '{method}' is unknown; use 'source', 'package' or 'path'")
    return SlurmDrmaa(
        method=method,
        version=str(settings["version"]),
        url=str(settings["url"]).format(version=settings["version"]) if settings["url"] else None,
        sha256=sha256,
        tarball=tarball,
        prefix=str(settings["prefix"]),
        package=str(settings["package"]),
        path=settings["path"],
    )


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_galaxy_account(hosts: list[InventoryHost], config: Mapping[str, Any], problems: list[str]) -> None:
    """The galaxy user and group get the same ids everywhere: refuse ids taken by others."""
    checks = (("user", config["galaxy_user"], config["galaxy_uid"], "galaxy_uid", "users"),
              ("group", config["galaxy_user"], config["galaxy_gid"], "galaxy_gid", "groups"))
    for kind, name, wanted, setting, table in checks:
        for host in (h for h in hosts if h.facts is not None):
            ids: Mapping[str, int] = getattr(host.facts, table)
            if name in ids and ids[name] != wanted:
                problems.append(
                    f"host {host.name}: {kind} {name} exists with id {ids[name]}, not {setting} {wanted}; "
                    f"set {setting} = {ids[name]} if that id is free on every host, or change the {kind} there"
                )
            holders = [n for n, i in ids.items() if i == wanted and n != name]
            if holders:
                problems.append(
                    f"host {host.name}: {setting} {wanted} already belongs to {kind} {holders[0]}; "
                    f"choose a {setting} that is free on every cluster host"
                )


def _check_galaxy_version(version: str, python: str, host_name: str, problems: list[str]) -> None:
    """Only a release with a pinned set (tasks/model/galaxy_releases.json) whose packages install on the
    Galaxy host's python3: any other would mix releases in the venv, or fail to install, after hosts changed."""
    release = galaxy_release(version)
    fitting = versions_for_python(python)
    where = f"python3 {python} on {host_name}" if python else host_name
    choice = f"for {where} use one of {', '.join(fitting)}" if fitting else f"no pinned release installs on {where}"
    add = f"to add a release: `python -m tasks.galaxy_releases_pypi add {version}`, then a fresh lab deploy of it"
    if release is None:
        problems.append(
            f"galaxy_version: '{version}' is not a Galaxy release this deploy has pinned (tasks/model/galaxy_releases.json: "
            f"every galaxy-* package of a release at that release, each release tested by a fresh deploy); {choice} ({add})"
        )
    elif python and not release.supports(python):
        problems.append(
            f"galaxy_version: Galaxy {version} needs Python {release.requires_python}, and python3 on {host_name} is "
            f"{python}; {choice}{', or' if fitting else ':'} put Galaxy on a Debian release whose python3 "
            f"Galaxy {version} supports"
        )


def _check_job_python(hosts: list[InventoryHost], galaxy_host: InventoryHost, problems: list[str]) -> None:
    """Jobs run Galaxy's venv on the compute nodes: its Python must be there too."""
    wanted = galaxy_host.facts.python if galaxy_host.facts else None
    for host in hosts:
        if COMPUTE_GROUP in host.groups and host.facts and host.facts.python and wanted and host.facts.python != wanted:
            problems.append(
                f"host {host.name}: python3 is {host.facts.python} but Galaxy's venv on {galaxy_host.name} uses "
                f"{wanted}, and jobs run that venv on compute hosts; use the same Debian release on both"
            )
