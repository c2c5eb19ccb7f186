"""Cluster-wide settings, read from the controller's data (this file applies to every host).

Nothing is set here: every setting has its default, declared once with its meaning in
tasks/model/settings.py (the README's settings table). Uncomment what your site changes;
a setting given in the controller host's own dict in the inventory is read as well.
"""

# Slurm's ClusterName (default "galaxy"); one name per cluster when several share a database.
# A deployed cluster keeps its name: slurmdbd's database holds it (a new name needs another
# slurm_accounting_storage_loc).
# slurm_cluster_name = "mycluster"

# Partitions: name, nodes ("ALL" or node names), default, max_time, and any other
# PartitionName options under "extra".
# slurm_partitions = [
#     {"name": "main", "nodes": "ALL", "default": True, "max_time": "7-00:00:00"},
#     {"name": "short", "nodes": ["c1", "c2"], "max_time": "1:00:00", "extra": {"PriorityTier": 2}},
# ]

# Scheduling: select/cons_tres with CPUs as the consumable resource by default.
# slurm_select_type_parameters = "CR_Core"

# Process tracking and task plugins: chosen from the hosts' cgroups unless both are set.
# slurm_proctrack_type = "proctrack/linuxproc"
# slurm_task_plugin = "task/affinity"

# Any other slurm.conf settings.
# slurm_config_extra = {"MaxJobCount": 10000}

# /etc/hosts: off when DNS resolves every cluster host.
# manage_etc_hosts = False

# The cluster's munge key from a file of yours (32-1024 bytes) instead of the controller's.
# munge_key_file = "/root/secrets/munge.key"

# Slurm accounting (slurmdbd with MariaDB on the controller): off, or your own database server.
# slurm_accounting = False
# slurm_accounting_storage_host = "db.example.org"
# slurm_accounting_storage_pass_file = "/root/secrets/slurmdbd-password"

# The Slurm layers only, without Galaxy.
# deploy_galaxy = False
