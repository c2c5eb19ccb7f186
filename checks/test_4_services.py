"""The services around Slurm and Galaxy: nginx in front of Galaxy, Galaxy's PostgreSQL,
Slurm accounting (slurmdbd, its MariaDB, the cluster registered), each checked only
when the settings deploy it (tasks/web.py, tasks/database.py, tasks/accounting.py)."""

from __future__ import annotations

import json
import shlex

import pytest

from checks.cluster import listening_tcp_ports
from checks.test_3_galaxy import _as_galaxy
from tasks.model.database import DATABASE_NAME
from tasks.platform import ACCOUNTING_STORAGE_TYPE, DATABASE_SERVICE
from tasks.web import DEBIAN_DEFAULT_SITE, SITE_ENABLED

HTTP_TIMEOUT = 10  # seconds for one request
# One HTTP(S) request from the host itself, redirects not followed; TLS not verified
# (the certificate names the public host, not the loopback address asked here).
_REQUEST = """
import hashlib, http.client as h, json, ssl, sys, urllib.parse as p
u = p.urlsplit(sys.argv[1])
c = (h.HTTPSConnection(u.hostname, u.port, timeout=float(sys.argv[2]), context=ssl._create_unverified_context())
     if u.scheme == "https" else h.HTTPConnection(u.hostname, u.port, timeout=float(sys.argv[2])))
c.request("GET", u.path or "/")
r = c.getresponse(); body = r.read()
print(json.dumps({"status": r.status, "location": r.getheader("Location"), "server": r.getheader("Server"),
                  "sha256": hashlib.sha256(body).hexdigest(), "text": body[:4096].decode(errors="replace")}))
"""


def _get(checked_host, url: str) -> dict:
    """GET `url` from the host; fails the check with the error when nothing answers."""
    result = checked_host.host.run(f"python3 -c {shlex.quote(_REQUEST)} {shlex.quote(url)} {HTTP_TIMEOUT}")
    if result.rc != 0:
        pytest.fail(f"{url} does not answer: {(result.stderr.strip().splitlines() or ['?'])[-1]}", pytrace=False)
    return json.loads(result.stdout)


def _front_urls(galaxy) -> list[str]:
    """Where nginx serves Galaxy, as the Galaxy host reaches it: plain HTTP on loopback
    (the deploy's own url), and HTTPS too when TLS is configured."""
    return [galaxy.url] + ([f"https://127.0.0.1:{galaxy.front.https_port}"] if galaxy.front.tls else [])


# nginx in front of Galaxy (tasks/web.py)

def test_nginx_runs(galaxy_host, galaxy):
    """nginx installed, running and enabled, `nginx -t` passes, Galaxy's site enabled"""
    host = galaxy_host.host
    assert host.package("nginx").is_installed, "package nginx is not installed"
    nginx = host.service("nginx")
    assert nginx.is_running, "nginx is not running (systemctl status nginx)"
    assert nginx.is_enabled, "nginx.service is not enabled"
    syntax = host.run("nginx -t 2>&1")
    assert syntax.rc == 0, f"nginx -t fails: {' '.join(syntax.stdout.split())[:160]}"
    assert host.file(SITE_ENABLED).exists, f"{SITE_ENABLED} is missing: Galaxy's site is not enabled"
    assert not host.file(DEBIAN_DEFAULT_SITE).exists, f"{DEBIAN_DEFAULT_SITE} is enabled: it holds the HTTP port"


def test_nginx_ports_listening(galaxy_host, galaxy):
    """nginx listens on galaxy_http_port (and galaxy_https_port with TLS)"""
    ports = {galaxy.front.http_port} | ({galaxy.front.https_port} if galaxy.front.tls else set())
    listening = listening_tcp_ports(galaxy_host.host)
    missing = sorted(ports - listening)
    assert not missing, f"nothing listens on TCP port{'s' if len(missing) > 1 else ''} {', '.join(map(str, missing))}"


def test_galaxy_through_nginx(galaxy_host, galaxy):
    """Galaxy's page and /api/version answer through nginx (HTTPS too with TLS)"""
    for base in _front_urls(galaxy):
        page = _get(galaxy_host, f"{base}/")
        assert page["status"] == 200, f"{base}/ answers {page['status']} through nginx, not 200"
        version = _get(galaxy_host, f"{base}/api/version")
        assert version["status"] == 200, f"{base}/api/version answers {version['status']} through nginx, not 200"
        found = json.loads(version["text"])
        if galaxy.install:
            wanted = ".".join(galaxy.version.split(".")[:2])
            assert found.get("version_major") == wanted, f"{base}/api/version says {found}, not version_major {wanted}"


def test_http_redirects_to_https(galaxy_host, galaxy):
    """with TLS, the public HTTP port redirects to HTTPS"""
    if not galaxy.front.tls:
        pytest.skip("galaxy_tls_certificate is not set (plain HTTP)")
    address = galaxy.host.address or galaxy.host.node_name
    url = f"http://{address}:{galaxy.front.http_port}/api/version"
    answer = _get(galaxy_host, url)
    assert answer["status"] == 301 and (answer["location"] or "").startswith("https://"), \
        f"{url} answers {answer['status']} {answer['location'] or ''}, not a redirect to https://"


def test_static_files_from_nginx(galaxy_host, galaxy):
    """the welcome page and a static file come from nginx, byte for byte the files in Galaxy's venv"""
    files = {"/static/welcome.html": f"{galaxy.static_dir}/welcome.sample.html",
             "/static/favicon.ico": f"{galaxy.static_dir}/favicon.ico"}
    wrong = []
    for path, source in files.items():
        on_disk = galaxy_host.host.run(f"sha256sum {shlex.quote(source)}")
        if on_disk.rc != 0:
            wrong.append(f"{source} is missing")
            continue
        for base in _front_urls(galaxy):
            answer = _get(galaxy_host, base + path)
            if answer["status"] != 200:
                wrong.append(f"{base}{path} answers {answer['status']}")
            elif answer["sha256"] != on_disk.stdout.split()[0]:
                wrong.append(f"{base}{path} is not {source}")
    assert not wrong, "; ".join(wrong)


# Galaxy's database (tasks/database.py)

def _local_postgresql(galaxy):
    if galaxy.database.kind != "postgresql":
        pytest.skip(f"galaxy_database is {galaxy.database.kind}")
    if not galaxy.database.local_postgresql:
        pytest.skip("galaxy_database_url is set: an existing server, not deployed here")


def test_postgresql_holds_galaxy_database(galaxy_host, galaxy):
    """PostgreSQL running and enabled, Galaxy's database there, owned by the galaxy user"""
    _local_postgresql(galaxy)
    host = galaxy_host.host
    service = host.service("postgresql")
    assert service.is_running and service.is_enabled, "postgresql is not running and enabled (systemctl status postgresql)"
    query = f"SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '{DATABASE_NAME}'"
    owner = host.run(f"su postgres -s /bin/sh -c {shlex.quote(f'psql -XtAc {shlex.quote(query)}')}")
    assert owner.rc == 0, f"psql as postgres fails: {(owner.stderr.strip().splitlines() or ['?'])[-1]}"
    assert owner.stdout.strip(), f"PostgreSQL has no database {DATABASE_NAME}"
    assert owner.stdout.strip() == galaxy.user, f"database {DATABASE_NAME} is owned by {owner.stdout.strip()}, not {galaxy.user}"


def test_galaxy_uses_its_database(galaxy_host, galaxy):
    """galaxy.yml's database_connection is the local PostgreSQL, and galaxy connects with it"""
    _local_postgresql(galaxy)
    host = galaxy_host.host
    wanted = galaxy.database.connection(galaxy.data_dir)
    lines = [line.split(":", 1)[1].strip() for line in host.file(galaxy.galaxy_yml).content_string.splitlines()
             if line.strip().startswith("database_connection:")]
    found = json.loads(lines[0]) if lines and lines[0].startswith('"') else (lines[0] if lines else None)
    assert found == wanted, f"{galaxy.galaxy_yml} has database_connection {found!r}, not {wanted!r}"
    result = host.run(_as_galaxy(galaxy, f"psql -XtAc 'SELECT current_database()' {shlex.quote(wanted)}"))
    assert result.rc == 0 and result.stdout.strip() == DATABASE_NAME, \
        f"{galaxy.user} cannot connect to {wanted}: {(result.stderr.strip().splitlines() or [result.stdout.strip()])[-1]}"


# Slurm accounting (tasks/accounting.py)

def _accounting(cluster):
    if cluster.accounting is None:
        pytest.skip("slurm_accounting is off")
    return cluster.accounting


def test_slurmdbd_runs(dbd_host, cluster):
    """slurmdbd running, enabled and listening on its DbdPort"""
    accounting = _accounting(cluster)
    assert accounting.dbd_host.inventory_name == dbd_host.name, \
        f"the deploy puts slurmdbd on {accounting.dbd_host.inventory_name}, not here"
    host = dbd_host.host
    slurmdbd = host.service("slurmdbd")
    assert slurmdbd.is_running, "slurmdbd is not running (systemctl status slurmdbd)"
    assert slurmdbd.is_enabled, "slurmdbd.service is not enabled"
    assert accounting.dbd_port in listening_tcp_ports(host), f"slurmdbd does not listen on TCP port {accounting.dbd_port}"


def test_accounting_database_runs(dbd_host, cluster):
    """MariaDB running and enabled, with slurmdbd's database"""
    accounting = _accounting(cluster)
    if not accounting.local_database:
        pytest.skip(f"slurm_accounting_storage_host is {accounting.storage_host}: an existing server")
    host = dbd_host.host
    service = host.service(DATABASE_SERVICE)
    assert service.is_running and service.is_enabled, f"{DATABASE_SERVICE} is not running and enabled"
    found = host.run(f"mysql -N -B -e {shlex.quote('SHOW DATABASES')}")
    assert found.rc == 0, f"mysql fails: {(found.stderr.strip().splitlines() or ['?'])[-1]}"
    assert accounting.storage_loc in found.stdout.split(), f"{DATABASE_SERVICE} has no database {accounting.storage_loc}"


def test_slurm_conf_uses_slurmdbd(controller_host, cluster):
    """slurm.conf stores accounting through slurmdbd"""
    _accounting(cluster)
    path = f"{cluster.host(controller_host.name).platform.config_dir}/slurm.conf"
    lines = [line.strip() for line in controller_host.host.file(path).content_string.splitlines()]
    wanted = f"AccountingStorageType={ACCOUNTING_STORAGE_TYPE}"
    found = [line for line in lines if line.startswith("AccountingStorageType=")]
    assert found == [wanted], f"{path} has {found or 'no AccountingStorageType'}, not {wanted}"


def test_cluster_in_accounting(controller_host, cluster):
    """`sacctmgr list cluster` lists slurm_cluster_name"""
    _accounting(cluster)
    result = controller_host.host.run("sacctmgr -n -P list cluster format=Cluster")
    assert result.rc == 0, f"sacctmgr fails: {(result.stderr.strip().splitlines() or ['?'])[-1]}"
    name = cluster.name.lower()  # Slurm lowercases ClusterName
    assert name in result.stdout.split(), f"sacctmgr lists {result.stdout.split() or 'no cluster'}, not {name}"


def test_backups_scheduled(cluster_host, cluster):
    """pgs-backup.timer enabled and waiting (backup_schedule), and the last backup run, if any, ended well"""
    if cluster.backups is None:
        pytest.skip("backup_schedule is None: no scheduled backups")
    host = cluster_host.host
    assert host.service("pgs-backup.timer").is_enabled, "pgs-backup.timer is not enabled"
    assert host.run("systemctl is-active pgs-backup.timer").stdout.strip() == "active", "pgs-backup.timer is not running"
    result = host.check_output("systemctl show --property=Result --value pgs-backup.service")
    ran = host.check_output("systemctl show --property=ExecMainStartTimestampMonotonic --value pgs-backup.service")
    if ran not in ("", "0"):
        assert result == "success", f"the last backup failed ({result}): journalctl -u pgs-backup"
