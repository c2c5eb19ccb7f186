"""Production Galaxy on the lab: PostgreSQL in use, both job handlers take jobs, nginx
in front (from another lab host), TLS with a certificate the test makes, and a switch
of database that would leave data behind refused. The lab is left as the default
deploy made it (PostgreSQL, plain HTTP), and a re-run then changes nothing.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import time

import pytest

from tests.lab.conftest import COMPUTE_NAMES, HOST_NAMES, NOTES, ON_DEBIAN_12_ONLY, TIMINGS
from tests.lab.galaxy_jobs import PSQL_AS_GALAXY, VENV_PYTHON, GalaxyJobs

GALAXY = HOST_NAMES[0]
OTHER = COMPUTE_NAMES[0]
# Galaxy's own behaviour, nginx and TLS do not depend on the release (PostgreSQL's major version is
# checked on both by `make check`, test_02): on the sudo-user lab, whose file modes go through sudo.
pytestmark = [pytest.mark.lab, ON_DEBIAN_12_ONLY]
PSQL = PSQL_AS_GALAXY
UPLOAD_WAIT = 300
MAX_UPLOADS = 12

# Uploads as the verification user, one every 2 s until both handlers have taken
# one (a handler grabs every unassigned job it sees at once); then waits until each
# dataset is final. Prints {"jobs": [encoded ids], "states": [...], "seconds": [...]}.
UPLOADS = """
import json, sys, time
from bioblend.galaxy import GalaxyInstance
key = json.load(open("/etc/pyinfra-galaxy-slurm/galaxy-verify-user.json"))["api_key"]
gi = GalaxyInstance("http://127.0.0.1", key=key)
history = gi.histories.create_history("pgs lab test: handlers")["id"]
psql_handlers = sys.argv[1]
jobs, datasets, started = [], [], {}
import subprocess
def handlers():
    out = subprocess.run(["sh", "-c", psql_handlers], capture_output=True, text=True).stdout
    return set(out.split())
for n in range(int(sys.argv[2])):
    run = gi.tools.paste_content(f"upload {n}\\n", history, file_name=f"u{n}.txt")
    jobs.append(run["jobs"][0]["id"]); datasets.append(run["outputs"][0]["id"]); started[datasets[-1]] = time.monotonic()
    time.sleep(2)
    if n >= 3 and len(handlers()) >= 2:
        break
deadline, seconds, states = time.monotonic() + int(sys.argv[3]), {}, {}
while time.monotonic() < deadline and len(seconds) < len(datasets):
    for d in datasets:
        if d not in seconds:
            states[d] = gi.datasets.show_dataset(d)["state"]
            if states[d] in ("ok", "error", "failed_metadata", "discarded", "paused"):
                seconds[d] = round(time.monotonic() - started[d], 1)
    time.sleep(1)
gi.histories.delete_history(history, purge=True)
print(json.dumps({"jobs": jobs, "states": [states.get(d) for d in datasets], "seconds": [seconds.get(d) for d in datasets]}))
"""

# From another lab host: status, a few headers and the body of a URL (TLS checked with CAFILE when given).
FETCH = """
import json, ssl, sys, urllib.error, urllib.request
class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args): return None
context = ssl.create_default_context(cafile=sys.argv[2]) if sys.argv[2] != "-" else None
opener = urllib.request.build_opener(NoRedirect, urllib.request.HTTPSHandler(context=context))
try:
    response = opener.open(sys.argv[1], timeout=20)
except urllib.error.HTTPError as error:
    response = error
body = response.read()
print(json.dumps({"status": response.status, "server": response.headers.get("Server"),
                  "cache": response.headers.get("Cache-Control"), "location": response.headers.get("Location"),
                  "body": body[:4000].decode(errors="replace"), "length": len(body)}))
"""


# Status of GET /api/users (admin only) with the bootstrap key (secrets.json) and with the admin's own key.
KEY_STATUS = """
import json, urllib.error, urllib.request
def status(key):
    request = urllib.request.Request("http://127.0.0.1/api/users", headers={"x-api-key": key})
    try:
        return urllib.request.urlopen(request, timeout=20).status
    except urllib.error.HTTPError as error:
        return error.code
bootstrap = json.load(open("/srv/galaxy/config/secrets.json"))["admin_api_key"]
own = json.load(open("/etc/pyinfra-galaxy-slurm/galaxy-admin.json"))["api_key"]
print(json.dumps({"bootstrap": status(bootstrap), "own": status(own)}))
"""

# Uploads as the verification user across a PostgreSQL restart (argv: the restart command, the
# peak-connections query): submitted, PostgreSQL restarted while they are queued or running, then
# waited for (an API call that meets the restart is retried). Prints {"states", "peak", "first_request"
# (the HTTP status of the first API request after the restart), "seconds"}.
ACROSS_RESTART = """
import json, subprocess, sys, time, urllib.error, urllib.request
from bioblend.galaxy import GalaxyInstance
key = json.load(open("/etc/pyinfra-galaxy-slurm/galaxy-verify-user.json"))["api_key"]
gi = GalaxyInstance("http://127.0.0.1", key=key)
def connections():
    out = subprocess.run(["sh", "-c", sys.argv[2]], capture_output=True, text=True).stdout.strip()
    return int(out) if out.isdigit() else 0
history = gi.histories.create_history("pgs lab test: PostgreSQL restart")["id"]
datasets = [gi.tools.paste_content(f"across a restart {n}\\n", history, file_name=f"r{n}.txt")["outputs"][0]["id"]
            for n in range(3)]
peak = connections()
started = time.monotonic()
subprocess.run(["sh", "-c", sys.argv[1]], check=True)
# The first API request after the restart: a pooled connection it meets is dead (500 unless tested first).
request = urllib.request.Request("http://127.0.0.1/api/histories", headers={"x-api-key": key})
try:
    first_request = urllib.request.urlopen(request, timeout=60).status
except urllib.error.HTTPError as error:
    first_request = error.code
states, deadline = {}, time.monotonic() + 300
while time.monotonic() < deadline and not all(states.get(d) in ("ok", "error", "failed_metadata", "paused") for d in datasets):
    for d in datasets:
        try:
            states[d] = gi.datasets.show_dataset(d)["state"]
        except Exception as error:  # the API's own database connection met the restart
            states[d] = f"api: {type(error).__name__}"
    peak = max(peak, connections())
    time.sleep(1)
gi.histories.delete_history(history, purge=True)
print(json.dumps({"states": [states.get(d) for d in datasets], "peak": peak, "first_request": first_request,
                  "seconds": round(time.monotonic() - started, 1)}))
"""


@pytest.fixture(scope="module")
def galaxy(lab_inventory, first_deploy) -> GalaxyJobs:
    return GalaxyJobs(lab_inventory)


@pytest.fixture(scope="module")
def other(lab_inventory, first_deploy) -> GalaxyJobs:
    return GalaxyJobs(lab_inventory, galaxy_host=OTHER)


def fetch(other: GalaxyJobs, url: str, cafile: str = "-") -> dict:
    return json.loads(other.ssh(f"python3 -c {shlex.quote(FETCH)} {shlex.quote(url)} {shlex.quote(cafile)}"))


def test_postgresql_in_use(galaxy):
    connection = galaxy.ssh("grep database_connection /srv/galaxy/config/galaxy.yml").strip()
    assert connection == 'database_connection: "postgresql:///galaxy?host=/var/run/postgresql"', connection
    tables = galaxy.ssh(PSQL + shlex.quote(
        "SELECT count(*) FROM information_schema.tables WHERE table_name IN ('job', 'galaxy_user', 'history', 'dataset')"))
    assert tables.strip() == "4"
    users = int(galaxy.ssh(PSQL + shlex.quote("SELECT count(*) FROM galaxy_user")).strip())
    assert users >= 1  # the verification user, made by the deploy through Galaxy on PostgreSQL
    assert "psycopg2" in galaxy.ssh("/srv/galaxy/venv/bin/pip list --format=freeze")
    # Every connection Galaxy's 4 processes can open (x (5 + 10)) fits PostgreSQL's default of 100.
    assert galaxy.ssh("runuser -u postgres -- psql -XAtc 'SHOW max_connections'").strip() == "100"
    assert "max_connections = 100" in galaxy.ssh("cat /etc/postgresql/15/main/conf.d/pgs-galaxy.conf")
    config = galaxy.ssh("cat /srv/galaxy/config/galaxy.yml")
    assert "database_engine_option_pool_size: 5" in config and "database_engine_option_pool_pre_ping: true" in config


def test_galaxy_jobs_in_flight_survive_a_postgresql_restart(galaxy):
    """Debian restarts PostgreSQL on a security update (galaxy#12162): Galaxy's processes
    reconnect (pool_pre_ping: the first API request after it answers) and the jobs queued or
    running meanwhile end ok."""
    restart = "systemctl restart postgresql@15-main"
    in_use = "runuser -u postgres -- psql -XAtc \"SELECT count(*) FROM pg_stat_activity WHERE usename = 'galaxy'\""
    result = json.loads(galaxy.ssh(f"{VENV_PYTHON} -c {shlex.quote(ACROSS_RESTART)} {shlex.quote(restart)} "
                                   f"{shlex.quote(in_use)}", timeout=420).strip().splitlines()[-1])
    assert result["states"] == ["ok"] * 3, result
    # Measured without pool_pre_ping: 500 (the web worker's pooled connection was dead), then 200.
    assert result["first_request"] == 200, result
    assert 0 < result["peak"] <= 60, result  # 4 processes x (pool 5 + overflow 10)
    NOTES.append(f"test_12 PostgreSQL restart: 3 uploads in flight ended ok {result['seconds']} s after it; "
                 f"Galaxy's connections at peak {result['peak']} of max_connections 100")


def test_bootstrap_key_retired_after_the_first_run(galaxy):
    """The first run made the admin's own key with the bootstrap key, then took it out of galaxy.yml
    and restarted the web server only: Galaxy's API refuses it, the admin's own key works."""
    assert "bootstrap_admin_api_key" not in galaxy.ssh("cat /srv/galaxy/config/galaxy.yml")
    statuses = json.loads(galaxy.ssh(f"python3 -c {shlex.quote(KEY_STATUS)}").strip())
    assert statuses["own"] == 200 and statuses["bootstrap"] in (401, 403), statuses


def test_both_handlers_take_jobs(galaxy):
    first = int(galaxy.ssh(PSQL + shlex.quote("SELECT coalesce(max(id), 0) FROM job")).strip())
    handlers_since = PSQL + shlex.quote(f"SELECT DISTINCT handler FROM job WHERE id > {first} AND handler LIKE 'handler%'")
    result = json.loads(galaxy.ssh(
        f"{VENV_PYTHON} -c {shlex.quote(UPLOADS)} {shlex.quote(handlers_since)} {MAX_UPLOADS} {UPLOAD_WAIT}",
        timeout=UPLOAD_WAIT + 120).strip().splitlines()[-1])
    assert result["states"] and all(state == "ok" for state in result["states"]), result
    rows = galaxy.ssh(PSQL + shlex.quote(
        f"SELECT handler, count(*), string_agg(state, ',') FROM job WHERE id > {first} GROUP BY handler ORDER BY handler"))
    per_handler = {line.split("|")[0]: line.split("|") for line in rows.split()}
    assert set(per_handler) == {"handler0", "handler1"}, rows
    assert all(set(states.split(",")) == {"ok"} for _, _, states in per_handler.values()), rows
    NOTES.append(f"test_12 handlers: {len(result['states'])} uploads through nginx, per handler "
                 f"{ {h: int(n) for h, (_, n, _) in per_handler.items()} }, upload to ok {result['seconds']} s")


def test_nginx_serves_galaxy_to_another_host(galaxy, other):
    base = f"http://{galaxy.address}"
    version = fetch(other, f"{base}/api/version")
    assert version["status"] == 200 and json.loads(version["body"])["version_major"] == "26.1"
    assert version["server"].startswith("nginx")
    welcome = fetch(other, f"{base}/")
    assert welcome["status"] == 200 and "<html" in welcome["body"].lower(), welcome
    # Static files come from nginx itself: its `expires 24h` header, the file's bytes.
    robots = fetch(other, f"{base}/static/robots.txt")
    local = galaxy.ssh("cat /srv/galaxy/venv/lib/python3*/site-packages/galaxy/webapps/base/static/robots.txt")
    assert robots["status"] == 200 and robots["cache"] == "max-age=86400" and robots["body"] == local
    client_file = galaxy.ssh("ls /srv/galaxy/venv/lib/python3*/site-packages/galaxy/web_client/dist | grep '\\.js$' | head -1").strip()
    script = fetch(other, f"{base}/static/dist/{client_file}")
    assert script["status"] == 200 and script["cache"] == "max-age=86400" and script["length"] > 0
    # gunicorn itself is on loopback only.
    refused = other.ssh(f"python3 -c 'import socket; s = socket.socket(); s.settimeout(5); "
                        f"print(s.connect_ex((\"{galaxy.address}\", 8080)))'").strip()
    assert refused != "0"


@pytest.fixture(scope="module")
def lab_certificate(tmp_path_factory, galaxy, other) -> str:
    """A self-signed certificate for the Galaxy host's address (made here with openssl), put
    on the Galaxy host (key 0640 for now: the deploy must make it 0600) and, as the CA to trust, on `other`."""
    where = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={galaxy.address}",
                    "-addext", f"subjectAltName=IP:{galaxy.address}", "-keyout", str(where / "key.pem"),
                    "-out", str(where / "cert.pem")], check=True, capture_output=True)
    galaxy.ssh("install -d -m 0755 /etc/ssl/galaxy-lab")
    galaxy.put(where / "cert.pem", "/etc/ssl/galaxy-lab/cert.pem")
    galaxy.put(where / "key.pem", "/etc/ssl/galaxy-lab/key.pem")
    galaxy.ssh("chmod 0640 /etc/ssl/galaxy-lab/key.pem")
    other.put(where / "cert.pem", "/root/galaxy-lab-ca.pem" if not other.sudo else "/tmp/galaxy-lab-ca.pem")
    return "/root/galaxy-lab-ca.pem" if not other.sudo else "/tmp/galaxy-lab-ca.pem"


def test_tls_with_the_lab_certificate(deploy, galaxy, other, lab_certificate):
    tls = ["--data", "galaxy_tls_certificate=/etc/ssl/galaxy-lab/cert.pem", "--data", "galaxy_tls_key=/etc/ssl/galaxy-lab/key.pem"]
    run = deploy(*tls)
    try:
        assert run.returncode == 0, run.log[-5000:]
        assert "users open https://" in run.log
        version = fetch(other, f"https://{galaxy.address}/api/version", lab_certificate)
        assert version["status"] == 200 and json.loads(version["body"])["version_major"] == "26.1", version
        redirect = fetch(other, f"http://{galaxy.address}/api/version")
        assert redirect["status"] == 301 and redirect["location"] == f"https://{galaxy.address}/api/version", redirect
        assert galaxy.ssh("stat -c '%a %U' /etc/ssl/galaxy-lab/key.pem").strip() == "600 root"
        assert "A Galaxy upload job runs through Slurm" in run.log and "upload to dataset ok" in run.log
    finally:
        back = deploy()
        assert back.returncode == 0, back.log[-5000:]
    assert fetch(other, f"http://{galaxy.address}/api/version")["status"] == 200



def test_a_site_nginx_refuses_is_rolled_back(deploy, galaxy, other):
    """A "certificate" nginx cannot load: `nginx -t` fails, the previous site is put back,
    nginx keeps serving Galaxy, the run fails saying so; Galaxy is not touched."""
    galaxy.ssh("install -d -m 0755 /etc/ssl/galaxy-lab && echo 'not a certificate' > /etc/ssl/galaxy-lab/bogus.pem")
    before = galaxy.ssh("sha1sum /etc/nginx/sites-available/galaxy /srv/galaxy/config/galaxy.yml")
    try:
        run = deploy("--data", "galaxy_tls_certificate=/etc/ssl/galaxy-lab/bogus.pem",
                     "--data", "galaxy_tls_key=/etc/ssl/galaxy-lab/bogus.pem")
        assert run.returncode != 0
        assert "nginx refused the new Galaxy site (/etc/nginx/sites-available/galaxy); the previous one is back" in run.log, \
            run.log[-3000:]
        assert galaxy.ssh("sha1sum /etc/nginx/sites-available/galaxy /srv/galaxy/config/galaxy.yml") == before
        assert fetch(other, f"http://{galaxy.address}/api/version")["status"] == 200
    finally:
        galaxy.ssh("rm -f /etc/ssl/galaxy-lab/bogus.pem")


def test_switch_to_postgresql_refused_while_sqlite_holds_data(deploy, galaxy):
    """Galaxy on SQLite (one handler) with the verification's user and job in it; the
    default (PostgreSQL) is then refused, naming what SQLite holds, before any change;
    galaxy_database_fresh = True goes ahead (PostgreSQL still holds its earlier data)."""
    sqlite = ["--data", "galaxy_database=sqlite", "--data", "galaxy_handlers=1"]
    refused_back = deploy(*sqlite)
    assert refused_back.returncode != 0 and "its postgresql database holds" in refused_back.log, refused_back.log[-3000:]
    started = time.monotonic()
    on_sqlite = deploy(*sqlite, "--data", "galaxy_database_fresh=true")
    assert on_sqlite.returncode == 0, on_sqlite.log[-5000:]
    assert "sqlite" in galaxy.ssh("grep database_connection /srv/galaxy/config/galaxy.yml")
    try:
        before = galaxy.ssh("sha1sum /srv/galaxy/config/galaxy.yml")
        refused = deploy()
        assert refused.returncode != 0
        message = refused.log
        assert "galaxy_database: 'postgresql' would start Galaxy on an empty database, but its sqlite database holds" in message
        assert "galaxy_database_fresh = True" in message and "pgloader" in message
        assert galaxy.ssh("sha1sum /srv/galaxy/config/galaxy.yml") == before  # refused before any change
    finally:
        fresh = deploy("--data", "galaxy_database_fresh=true")
        assert fresh.returncode == 0, fresh.log[-5000:]
    TIMINGS["sqlite round trip (test_12)"] = time.monotonic() - started
    assert "postgresql" in galaxy.ssh("grep database_connection /srv/galaxy/config/galaxy.yml")


def test_rerun_after_all_changes_nothing(deploy):
    rerun = deploy()
    assert rerun.returncode == 0, rerun.log[-3000:]
    assert rerun.changes == 0, rerun.changed_operations()

