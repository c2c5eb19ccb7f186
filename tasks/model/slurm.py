"""Slurm's part of the model: nodes, partitions, scheduling and the munge key."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tasks.model.hosts import InventoryHost, node_name
from tasks.model.memory import default_reserve_mb
from tasks.model.problems import check_name, check_unique

NODE_OVERRIDE_KEYS = ("cpus", "sockets", "cores_per_socket", "threads_per_core", "real_memory")

SELECT_TYPES = ("select/cons_tres", "select/cons_res", "select/linear")
SELECT_TYPE_BASES = ("CR_CPU", "CR_Core", "CR_Socket", "CR_Memory", "CR_CPU_Memory", "CR_Core_Memory", "CR_Socket_Memory")
SELECT_TYPE_MODIFIERS = (
    "CR_ONE_TASK_PER_CORE", "CR_CORE_DEFAULT_DIST_BLOCK", "CR_LLN", "CR_Pack_Nodes", "LL_SHARED_GRES",
    "MULTIPLE_SHARING_GRES_PJ", "ENFORCE_BINDING_GRES", "ONE_TASK_PER_SHARING_GRES",
)
MUNGE_KEY_BYTES = (32, 1024)


@dataclass(frozen=True)
class Node:
    """A Slurm compute node, as slurm.conf describes it."""

    name: str
    cpus: int
    sockets: int
    cores_per_socket: int
    threads_per_core: int
    real_memory: int


@dataclass(frozen=True)
class Partition:
    name: str
    nodes: tuple[str, ...]
    default: bool
    max_time: str
    extra: Mapping[str, str] = field(default_factory=dict)


def node_from(host: InventoryHost, problems: list[str], warnings: list[str], known_nodes: Mapping[str, Node],
              reserve_mb: int | None = None, runs_galaxy: bool = False) -> Node | None:
    """A compute node from its detected hardware, with the inventory's overrides applied.

    Its RealMemory is the host's memory less what it keeps back for the system and the
    daemons (`reserve_mb`, None: tasks.model.memory's default), unless slurm_node.real_memory
    gives it.
    """
    facts = host.facts
    if facts is None:
        known = known_nodes.get(node_name(host))
        if known is None:
            warnings.append(f"host {host.name} is unreachable and not in the controller's slurm.conf yet: "
                            "it stays out of the cluster until a run reaches it")
        else:
            warnings.append(f"host {host.name} is unreachable: its slurm.conf entry is kept as it is; "
                            "re-run when it is back")
        return known
    detected = {
        "cpus": facts.cpus,
        "sockets": facts.sockets,
        "cores_per_socket": facts.cores_per_socket,
        "threads_per_core": facts.threads_per_core,
        "real_memory": facts.memory_mb,
    }
    overrides = host.data.get("slurm_node") or {}
    values = dict(detected)
    for key, value in overrides.items():
        where = f"host {host.name}: slurm_node.{key}"
        if key not in NODE_OVERRIDE_KEYS:
            problems.append(f"{where}: unknown setting; use one of {', '.join(NODE_OVERRIDE_KEYS)}")
        elif isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            problems.append(f"{where}: {value!r} is not a positive whole number; give e.g. {detected[key]}")
        elif value > detected[key]:
            problems.append(
                f"{where}: {value} is more than the host has ({detected[key]} detected); "
                f"Slurm would drain the node. Use at most {detected[key]}"
            )
        else:
            values[key] = value
    if "real_memory" not in overrides:
        reserve = default_reserve_mb(facts.memory_mb, runs_galaxy) if reserve_mb is None else reserve_mb
        values["real_memory"] = facts.memory_mb - reserve
        if values["real_memory"] <= 0:
            problems.append(
                f"host {host.name}: has {facts.memory_mb} MB and keeps {reserve} MB back for the system, which leaves "
                f"nothing for jobs; give it slurm_node.real_memory (MB for jobs) or a smaller slurm_memory_reserved")
    if "cpus" in overrides and not any(k in overrides for k in ("sockets", "cores_per_socket", "threads_per_core")):
        # A smaller CPU count alone: describe it as one socket of single-thread cores.
        values.update(sockets=1, cores_per_socket=values["cpus"], threads_per_core=1)
    topology = values["sockets"] * values["cores_per_socket"] * values["threads_per_core"]
    if topology != values["cpus"]:
        problems.append(
            f"host {host.name}: slurm_node gives cpus={values['cpus']} but sockets x cores_per_socket x "
            f"threads_per_core = {topology}; make them agree"
        )
    return Node(name=node_name(host), **values)


def parse_node_lines(lines: list[str]) -> dict[str, Node]:
    """NodeName lines of a slurm.conf this deploy wrote -> nodes by name."""
    keys = {"CPUs": "cpus", "Sockets": "sockets", "CoresPerSocket": "cores_per_socket",
            "ThreadsPerCore": "threads_per_core", "RealMemory": "real_memory"}
    nodes = {}
    for line in lines:
        fields = dict(field.split("=", 1) for field in line.split() if "=" in field)
        if "NodeName" in fields and all(key in fields for key in keys):
            nodes[fields["NodeName"]] = Node(name=fields["NodeName"], **{keys[k]: int(fields[k]) for k in keys})
    return nodes


def partitions_from(raw: Any, node_names: list[str], problems: list[str]) -> tuple[Partition, ...]:
    if not isinstance(raw, list) or not raw:
        problems.append("slurm_partitions: must be a non-empty list like [{'name': 'debug', 'nodes': 'ALL', 'default': True}]")
        return ()
    partitions = []
    for index, entry in enumerate(raw):
        where = f"slurm_partitions[{index}]"
        if not isinstance(entry, Mapping) or "name" not in entry:
            problems.append(f"{where}: must be a mapping with at least a 'name'")
            continue
        name = str(entry["name"])
        where = f"slurm_partitions[{index}] ({name})"
        check_name(name, f"{where}.name", problems)
        nodes = entry.get("nodes", "ALL")
        if nodes == "ALL":
            members = tuple(node_names)
        else:
            members = tuple(nodes) if isinstance(nodes, (list, tuple)) else tuple(str(nodes).split(","))
            unknown = [n for n in members if n not in node_names]
            if unknown:
                problems.append(
                    f"{where}.nodes: {', '.join(unknown)} not a compute node; "
                    f"use 'ALL' or names from: {', '.join(node_names) or '(no compute nodes)'}"
                )
        partitions.append(
            Partition(
                name=name,
                nodes=members,
                default=bool(entry.get("default", False)),
                max_time=str(entry.get("max_time", "INFINITE")),
                extra={str(k): str(v) for k, v in entry.get("extra", {}).items()},
            )
        )
    check_unique([p.name for p in partitions], "slurm_partitions name", problems, fix="rename or merge them")
    defaults = [p.name for p in partitions if p.default]
    if len(defaults) > 1:
        problems.append(f"slurm_partitions: {', '.join(defaults)} are all marked default; mark exactly one")
    return tuple(partitions)


def select_type_from(value: Any, problems: list[str], warnings: list[str]) -> str:
    select_type = str(value)
    if select_type not in SELECT_TYPES:
        problems.append(f"slurm_select_type: '{select_type}' is unknown; use select/cons_tres (or select/linear)")
    elif select_type == "select/cons_res":
        # cons_res is gone since Slurm 23.11; cons_tres does all it did, so map it.
        warnings.append("slurm_select_type: select/cons_res was removed in Slurm 23.11; using select/cons_tres")
        return "select/cons_tres"
    return select_type


def select_type_parameters_from(value: Any, problems: list[str]) -> str:
    parts = [p.strip() for p in str(value).split(",") if p.strip()]
    bases = [p for p in parts if p in SELECT_TYPE_BASES]
    unknown = [p for p in parts if p not in SELECT_TYPE_BASES and p not in SELECT_TYPE_MODIFIERS]
    if unknown or len(bases) != 1:
        problems.append(
            f"slurm_select_type_parameters: '{value}' is not valid for Slurm: "
            + (f"unknown {', '.join(unknown)}; " if unknown else "")
            + f"give exactly one of {', '.join(SELECT_TYPE_BASES)}, optionally with modifiers like CR_LLN"
        )
    return ",".join(parts)


def check_munge_key_file(path: Any, problems: list[str]) -> None:
    if path is None:
        return
    if not os.path.isfile(str(path)):
        problems.append(f"munge_key_file: {path} does not exist; give the path of an existing key or leave it unset")
        return
    size = os.path.getsize(str(path))
    low, high = MUNGE_KEY_BYTES
    if not low <= size <= high:
        problems.append(
            f"munge_key_file: {path} has {size} bytes; munge needs {low} to {high} "
            "(make one with `mungekey -c -k FILE` or `dd if=/dev/urandom bs=1 count=128 of=FILE`)"
        )
