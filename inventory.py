"""The hosts of the cluster, in three groups: replace the example hosts with yours.

- slurm_controller: exactly one host; it runs slurmctld.
- slurm_compute: one or more hosts that run jobs (slurmd). The controller may be one too.
- galaxy: the Galaxy server (it submits jobs, so it also gets the Slurm clients).

Cluster settings live in group_data/all.py; per-host settings go in the host's dict, e.g.
("c1.example.org", {"cluster_address": "10.0.0.11", "slurm_node": {"cpus": 8}}).
The local lab has an inventory of its own: lab/inventory.py.
"""

# Real hosts: the SSH name, and the address the other hosts reach it on
# (for /etc/hosts; set manage_etc_hosts = False in group_data/all.py when DNS works).
slurm_controller = [("head.example.org", {"cluster_address": "192.0.2.10"})]
slurm_compute = [
    ("node1.example.org", {"cluster_address": "192.0.2.11"}),
    ("node2.example.org", {"cluster_address": "192.0.2.12"}),
]
galaxy = [("head.example.org", {"cluster_address": "192.0.2.10"})]
