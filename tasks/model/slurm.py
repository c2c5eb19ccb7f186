"""Slurm's part of the model: nodes, partitions, scheduling and the munge key."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tasks.model.hosts import InventoryHost, node_name
from tasks.model.memory import default_reserve_mb
from tasks.model.problems import check_name, check_unique
from tasks.platform import platform_for

NODE_OVERRIDE_KEYS = ("cpus", "sockets", "cores_per_socket", "threads_per_core", "real_memory")
NODE_KEYS = (*NODE_OVERRIDE_KEYS, "gres")
GRES_KEYS = ("name", "type", "count", "file")

SELECT_TYPES = ("select/cons_tres", "select/cons_res", "select/linear")
SELECT_TYPE_BASES = ("CR_CPU", "CR_Core", "CR_Socket", "CR_Memory", "CR_CPU_Memory", "CR_Core_Memory", "CR_Socket_Memory")
SELECT_TYPE_MODIFIERS = (
    "CR_ONE_TASK_PER_CORE", "CR_CORE_DEFAULT_DIST_BLOCK", "CR_LLN", "CR_Pack_Nodes", "LL_SHARED_GRES",
    "MULTIPLE_SHARING_GRES_PJ", "ENFORCE_BINDING_GRES", "ONE_TASK_PER_SHARING_GRES",
)
MUNGE_KEY_BYTES = (32, 1024)


@dataclass(frozen=True)
class Gres:
    """A generic resource of a node, e.g. its GPUs (slurm.conf `Gres=`, gres.conf; gres.conf(5))."""

    name: str  # gpu, mps, shard or a site's own name
    count: int
    type: str | None = None  # e.g. a100: jobs may ask for gpu:a100:1
    file: str | None = None  # device files, e.g. /dev/nvidia[0-1]: what cgroups give a job access to

    @property
    def spec(self) -> str:
        """slurm.conf's form: name[:type]:count."""
        return ":".join(part for part in (self.name, self.type, str(self.count)) if part)

    def gres_conf_line(self, node: str) -> str:
        where = f"NodeName={node} Name={self.name}" + (f" Type={self.type}" if self.type else "")
        return f"{where} File={self.file}" if self.file else f"{where} Count={self.count}"


@dataclass(frozen=True)
class Node:
    """A Slurm compute node, as slurm.conf describes it."""

    name: str
    cpus: int
    sockets: int
    cores_per_socket: int
    threads_per_core: int
    real_memory: int
    gres: tuple[Gres, ...] = ()

    @property
    def gres_spec(self) -> str:
        """slurm.conf's `Gres=` value ("" without GRES)."""
        return ",".join(g.spec for g in self.gres)


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
    detected = {**slurmd_layout(host, warnings), "real_memory": facts.memory_mb}
    overrides = dict(host.data.get("slurm_node") or {})
    gres = gres_from(overrides.pop("gres", ()), f"host {host.name}: slurm_node.gres", problems)
    values = dict(detected)
    for key, value in overrides.items():
        where = f"host {host.name}: slurm_node.{key}"
        if key not in NODE_OVERRIDE_KEYS:
            problems.append(f"{where}: unknown setting; use one of {', '.join(NODE_KEYS)}")
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
    layout_given = [key for key in ("sockets", "cores_per_socket", "threads_per_core") if key in overrides]
    topology = values["sockets"] * values["cores_per_socket"] * values["threads_per_core"]
    cores = detected["sockets"] * detected["cores_per_socket"]
    if "cpus" in overrides and not layout_given and values["cpus"] != detected["cpus"]:
        # A smaller CPU count alone: one socket of single-thread cores. slurmctld drains a node with
        # fewer cores than slurm.conf gives it, so it can have no more than the host's cores.
        if values["cpus"] <= cores:
            values.update(sockets=1, cores_per_socket=values["cpus"], threads_per_core=1)
        else:
            problems.append(
                f"host {host.name}: slurm_node.cpus {values['cpus']} is more than the host's {cores} cores and fewer "
                f"than its {detected['cpus']} CPUs; Slurm counts a node's cores against what slurmd finds and would "
                f"drain it. Give cpus at most {cores} or {detected['cpus']}, or sockets, cores_per_socket and "
                "threads_per_core as well"
            )
    elif layout_given and "cpus" not in overrides:
        values["cpus"] = topology
    elif layout_given and topology != values["cpus"]:
        problems.append(
            f"host {host.name}: slurm_node gives cpus={values['cpus']} but sockets x cores_per_socket x "
            f"threads_per_core = {topology}; make them agree"
        )
    return Node(name=node_name(host), **values, gres=gres)


def slurmd_layout(host: InventoryHost, warnings: list[str]) -> dict[str, int]:
    """The host's CPUs as slurmd describes them ("cpus", "sockets", "cores_per_socket",
    "threads_per_core"; `slurmd -C`, src/slurmd/common/xcpuinfo.c): online CPUs only; an Intel hybrid
    CPU by its performance cores only from Slurm 23.11. A layout that is no product of sockets,
    cores and threads (CPUs taken offline, cores with unlike thread counts) is described as Slurm
    uses it, CPUs = sockets x cores x threads: slurmctld resets a larger CPUs= to that, with an error
    in every Slurm command (node_conf.c "CPUs=N match no Sockets, Sockets*CoresPerSocket or
    Sockets*CoresPerSocket*ThreadsPerCore"). Either case is named in a warning, with the host's numbers."""
    facts = host.facts
    assert facts is not None
    cpus, sockets, cores_per_socket, threads = facts.cpus, facts.sockets, facts.cores_per_socket, facts.threads_per_core
    try:
        leaves_out_efficiency_cores = platform_for(facts.codename, facts.slurm_version).slurmd_leaves_out_efficiency_cores
    except ValueError:  # a release this deploy does not know: refused with the host's platform
        leaves_out_efficiency_cores = False
    if facts.performance_cores and leaves_out_efficiency_cores:
        cpus, sockets, cores_per_socket, threads = facts.performance_cores
        warnings.append(f"host {host.name}: a hybrid CPU; Slurm uses its performance cores only: {cpus} of its "
                        f"{facts.cpus} CPUs")
    usable = sockets * cores_per_socket * threads
    if usable != cpus:
        warnings.append(
            f"host {host.name}: {cpus} CPUs online in {sockets} socket(s) x {cores_per_socket} cores, which is no "
            f"product of sockets, cores and threads per core (CPUs offline, or cores with unlike thread counts); "
            f"Slurm schedules {usable} of them (CPUs={usable}, ThreadsPerCore={threads})")
    return {"cpus": usable, "sockets": sockets, "cores_per_socket": cores_per_socket, "threads_per_core": threads}


def gres_from(raw: Any, where: str, problems: list[str]) -> tuple[Gres, ...]:
    """A node's GRES from the inventory: a list of {name, count, type (optional), file (optional)}.
    Device files are given as gres.conf takes them (`/dev/nvidia[0-1]`); with files, the count
    must be how many they name, or slurmd refuses the node's configuration."""
    if not isinstance(raw, (list, tuple)):
        problems.append(f"{where}: must be a list like [{{'name': 'gpu', 'type': 'a100', 'count': 2, "
                        "'file': '/dev/nvidia[0-1]'}]")
        return ()
    gres = []
    for index, entry in enumerate(raw):
        at = f"{where}[{index}]"
        if not isinstance(entry, Mapping) or "name" not in entry or "count" not in entry:
            problems.append(f"{at}: must be a mapping with at least 'name' and 'count', e.g. {{'name': 'gpu', 'count': 1}}")
            continue
        unknown = sorted(set(entry) - set(GRES_KEYS))
        if unknown:
            problems.append(f"{at}: unknown {', '.join(unknown)}; use {', '.join(GRES_KEYS)}")
        name, kind, count, file = str(entry["name"]), entry.get("type"), entry["count"], entry.get("file")
        check_name(name, f"{at}.name", problems)
        if kind is not None:
            check_name(str(kind), f"{at}.type", problems)
        if isinstance(count, bool) or not isinstance(count, int) or count <= 0:
            problems.append(f"{at}.count: {count!r} is not a positive whole number")
            continue
        if file is not None:
            files = device_file_count(str(file))
            if not str(file).startswith("/dev/"):
                problems.append(f"{at}.file: {file!r} is not a device under /dev/ (e.g. /dev/nvidia[0-1])")
            elif files != count:
                problems.append(f"{at}: file {file} names {files} device(s) but count is {count}; make them agree "
                                "(slurmd refuses a node whose gres.conf and slurm.conf counts differ)")
        gres.append(Gres(name, count, None if kind is None else str(kind), None if file is None else str(file)))
    check_unique([f"{g.name}:{g.type or ''}" for g in gres], f"{where} name:type", problems, fix="give each once")
    return tuple(gres)


def device_file_count(file: str) -> int:
    """How many device files a gres.conf `File=` names: /dev/nvidia0 is 1, /dev/nvidia[0-3] 4, [0,2-3] 3."""
    ranges = re.search(r"\[([^\]]*)\]", file)
    if not ranges:
        return 1
    count = 0
    for part in ranges[1].split(","):
        low, _, high = part.partition("-")
        if not low.isdigit() or (high and not high.isdigit()):
            return 0
        count += int(high) - int(low) + 1 if high else 1
    return count


def parse_gres_spec(spec: str) -> tuple[Gres, ...]:
    """slurm.conf's `Gres=gpu:a100:2,gpu:1` -> GRES (without device files: they are in gres.conf)."""
    gres = []
    for item in filter(None, spec.split(",")):
        parts = item.split(":")
        if parts[-1].isdigit():
            gres.append(Gres(parts[0], int(parts[-1]), parts[1] if len(parts) == 3 else None))
    return tuple(gres)


def parse_node_lines(lines: list[str]) -> dict[str, Node]:
    """NodeName lines of a slurm.conf this deploy wrote -> nodes by name."""
    keys = {"CPUs": "cpus", "Sockets": "sockets", "CoresPerSocket": "cores_per_socket",
            "ThreadsPerCore": "threads_per_core", "RealMemory": "real_memory"}
    nodes = {}
    for line in lines:
        fields = dict(field.split("=", 1) for field in line.split() if "=" in field)
        if "NodeName" in fields and all(key in fields for key in keys):
            nodes[fields["NodeName"]] = Node(name=fields["NodeName"], **{keys[k]: int(fields[k]) for k in keys},
                                             gres=parse_gres_spec(fields.get("Gres", "")))
    return nodes


def parse_slurmd_hardware(output: str) -> dict[str, int]:
    """`slurmd -C`'s first line (NodeName=n CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2
    ThreadsPerCore=1 RealMemory=24105) -> {"cpus", "sockets", "cores_per_socket", "threads_per_core",
    "real_memory"}: what slurmd will report when it registers (Boards x SocketsPerBoard sockets)."""
    line = next((line for line in output.splitlines() if line.startswith("NodeName=")), "")
    fields = {k: int(v) for k, v in (f.split("=", 1) for f in line.split() if "=" in f) if v.isdigit()}
    if not {"CPUs", "CoresPerSocket", "ThreadsPerCore", "RealMemory"} <= set(fields):
        return {}
    return {"cpus": fields["CPUs"], "sockets": fields.get("Boards", 1) * fields.get("SocketsPerBoard", fields.get("Sockets", 1)),
            "cores_per_socket": fields["CoresPerSocket"], "threads_per_core": fields["ThreadsPerCore"],
            "real_memory": fields["RealMemory"]}


def parse_slurmd_gres(output: str) -> tuple[Gres, ...]:
    """`slurmd -G` (what slurmd finds from slurm.conf, gres.conf and autodetection; one device per
    line on 24.11: "slurmd: Gres Name=gpu Type=a100 Count=1 Index=0 ID=7696487 File=/dev/nvidia0 ...")
    -> GRES summed per name and type."""
    counts: dict[tuple[str, str | None], int] = {}
    for line in output.splitlines():
        if "Gres Name=" not in line:
            continue
        fields = dict(f.split("=", 1) for f in line.split("Gres ", 1)[1].split() if "=" in f)
        kind = fields.get("Type") if fields.get("Type") not in (None, "(null)") else None
        key = (fields["Name"], kind)
        counts[key] = counts.get(key, 0) + int(fields.get("Count", "1"))
    return tuple(Gres(name, count, kind) for (name, kind), count in counts.items())


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


def gres_requests(arguments: list[str]) -> list[tuple[str, str | None, int, str]]:
    """GRES a job asks for, from its sbatch arguments -> [(name, type, count, "per node" | "in all")].
    --gres=name[:type][:count][,...] and --gpus-per-node=[type:]count are per node; --gpus/-G in all."""
    requests = []
    pairs = [(a.split("=", 1) + [""])[:2] if a.startswith("--") else [a, ""] for a in arguments]
    for index, (option, value) in enumerate(pairs):
        if option == "-G" and index + 1 < len(pairs):
            option, value = "--gpus", pairs[index + 1][0]
        if option == "--gres":
            for item in filter(None, value.split(",")):
                parts = item.split(":")
                count = int(parts[-1]) if len(parts) > 1 and parts[-1].isdigit() else 1
                kind = parts[1] if len(parts) == 3 or (len(parts) == 2 and not parts[1].isdigit()) else None
                requests.append((parts[0], kind, count, "per node"))
        elif option in ("--gpus", "--gpus-per-node"):
            kind, _, count = value.rpartition(":")
            if count.isdigit():
                requests.append(("gpu", kind or None, int(count), "per node" if option == "--gpus-per-node" else "in all"))
    return requests


def gres_request_problems(requests: list[tuple[str, str | None, int, str]], nodes: tuple[Node, ...]) -> list[str]:
    """Each request some node (per node) or the nodes together (in all) can give; else why not,
    with what the nodes offer (Slurm would refuse the job, or keep it PENDING forever)."""
    problems = []
    for name, kind, count, scope in requests:
        offered = {node.name: sum(g.count for g in node.gres if g.name == name and kind in (None, g.type))
                   for node in nodes}
        enough = max(offered.values(), default=0) >= count if scope == "per node" else sum(offered.values()) >= count
        if not enough:
            asked = ":".join(part for part in (name, kind, str(count)) if part)
            offers = ", ".join(f"{node.name} {node.gres_spec}" for node in nodes if node.gres) or "no node has any GRES"
            problems.append(f"asks for {asked} {scope}, which no node offers ({offers}); describe the nodes' GRES "
                            "in their slurm_node.gres, or ask for less")
    return problems
