"""Verification at the end of the deploy, the top floor: nothing imports it.

- slurm.py: nodes healthy in sinfo, srun on free nodes, a batch job (and sacct)
- galaxy.py: a Galaxy upload job through Slurm, and one through each further destination

What a layer waits for (Galaxy ready, node states) lives below, with the layer
(tasks.galaxy.config) or in tasks.checks and tasks.slurm_status.
"""
