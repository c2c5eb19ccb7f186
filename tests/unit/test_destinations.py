"""Destinations as Slurm would read them: the runner's syntax turned into sbatch's, and the refusal an admin reads.

The sbatch outputs below are Slurm 24.11's, copied from the lab (Debian 13):
`sbatch --test-only` as the galaxy user.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml
from lxml import etree

from tasks.common import render
from tasks.destinations import destination_problem, requested_seconds, slurm_reason, sbatch_test_only_command
from tasks.model import Destination, build_cluster
from tasks.model.jobconf import build_job_conf, check_job_conf, verification_tools
from tasks.native_specification import sbatch_arguments, slurm_time_seconds
from tasks.verify.galaxy import destination_params, destination_report_lines
from tests.unit.conftest import small_cluster

WILL_START = "sbatch: Job 4 to start at 2026-11-30T18:53:34 using 1 processors on nodes dest-c1 in partition short"
SHORT = ("PartitionName=short AllowGroups=ALL Default=NO DefaultTime=NONE MaxNodes=UNLIMITED MaxTime=00:05:00 "
         "MinNodes=0 Nodes=dest-c[1-2] State=UP TotalCPUs=4")


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        # slurm-drmaa reads H:MM as hours:minutes; sbatch would read it as minutes:seconds.
        ("--time=0:10", ["--time=0:10:00"]),
        ("-t 1:30", ["--time=1:30:00"]),
        ("--time_limit=2:00:30", ["--time=2:00:30"]),
        ("-p short -c 2 --mem=4096", ["--partition=short", "--cpus-per-task=2", "--mem=4096"]),
        ("--job_name=x -s -k --exclusive", ["--job-name=x", "--oversubscribe", "--no-kill", "--exclusive"]),
        ("--share", ["--oversubscribe"]),
    ],
)
def test_drmaa_specification_as_sbatch_arguments(spec, expected):
    assert sbatch_arguments(spec, "drmaa") == expected


def test_cli_specification_as_sbatch_arguments():
    assert sbatch_arguments("--time=10 -p short --exclusive -c 2", "cli") == ["--time=10", "-p", "short", "--exclusive", "-c", "2"]
    assert sbatch_arguments(None, "cli") == [] == sbatch_arguments("", "drmaa")


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("10", 600), ("10:30", 630), ("0:10:00", 600), ("1-00:00:00", 86400), ("2-12", 216000), ("UNLIMITED", None),
     ("INFINITE", None)],
)
def test_slurm_times(value, seconds):
    assert slurm_time_seconds(value) == seconds


def test_requested_time_is_the_last_one():
    assert requested_seconds(["--time=5", "-t", "0:20:00"]) == 1200
    assert requested_seconds(["-p", "debug"]) is None


def galaxy(runner: str = "cli", destinations: list[dict] | None = None):
    destinations = destinations or [{"id": "local", "runner": "local"},
                                    {"id": "slurm", "runner": "slurm", "native_specification": "--ntasks=1"}]
    data = {"galaxy_job_runner": runner, "galaxy_destinations": destinations,
            "galaxy_default_destination": destinations[-1]["id"]}
    if runner == "drmaa":
        data["slurm_drmaa"] = {"method": "path", "path": "/usr/lib/libdrmaa.so.1"}
    return build_cluster(small_cluster(galaxy=data), {}).galaxy


def test_test_only_runs_as_the_galaxy_user_and_asks_nothing_to_be_queued():
    g = galaxy()
    command = sbatch_test_only_command(g, Destination("long", "slurm", "--time=00:10:00 -p short"))
    assert "runuser -u galaxy -- sbatch --test-only" in command
    assert "--time=00:10:00 -p short --wrap=true" in command


def test_time_above_partition_max_time_is_refused_with_slurms_reason():
    g = galaxy()
    long = Destination("long", "slurm", "--time=00:10:00 --partition=short")
    problem = destination_problem(g, 1, long, (True, WILL_START), SHORT)
    assert problem.startswith("galaxy_destinations[1].native_specification (long: '--time=00:10:00 --partition=short'): ")
    assert "time limit of 0:10:00 but partition short has MaxTime=00:05:00" in problem
    assert "PENDING forever with reason PartitionTimeLimit" in problem
    assert "Ask for at most 0:05:00" in problem


def test_drmaa_time_is_compared_in_hours_and_minutes():
    g = galaxy("drmaa", [{"id": "long", "runner": "slurm", "native_specification": "--time=0:10 -p short"}])
    problem = destination_problem(g, 0, g.destinations[0], (True, WILL_START), SHORT)
    assert "time limit of 0:10:00" in problem  # 10 minutes, not 10 seconds
    short = g.destinations[0].__class__("short", "slurm", "--time=0:04 -p short")
    assert destination_problem(g, 0, short, (True, WILL_START), SHORT) is None


def test_slurm_refusal_names_the_destination_and_slurms_words():
    g = galaxy()
    big = Destination("big", "slurm", "--cpus-per-task=64")
    output = "allocation failure: Requested node configuration is not available\n" \
             "allocation failure: Requested node configuration is not available"
    problem = destination_problem(g, 1, big, (False, output), None)
    assert problem == ("galaxy_destinations[1].native_specification (big: '--cpus-per-task=64'): Slurm refuses its jobs: "
                       "Requested node configuration is not available (sbatch --test-only --cpus-per-task=64, as galaxy). "
                       "Fix the destination (or the partition in slurm_partitions), then re-run")


def test_sbatch_error_prefixes_are_dropped():
    assert slurm_reason("sbatch: error: invalid partition specified: nope\nallocation failure: Invalid partition name specified") \
        == "invalid partition specified: nope; Invalid partition name specified"


def test_unlimited_partition_takes_any_time():
    g = galaxy()
    unlimited = SHORT.replace("MaxTime=00:05:00", "MaxTime=UNLIMITED")
    assert destination_problem(g, 1, Destination("long", "slurm", "--time=99:00:00"), (True, WILL_START), unlimited) is None


LOCAL_DEST = {"id": "local", "runner": "local"}
TWO = [{"id": "slurm", "runner": "slurm", "native_specification": "--ntasks=1"},
       {"id": "short-jobs", "runner": "slurm", "native_specification": "--partition=short --time=0:04"}]


def test_each_further_slurm_destination_gets_the_verification_tool_in_job_conf():
    g = galaxy("drmaa", [TWO[1], LOCAL_DEST, TWO[0]])  # default: the last one, "slurm"
    assert verification_tools(g) == [("short-jobs", "pgs_verify_short_jobs")]
    root = etree.fromstring(build_job_conf(g))
    assert [(t.get("id"), t.get("destination")) for t in root.iterfind("tools/tool")] == [("pgs_verify_short_jobs", "short-jobs")]
    assert check_job_conf(build_job_conf(g)) == []
    assert destination_params(g, "short-jobs") == {"nativeSpecification": "--partition=short --time=0:04"}


def test_one_slurm_destination_needs_no_tool():
    g = galaxy()
    assert verification_tools(g) == [] and etree.fromstring(build_job_conf(g)).find("tools") is None


def test_galaxy_yml_loads_the_verification_tools_after_the_toolbox():
    g = galaxy("drmaa", [TWO[1], LOCAL_DEST, TWO[0]])
    secrets = {"id_secret": "s" * 32, "admin_api_key": "k" * 64}
    configs = ["/srv/galaxy/venv/lib/python3.13/site-packages/galaxy/config/sample/tool_conf.xml.sample",
               "/srv/galaxy/config/pgs-verify-tools/tool_conf.xml"]
    config = yaml.safe_load(render("galaxy.yml.j2", galaxy=g, secrets=secrets, bootstrap=False, tool_configs=configs))["galaxy"]
    assert config["tool_config_file"] == configs
    assert "tool_config_file" not in yaml.safe_load(render("galaxy.yml.j2", galaxy=g, secrets=secrets, bootstrap=False))["galaxy"]
    tool = render("galaxy-verify-tool.xml.j2", tool_id="pgs_verify_short_jobs", destination="short-jobs")
    assert etree.fromstring(tool.encode()).get("id") == "pgs_verify_short_jobs"
    conf = render("galaxy-verify-tool-conf.xml.j2", tools=verification_tools(g), directory="/d")
    assert [t.get("file") for t in etree.fromstring(conf.encode()).iter("tool")] == ["/d/pgs_verify_short_jobs.xml"]
    assert [t.get("hidden") for t in etree.fromstring(conf.encode()).iter("tool")] == ["true"]


def test_report_names_every_destination():
    result = {"destinations": [
        {"destination": "slurm", "ok": True},
        {"destination": "short-jobs", "tool": "pgs_verify_short_jobs", "galaxy_job_id": "f2", "slurm_job_id": "12",
         "node": "c2", "partition": "short", "time_limit": "00:04:00", "slurm_state": "COMPLETED", "seconds_to_ok": 9.5,
         "galaxy_slots": "2", "galaxy_memory_mb": "700", "slurm_allocation": "cpu=2,mem=700M,node=1,billing=2"}]}
    assert destination_report_lines(result) == [
        "destination short-jobs: Galaxy job f2 (tool pgs_verify_short_jobs) = Slurm job 12 on c2, partition short, "
        "time limit 00:04:00, GALAXY_SLOTS=2 GALAXY_MEMORY_MB=700 (Slurm gave cpu=2,mem=700M,node=1,billing=2): "
        "COMPLETED, dataset ok in 9.5 s"]


def galaxy_verify_script():
    """files/galaxy-verify.py as a module (it runs on the Galaxy host; its pure parts are tested here)."""
    path = Path(__file__).resolve().parents[2] / "files" / "galaxy-verify.py"
    spec = importlib.util.spec_from_file_location("galaxy_verify", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("slurm", "allocation"), [
    ({"AllocTRES": "cpu=2,mem=700M,node=1,billing=2"}, ("cpu=2,mem=700M,node=1,billing=2", 2, 700)),  # Slurm 24.11
    ({"TRES": "cpu=1,mem=11449M,node=1,billing=1"}, ("cpu=1,mem=11449M,node=1,billing=1", 1, 11449)),  # Slurm 22.05
    ({"AllocTRES": "cpu=4,mem=2G,node=1"}, ("cpu=4,mem=2G,node=1", 4, 2048)),
    ({"AllocTRES": "cpu=1,node=1,billing=1"}, ("cpu=1,node=1,billing=1", 1, None)),  # memory not scheduled (CR_CPU)
])
def test_slurm_allocation_from_scontrol(slurm, allocation):
    assert galaxy_verify_script().slurm_allocation(slurm) == allocation


def test_tool_sees_what_slurm_allocated():
    check = galaxy_verify_script().tool_output_problem
    line = b"node=c1 slurm_job=7 partition=debug galaxy_slots=2 galaxy_memory_mb=700\n"
    assert check(line, {"AllocTRES": "cpu=2,mem=700M,node=1"}) == (
        None, {"galaxy_slots": "2", "galaxy_memory_mb": "700", "slurm_allocation": "cpu=2,mem=700M,node=1"})
    problem, _ = check(line.replace(b"=700", b"=unset"), {"AllocTRES": "cpu=2,mem=700M,node=1"})
    assert problem.startswith("the tool saw GALAXY_MEMORY_MB=unset (Slurm gave 700)")
    assert check(line.replace(b"=700", b"=unset"), {"AllocTRES": "cpu=2,node=1"})[0] is None
    assert check(b"oops", {})[0].startswith("the tool's output is not the node's line")
