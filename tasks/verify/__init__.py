"""Verification at the end of the deploy: the cluster works, not just its files.

- common.py: report lines, bounded waits, failures, `file_present`
- slurm.py: nodes healthy in sinfo, srun on free nodes, a batch job (and sacct)
- galaxy.py: Galaxy ready, its accounts' own keys, a Galaxy upload job through Slurm
"""
