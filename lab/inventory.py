"""The local lab's hosts, as pyinfra groups: `pyinfra lab/inventory.py deploy.py`.

The hosts come from the lab's record, the hosts.json `lab/lab.py up` writes: LAB_INVENTORY
names that file, else it is LAB_STATE_ROOT/<LAB_NAME>/hosts.json, /var/lib/pgs-lab/pgs/hosts.json
for the demo lab (lab/settings.py: every variable's default and meaning). The project's
group_data/ applies as it does to the admin's inventory.py (pyinfra reads <cwd>/group_data,
then group_data/ beside the inventory file: there is none here). What differs in the lab is
host data: the lab's SSH key and user, its shared galaxy_root, and its Galaxy job runner.

The runner is the one the lab records, not the deploying shell's: a lab made with a
slurm-drmaa tarball (`lab.py up --drmaa-tarball`, default SLURM_DRMAA_TARBALL, which the
Makefile sets) uses the DRMAA runner, slurm-drmaa built from that tarball; a lab made
without one uses the CLI runner. Every deploy of the lab, `make deploy` or a plain
`pyinfra lab/inventory.py deploy.py`, keeps it; `lab.py status` shows it and
`lab.py runner --drmaa-tarball PATH` / `--cli` changes it (`--data galaxy_job_runner=...`
overrides it for one run, as any host data).
"""

import json
import os
import sys

from pyinfra.api.exceptions import PyinfraError

_CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _CHECKOUT not in sys.path:
    sys.path.append(_CHECKOUT)
from lab import settings

_HOSTS_FILE = str(settings.lab_inventory())


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
    galaxy_data = _lab_galaxy(lab, path)
    groups: dict[str, list] = {"slurm_controller": [], "slurm_compute": [], "galaxy": []}
    for lab_host in lab["hosts"]:
        for group in lab_host["groups"]:
            data = {"ssh_hostname": lab_host["address"], **ssh}
            if group == "galaxy":
                data.update(galaxy_data)
            groups[group].append((lab_host["name"], data))
    return groups


def _lab_galaxy(lab: dict, path: str) -> dict:
    """The lab shares galaxy_root by a bind mount, and its Galaxy job runner is the one
    hosts.json records: drmaa with the slurm-drmaa tarball the lab was made with, or cli."""
    runner, tarball = lab.get("galaxy_job_runner"), lab.get("slurm_drmaa_tarball")
    name = lab.get("lab", "NAME")
    if runner == "drmaa" and tarball:
        job_runner = {"galaxy_job_runner": "drmaa", "slurm_drmaa": {"tarball": tarball}}
    elif runner == "cli":
        job_runner = {"galaxy_job_runner": "cli"}
    else:
        raise PyinfraError(
            f"{path} records no Galaxy job runner (a lab made before labs recorded it): record the one it has with "
            f"`python3 lab/lab.py --name {name} runner --drmaa-tarball PATH` (DRMAA) or `... runner --cli`")
    return {"shared_fs": "existing", **job_runner}


_groups = _lab_groups(_HOSTS_FILE)
slurm_controller = _groups["slurm_controller"]
slurm_compute = _groups["slurm_compute"]
galaxy = _groups["galaxy"]
