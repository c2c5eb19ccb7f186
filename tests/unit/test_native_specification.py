"""Native specifications checked by the rules of the runner that reads them.

The DRMAA cases come from slurm-drmaa 1.1.6's README ("Native specification": the
options it documents, in the forms it documents) and from what its parser
(slurm_drmaa/util.c) refuses; the refusals below were seen on the lab as job
submission errors in Galaxy's handler log before this check existed.
"""

from __future__ import annotations

import pytest

from tasks.model import ClusterConfigError, build_cluster
from tasks.native_specification import (
    DRMAA_FLAGS, DRMAA_LONG_OPTIONS, DRMAA_SHORT_FLAGS, DRMAA_SHORT_OPTIONS, drmaa_native_specification_problems,
    native_specification_problems,
)
from tests.unit.conftest import small_cluster

# Every option of slurm-drmaa's README table, written as the README writes it.
DOCUMENTED = [
    "-A lab", "--account=lab", "--acctg-freq=task=30", "--comment=galaxy", "-C intel", "--constraint=intel",
    "-c 2", "--cpus-per-task=2", "--contiguous", "-d afterok:12", "--dependency=afterok:12", "--exclusive",
    "--gres=gpu:1", "-k", "--no-kill", "-L matlab", "--licenses=matlab", "-M c1", "--clusters=c1",
    "--mail-type=END", "--mem=4096", "--mem-per-cpu=2048", "--mincpus=2", "-N 1-2", "--nodes=2", "-n 4",
    "--ntasks=4", "--no-requeue", "--ntasks-per-node=2", "-p debug", "--partition=debug", "--qos=normal",
    "--requeue", "--reservation=maint", "-s", "--share", "--tmp=100", "-w node1", "--nodelist=node1",
    "-x node2", "--exclude=node2", "-e err.txt", "--error=err.txt", "-J job", "--job_name=job",
    "-o out.txt", "--output=out.txt", "-t 1:30", "--time=24:00:00", "--time_limit=0:10",
]


@pytest.mark.parametrize("spec", DOCUMENTED)
def test_every_documented_drmaa_option_is_accepted(spec):
    assert drmaa_native_specification_problems(spec) == []


def test_the_documented_list_covers_every_option_the_check_knows():
    written = {word.lstrip("-").split("=")[0] for spec in DOCUMENTED for word in spec.split() if word.startswith("-")}
    assert DRMAA_LONG_OPTIONS | set(DRMAA_SHORT_OPTIONS) | DRMAA_SHORT_FLAGS <= written
    assert DRMAA_FLAGS <= DRMAA_LONG_OPTIONS


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        # Seen on the lab: each passed sbatch's rules and failed every job at submission.
        ("--ntasks=1 --time=1-00:00:00", "--time=1-00:00:00: slurm-drmaa takes times as H:MM or H:MM:SS: --time=24:00:00"),
        ("--ntasks=1 --mem=4G", "--mem=4G: slurm-drmaa takes a number of megabytes without a unit: --mem=4096"),
        ("--ntasks 1", "--ntasks 1: slurm-drmaa needs long options as --ntasks=VALUE"),
        ("--time=90", "--time=90: slurm-drmaa takes times as H:MM or H:MM:SS: --time=1:30:00"),
        ("--time=2-12", "--time=2-12: slurm-drmaa takes times as H:MM or H:MM:SS: --time=60:00:00"),
        ("--mem-per-cpu=512M", "--mem-per-cpu=512M: slurm-drmaa takes a number of megabytes without a unit: --mem-per-cpu=512"),
        ("--tmp=1T", "--tmp=1T: slurm-drmaa takes a number of megabytes without a unit: --tmp=1048576"),
        ("--cpus-per-task=two", "--cpus-per-task=two: slurm-drmaa takes a whole number here"),
        ("-c2", "-c2: slurm-drmaa needs a short option and its value as two words: -c 2"),
        ("-N 1:2", "-N 1:2: slurm-drmaa takes MIN or MIN-MAX node counts"),
        ("--gpus=1", "--gpus is not an option slurm-drmaa knows"),
        ("-G 1", "-G is not an option slurm-drmaa knows"),
        ("-p", "-p needs a value (-p VALUE)"),
        ("-J 'my job'", "'job'' is not an option (options start with - or --; slurm-drmaa does not read quotes)"),
    ],
)
def test_what_slurm_drmaa_refuses_is_named_with_the_accepted_form(spec, expected):
    assert any(problem.startswith(expected) for problem in drmaa_native_specification_problems(spec))


def test_sbatch_rules_for_the_cli_runner():
    # sbatch takes all of these; slurm-drmaa none of them.
    for spec in ("--ntasks=1 --time=1-00:00:00", "--ntasks=1 --mem=4G", "--ntasks 1", "--gpus=1"):
        assert native_specification_problems(spec, "cli") == []
        assert native_specification_problems(spec, "drmaa") != []


def problems_for(runner: str, spec: str, tarball: str) -> list[str]:
    galaxy = {"galaxy_job_runner": runner, "slurm_drmaa": {"tarball": tarball},
              "galaxy_destinations": [{"id": "long", "runner": "slurm", "native_specification": spec}],
              "galaxy_default_destination": "long"}
    try:
        build_cluster(small_cluster(galaxy=galaxy), {})
    except ClusterConfigError as error:
        return error.problems
    return []


def test_the_deploy_refuses_by_the_runner_in_use(tmp_path):
    tarball = tmp_path / "slurm-drmaa-1.1.6.tar.gz"
    tarball.write_bytes(b"test")
    assert problems_for("cli", "--ntasks=1 --mem=4G", str(tarball)) == []
    assert problems_for("drmaa", "--ntasks=1 --mem=4G", str(tarball)) == [
        "galaxy_destinations[0] (long).native_specification '--ntasks=1 --mem=4G': --mem=4G: slurm-drmaa takes a "
        "number of megabytes without a unit: --mem=4096; see slurm-drmaa's README, 'Native specification'"
    ]
