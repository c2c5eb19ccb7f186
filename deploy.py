"""Deploy the job-running stack: `pyinfra -y inventory.py deploy.py`.

The cluster is read from the inventory and the hosts and checked once, before
any host is changed; then each layer is handed it and rolled out bottom to top,
and the verification (the top floor: nothing imports it) proves the whole.
"""

from tasks.accounting import install_accounting, register_cluster
from tasks.backup import install_backups
from tasks.cluster import current_cluster
from tasks.database import install_database
from tasks.drmaa import install_slurm_drmaa
from tasks.galaxy.account import prepare_galaxy_hosts
from tasks.galaxy.config import install_galaxy
from tasks.galaxy.venv import build_galaxy_venv_ahead
from tasks.hosts import configure_hosts
from tasks.munge import install_munge
from tasks.packages import install_stack_packages
from tasks.slurm import install_slurm
from tasks.timings import time_operations_if_asked
from tasks.verify.galaxy import start_galaxy_check_ahead, verify_galaxy
from tasks.verify.slurm import verify_slurm
from tasks.web import install_web

cluster = current_cluster()
time_operations_if_asked()
# On a re-run, the Galaxy job check runs beside the layers below; kept only if none of them changes anything.
start_galaxy_check_ahead(cluster)

configure_hosts(cluster)
prepare_galaxy_hosts(cluster)
# A first install builds Galaxy's venv in the background while the Slurm layers install.
build_galaxy_venv_ahead(cluster)
# A first install puts every layer's packages in at once; each layer below starts its own daemons.
install_stack_packages(cluster)
install_munge(cluster)
install_accounting(cluster)
install_slurm(cluster)
register_cluster(cluster)
install_slurm_drmaa(cluster)
install_database(cluster)
# nginx before Galaxy's (re)start: Galaxy's readiness and its rollback go through it.
install_web(cluster)
install_galaxy(cluster)
# Each host's scheduled backup of what it holds (a timer: a run never backs up by itself).
install_backups(cluster)
verify_slurm(cluster)
verify_galaxy(cluster)
