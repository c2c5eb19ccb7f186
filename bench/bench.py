#!/usr/bin/env python3
"""`make bench`: how long the rollout takes on the lab, how it scales, and how
far it is from the floor (the same package installs done directly).

Writes bench/results.json (with the machine's description) and prints a table.
Every measurement is repeated (--repeat) and reported as min / median / max.
Runs as root against its own lab (--lab-name pgsbench, --lab-subnet 10.213.22.0/24) from fresh
hosts each time; the lab's caches (base image, apt archives, pip wheels) are
kept, as they are for the tests.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))
from lab import settings
from tasks.model.galaxy_releases import galaxy_release, newest_release

LAB_NAME = "pgsbench"
LAB_SUBNET = "10.213.22.0/24"
STATE = settings.state_dir(LAB_NAME)


def use_lab(name: str, subnet: str) -> None:
    global LAB_NAME, LAB_SUBNET, STATE
    LAB_NAME, LAB_SUBNET, STATE = name, subnet, settings.state_dir(name)
PYINFRA = str(Path(sys.executable).parent / "pyinfra")
# The by-hand install of the default Galaxy: its pinned packages, as the deploy installs them.
GALAXY_PIP = " ".join([*galaxy_release(newest_release()).requirements, "fissix", "drmaa"])
VERIFY_SCRIPT = "/usr/local/share/pyinfra-galaxy-slurm/galaxy-verify.py"

# Which phase an operation belongs to, by the layer (deploy) and words in its name.
PHASES = ("connect/facts", "packages", "config", "services", "Galaxy install", "verify")


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def lab(*args: str) -> None:
    subprocess.run([sys.executable, str(PROJECT / "lab/lab.py"), "--name", LAB_NAME, "--subnet", LAB_SUBNET, *args],
                   check=True, stdout=subprocess.DEVNULL)


def fresh_lab(nodes: int, release: str) -> dict:
    lab("down")
    lab("up", "--nodes", str(nodes), "--release", release, "--drmaa-tarball=")  # the CLI runner, whatever the environment
    return json.loads(settings.hosts_file(LAB_NAME).read_text())


def ssh(address: str, command: str, check: bool = True) -> str:
    result = subprocess.run(["ssh", "-F", str(STATE / "ssh_config"), address, command], capture_output=True, text=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"{address}: {command}: {result.stderr[-2000:]}")
    return result.stdout


class HostMemory(threading.Thread):
    """Samples the summed RSS of every lab container's processes (from this machine's /proc)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak: dict[str, int] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(1.0):
            for name, rss in self.sample().items():
                self.peak[name] = max(self.peak.get(name, 0), rss)

    @staticmethod
    def sample() -> dict[str, int]:
        parents, rss = {}, {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                    parents[int(entry)] = int(fields[1])
                    rss[int(entry)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
                except (OSError, IndexError, ValueError):
                    pass
        totals = {}
        for pid_file in (STATE / "hosts").glob("*/nspawn.pid"):
            root = int(pid_file.read_text())
            members, frontier = {root}, [root]
            while frontier:
                children = [p for p, parent in parents.items() if parent in frontier and p not in members]
                members.update(children)
                frontier = children
            totals[pid_file.parent.name] = sum(rss.get(p, 0) for p in members)
        return totals


def deploy(*extra: str, timings: Path | None = None) -> dict:
    """One pyinfra run against the bench lab: wall time, changes, peak RSS of pyinfra, phases."""
    env = {**os.environ, settings.LAB_INVENTORY.name: str(settings.hosts_file(LAB_NAME))}
    if timings:
        env["PGS_TIMINGS"] = str(timings)
    started = time.time()
    process = subprocess.Popen([PYINFRA, "-y", "--json", *extra, "lab/inventory.py", "deploy.py"], cwd=PROJECT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rusage_holder = {}

    def reap():
        _, status, usage = os.wait4(process.pid, 0)
        rusage_holder.update(status=status, maxrss_kb=usage.ru_maxrss)

    reaper = threading.Thread(target=reap)
    reaper.start()
    stdout = process.stdout.read()
    stderr = process.stderr.read()
    reaper.join()
    seconds = time.time() - started
    if os.waitstatus_to_exitcode(rusage_holder["status"]) != 0:
        raise RuntimeError(f"deploy failed:\n{stderr[-4000:]}")
    result = json.loads(stdout)
    run = {"seconds": seconds, "changes": result["results"]["totals"]["success"], "pyinfra_peak_rss_mb": rusage_holder["maxrss_kb"] / 1024}
    if timings:
        run["phases"] = phases(timings, started, started + seconds)
    return run


def phase_of(name: str) -> str:
    layer, _, op = name.partition(" | ")
    op = op.lower()
    if layer.startswith("Verify") or "answers its api" in op:
        return "verify"
    if "venv" in op or "slurm-drmaa" in layer.lower():
        return "Galaxy install"
    if "install" in op or "package" in op or "nfs server" in op or "python venv" in op:
        return "packages"
    if any(word in op for word in ("restart", "running", "supervisorctl", "reload")):
        return "services"
    return "config"


def phases(timings: Path, started: float, ended: float) -> dict[str, float]:
    records = [json.loads(line) for line in timings.read_text().splitlines()]
    totals = dict.fromkeys(PHASES, 0.0)
    first_op = min((r["start"] for r in records if r["start"]), default=ended)
    totals["connect/facts"] = first_op - started
    for record in records:
        if record["start"]:
            totals[phase_of(record["name"])] += record["end"] - record["start"]
    totals["disconnect/other"] = max(0.0, (ended - started) - sum(totals.values()))
    return {k: round(v, 2) for k, v in totals.items()}


def floor(lab_hosts: list[dict], galaxy: bool) -> float:
    """The same apt (and pip) installs as the deploy, done directly on all hosts at once."""
    block_starts = "printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d"
    apt = "DEBIAN_FRONTEND=noninteractive apt-get -qq -y --no-install-recommends install"

    def install(host: dict) -> None:
        roles = set(host["groups"])
        # Accounting (on by default): slurmdbd and MariaDB on the controller.
        packages = ["munge", "slurm-client"] + (["slurmctld", "slurmdbd", "mariadb-server"] if "slurm_controller" in roles else []) + \
            (["slurmd"] if "slurm_compute" in roles else [])
        if galaxy and "galaxy" in roles:
            packages += ["python3-venv", "supervisor", "postgresql", "nginx"]
        commands = [block_starts, "apt-get -qq update", f"{apt} {' '.join(packages)}"]
        if galaxy and "galaxy" in roles:
            commands += ["python3 -m venv /srv/galaxy/venv", f"/srv/galaxy/venv/bin/pip install -q {GALAXY_PIP}"]
        ssh(host["address"], " && ".join(commands) + "; rm -f /usr/sbin/policy-rc.d")

    started = time.time()
    with ThreadPoolExecutor(len(lab_hosts)) as pool:
        list(pool.map(install, lab_hosts))
    return time.time() - started


def galaxy_latency(head: str, runner: str, jobs: int) -> list[float]:
    # Through nginx, as users reach Galaxy; admin reads with the admin's own key.
    command = (f"/usr/local/share/pyinfra-galaxy-slurm/venv/bin/python {VERIFY_SCRIPT} --url http://127.0.0.1 "
               "--secrets /srv/galaxy/config/secrets.json --admin-email admin@example.org "
               "--admin-key-file /etc/pyinfra-galaxy-slurm/galaxy-admin.json --user-email pgs-verify@example.org "
               f"--key-file /etc/pyinfra-galaxy-slurm/galaxy-verify-user.json --expect-runner {runner}")
    return [json.loads(ssh(head, command).strip().splitlines()[-1])["seconds_to_ok"] for _ in range(jobs)]


SLURM_START_LATENCY = r"""
import subprocess, time
started = time.monotonic()
job = subprocess.run(["sbatch", "--parsable", "--wrap", "sleep 1"], capture_output=True, text=True, check=True).stdout.strip()
while True:
    state = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True).stdout.strip()
    if state != "PENDING":
        break
    time.sleep(0.05)
print(round(time.monotonic() - started, 3))
"""


def slurm_start_latency(head: str, jobs: int) -> list[float]:
    return [float(ssh(head, f"python3 -c {shlex.quote(SLURM_START_LATENCY)}")) for _ in range(jobs)]


def stats(values: list[float]) -> dict:
    return {"min": round(min(values), 2), "median": round(statistics.median(values), 2), "max": round(max(values), 2),
            "runs": [round(v, 2) for v in values]}


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    memory_kb = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")))
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(memory_kb / 2**20, 1), "kernel": platform.release(),
            "os": Path("/etc/os-release").read_text().split("PRETTY_NAME=")[1].splitlines()[0].strip('"'),
            "lab": "systemd-nspawn containers, one network namespace each, on this machine"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--scale", default="1,4,8", help="compute host counts for the Slurm scaling runs")
    parser.add_argument("--full-nodes", type=int, default=1, help="compute hosts of the full-stack runs")
    parser.add_argument("--lab-name", default=LAB_NAME)
    parser.add_argument("--lab-subnet", default=LAB_SUBNET)
    parser.add_argument("--skip-full-stack", action="store_true", help="only the Slurm scaling runs")
    parser.add_argument("--scale-repeat", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=5, help="Galaxy jobs per runner for the latency")
    parser.add_argument("--release", default=settings.RELEASE.get())
    parser.add_argument("--output", default=str(PROJECT / "bench/results.json"))
    args = parser.parse_args()
    use_lab(args.lab_name, args.lab_subnet)
    commit = subprocess.run(["git", "-C", str(PROJECT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    results: dict = {"commit": commit or None, "machine": machine(), "release": args.release, "date": time.strftime("%Y-%m-%d"),
                     "repeat": args.repeat, "scale_repeat": args.scale_repeat, "full_stack_compute_hosts": args.full_nodes,
                     # other work on the machine shows here (the lab's own load comes after)
                     "load_average_at_start": round(os.getloadavg()[0], 2)}
    memory = HostMemory()
    memory.start()
    try:
        # The Slurm layer first: each section's results are written as soon as it ends.
        scaling(args, results)
        Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
        if not args.skip_full_stack:
            full_stack(args, results, memory)
    finally:
        memory.stop.set()
        lab("down")
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))


def full_stack(args, results: dict, memory: HostMemory) -> None:
    fresh, reruns, quick_reruns, floors, rss, phase_runs = [], [], [], [], [], []
    for attempt in range(args.repeat):
        hosts = fresh_lab(args.full_nodes, args.release)["hosts"]
        log(f"full stack, fresh rollout {attempt + 1}/{args.repeat}")
        with tempfile.TemporaryDirectory() as scratch:
            run = deploy(timings=Path(scratch) / "timings.jsonl")
        fresh.append(run["seconds"])
        rss.append(run["pyinfra_peak_rss_mb"])
        phase_runs.append(run["phases"])
        rerun = deploy()
        assert rerun["changes"] == 0, rerun
        reruns.append(rerun["seconds"])
        quick_reruns.append(deploy("--data", "verify_galaxy_job=false")["seconds"])
        if attempt == 0:
            head = hosts[0]["address"]
            log("Galaxy job latency through Slurm, then through the local runner")
            results["galaxy_upload_to_ok_slurm_s"] = stats(galaxy_latency(head, "slurm", args.jobs))
            results["slurm_submit_to_start_s"] = stats(slurm_start_latency(head, args.jobs))
            deploy("--data", "galaxy_default_destination=local", "--data", "verify_galaxy_job=false")
            results["galaxy_upload_to_ok_local_s"] = stats(galaxy_latency(head, "local", args.jobs))
        log(f"floor {attempt + 1}/{args.repeat}")
        floors.append(floor(fresh_lab(args.full_nodes, args.release)["hosts"], galaxy=True))
    results["full_stack_fresh_s"] = stats(fresh)
    results["full_stack_floor_s"] = stats(floors)
    results["full_stack_fresh_to_floor"] = round(statistics.median(fresh) / statistics.median(floors), 2)
    results["full_stack_rerun_s"] = stats(reruns)
    results["full_stack_rerun_without_galaxy_job_s"] = stats(quick_reruns)
    results["full_stack_phases_median_s"] = {p: round(statistics.median(r[p] for r in phase_runs), 2) for p in phase_runs[0]}
    results["pyinfra_peak_rss_mb"] = stats(rss)
    results["lab_host_peak_rss_mb"] = {name: round(value / 2**20) for name, value in sorted(memory.peak.items())}


def scaling(args, results: dict) -> None:
    """Slurm layer only, fresh and no-change re-run, at each compute host count, each fresh rollout
    followed by its floor on fresh hosts (back to back, so both see the same load)."""
    counts = [int(n) for n in args.scale.split(",")]
    scale: dict = {}
    for nodes in counts:
        fresh, floors, reruns, rss = [], [], [], []
        for attempt in range(args.scale_repeat):
            log(f"Slurm layer, {nodes} compute hosts, fresh rollout {attempt + 1}/{args.scale_repeat}")
            fresh_lab(nodes, args.release)
            with tempfile.TemporaryDirectory() as scratch:
                run = deploy("--data", "deploy_galaxy=false", timings=Path(scratch) / "timings.jsonl")
            fresh.append(run["seconds"])
            rss.append(run["pyinfra_peak_rss_mb"])
            rerun = deploy("--data", "deploy_galaxy=false")
            assert rerun["changes"] == 0, rerun
            reruns.append(rerun["seconds"])
            rss.append(rerun["pyinfra_peak_rss_mb"])
            if attempt == 0:
                scale.setdefault("phases", {})[str(nodes)] = run["phases"]
            floors.append(floor(fresh_lab(nodes, args.release)["hosts"], galaxy=False))
        scale[str(nodes)] = {"fresh_s": stats(fresh), "floor_s": stats(floors), "rerun_s": stats(reruns),
                             "fresh_to_floor": round(statistics.median(fresh) / statistics.median(floors), 2),
                             "pyinfra_peak_rss_mb": round(max(rss), 1)}
    base = scale[str(counts[0])]["fresh_s"]["median"]
    for nodes in counts:
        scale[str(nodes)]["fresh_to_1_host"] = round(scale[str(nodes)]["fresh_s"]["median"] / base, 2)
    scale["rerun_at_max_s"] = scale[str(counts[-1])]["rerun_s"]["median"]
    if len(counts) > 1:
        first, last = str(counts[0]), str(counts[-1])
        extra = counts[-1] - counts[0]
        scale["seconds_per_extra_compute_host"] = {
            what: round((scale[last][key]["median"] - scale[first][key]["median"]) / extra, 2)
            for what, key in (("fresh", "fresh_s"), ("floor", "floor_s"), ("rerun", "rerun_s"))}
    results["slurm_scaling"] = scale


def table(results: dict) -> str:
    def cell(value: dict) -> str:
        return f"{value['median']:.1f} ({value['min']:.1f}-{value['max']:.1f})"

    rows = [] if "full_stack_fresh_s" not in results else [
        (f"full stack fresh rollout (head + {results.get('full_stack_compute_hosts', 2)} compute, Galaxy, verified job)",
         cell(results["full_stack_fresh_s"])),
        ("  floor: the same apt + pip installs, done directly", cell(results["full_stack_floor_s"])),
        ("  rollout / floor", f"{results['full_stack_fresh_to_floor']:.2f}"),
        ("no-change re-run (with the Galaxy upload-job check)", cell(results["full_stack_rerun_s"])),
        ("no-change re-run (verify_galaxy_job=false)", cell(results["full_stack_rerun_without_galaxy_job_s"])),
        ("Galaxy upload -> dataset ok, through Slurm", cell(results["galaxy_upload_to_ok_slurm_s"])),
        ("Galaxy upload -> dataset ok, local runner", cell(results["galaxy_upload_to_ok_local_s"])),
        ("Slurm sbatch -> job started", cell(results["slurm_submit_to_start_s"])),
        ("pyinfra peak RSS (MB)", cell(results["pyinfra_peak_rss_mb"])),
    ]
    rows += [(f"  phase: {phase}", f"{seconds:.1f}") for phase, seconds in results.get("full_stack_phases_median_s", {}).items()]
    for nodes, scale in results["slurm_scaling"].items():
        if nodes.isdigit():
            rows.append((f"Slurm layer fresh, {nodes} compute (x 1-host, x floor {cell(scale['floor_s'])})",
                         f"{cell(scale['fresh_s'])}  x{scale['fresh_to_1_host']:.2f}  x{scale['fresh_to_floor']:.2f}"))
            rows.append((f"Slurm layer no-change re-run, {nodes} compute", cell(scale["rerun_s"])))
            rows.append((f"pyinfra peak RSS, Slurm layer, {nodes} compute (MB)", f"{scale['pyinfra_peak_rss_mb']:.0f}"))
    per_host = results["slurm_scaling"].get("seconds_per_extra_compute_host")
    if per_host:
        rows.append(("seconds per extra compute host: fresh / floor / re-run",
                     f"{per_host['fresh']:.1f} / {per_host['floor']:.1f} / {per_host['rerun']:.1f}"))
    rows += [(f"lab host peak RSS, {name} (MB)", str(mb)) for name, mb in results.get("lab_host_peak_rss_mb", {}).items()]
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in [("measurement (seconds unless noted)", "median (min-max)")] + rows)


def markdown(results: dict) -> str:
    """docs/benchmarks.md's tables, from a results.json (`bench.py --markdown FILE`)."""
    def cell(value: dict) -> str:
        runs = len(value.get("runs", []))
        return f"{value['median']:.1f}" if runs == 1 else f"{value['median']:.1f} ({value['min']:.1f}–{value['max']:.1f})"

    m = results["machine"]
    lines = [f"Measured {results['date']} on {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB, {m['os']}, kernel "
             f"{m['kernel']}; {results['release']} lab hosts; {results['repeat']} run(s) each (scaling: "
             f"{results.get('scale_repeat', 1)}), seconds unless noted"
             + (f"; load average {results['load_average_at_start']} when it started." if "load_average_at_start" in results
                else "."), ""]
    if "full_stack_fresh_s" in results:
        n = results.get("full_stack_compute_hosts", 2)
        lines += ["| measurement | result |", "|---|---|",
                  f"| full stack, fresh (head + {n} compute → verified Galaxy job through Slurm) | {cell(results['full_stack_fresh_s'])} |",
                  f"| by-hand install: the same apt + pip installs done directly, all hosts at once | {cell(results['full_stack_floor_s'])} |",
                  f"| rollout / by-hand install | {results['full_stack_fresh_to_floor']:.2f} |",
                  f"| no-change re-run, with the Galaxy upload-job check | {cell(results['full_stack_rerun_s'])} |",
                  f"| no-change re-run, `verify_galaxy_job=false` | {cell(results['full_stack_rerun_without_galaxy_job_s'])} |",
                  f"| Galaxy upload → dataset ok, through Slurm | {cell(results['galaxy_upload_to_ok_slurm_s'])} |",
                  f"| Galaxy upload → dataset ok, local runner | {cell(results['galaxy_upload_to_ok_local_s'])} |",
                  f"| Slurm `sbatch` → job running | {cell(results['slurm_submit_to_start_s'])} |",
                  f"| pyinfra peak RSS (MB) | {cell(results['pyinfra_peak_rss_mb'])} |"]
        lines += [f"| lab host peak RSS, {name} (MB) | {mb} |" for name, mb in results.get("lab_host_peak_rss_mb", {}).items()]
        phases = ", ".join(f"{k} {v}" for k, v in results["full_stack_phases_median_s"].items())
        lines += ["", f"Fresh full-stack rollout by phase (s): {phases}.", ""]
    scale = results["slurm_scaling"]
    lines += ["| Slurm layer, compute hosts | fresh | floor at the same size | × floor | × 1-host time | no-change re-run | pyinfra peak RSS (MB) |",
              "|---|---|---|---|---|---|---|"]
    for nodes, row in scale.items():
        if nodes.isdigit():
            lines.append(f"| {nodes} | {cell(row['fresh_s'])} | {cell(row['floor_s'])} | {row['fresh_to_floor']:.2f} | "
                         f"{row['fresh_to_1_host']:.2f} | {cell(row['rerun_s'])} | {row['pyinfra_peak_rss_mb']:.0f} |")
    per_host = scale.get("seconds_per_extra_compute_host")
    if per_host:
        lines += ["", f"Seconds added per extra compute host: fresh {per_host['fresh']:.2f}, floor {per_host['floor']:.2f}, "
                      f"no-change re-run {per_host['rerun']:.2f}."]
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--markdown"]:
        print(markdown(json.loads(Path(sys.argv[2]).read_text())))
        sys.exit(0)
    main()
