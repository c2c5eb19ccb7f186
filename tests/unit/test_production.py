"""Production Galaxy: database, handlers, nginx in front (tasks/model/database.py, web.py, galaxy.py and the templates)."""

from __future__ import annotations

import pytest
import yaml

from tasks.common import render
from tasks.facts import parse_galaxy_database, parse_galaxy_jobs
from tasks.model import ClusterConfigError, GalaxyJob, build_cluster
from tasks.model.database import GalaxyDatabaseState
from tests.unit.conftest import small_cluster

SECRETS = {"id_secret": "s" * 32, "admin_api_key": "k" * 64}


def galaxy_of(**data):
    return build_cluster(small_cluster(galaxy=data), {}).galaxy


def problems_of(jobs=(), now=GalaxyDatabaseState(), **data) -> list[str]:
    with pytest.raises(ClusterConfigError) as caught:
        build_cluster(small_cluster(galaxy=data), {}, galaxy_jobs=list(jobs), galaxy_database_now=now)
    return caught.value.problems


def test_defaults_are_production():
    galaxy = galaxy_of()
    assert galaxy.handler_names == ["handler0", "handler1"]
    assert galaxy.database.kind == "postgresql" and galaxy.database.local_postgresql
    assert galaxy.database.connection(galaxy.data_dir) == "postgresql:///galaxy?host=/var/run/postgresql"
    assert galaxy.url == "http://127.0.0.1:80" and galaxy.bind == "127.0.0.1:8080"
    assert galaxy.public_url == "http://10.0.0.10/"
    assert galaxy_of(galaxy_server_name="galaxy.example.org", galaxy_tls_certificate="/c", galaxy_tls_key="/k",
                     galaxy_https_port=8443).public_url == "https://galaxy.example.org:8443/"
    assert "psycopg2-binary" in galaxy.pip_packages


def test_sqlite_only_with_one_handler():
    (problem,) = problems_of(galaxy_database="sqlite")
    assert problem.startswith("galaxy_handlers: 2 handlers need PostgreSQL") and "galaxy_handlers = 1" in problem
    galaxy = galaxy_of(galaxy_database="sqlite", galaxy_handlers=1)
    assert galaxy.database.connection(galaxy.data_dir).startswith("sqlite:////srv/galaxy/data/universe.sqlite")
    assert "psycopg2-binary" not in galaxy.pip_packages


@pytest.mark.parametrize(
    "data, expected",
    [
        ({"galaxy_database": "mysql"}, "galaxy_database: 'mysql' is unknown"),
        ({"galaxy_database_url": "mysql://u:pw@db/galaxy"}, "galaxy_database_url: is not a PostgreSQL URL"),
        ({"galaxy_database": "sqlite", "galaxy_handlers": 1, "galaxy_database_url": "postgresql://u:pw@db/g"},
         "galaxy_database_url: is set, but galaxy_database is not 'postgresql'"),
        ({"galaxy_http_port": 0}, "galaxy_http_port: '0' is not a TCP port"),
        ({"galaxy_https_port": 80}, "galaxy_https_port: is galaxy_http_port's port too"),
        ({"galaxy_tls_certificate": "/etc/ssl/galaxy.pem"}, "TLS needs both"),
        ({"galaxy_tls_certificate": "galaxy.pem", "galaxy_tls_key": "/k"}, "galaxy_tls_certificate: 'galaxy.pem' is not an absolute"),
        ({"galaxy_server_name": "a;b"}, "galaxy_server_name: 'a;b' is not an nginx server_name"),
        ({"galaxy_upload_max_size": "lots"}, "galaxy_upload_max_size: 'lots' is not an nginx size"),
        ({"galaxy_bind": "0.0.0.0:8080"}, "galaxy_bind: '0.0.0.0:8080' would let other hosts reach gunicorn past nginx"),
    ],
)
def test_bad_production_settings(data, expected):
    assert any(expected in p for p in problems_of(**data)), problems_of(**data)


def test_database_url_never_repeated():
    url = "mysql://galaxy:hunter2@db.example.org/galaxy"
    assert not any("hunter2" in p for p in problems_of(galaxy_database_url=url))


def test_existing_server_by_url():
    url = "postgresql://galaxy:hunter2@db.example.org:5432/galaxy"
    galaxy = galaxy_of(galaxy_database_url=url)
    assert not galaxy.database.local_postgresql
    config = yaml.safe_load(render("galaxy.yml.j2", galaxy=galaxy, secrets=SECRETS, bootstrap=False))["galaxy"]
    assert config["database_connection"] == url


def test_handler_removal_refused_naming_jobs():
    jobs = [GalaxyJob(7, "running", "slurm", "cli", "101", "handler2"), GalaxyJob(9, "queued", "slurm", "cli", "102", "handler2"),
            GalaxyJob(8, "running", "slurm", "cli", "103", "handler1"), GalaxyJob(10, "new", "", "", None, "job-handlers")]
    (problem,) = problems_of(jobs)
    assert problem.startswith("galaxy_handlers: 2 would remove job handler handler2")
    assert "handler2 holds Galaxy jobs 7, 9" in problem and "handler1" not in problem.split("(")[1]
    assert build_cluster(small_cluster(galaxy={"galaxy_handlers": 3}), {}, galaxy_jobs=jobs).galaxy.handlers == 3


def test_database_switch_with_data_refused():
    now = GalaxyDatabaseState("sqlite", users=2, jobs=5)
    (problem,) = problems_of(now=now)
    assert "its sqlite database holds 2 users and 5 jobs" in problem
    assert "galaxy_database_fresh = True" in problem and "pgloader" in problem
    # Told to start fresh; the same database; or nothing in the old one: no refusal.
    assert build_cluster(small_cluster(galaxy={"galaxy_database_fresh": True}), {}, galaxy_database_now=now).galaxy
    assert build_cluster(small_cluster(galaxy={"galaxy_database": "sqlite", "galaxy_handlers": 1}), {},
                         galaxy_database_now=now).galaxy
    assert build_cluster(small_cluster(), {}, galaxy_database_now=GalaxyDatabaseState("sqlite")).galaxy


def test_database_fact_lines():
    lines = ["database\tpostgresql\t3\t12", "12\trunning\tslurm\t345\t1\thandler1", "13\tnew\t-\t-\t0\tjob-handlers"]
    assert parse_galaxy_database(lines) == GalaxyDatabaseState("postgresql", 3, 12)
    assert parse_galaxy_jobs(lines) == [GalaxyJob(12, "running", "slurm", "cli", "345", "handler1"),
                                        GalaxyJob(13, "new", "", "", None, "job-handlers")]
    assert parse_galaxy_database([]) == GalaxyDatabaseState()


def test_nginx_site_plain_http():
    site = render("nginx-galaxy.conf.j2", galaxy=galaxy_of())
    assert "server 127.0.0.1:8080;" in site and "listen 80 default_server;" in site
    assert "client_max_body_size 10g;" in site and "ssl_certificate" not in site
    assert "alias /srv/galaxy/venv/lib/python3.11/site-packages/galaxy/webapps/base/static;" in site
    assert "alias /srv/galaxy/venv/lib/python3.11/site-packages/galaxy/web_client/dist;" in site
    assert site.count("{") == site.count("}")


def test_nginx_site_tls():
    site = render("nginx-galaxy.conf.j2", galaxy=galaxy_of(
        galaxy_tls_certificate="/etc/ssl/galaxy.pem", galaxy_tls_key="/etc/ssl/private/galaxy.key", galaxy_https_port=8443))
    loopback, http, https = site.split("server {")[1:]
    assert "listen 127.0.0.1:80;" in loopback and "proxy_pass http://galaxy;" in loopback
    assert "return 301 https://$host:8443$request_uri;" in http and "proxy_pass" not in http
    assert "listen 8443 ssl default_server;" in https and "ssl_certificate_key /etc/ssl/private/galaxy.key;" in https
    assert "proxy_pass http://galaxy;" in https
    assert galaxy_of(galaxy_tls_certificate="/c", galaxy_tls_key="/k").url == "http://127.0.0.1:80"


def test_postgresql_by_release():
    from tasks.platform import platform_for

    assert (platform_for("bookworm", None).postgresql, platform_for("trixie", None).postgresql) == ("15", "17")


def test_postgresql_admits_every_connection_galaxys_processes_can_open():
    """Each Galaxy process (gunicorn's master and worker, each handler) has a pool of pool_size +
    max_overflow connections; max_connections keeps PostgreSQL's 100 until they need more."""
    from tasks.database import render_postgresql_settings

    default = galaxy_of().database.connections
    assert (default.processes, default.galaxy, default.needed, default.postgresql_max_connections) == (4, 60, 73, 100)
    assert default.summary(True) == ("Galaxy's database connections: at most 60 (4 processes x (pool 5 + overflow 10)) "
                                     "of PostgreSQL's max_connections 100 (10 kept for backups and admins, 3 for superusers)")
    many = galaxy_of(galaxy_handlers=8).database.connections
    assert (many.galaxy, many.postgresql_max_connections) == (150, 163)
    assert galaxy_of(galaxy_handlers=8, galaxy_database_max_overflow=0).database.connections.postgresql_max_connections == 100
    assert galaxy_of(postgresql_max_connections=200).database.connections.postgresql_max_connections == 200
    assert render_postgresql_settings(163).endswith("\nmax_connections = 163\n")
    config = yaml.safe_load(render("galaxy.yml.j2", galaxy=galaxy_of(galaxy_database_pool_size=8), secrets=SECRETS,
                                   bootstrap=False))["galaxy"]
    assert (config["database_engine_option_pool_size"], config["database_engine_option_max_overflow"]) == (8, 10)
    assert config["database_engine_option_pool_pre_ping"] is True
    sqlite = galaxy_of(galaxy_database="sqlite", galaxy_handlers=1)
    assert "pool" not in render("galaxy.yml.j2", galaxy=sqlite, secrets=SECRETS, bootstrap=False)


def test_connection_settings_galaxy_could_exceed_are_refused_with_the_numbers():
    (problem,) = problems_of(postgresql_max_connections=60)
    assert problem == (
        "postgresql_max_connections: 60 is fewer than Galaxy's processes can open: 4 processes (gunicorn's master and "
        "worker, 2 job handlers) x (pool 5 + overflow 10) = 60, plus 10 for backups and admins and PostgreSQL's 3 "
        "reserved = 73; set it to at least 73 (or leave it unset: computed), or lower galaxy_database_pool_size, "
        "galaxy_database_max_overflow or galaxy_handlers")
    (problem,) = problems_of(postgresql_max_connections=100, galaxy_database_url="postgresql://g:pw@db/galaxy")
    assert problem.startswith("postgresql_max_connections: applies to the Galaxy host's own PostgreSQL") and "pw" not in problem
    assert problems_of(galaxy_database_pool_size=0) == ["galaxy_database_pool_size: 0 is not a positive whole number"]
    assert problems_of(galaxy_database_max_overflow=-1) == [
        "galaxy_database_max_overflow: -1 is not a whole number of 0 or more"]
    (problem,) = problems_of(galaxy_config_extra={"database_engine_option_pool_size": 20})
    assert problem == ("galaxy_config_extra: 'database_engine_option_pool_size' is the deploy's to write; "
                       "use galaxy_database_pool_size instead")
