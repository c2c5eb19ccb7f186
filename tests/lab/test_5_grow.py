"""A compute host added to the inventory joins the cluster on the next run."""

from __future__ import annotations

import pytest

from tests.lab.conftest import NODES, TIMINGS, lab

pytestmark = pytest.mark.lab


def test_added_compute_host_joins_the_cluster(first_deploy, deploy, lab_host):
    new_node = f"c{NODES + 1}"
    lab("up", "--nodes", str(NODES + 1))
    grown = deploy()
    TIMINGS["rollout after adding a compute host"] = grown.seconds
    assert grown.returncode == 0, grown.log[-5000:]
    assert f"sinfo: {NODES + 1} nodes idle" in grown.log
    assert f"srun -N{NODES + 1}: ran on" in grown.log and new_node in grown.log
    rerun = deploy()
    assert rerun.returncode == 0 and rerun.changes == 0, rerun.changed_operations()
