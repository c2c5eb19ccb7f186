"""Galaxy: settings validation, job_conf.xml building and checking, rendered configs."""

from __future__ import annotations

import hashlib

import pytest
import yaml
from lxml import etree

from tasks.common import render
from tasks.galaxy.account import nfs_exports_line
from tasks.galaxy.config import create_database_command
from tasks.model.jobconf import build_job_conf, check_job_conf
from tasks.native_specification import parse_sbatch_options
from tasks.model import ClusterConfigError, build_cluster
from tests.unit.conftest import inventory_host, small_cluster


def galaxy_of(**galaxy_data):
    return build_cluster(small_cluster(galaxy=galaxy_data), {}).galaxy


def problems_of(hosts=None, settings=None, **galaxy_data) -> list[str]:
    with pytest.raises(ClusterConfigError) as caught:
        build_cluster(hosts or small_cluster(galaxy=galaxy_data), settings or {})
    return caught.value.problems


@pytest.fixture
def tarball(tmp_path):
    path = tmp_path / "slurm-drmaa-1.1.6.tar.gz"
    path.write_bytes(b"not really a tarball")
    return str(path), hashlib.sha256(path.read_bytes()).hexdigest()


def params(destination: etree._Element) -> dict[str, str]:
    return {p.get("id"): p.text or "" for p in destination.iterfind("param")}


def test_cli_runner_job_conf():
    root = etree.fromstring(build_job_conf(galaxy_of()))
    plugins = {p.get("id"): p.get("load") for p in root.iterfind("plugins/plugin")}
    assert plugins == {"local": "galaxy.jobs.runners.local:LocalJobRunner", "slurm": "galaxy.jobs.runners.cli:ShellJobRunner"}
    assert root.find("plugins").get("workers") == "4"
    assert [h.get("id") for h in root.iterfind("handlers/handler")] == ["handler0", "handler1"]
    assert root.find("destinations").get("default") == "slurm"
    slurm, local = root.iterfind("destinations/destination")
    assert params(slurm) == {"shell_plugin": "LocalShell", "job_plugin": "Slurm", "job_--ntasks": "1"}
    assert (local.get("id"), local.get("runner"), params(local)) == ("local", "local", {})


def test_drmaa_runner_job_conf(tarball):
    path, checksum = tarball
    galaxy = galaxy_of(galaxy_job_runner="drmaa", galaxy_handlers=2, slurm_drmaa={"tarball": path, "sha256": checksum},
                       galaxy_destinations=[{"id": "slurm", "runner": "slurm", "native_specification": "-p debug --time=1:00:00"},
                                            {"id": "local", "runner": "local"}])
    root = etree.fromstring(build_job_conf(galaxy))
    (slurm_plugin,) = root.iterfind("plugins/plugin[@id='slurm']")
    assert slurm_plugin.get("load") == "galaxy.jobs.runners.slurm:SlurmJobRunner"
    assert params(slurm_plugin) == {"drmaa_library_path": "/opt/slurm-drmaa/lib/libdrmaa.so.1"}
    slurm = root.find("destinations/destination[@id='slurm']")
    assert params(slurm) == {"nativeSpecification": "-p debug --time=1:00:00"}
    assert [h.get("id") for h in root.iterfind("handlers/handler")] == ["handler0", "handler1"]
    assert check_job_conf(build_job_conf(galaxy)) == []


GOOD = b"""<job_conf><plugins workers="2"><plugin id="local" type="runner" load="x:Y"/></plugins>
<destinations default="local"><destination id="local" runner="local"/></destinations></job_conf>"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (GOOD.replace(b'runner="local"/>', b'runner="pbs"/>'), "destination 'local' uses runner 'pbs', which is not a defined plugin"),
        (GOOD.replace(b' default="local"', b""), "<destinations> has no default="),
        (GOOD.replace(b'default="local"', b'default="slurm"'), "default destination 'slurm' is not defined"),
        (GOOD.replace(b"</destinations>", b'<destination id="local" runner="local"/></destinations>'),
         "destination id 'local' is defined more than once"),
        (GOOD.replace(b"</plugins>", b'<plugin id="local" type="runner" load="a:B"/></plugins>'),
         "plugin id 'local' is defined more than once"),
        (GOOD.replace(b"</job_conf>", b""), "not well-formed XML"),
        (GOOD.replace(b' load="x:Y"', b""), "plugin 'local' has no load="),
    ],
)
def test_check_job_conf_rejects(text, expected):
    assert check_job_conf(GOOD) == []
    assert any(expected in problem for problem in check_job_conf(text))


@pytest.mark.parametrize(
    ("destinations", "default", "expected"),
    [
        ([{"id": "slurm", "runner": "pbs"}], "slurm", "uses runner 'pbs', which is not a defined plugin (local, slurm)"),
        ([{"id": "slurm", "runner": "slurm"}], "fast", "default destination 'fast' is not defined (slurm)"),
        ([{"id": "a", "runner": "slurm"}, {"id": "a", "runner": "local"}], "a", "destination id 'a' is defined more than once"),
        ([{"id": "slurm"}], "slurm", "must be a mapping with an 'id' and a 'runner'"),
        ([], "slurm", "must be a non-empty list"),
    ],
)
def test_bad_destinations_are_refused(destinations, default, expected):
    problems = problems_of(galaxy_destinations=destinations, galaxy_default_destination=default)
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("--ntasks=1 --frobnicate=2", "unknown sbatch option --frobnicate"),
        ("-Z 3", "unknown sbatch option -Z"),
        ("ntasks=1", "'ntasks=1' is not an option"),
        ("--time", "--time needs a value"),
        ("--comment='unclosed", "cannot be parsed"),
    ],
)
def test_invalid_native_specification(spec, expected):
    problems = problems_of(galaxy_destinations=[{"id": "slurm", "runner": "slurm", "native_specification": spec}])
    assert any(expected in p and "galaxy_destinations[0] (slurm).native_specification" in p for p in problems), problems


def test_native_specification_forms():
    options, problems = parse_sbatch_options("-p debug --ntasks 2 --mem=4G --exclusive -c4 -J 'my job'")
    assert problems == []
    assert options == [("-p", "debug"), ("--ntasks", "2"), ("--mem", "4G"), ("--exclusive", None), ("-c", "4"), ("-J", "my job")]


def test_drmaa_download_needs_sha256():
    problems = problems_of(galaxy_job_runner="drmaa")
    assert any(p.startswith("slurm_drmaa.sha256: a download needs the sha256") for p in problems)


def test_drmaa_tarball_with_mismatching_sha256(tarball):
    path, _ = tarball
    problems = problems_of(galaxy_job_runner="drmaa", slurm_drmaa={"tarball": path, "sha256": "0" * 64})
    assert any("has sha256" in p and f"not the {'0' * 64}" in p for p in problems)


@pytest.mark.parametrize(
    ("drmaa", "expected"),
    [
        ({"tarball": "/nonexistent/slurm-drmaa.tar.gz"}, "slurm_drmaa.tarball: /nonexistent/slurm-drmaa.tar.gz does not exist"),
        ({"sha256": "ABC"}, "slurm_drmaa.sha256: 'ABC' is not a sha256"),
        ({"method": "pip"}, "slurm_drmaa.method: 'pip' is unknown"),
        ({"method": "path", "path": "lib/libdrmaa.so.1"}, "needs the absolute path"),
        ({"colour": "blue", "method": "package"}, "slurm_drmaa: unknown setting colour"),
    ],
)
def test_bad_slurm_drmaa_settings(drmaa, expected):
    assert any(expected in p for p in problems_of(galaxy_job_runner="drmaa", slurm_drmaa=drmaa))


def test_drmaa_library_path_by_method():
    assert galaxy_of(galaxy_job_runner="drmaa", slurm_drmaa={"method": "package"}).drmaa_library_path == \
        "/usr/lib/slurm-drmaa/lib/libdrmaa.so.1"
    assert galaxy_of(galaxy_job_runner="drmaa", slurm_drmaa={"method": "path", "path": "/opt/d/libdrmaa.so.1"}).drmaa_library_path == \
        "/opt/d/libdrmaa.so.1"
    assert galaxy_of().drmaa_library_path is None  # CLI runner


def test_download_url_has_the_version():
    galaxy = galaxy_of(galaxy_job_runner="drmaa", slurm_drmaa={"version": "1.1.5", "sha256": "a" * 64})
    assert galaxy.drmaa.url.endswith("/download/1.1.5/slurm-drmaa-1.1.5.tar.gz")


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"shared_fs": "afs"}, "shared_fs: 'afs' is unknown"),
        ({"galaxy_job_runner": "pulsar"}, "galaxy_job_runner: 'pulsar' is unknown"),
        ({"galaxy_uid": 0}, "galaxy_uid: 0 is not a positive whole number"),
        ({"galaxy_handlers": "two"}, "galaxy_handlers: 'two' is not a positive whole number"),
        ({"galaxy_bind": "8080"}, "galaxy_bind: '8080' is not host:port"),
        ({"galaxy_root": "srv/galaxy"}, "galaxy_root: 'srv/galaxy' is not an absolute path"),
    ],
)
def test_bad_galaxy_settings(settings, expected):
    assert any(expected in p for p in problems_of(**settings))


def test_galaxy_group_empty_while_galaxy_is_on():
    hosts = [inventory_host("head", "slurm_controller"), inventory_host("c1", "slurm_compute", address="10.0.0.2")]
    assert any("group galaxy: needs exactly one host when deploy_galaxy is on, has 0" in p for p in problems_of(hosts))
    assert build_cluster(hosts, {"deploy_galaxy": False}).galaxy is None


def test_two_galaxy_hosts():
    hosts = small_cluster() + [inventory_host("gx2", "galaxy", address="10.0.0.50")]
    assert any("has 2 (head, gx2)" in p for p in problems_of(hosts))


def test_galaxy_uid_taken_by_another_user():
    hosts = small_cluster(1)
    hosts[1] = inventory_host("c1", "slurm_compute", users={"root": 0, "alice": 1500})
    assert any("host c1: galaxy_uid 1500 already belongs to user alice" in p for p in problems_of(hosts))


def test_galaxy_user_exists_with_another_uid():
    hosts = small_cluster(1)
    hosts[1] = inventory_host("c1", "slurm_compute", users={"root": 0, "galaxy": 999}, groups={"root": 0, "galaxy": 1500})
    (problem,) = problems_of(hosts)
    assert "host c1: user galaxy exists with id 999, not galaxy_uid 1500" in problem


def test_galaxy_user_already_right_is_fine():
    hosts = small_cluster(1, users={"root": 0, "galaxy": 1500}, groups={"root": 0, "galaxy": 1500})
    assert build_cluster(hosts, {}).galaxy.uid == 1500


def test_compute_python_must_match_galaxy_venv():
    hosts = small_cluster(1)
    hosts[1] = inventory_host("c1", "slurm_compute", python="3.13")
    assert any("host c1: python3 is 3.13 but Galaxy's venv on head uses 3.11" in p for p in problems_of(hosts))


def test_supervisor_conf_for_drmaa(tarball):
    path, checksum = tarball
    galaxy = galaxy_of(galaxy_job_runner="drmaa", galaxy_handlers=2, slurm_drmaa={"tarball": path, "sha256": checksum})
    text = render("supervisor-galaxy.conf.j2", galaxy=galaxy, group="gx")
    sections = [line for line in text.splitlines() if line.startswith("[")]
    assert sections == ["[program:web]", "[program:handler0]", "[program:handler1]", "[group:gx]"]
    assert "programs=web,handler0,handler1" in text
    # Only the handlers load job runners: the DRMAA variables are theirs alone.
    web, handlers = text.split("[program:handler0]")
    assert "DRMAA_LIBRARY_PATH" not in web
    assert handlers.count('DRMAA_LIBRARY_PATH="/opt/slurm-drmaa/lib/libdrmaa.so.1"') == 2
    assert text.count("user=galaxy\n") == 3 and text.count("stopasgroup=true") == 3
    assert "galaxy-main -c /srv/galaxy/config/galaxy.yml --server-name=handler1 --attach-to-pool=job-handlers" in text
    assert "-b 127.0.0.1:8080" in text


def test_supervisor_conf_for_cli_has_no_drmaa():
    assert "DRMAA_LIBRARY_PATH" not in render("supervisor-galaxy.conf.j2", galaxy=galaxy_of(), group="gx")


def test_galaxy_yml():
    galaxy = galaxy_of(galaxy_config_extra={"brand": "Lab", "allow_user_creation": False})
    text = render("galaxy.yml.j2", galaxy=galaxy, secrets={"id_secret": "s" * 32, "admin_api_key": "k" * 64}, bootstrap=True)
    config = yaml.safe_load(text)["galaxy"]
    later = yaml.safe_load(render("galaxy.yml.j2", galaxy=galaxy, secrets={"id_secret": "s" * 32, "admin_api_key": "k" * 64},
                                  bootstrap=False))["galaxy"]
    assert "bootstrap_admin_api_key" not in later and later["admin_users"] == "admin@example.org"
    assert config["job_config_file"] == "/srv/galaxy/config/job_conf.xml"
    assert config["database_connection"] == "postgresql:///galaxy?host=/var/run/postgresql"
    sqlite = galaxy_of(galaxy_database="sqlite", galaxy_handlers=1)
    assert yaml.safe_load(render("galaxy.yml.j2", galaxy=sqlite, secrets={"id_secret": "s", "admin_api_key": "k"}, bootstrap=False))[
        "galaxy"]["database_connection"] == "sqlite:////srv/galaxy/data/universe.sqlite?isolation_level=IMMEDIATE"
    assert config["bootstrap_admin_api_key"] == "k" * 64 and config["admin_users"] == "admin@example.org"
    assert (config["brand"], config["allow_user_creation"]) == ("Lab", False)
    assert config["enable_celery_tasks"] is False


def test_nfs_exports():
    cluster = build_cluster(small_cluster(2), {})
    assert nfs_exports_line("/srv/galaxy", list(cluster.compute_hosts)) == \
        "/srv/galaxy 10.0.0.11(rw,sync,no_subtree_check) 10.0.0.12(rw,sync,no_subtree_check)"


def test_pip_packages():
    packages = galaxy_of().pip_packages
    # every package of the release pinned (tests/unit/test_galaxy_releases.py), then Galaxy's extras
    assert {"galaxy-web-apps==26.1.2", "galaxy-web-client==26.1.2", "galaxy-app==26.1.2", "gravity==1.2.4"} <= set(packages)
    assert packages[-3:] == ["fissix", "drmaa", "psycopg2-binary"]
    assert galaxy_of(galaxy_install=False).pip_packages == ["fissix", "drmaa", "psycopg2-binary"]
    assert galaxy_of(galaxy_database="sqlite", galaxy_handlers=1).pip_packages[-1] == "drmaa"


def test_galaxy_database_is_created_by_one_process_as_galaxy():
    galaxy = build_cluster(small_cluster(1, galaxy={"galaxy_root": "/data/gx", "galaxy_user": "gx"}), {}).galaxy
    command = create_database_command(galaxy)
    assert command.startswith("cd /data/gx && runuser -u gx -- /data/gx/venv/bin/python -c ")
    assert "/data/gx/config/galaxy.yml" in command and "verify_databases_via_script" in command
