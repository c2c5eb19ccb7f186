"""Reading Slurm's answers (tasks.slurm_status): node states (sinfo(1), NODE STATE
CODES), sinfo's node table and scontrol's job record."""

from __future__ import annotations

import pytest

from tasks.slurm_status import (
    HEALTHY_STATES, STATE_FLAGS, STOPPED_STATES, UNUSABLE_STATES, base_state, node_health, parse_job, parse_sinfo_nodes,
)


@pytest.mark.parametrize("state", sorted(HEALTHY_STATES))
def test_working_states_are_healthy_busy_or_not(state):
    assert node_health(state) == "healthy"


@pytest.mark.parametrize("state", ["alloc", "mix", "idle", "comp", "resv", "plnd", "maint", "blocked", "npc"])
def test_the_states_of_a_busy_or_reserved_cluster_are_healthy(state):
    assert node_health(state) == "healthy"
    assert node_health(state.upper()) == "healthy"  # %T-like capitals read the same


@pytest.mark.parametrize("flag", "~#!%$@^-+")
def test_power_reboot_maintenance_and_planned_flags_keep_a_node_healthy(flag):
    assert node_health(f"idle{flag}") == "healthy"
    assert node_health(f"alloc{flag}") == "healthy"
    assert node_health(f"mix{flag}") == "healthy"


@pytest.mark.parametrize("state", sorted(STOPPED_STATES - {"down"}))
def test_drained_and_failed_nodes_are_stopped_responding_or_not(state):
    assert node_health(state) == "stopped"
    assert node_health(f"{state}*") == "stopped"  # not responding does not make it settle by itself


@pytest.mark.parametrize("state", sorted(UNUSABLE_STATES))
def test_invalid_future_and_error_nodes_are_stopped(state):
    assert node_health(state) == "stopped"
    assert node_health(f"{state}*") == "stopped"


def test_down_is_stopped_while_responding_but_settling_when_not():
    assert node_health("down") == "stopped"  # set by an admin, or an unexpected reboot
    assert node_health("down*") == "settling"  # ReturnToService brings it back once slurmd registers
    assert node_health("down~") == "stopped"


@pytest.mark.parametrize("state", ["idle*", "alloc*", "mix*", "comp*", "unk", "unk*", "resm", "something_new"])
def test_unknown_and_not_responding_nodes_settle_before_they_count(state):
    assert node_health(state) == "settling"


def test_every_flag_is_stripped_from_the_base_state():
    assert all(base_state(f"mix{flag}") == "mix" for flag in STATE_FLAGS)
    assert base_state("DRAIN*") == "drain"


SINFO = """\
c1 alloc 2/0/0/2
c2 mix 1/1/0/2
c2 mix 1/1/0/2
c3 idle~ 0/4/0/4
c4 resv 0/2/0/2
c5 down* 0/0/2/2
garbage
"""


def test_sinfo_node_table_one_entry_per_node():
    nodes = parse_sinfo_nodes(SINFO)
    assert list(nodes) == ["c1", "c2", "c3", "c4", "c5"]  # c2 listed once per partition
    assert (nodes["c2"].cpus_allocated, nodes["c2"].cpus_idle, nodes["c2"].cpus_total) == (1, 1, 2)
    assert nodes["c1"].describe() == "c1 (alloc, 2 of 2 CPUs allocated)"


def test_a_task_starts_now_only_on_a_powered_healthy_unreserved_node_with_an_idle_cpu():
    nodes = parse_sinfo_nodes(SINFO)
    assert [name for name, node in nodes.items() if node.takes_a_task_now] == ["c2"]


def test_job_record_from_scontrol_oneliner():
    text = ("JobId=12 JobName=pgs-verify UserId=root(0) JobState=PENDING Reason=Resources Dependency=(null) "
            "ExitCode=0:0 ReqNodeList=(null) ExcNodeList=(null) NodeList=h1-c2 Command=/usr/local/share/x.sbatch")
    job = parse_job(text)
    assert (job["JobState"], job["Reason"], job["ExitCode"], job["NodeList"]) == ("PENDING", "Resources", "0:0", "h1-c2")
    assert job["ReqNodeList"] == "(null)"
