"""Parsing what the HostProfile fact reads from a host."""

from tasks.facts import parse_host_profile


def profile(*extra: str) -> list[str]:
    return ["hostname=node1.example.org", "cpus=4", "cpu=0,0,0", "cpu=1,0,0", "cpu=2,0,1", "cpu=3,0,1",
            "memory_kb=24684092", "codename=bookworm", "slurm_version=", "cgroup_fs=tmpfs", "python=3.11",
            "user=root:0", "user=munge:100", "group=root:0", "group=munge:101", *extra]


def test_topology_memory_and_release():
    facts = parse_host_profile(profile())
    assert (facts.cpus, facts.sockets, facts.cores_per_socket, facts.threads_per_core) == (4, 1, 2, 2)
    assert facts.memory_mb == 24105  # what `slurmd -C` reports for that MemTotal
    assert (facts.hostname, facts.codename, facts.slurm_version) == ("node1.example.org", "bookworm", None)


def test_lab_container_cgroups_are_read_only():
    facts = parse_host_profile(profile("mount:/sys/fs/cgroup=ro", "mount:/sys/fs/cgroup/freezer=ro"))
    assert not facts.cgroup_writable


def test_cgroup_v2_writable():
    lines = [line for line in profile() if not line.startswith("cgroup_fs")]
    facts = parse_host_profile(lines + ["cgroup_fs=cgroup2fs", "mount:/sys/fs/cgroup=rw"])
    assert facts.cgroup_writable and facts.cgroup_fs == "cgroup2fs"


def test_v1_host_with_writable_freezer():
    facts = parse_host_profile(profile("mount:/sys/fs/cgroup=ro", "mount:/sys/fs/cgroup/freezer=rw"))
    assert facts.cgroup_writable


def test_installed_slurm_version():
    lines = [line for line in profile() if not line.startswith("slurm_version")]
    assert parse_host_profile(lines + ["slurm_version=22.05.8-4+deb12u3"]).slurm_version == "22.05.8-4+deb12u3"


def test_python_and_accounts():
    facts = parse_host_profile(profile())
    assert facts.python == "3.11"
    assert facts.users == {"root": 0, "munge": 100} and facts.groups == {"root": 0, "munge": 101}
