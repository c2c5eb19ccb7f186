"""Galaxy: its account on every host, its processes under supervisor, its venv, its API."""

from __future__ import annotations

import json
import shlex

import pytest

from tasks.galaxy.config import SUPERVISOR_GROUP
from tasks.model.jobconf import runner_plugins
from tasks.platform import HEALTH_CHECK_CONF, HEALTH_CHECK_PROGRAM


def _as_galaxy(galaxy, command: str, env: dict[str, str] | None = None) -> str:
    """COMMAND as the galaxy user (a login shell is not needed, nor allowed for some accounts)."""
    exports = "".join(f"{key}={shlex.quote(value)} " for key, value in (env or {}).items())
    return f"su {galaxy.user} -s /bin/sh -c {shlex.quote(exports + command)}"


def _programs(names: list[str]) -> list[str]:
    return [f"{SUPERVISOR_GROUP}:{name}" for name in names]


def _environment(host, pid: str) -> dict[str, str]:
    """The environment a process started with (/proc/PID/environ)."""
    return dict(item.partition("=")[::2] for item in host.check_output(f"tr '\\0' '\\n' < /proc/{pid}/environ").splitlines())


def test_galaxy_account_same_everywhere(cluster_host, galaxy):
    """the galaxy user has the same uid, gid and home here"""
    user = cluster_host.host.user(galaxy.user)
    assert user.exists, f"user {galaxy.user} does not exist"
    found, wanted = (user.uid, user.gid, user.home), (galaxy.uid, galaxy.gid, galaxy.root)
    assert found == wanted, f"user {galaxy.user} has uid, gid, home {found}, not {wanted} (galaxy_uid, galaxy_gid, galaxy_root)"


def test_compute_host_sees_galaxy_root(compute_host, galaxy):
    """Galaxy's venv and job directory are here, writable by galaxy"""
    if compute_host.name == galaxy.host.inventory_name:
        pytest.skip("the Galaxy host itself")
    host = compute_host.host
    assert host.file(f"{galaxy.venv}/bin/python").exists, f"{galaxy.venv}/bin/python is missing: {galaxy.root} is not shared here"
    jobs = f"{galaxy.data_dir}/jobs"
    assert host.run(_as_galaxy(galaxy, f"test -w {jobs}")).rc == 0, f"{galaxy.user} cannot write {jobs}"


def test_node_health_check_installed(compute_host, galaxy, cluster):
    """slurm.conf's HealthCheckProgram is here (root's, 0755) with what it checks (0600 root)"""
    if not cluster.health_check_interval:
        pytest.skip("slurm_health_check_interval = 0: no node health check")
    host = compute_host.host
    for path, mode in ((HEALTH_CHECK_PROGRAM, 0o755), (HEALTH_CHECK_CONF, 0o600)):
        found = host.file(path)
        assert found.exists, f"{path} is missing: slurmd's health check would fail; re-run the deploy"
        assert (found.user, found.mode) == ("root", mode), f"{path} is {found.user}'s, mode {found.mode:o}, not root's {mode:o}"


def test_supervisor_runs_galaxy(galaxy_host, galaxy):
    """supervisor running and enabled, each Galaxy program RUNNING as the galaxy user"""
    host = galaxy_host.host
    supervisor = host.service("supervisor")
    assert supervisor.is_running and supervisor.is_enabled, "supervisor is not running and enabled"
    programs = _programs(["web", *galaxy.handler_names])
    status = host.run("supervisorctl status " + " ".join(programs)).stdout
    states = {line.split()[0]: line.split()[1] for line in status.splitlines() if len(line.split()) > 1}
    not_running = [f"{p} {states.get(p, 'missing')}" for p in programs if states.get(p) != "RUNNING"]
    assert not not_running, f"not RUNNING: {', '.join(not_running)}"
    wrong = []
    for program in programs:
        pid = host.check_output(f"supervisorctl pid {program}")
        owner = host.check_output(f"ps -o user= -p {pid}")
        environment = _environment(host, pid)
        if owner != galaxy.user:
            wrong.append(f"{program} runs as {owner}")
        library = environment.get("DRMAA_LIBRARY_PATH")
        # Only the handlers load job runners (the DRMAA runner reads it there).
        wanted = galaxy.drmaa_library_path if program != _programs(["web"])[0] else None
        if library != wanted:
            wrong.append(f"{program} has DRMAA_LIBRARY_PATH={library} with runner {galaxy.job_runner}"
                         + (f" (want {wanted})" if wanted else ""))
    assert not wrong, "; ".join(wrong)


def test_handlers_running(galaxy_host, galaxy):
    """each of the galaxy_handlers job handlers RUNNING under supervisor, and no other"""
    status = galaxy_host.host.run(f"supervisorctl status {SUPERVISOR_GROUP}:*").stdout
    states = {line.split()[0]: line.split()[1] for line in status.splitlines() if len(line.split()) > 1}
    handlers = _programs(galaxy.handler_names)
    not_running = [f"{p} {states.get(p, 'missing')}" for p in handlers if states.get(p) != "RUNNING"]
    assert not not_running, f"not RUNNING: {', '.join(not_running)}"
    others = sorted(set(states) - set(_programs(["web", *galaxy.handler_names])))
    assert not others, f"supervisor has programs the settings do not have (galaxy_handlers = {galaxy.handlers}): {', '.join(others)}"


def test_handlers_read_slurmdbd(galaxy_host, galaxy, cluster):
    """handlers have SLURM_DRMAA_USE_SLURMDBD=1 exactly when accounting is on"""
    if galaxy.drmaa_library_path is None:
        pytest.skip(f"galaxy_job_runner is {galaxy.job_runner}")
    host = galaxy_host.host
    wanted = "1" if cluster.accounting else None
    wrong = []
    for program in _programs(galaxy.handler_names):
        found = _environment(host, host.check_output(f"supervisorctl pid {program}")).get("SLURM_DRMAA_USE_SLURMDBD")
        if found != wanted:
            wrong.append(f"{program} has SLURM_DRMAA_USE_SLURMDBD={found}")
    assert not wrong, "; ".join(wrong) + f" with slurm_accounting {'on' if cluster.accounting else 'off'}"


def test_galaxy_files_private(galaxy_host, galaxy):
    """Galaxy's configuration and secrets owned and private; job_conf.xml names the chosen runner"""
    host = galaxy_host.host
    expected = {
        galaxy.galaxy_yml: (galaxy.user, galaxy.user, 0o600),
        galaxy.secrets_file: (galaxy.user, galaxy.user, 0o600),
        galaxy.job_conf: (galaxy.user, galaxy.user, 0o640),
        galaxy.config_dir: (galaxy.user, galaxy.user, 0o750),
        "/etc/supervisor/conf.d/galaxy.conf": ("root", "root", 0o644),
    }
    wrong = []
    for path, (user, group, mode) in expected.items():
        item = host.file(path)
        if not item.exists:
            wrong.append(f"{path} is missing")
        elif (item.user, item.group, item.mode) != (user, group, mode):
            wrong.append(f"{path} is {item.user}:{item.group} {oct(item.mode)}, not {user}:{group} {oct(mode)}")
    assert not wrong, "; ".join(wrong)
    runner = runner_plugins(galaxy.job_runner)["slurm"]
    assert runner in host.file(galaxy.job_conf).content_string, f"{galaxy.job_conf} does not load {runner}"


def test_galaxy_venv(galaxy_host, galaxy):
    """Galaxy's venv belongs to galaxy and holds its version, drmaa and fissix"""
    host = galaxy_host.host
    assert host.file(galaxy.venv).user == galaxy.user, f"{galaxy.venv} is not owned by {galaxy.user}"
    packages = host.pip.get_packages(pip_path=f"{galaxy.venv}/bin/pip")
    missing = [name for name in ("drmaa", "fissix") if name not in packages]
    assert not missing, f"not in {galaxy.venv}: {', '.join(missing)}"
    if galaxy.install:
        found = packages.get("galaxy-web-apps", {}).get("version")
        assert found == galaxy.version, f"galaxy-web-apps is {found}, not galaxy_version {galaxy.version}"


def test_drmaa_importable(galaxy_host, galaxy):
    """`import drmaa` works in Galaxy's venv, as galaxy, with its DRMAA_LIBRARY_PATH"""
    if galaxy.drmaa_library_path is None:
        pytest.skip(f"galaxy_job_runner is {galaxy.job_runner}")
    result = galaxy_host.host.run(_as_galaxy(galaxy, f"{galaxy.venv}/bin/python -c 'import drmaa'",
                                             {"DRMAA_LIBRARY_PATH": galaxy.drmaa_library_path}))
    assert result.rc == 0, f"import drmaa failed: {(result.stderr or result.stdout).strip().splitlines()[-1:]}"


def test_galaxy_api_answers(galaxy_host, galaxy):
    """gunicorn answers Galaxy's API on galaxy_bind with galaxy_version (nginx bypassed: test_4 goes through it)"""
    url = f"{galaxy.local_url}/api/version"
    script = f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=10).read().decode())"
    result = galaxy_host.host.run(f"python3 -c {shlex.quote(script)}")
    assert result.rc == 0, f"{url} does not answer: {result.stderr.strip().splitlines()[-1:]}"
    version = json.loads(result.stdout)
    if galaxy.install:
        wanted = ".".join(galaxy.version.split(".")[:2])
        assert version.get("version_major") == wanted, f"{url} says {version}, not version_major {wanted}"
