"""The cluster model, split along the layers.

- settings.py: every setting, declared once (name, scope, default, meaning)
- hosts.py: inventory hosts, their facts and roles
- slurm.py: nodes, partitions, scheduling, the munge key
- memory.py: memory scheduled (DefMemPerCPU), kept back per node, enforced (cgroups or OverMemoryKill)
- galaxy.py: the Galaxy server, its destinations, slurm-drmaa, jobs in flight
- jobconf.py: job_conf.xml built from the Galaxy model and checked as Galaxy needs it
- cluster.py: `build_cluster`, which checks everything and builds the `Cluster`
- problems.py: how problems are reported (all at once, before any host is touched)
"""

from tasks.model.cluster import Cluster, build_cluster
from tasks.model.galaxy import Destination, Galaxy, GalaxyJob, SlurmDrmaa, runner_switch_problems, sha256_of
from tasks.model.hosts import (
    COMPUTE_GROUP, CONTROLLER_GROUP, GALAXY_GROUP, ClusterHost, HostFacts, InventoryHost,
)
from tasks.model.problems import ClusterConfigError
from tasks.model.slurm import Node, Partition, parse_node_lines

__all__ = [
    "COMPUTE_GROUP", "CONTROLLER_GROUP", "GALAXY_GROUP", "Cluster", "ClusterConfigError", "ClusterHost", "Destination",
    "Galaxy", "GalaxyJob", "HostFacts", "InventoryHost", "Node", "Partition", "SlurmDrmaa", "build_cluster",
    "parse_node_lines", "runner_switch_problems", "sha256_of",
]
