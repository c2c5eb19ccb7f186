"""Memory as a scheduled and enforced resource: what each node offers jobs, what a job
gets when it asks for none, and what stops a job that uses more than it asked for.

- Scheduled: `SelectTypeParameters` with a `*_Memory` base makes memory consumable
  (slurm.conf(5)). Then a job that asks for no memory gets `DefMemPerCPU` per CPU; without
  one Slurm's default is `DefMemPerNode=UNLIMITED`, and such a job takes its whole node.
  The default here is the smallest node's `RealMemory / CPUs`, so jobs that ask for
  nothing can still use every CPU of every node.
- Kept back: a node offers jobs its memory minus a reserve for the system and the daemons
  (`RealMemory` below MemTotal; Slurm drains a node whose RealMemory is above what it has).
  The reserve is 5 % (stackhpc's openhpc role writes 95 % of MemTotal,
  `openhpc_ram_multiplier: 0.95`), at least 512 MB; a compute host that also runs Galaxy
  (its web workers, handlers and database) keeps half of the rest back as well.
- Enforced: with writable cgroups, cgroup.conf's `ConstrainRAMSpace`/`ConstrainSwapSpace`
  (the kernel ends an over-limit job OUT_OF_MEMORY inside its own cgroup). Without them
  (containers whose cgroups are read-only), jobacct_gather's `OverMemoryKill`: the
  step is killed at the next sample over its limit, `JobAcctGatherFrequency` apart
  (slurm.conf(5) recommends the cgroup way where it is available).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

RESERVE_FRACTION = 0.05
RESERVE_MIN_MB = 512
# jobacct_gather's sampling period (seconds) where it is what enforces memory (Slurm's default: 30).
OVER_MEMORY_SAMPLE_SECONDS = 10

ENFORCE_CGROUP = "cgroup"
ENFORCE_OVER_MEMORY_KILL = "over-memory-kill"
# cgroup.conf lines that constrain a job's memory (cgroup.conf(5)); AllowedSwapSpace defaults to 0.
CGROUP_MEMORY_CONF = {"ConstrainRAMSpace": "yes", "ConstrainSwapSpace": "yes"}
# slurm.conf keys written from settings: given in slurm_config_extra they would be written twice.
MEMORY_CONF_KEYS = {"DefMemPerCPU": "slurm_def_mem_per_cpu", "DefMemPerNode": "slurm_def_mem_per_cpu",
                    "JobAcctGatherParams": None, "JobAcctGatherFrequency": None}


def memory_consumable(select_type_parameters: str) -> bool:
    """True when SelectTypeParameters' base (CR_CPU_Memory, CR_Core_Memory, CR_Memory, ...) schedules memory."""
    return any(part.endswith("Memory") for part in select_type_parameters.split(","))


def default_reserve_mb(total_mb: int, runs_galaxy: bool) -> int:
    """MB a host keeps back from jobs by default (see the module docstring)."""
    reserve = max(RESERVE_MIN_MB, math.ceil(total_mb * RESERVE_FRACTION))
    if runs_galaxy:
        reserve += max(total_mb - reserve, 0) // 2
    return reserve


def reserve_problems(value: Any) -> list[str]:
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
        return []
    return [f"slurm_memory_reserved: {value!r} is not a whole number of MB (0 or more); give e.g. 1024, or None "
            f"for the default ({RESERVE_FRACTION:.0%} of each node's memory, at least {RESERVE_MIN_MB} MB)"]


@dataclass(frozen=True)
class NodeMemory:
    """One node's memory: what the host has and what it keeps back (MB)."""

    total: int  # MemTotal; 0 when unknown (an unreachable host kept from slurm.conf)
    reserved: int  # total - RealMemory; 0 when RealMemory was given (slurm_node.real_memory)
    given: bool  # RealMemory is the inventory's slurm_node.real_memory


@dataclass(frozen=True)
class MemoryPolicy:
    """How the cluster schedules and enforces memory (slurm.conf and cgroup.conf lines)."""

    consumable: bool
    def_mem_per_cpu: int | None  # MB per CPU for a job that asks for none; None: not consumable
    derived_default: bool  # def_mem_per_cpu is the smallest node's RealMemory / CPUs
    enforcement: str  # ENFORCE_CGROUP or ENFORCE_OVER_MEMORY_KILL
    nodes: Mapping[str, NodeMemory]

    def slurm_conf(self) -> dict[str, str]:
        """slurm.conf lines for memory, beside SelectTypeParameters."""
        lines = {}
        if self.def_mem_per_cpu is not None:
            lines["DefMemPerCPU"] = str(self.def_mem_per_cpu)
        if self.enforcement == ENFORCE_OVER_MEMORY_KILL:
            lines["JobAcctGatherParams"] = "OverMemoryKill"
            lines["JobAcctGatherFrequency"] = f"task={OVER_MEMORY_SAMPLE_SECONDS}"
        return lines

    def summary(self) -> str:
        """One line for the run's output: the default, what each node keeps back and why, the enforcement."""
        if self.consumable:
            how = "the smallest node's RealMemory / CPUs" if self.derived_default else "slurm_def_mem_per_cpu"
            scheduled = f"consumable; a job asking for none gets DefMemPerCPU={self.def_mem_per_cpu} MB per CPU ({how})"
        else:
            scheduled = "not consumable (SelectTypeParameters has no _Memory): jobs share nodes by CPUs only"
        kept = ", ".join(
            f"{name} {node.reserved} MB of {node.total}" if not node.given else f"{name} RealMemory as given"
            for name, node in self.nodes.items() if node.total)
        if self.enforcement == ENFORCE_CGROUP:
            enforced = "the kernel within each job's cgroup (cgroup.conf ConstrainRAMSpace, ConstrainSwapSpace)"
        else:
            enforced = (f"jobacct_gather's OverMemoryKill every {OVER_MEMORY_SAMPLE_SECONDS} s "
                        "(cgroups are not writable on every host)")
        return (f"Slurm memory: {scheduled}; kept back from jobs for the system and daemons: {kept or 'nothing known'}; "
                f"a job over its memory is stopped by {enforced}")


def memory_policy(select_type_parameters: str, def_mem_per_cpu: Any, node_cpus: Sequence[tuple[str, int, int]],
                  node_memory: Mapping[str, NodeMemory], cgroup_constrains: bool, config_extra: Mapping[str, Any],
                  problems: list[str], warnings: list[str]) -> MemoryPolicy:
    """The cluster's memory policy, checked.

    `node_cpus`: (node name, CPUs, RealMemory MB) of every node in slurm.conf;
    `cgroup_constrains`: task/cgroup runs with a cgroup.conf (writable cgroups on every host).
    Problems: a memory key in slurm_config_extra, a default that is not a positive number of MB,
    a default on a cluster that does not schedule memory, a default no node can give one CPU's job.
    """
    for key, setting in MEMORY_CONF_KEYS.items():
        if key in config_extra:
            fix = f"set {setting} instead" if setting else "the deploy chooses it with the memory enforcement (README: memory)"
            problems.append(f"slurm_config_extra: {key} is written by the deploy; {fix}")
    consumable = memory_consumable(select_type_parameters)
    given = def_mem_per_cpu is not None
    value: int | None = None
    if given and (isinstance(def_mem_per_cpu, bool) or not isinstance(def_mem_per_cpu, int) or def_mem_per_cpu <= 0):
        problems.append(
            f"slurm_def_mem_per_cpu: {def_mem_per_cpu!r} is not a positive whole number of MB; with memory consumable a "
            "job asking for none would take its whole node (Slurm's DefMemPerNode=UNLIMITED): give e.g. 2048, or None "
            "for the smallest node's RealMemory / CPUs")
    elif given and not consumable:
        problems.append(
            f"slurm_def_mem_per_cpu: has no effect with SelectTypeParameters={select_type_parameters} (memory is not "
            "scheduled); use a _Memory base such as CR_CPU_Memory, or leave slurm_def_mem_per_cpu unset")
    elif given:
        value = def_mem_per_cpu
        largest = max((memory for _, _, memory in node_cpus), default=0)
        if node_cpus and value > largest:
            problems.append(
                f"slurm_def_mem_per_cpu: {value} MB is more than any node offers jobs (the largest RealMemory is "
                f"{largest} MB): a job asking for nothing could never start; give at most {largest}")
        idle = [f"{name} ({memory // value} of {cpus} CPUs)" for name, cpus, memory in node_cpus if memory // value < cpus]
        if idle and value <= largest:
            warnings.append(f"slurm_def_mem_per_cpu: {value} MB per CPU: jobs asking for no memory can use only "
                            f"{', '.join(idle)}")
    elif consumable and node_cpus:
        value = min(memory // cpus for _, cpus, memory in node_cpus)
    return MemoryPolicy(
        consumable=consumable,
        def_mem_per_cpu=value if consumable else None,
        derived_default=consumable and not given,
        enforcement=ENFORCE_CGROUP if cgroup_constrains else ENFORCE_OVER_MEMORY_KILL,
        nodes=dict(node_memory),
    )
