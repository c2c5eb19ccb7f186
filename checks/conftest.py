"""Host checks of a deployed cluster, over SSH, from any inventory (they change nothing).

    .venv/bin/pytest checks --inventory inventory.py [--ssh-user U --ssh-key K --ssh-port P --sudo]
    make check INVENTORY=lab/inventory.py

The hosts and their SSH settings come from the inventory as pyinfra loads it
(group_data included; `--ssh-user`, `--ssh-key`, `--ssh-port`, `--sudo`,
`--sudo-user` and `--data KEY=VALUE` override them as they do for pyinfra).
Each check runs once per host of the roles it concerns, so a failure names the
host; what a check expects (ports, paths, the galaxy account, the job runner...)
comes from the deploy's model of the cluster (tasks/model), built from the same
settings. The report at the end has one line per host and check.
"""

from __future__ import annotations

import os

import pytest
from pyinfra_cli.util import parse_cli_arg

from checks.cluster import CheckedCluster, CheckedHost, ClusterConfigError, load_inventory

# Fixture name -> the role whose hosts it runs over ("all": every host).
HOST_FIXTURES = {"cluster_host": "all", "controller_host": "controller", "compute_host": "compute", "galaxy_host": "galaxy",
                 "dbd_host": "slurmdbd"}
_RESULTS: list[tuple[str, str, str, str]] = []  # (host, check, outcome, reason) for the summary


def pytest_addoption(parser):
    group = parser.getgroup("cluster checks")
    group.addoption("--inventory", default=os.environ.get("INVENTORY", "inventory.py"),
                    help="pyinfra inventory file of the cluster (default: $INVENTORY or inventory.py)")
    group.addoption("--ssh-user", help="SSH user, as pyinfra's --ssh-user")
    group.addoption("--ssh-key", help="SSH private key, as pyinfra's --ssh-key")
    group.addoption("--ssh-port", type=int, help="SSH port, as pyinfra's --ssh-port")
    group.addoption("--data", action="append", default=[], metavar="KEY=VALUE",
                    help="override host data, as pyinfra's --data")
    # --sudo and --sudo-user are pytest-testinfra's options; here they mean what pyinfra's do.


def _override_data(config) -> dict:
    data = {}
    for item in config.getoption("data"):
        key, _, value = item.partition("=")
        data[key] = parse_cli_arg(value)
    for key in ("ssh_user", "ssh_key", "ssh_port"):
        if config.getoption(key):
            data[key] = config.getoption(key)
    if config.getoption("sudo", False):
        data["_sudo"] = True
    if config.getoption("sudo_user", None):
        data["_sudo_user"] = config.getoption("sudo_user")
    return data


def pytest_configure(config):
    path = config.getoption("inventory")
    try:
        config.checked_cluster = CheckedCluster(load_inventory(path, _override_data(config)))
    except Exception as error:  # a missing file, or the inventory's own error
        raise pytest.UsageError(f"cannot load the inventory {path}: {error}") from None
    if not config.checked_cluster.hosts:
        raise pytest.UsageError(f"the inventory {path} has no hosts")


def pytest_generate_tests(metafunc):
    """One test per host of the role each host fixture names (its id: the host's name)."""
    cluster: CheckedCluster = metafunc.config.checked_cluster
    for fixture, role in HOST_FIXTURES.items():
        if fixture in metafunc.fixturenames:
            hosts = cluster.hosts if role == "all" else cluster.with_role(role)
            if hosts:
                metafunc.parametrize(fixture, hosts, ids=[h.name for h in hosts])
            else:  # one skipped line, not pytest's "empty parameter set"
                reason = _no_host_reason(cluster, role)
                metafunc.parametrize(fixture, [pytest.param(None, marks=pytest.mark.skip(reason=reason))], ids=["none"])


def _no_host_reason(cluster: CheckedCluster, role: str) -> str:
    if role == "galaxy" and cluster.hosts_in_group(role):
        return "deploy_galaxy is off"
    if role == "slurmdbd" and cluster.hosts_in_group("controller"):
        return "slurm_accounting is off"
    return f"no {role} host"


@pytest.fixture(scope="session")
def checked_cluster(request) -> CheckedCluster:
    return request.config.checked_cluster


@pytest.fixture(scope="session")
def cluster(checked_cluster):
    """The deploy's model of the cluster (tasks.model.Cluster), from its settings and the hosts' facts."""
    try:
        return checked_cluster.model
    except ClusterConfigError as error:
        pytest.fail(f"the deploy would refuse these settings:\n{error}", pytrace=False)


@pytest.fixture(scope="session")
def controller(checked_cluster) -> CheckedHost:
    return checked_cluster.with_role("controller")[0]


@pytest.fixture(scope="session")
def galaxy(cluster):
    if cluster.galaxy is None:
        pytest.skip("deploy_galaxy is off")
    return cluster.galaxy


def _title(item) -> str:
    doc = (getattr(item.function, "__doc__", None) or "").strip().splitlines()
    return doc[0].rstrip(".") if doc else item.originalname.removeprefix("test_").replace("_", " ")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    callspec = getattr(item, "callspec", None)
    host = next((str(callspec.params[f] or "cluster") for f in HOST_FIXTURES if callspec and f in callspec.params), "cluster")
    if report.when == "call" or report.outcome != "passed":
        if report.when == "teardown" and report.outcome == "passed":
            return
        state = {"passed": "ok", "failed": "FAILED" if report.when == "call" else "ERROR"}.get(report.outcome, report.outcome)
        reason = ""
        if report.failed:
            reason = _reason(call)
        elif report.skipped and isinstance(report.longrepr, tuple):
            reason = report.longrepr[2].removeprefix("Skipped: ")
        _RESULTS.append((host, _title(item), state, reason))


def _reason(call) -> str:
    """The first line of the failure: the assertion's own message."""
    if call.excinfo is None:
        return ""
    text = str(call.excinfo.value).strip() or call.excinfo.typename
    return text.splitlines()[0][:160]


def pytest_terminal_summary(terminalreporter):
    if not _RESULTS:
        return
    terminalreporter.section("cluster checks: one line per host and check")
    width = max(len(host) for host, *_ in _RESULTS)
    for host, check, state, reason in sorted(_RESULTS, key=lambda r: (r[0] == "cluster", r[0])):
        line = f"{host:{width}}  {state:7} {check}" + (f": {reason}" if reason else "")
        terminalreporter.write_line(line, red=state in ("FAILED", "ERROR"), green=state == "ok")
    counts = {state: sum(result[2] == state for result in _RESULTS) for state in ("ok", "FAILED", "ERROR", "skipped")}
    failed = counts["FAILED"] + counts["ERROR"]
    summary = ", ".join(f"{n} {state.lower()}" for state, n in counts.items() if n)
    terminalreporter.write_line(f"{summary}: " + (f"{failed} of {len(_RESULTS)} checks did not pass" if failed else "the cluster passed"))
