"""MUNGE on every cluster host: installed, running with --syslog, one private key."""

from __future__ import annotations

import pytest

from checks.cluster import odd_ones_out
from tasks.model.slurm import MUNGE_KEY_BYTES
from tasks.platform import PACKAGES_ALL

MUNGE_KEY = "/etc/munge/munge.key"


def test_munged_runs_with_syslog(cluster_host):
    """munge installed, munged running and enabled, started with --syslog"""
    host = cluster_host.host
    for package in PACKAGES_ALL:
        assert host.package(package).is_installed, f"package {package} is not installed"
    munge = host.service("munge")
    assert munge.is_running, "munged is not running (systemctl status munge)"
    assert munge.is_enabled, "munge.service is not enabled"
    args = host.run("ps -o args= -C munged").stdout
    assert "--syslog" in args, f"munged runs without --syslog: {args.strip()!r}"


def test_munge_key_private(cluster_host):
    """munge key owned by munge, mode 0400"""
    key = cluster_host.host.file(MUNGE_KEY)
    assert key.exists, f"{MUNGE_KEY} is missing"
    assert (key.user, key.group, oct(key.mode)) == ("munge", "munge", "0o400"), \
        f"{MUNGE_KEY} is {key.user}:{key.group} {oct(key.mode)}, not munge:munge 0o400"
    low, high = MUNGE_KEY_BYTES
    assert low <= key.size <= high, f"{MUNGE_KEY} has {key.size} bytes, not {low}-{high}"


@pytest.fixture(scope="session")
def munge_key_digests(checked_cluster) -> dict[str, str]:
    """sha256 of every reachable host's key (compared here, never printed)."""
    digests = {}
    for checked in checked_cluster.hosts:
        try:
            digests[checked.name] = checked.host.check_output(f"sha256sum {MUNGE_KEY} 2>/dev/null || true").split(" ")[0]
        except Exception:  # unreachable: its own checks say so
            continue
    return digests


def test_one_munge_key_everywhere(cluster_host, munge_key_digests, controller):
    """the same munge key as the other hosts"""
    reference, odd = odd_ones_out(munge_key_digests, controller.name)
    same = cluster_host.name not in odd
    others = sorted(name for name, digest in munge_key_digests.items() if digest == reference and name != cluster_host.name)
    assert same, f"{MUNGE_KEY} differs from the key on {', '.join(others)}"


def test_munge_credential_decodes(cluster_host, controller):
    """a munge credential made on the controller decodes here"""
    if cluster_host.name == controller.name:
        pytest.skip("the controller makes the credential")
    credential = controller.host.check_output("munge -n")
    decoded = cluster_host.host.run(f"echo {credential} | unmunge")
    assert decoded.rc == 0 and "STATUS:          Success (0)" in decoded.stdout, \
        f"unmunge refused a credential from {controller.name}: {(decoded.stderr or decoded.stdout).strip()[:200]}"
