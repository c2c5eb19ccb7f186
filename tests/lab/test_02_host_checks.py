"""`make check` (checks/) on the test lab after the deploy: it passes, and it fails
naming the host and the check after a deliberate break, then passes again once
the break is undone. On a sudo-user lab (CI's Debian 12 run) it goes through sudo."""

from __future__ import annotations

from contextlib import contextmanager

import pytest

from tests.lab.check_runs import make_check
from tests.lab.conftest import COMPUTE_NAMES, HOST_NAMES, LAB_INVENTORY_FILE, NOTES, TIMINGS

pytestmark = pytest.mark.lab
@pytest.fixture
def checks(first_deploy, deploy, tmp_path):
    return lambda *args: make_check(deploy, tmp_path, f"INVENTORY={LAB_INVENTORY_FILE}", *args)


@contextmanager
def broken(host, break_command: str, restore_command: str):
    """A deliberate break on a lab host, undone afterwards whatever happens (later tests share the lab)."""
    host.check_output(break_command)
    try:
        yield
    finally:
        host.check_output(restore_command)


def test_checks_pass_after_the_deploy(checks):
    run = checks()
    assert run.returncode == 0 and not run.failed, run.output[-5000:]
    # Every host has a line per check; the cluster's roles decided which.
    assert run.report_line(COMPUTE_NAMES[0], "slurmctld / slurmd of the host's roles running and enabled").split()[1] == "ok"
    assert run.report_line(HOST_NAMES[0], "the Slurm daemons' ports are listening").split()[1] == "ok"
    assert run.passed >= 10 * len(HOST_NAMES), run.output[-3000:]
    NOTES.append("make check, passing run:\n" + run.report())


@pytest.mark.parametrize("name", HOST_NAMES)
def test_no_packages_beyond_the_roles(lab_host, name):
    """What the deploy installs, beyond what `make check` asks of a cluster: no Recommends (no optional
    Slurm plugins), and no daemon of a role the host does not have (the lab's head is not a compute node)."""
    host = lab_host(name)
    unwanted = ["slurm-wlm-plugins", "slurmd" if name == HOST_NAMES[0] else "slurmctld"]
    assert not [package for package in unwanted if host.package(package).is_installed]


def test_checks_fail_naming_the_host_with_munged_stopped(checks, lab_host):
    name = COMPUTE_NAMES[0]
    with broken(lab_host(name), "systemctl stop munge", "systemctl start munge"):
        run = checks()
    assert run.returncode != 0, run.output[-3000:]
    assert ("test_munged_runs_with_syslog", name) in run.failed, run.failed
    assert {host for _, host in run.failed} == {name}, run.failed
    line = run.report_line(name, "munge installed, munged running and enabled")
    assert line and "FAILED" in line and "munged is not running" in line, run.output[-3000:]
    NOTES.append(f"make check, munged stopped on {name}:\n" + run.report())


def test_checks_fail_naming_the_host_with_an_edited_slurm_conf(checks, lab_host):
    name = COMPUTE_NAMES[-1]
    conf = "/etc/slurm/slurm.conf"
    with broken(lab_host(name), f"cp -a {conf} {conf}.check-test && echo '# edited by hand' >> {conf}",
                f"mv -f {conf}.check-test {conf}"):
        run = checks()
    assert run.returncode != 0, run.output[-3000:]
    assert run.failed == {("test_slurm_conf_identical", name)}, run.failed
    line = run.report_line(name, "slurm.conf identical to the other hosts'")
    assert line and "FAILED" in line and "differs from the one on" in line and HOST_NAMES[0] in line, run.output[-3000:]


def test_checks_pass_again_once_repaired(checks):
    """The breaks above are undone: the lab is as the deploy left it."""
    run = checks()
    assert run.returncode == 0 and not run.failed, run.output[-5000:]
    TIMINGS["make check (read-only, every host)"] = run.seconds
