"""The local lab's hosts, as pyinfra groups: `pyinfra lab/inventory.py deploy.py`.

The hosts come from the hosts.json `lab/lab.py up` writes: LAB_INVENTORY names
that file, else it is /var/lib/pgs-lab/<LAB_NAME>/hosts.json (LAB_NAME: `pgs`,
the demo lab, unless set). The project's group_data/ applies as it does to the
admin's inventory.py (pyinfra reads <cwd>/group_data, then group_data/ beside
the inventory file: there is none here). What differs in the lab is host data:
the lab's SSH key and user, its shared galaxy_root, and its job runner.
"""

import json
import os

from pyinfra.api.exceptions import PyinfraError

_HOSTS_FILE = os.environ.get("LAB_INVENTORY") or f"/var/lib/pgs-lab/{os.environ.get('LAB_NAME') or 'pgs'}/hosts.json"


def _lab_groups(path: str) -> dict[str, list]:
    """The lab's hosts by group, from the hosts.json `lab/lab.py up` wrote. A lab booted
    with --ssh-user NAME is reached as NAME, every operation through sudo."""
    try:
        with open(path) as handle:
            lab = json.load(handle)
    except FileNotFoundError:
        raise PyinfraError(f"no lab at {path}: boot it with `make lab-up` "
                         "(or set LAB_NAME, or LAB_INVENTORY to a lab's hosts.json)") from None
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


_groups = _lab_groups(_HOSTS_FILE)
slurm_controller = _groups["slurm_controller"]
slurm_compute = _groups["slurm_compute"]
galaxy = _groups["galaxy"]
