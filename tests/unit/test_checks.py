"""checks/: hosts, SSH settings and roles from any inventory file, as pyinfra loads it."""

from __future__ import annotations

from checks.cluster import CheckedCluster, load_inventory, odd_ones_out


def write_inventory(tmp_path) -> str:
    (tmp_path / "group_data").mkdir()
    (tmp_path / "group_data" / "all.py").write_text('ssh_user = "debian"\nssh_key = "~/.ssh/cluster"\n_sudo = True\n'
                                                    "deploy_galaxy = False\n")
    path = tmp_path / "site.py"
    path.write_text(
        'slurm_controller = [("head.example.org", {"ssh_port": 2222})]\n'
        'slurm_compute = ["n1.example.org", ("n2.example.org", {"ssh_hostname": "192.0.2.12", "ssh_user": "ops"})]\n'
        'galaxy = ["head.example.org"]\n'
    )
    return str(path)


def test_hosts_reached_as_pyinfra_would(tmp_path):
    cluster = CheckedCluster(load_inventory(write_inventory(tmp_path), cwd=str(tmp_path / "elsewhere")))
    head, n2 = cluster.get("head.example.org").connection, cluster.get("n2.example.org").connection
    assert (head.hostname, head.user, head.port, head.sudo) == ("head.example.org", "debian", 2222, True)
    assert head.key.endswith("/.ssh/cluster") and not head.key.startswith("~")
    assert (n2.hostname, n2.user, n2.port) == ("192.0.2.12", "ops", None)


def test_command_line_overrides_win(tmp_path):
    cluster = CheckedCluster(load_inventory(write_inventory(tmp_path), {"ssh_user": "root", "_sudo": False}))
    assert {h.connection.user for h in cluster.hosts} == {"root"}
    assert not any(h.connection.sudo for h in cluster.hosts)


def test_roles_from_groups_and_galaxy_off(tmp_path):
    cluster = CheckedCluster(load_inventory(write_inventory(tmp_path)))
    assert [h.name for h in cluster.with_role("controller")] == ["head.example.org"]
    assert [h.name for h in cluster.with_role("compute")] == ["n1.example.org", "n2.example.org"]
    assert cluster.with_role("galaxy") == []  # deploy_galaxy = False


def test_slurmdbd_host_from_settings(tmp_path):
    """slurmdbd's host as the model chooses it: the controller (slurm_accounting defaults to on),
    the slurm_dbd group's host, none when slurm_accounting is off."""
    path = write_inventory(tmp_path)
    assert [h.name for h in CheckedCluster(load_inventory(path)).with_role("slurmdbd")] == ["head.example.org"]
    with_dbd = tmp_path / "with_dbd.py"
    with_dbd.write_text((tmp_path / "site.py").read_text() + 'slurm_dbd = ["n1.example.org"]\n')
    assert [h.name for h in CheckedCluster(load_inventory(str(with_dbd))).with_role("slurmdbd")] == ["n1.example.org"]
    off = CheckedCluster(load_inventory(path, {"slurm_accounting": False}))
    assert off.with_role("slurmdbd") == []


def test_odd_ones_out_names_the_edited_host():
    assert odd_ones_out({"head": "a", "c1": "a", "c2": "b"}, "head") == ("a", ["c2"])
    assert odd_ones_out({"head": "b", "c1": "a", "c2": "a"}, "head") == ("a", ["head"])
    # A tie (two hosts): the controller's copy is the reference.
    assert odd_ones_out({"head": "a", "c1": "b"}, "head") == ("a", ["c1"])


def test_testinfra_host_carries_the_ssh_settings(tmp_path):
    """The testinfra handle (not connected yet) has pyinfra's hostname, user, port, key and sudo."""
    cluster = CheckedCluster(load_inventory(write_inventory(tmp_path), {"ssh_strict_host_key_checking": "no"}))
    backend = cluster.get("head.example.org").connection.testinfra_host().backend
    assert (backend.host.name, backend.host.user, backend.host.port) == ("head.example.org", "debian", "2222")
    assert backend.ssh_identity_file.endswith("/.ssh/cluster") and backend.sudo is True
    with open(backend.ssh_config) as config:  # testinfra takes StrictHostKeyChecking from a file only
        assert "StrictHostKeyChecking no" in config.read()


def test_connector_keys_are_not_settings(tmp_path):
    """The model the checks build sees ssh_user & co. as the SSH connector's, as the deploy does."""
    cluster = CheckedCluster(load_inventory(write_inventory(tmp_path)))
    assert {"ssh_user", "ssh_key", "ssh_port", "ssh_hostname"} <= cluster.get("n2.example.org").connector_keys


def test_check_modules_import():
    """The checks import what they use from tasks/ (a renamed name fails here, not on a cluster)."""
    import importlib

    for module in ("checks.test_1_munge", "checks.test_2_slurm", "checks.test_3_galaxy", "checks.test_4_services"):
        importlib.import_module(module)


def test_a_node_drained_by_the_health_check_is_told_from_an_admins_drain():
    from tasks.checks import drained_by_health_check

    line = "NodeName=c1 Arch=x86_64 CoresPerSocket=2 State={state} ThreadsPerCore=1 Reason={reason} [root@2026-12-08T01:05:25]"
    assert drained_by_health_check(line.format(state="IDLE+DRAIN", reason="pgs-health: /srv/galaxy is missing"))
    assert drained_by_health_check(line.format(state="DRAINED", reason="pgs-health: /srv/galaxy is missing"))
    assert not drained_by_health_check(line.format(state="IDLE+DRAIN", reason="disk swap"))
    assert not drained_by_health_check(line.format(state="IDLE", reason="pgs-health: /srv/galaxy is missing"))
    assert not drained_by_health_check("")
