"""The hosts of the cluster, in three groups.

- slurm_controller: exactly one host; it runs slurmctld.
- slurm_compute: one or more hosts that run jobs (slurmd). The controller may be one too.
- galaxy: the Galaxy server (it submits jobs, so it also gets the Slurm clients).

With LAB_INVENTORY set (`make demo` and `make test` set it), the hosts are the
local lab's, read from the file `lab/lab.py up` writes. Otherwise the hosts are
the ones listed at the bottom: replace them with yours. Cluster settings live
in group_data/all.py; per-host settings go in the host's dict, e.g.
("c1.example.org", {"cluster_address": "10.0.0.11", "slurm_node": {"cpus": 8}}).
"""

import json
import os

_LAB_INVENTORY = os.environ.get("LAB_INVENTORY")


def _lab_groups(path: str) -> dict[str, list]:
    """The lab's hosts by group, from the hosts.json `lab/lab.py up` wrote. A lab booted
    with --ssh-user NAME is reached as NAME, every operation through sudo."""
    with open(path) as handle:
        lab = json.load(handle)
    ssh_user = lab.get("ssh_user", "root")
    ssh = {
        "ssh_user": ssh_user,
        "ssh_key": lab["ssh_key"],
        "ssh_strict_host_key_checking": "no",
        "ssh_known_hosts_file": "/dev/null",
        **({"_sudo": True} if ssh_user != "root" else {}),
    }
    groups: dict[str, list] = {"slurm_controller": [], "slurm_compute": [], "galaxy": []}
    for lab_host in lab["hosts"]:
        for group in lab_host["groups"]:
            data = {"ssh_hostname": lab_host["address"], **ssh}
            if group == "galaxy":
                data.update(_lab_galaxy())
            groups[group].append((lab_host["name"], data))
    return groups


def _lab_galaxy() -> dict:
    """The lab shares galaxy_root by a bind mount, and reaches no release downloads:
    the DRMAA runner needs a slurm-drmaa tarball given in SLURM_DRMAA_TARBALL."""
    tarball = os.environ.get("SLURM_DRMAA_TARBALL")
    runner = {"galaxy_job_runner": "drmaa", "slurm_drmaa": {"tarball": tarball}} if tarball else {"galaxy_job_runner": "cli"}
    return {"shared_fs": "existing", **runner}


if _LAB_INVENTORY:
    _groups = _lab_groups(_LAB_INVENTORY)
    slurm_controller = _groups["slurm_controller"]
    slurm_compute = _groups["slurm_compute"]
    galaxy = _groups["galaxy"]
else:
    # Real hosts: the SSH name, and the address the other hosts reach it on
    # (for /etc/hosts; set manage_etc_hosts = False in group_data/all.py when DNS works).
    slurm_controller = [("head.example.org", {"cluster_address": "192.0.2.10"})]
    slurm_compute = [
        ("node1.example.org", {"cluster_address": "192.0.2.11"}),
        ("node2.example.org", {"cluster_address": "192.0.2.12"}),
    ]
    galaxy = [("head.example.org", {"cluster_address": "192.0.2.10"})]
