"""Deploy the job-running stack: `pyinfra -y inventory.py deploy.py`.

The cluster is read from the inventory and the hosts and checked once, before
any host is changed; then each layer is rolled out bottom to top and verified.
"""

from tasks.cluster import current_cluster
from tasks.hosts import configure_hosts
from tasks.munge import install_munge
from tasks.slurm import install_slurm
from tasks.verify import verify_slurm

cluster = current_cluster()

configure_hosts(cluster)
install_munge(cluster)
install_slurm(cluster)
verify_slurm(cluster)
