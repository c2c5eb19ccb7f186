"""Host checks (pytest-testinfra over SSH) on every lab host after the deploy."""

from __future__ import annotations

import pytest

from tests.lab.conftest import COMPUTE_NAMES, HOST_NAMES

CONTROLLER = HOST_NAMES[0]
pytestmark = pytest.mark.lab


@pytest.mark.parametrize("name", HOST_NAMES)
def test_munge_runs_with_syslog_and_the_key_is_private(lab_host, name):
    host = lab_host(name)
    assert host.package("munge").is_installed
    munge = host.service("munge")
    assert munge.is_running and munge.is_enabled
    assert "--syslog" in host.check_output("ps -o args= -C munged")
    key = host.file("/etc/munge/munge.key")
    assert (key.user, key.group, key.mode, key.size) == ("munge", "munge", 0o400, 128)


def test_one_munge_key_everywhere(lab_host):
    sums = {name: lab_host(name).file("/etc/munge/munge.key").sha256sum for name in HOST_NAMES}
    assert len(set(sums.values())) == 1, sums


@pytest.mark.parametrize("name", COMPUTE_NAMES)
def test_munge_credential_crosses_hosts(lab_host, name):
    credential = lab_host(CONTROLLER).check_output("munge -n")
    decoded = lab_host(name).run(f"echo {credential} | unmunge")
    assert decoded.rc == 0 and "STATUS:          Success (0)" in decoded.stdout


def test_slurm_conf_identical_and_root_owned(lab_host):
    sums = {}
    for name in HOST_NAMES:
        conf = lab_host(name).file("/etc/slurm/slurm.conf")
        assert (conf.user, conf.group, conf.mode) == ("root", "root", 0o644)
        sums[name] = conf.sha256sum
    assert len(set(sums.values())) == 1, sums


@pytest.mark.parametrize("name", HOST_NAMES)
def test_every_host_resolves_every_other(lab_host, name):
    host = lab_host(name)
    for other in HOST_NAMES:
        assert host.addr(other).is_resolvable


def test_controller_runs_slurmctld(lab_host):
    host = lab_host(CONTROLLER)
    assert host.package("slurmctld").is_installed
    slurmctld = host.service("slurmctld")
    assert slurmctld.is_running and slurmctld.is_enabled
    assert host.socket("tcp://0.0.0.0:6817").is_listening
    assert not host.package("slurmd").is_installed  # head is not a compute node in the lab


@pytest.mark.parametrize("name", COMPUTE_NAMES)
def test_compute_runs_slurmd(lab_host, name):
    host = lab_host(name)
    assert host.package("slurmd").is_installed
    slurmd = host.service("slurmd")
    assert slurmd.is_running and slurmd.is_enabled
    assert host.socket("tcp://0.0.0.0:6818").is_listening
    assert not host.package("slurmctld").is_installed
    # Recommends stay out: no optional plugin packages on a compute node.
    assert not host.package("slurm-wlm-plugins").is_installed
    # A restart of slurmd stops slurmd alone, never the jobs it started.
    assert host.check_output("systemctl show --property=KillMode slurmd") == "KillMode=process"


def test_nodes_idle_in_sinfo(lab_host):
    states = lab_host(CONTROLLER).check_output("sinfo --noheader --Node --format='%N %t'")
    assert sorted(states.splitlines()) == sorted(f"{name} idle" for name in COMPUTE_NAMES)
