"""Cluster-wide settings. Every one is declared with its default in tasks/model/settings.py;
what is set here is what a site usually changes."""

# Slurm's ClusterName.
slurm_cluster_name = "galaxy"

# Partitions: name, nodes ("ALL" or a list of node names), default, max_time,
# and any other PartitionName options under "extra", e.g. {"OverSubscribe": "NO"}.
slurm_partitions = [
    {"name": "debug", "nodes": "ALL", "default": True, "max_time": "INFINITE"},
]

# Scheduling by CPU: select/cons_tres (select/cons_res is gone since Slurm 23.11).
slurm_select_type = "select/cons_tres"
slurm_select_type_parameters = "CR_CPU"

# Process tracking and task plugins: None lets the deploy choose from the hosts'
# cgroup mode (proctrack/cgroup with a writable cgroup hierarchy, else
# proctrack/linuxproc); set both to force a choice.
slurm_proctrack_type = None
slurm_task_plugin = None

# Any other slurm.conf settings, e.g. {"MaxJobCount": 10000}.
slurm_config_extra = {}

# Write every cluster host into /etc/hosts; False when DNS resolves them all.
manage_etc_hosts = True

# None: the munge key the controller has (or makes) is the cluster's key.
# A path: this key file (32-1024 bytes) goes to every host instead.
munge_key_file = None

# Slurm accounting: slurmdbd with MariaDB from Debian on the controller (or on the
# host of an optional `slurm_dbd` group), so that `sacct` works and Galaxy's
# runner learns how a job ended after slurmctld forgot it. False: no accounting.
slurm_accounting = True
