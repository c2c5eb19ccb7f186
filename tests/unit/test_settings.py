"""Settings declared once: unknown and misplaced keys refused, the README's table matches the declarations."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import pytest

from tasks.model import ClusterConfigError, build_cluster
from tasks.model.settings import BY_NAME, CLUSTER, GALAXY, HOST, SETTINGS, markdown_table
from tests.unit.conftest import CLI_RUNNER, inventory_host, small_cluster

README = Path(__file__).resolve().parents[2] / "README.md"


def problems_of(hosts, **settings) -> list[str]:
    with pytest.raises(ClusterConfigError) as error:
        build_cluster(hosts, settings)
    return error.value.problems


def split_cluster(galaxy_data: dict) -> list:
    """A controller, a compute host and a Galaxy host of its own (not the controller)."""
    return [
        inventory_host("head", "slurm_controller", address="10.0.0.10"),
        inventory_host("c1", "slurm_compute", address="10.0.0.11"),
        inventory_host("gx", "galaxy", address="10.0.0.12", data={"galaxy_job_runner": "cli", **galaxy_data}),
    ]


def test_every_setting_declared_once_with_a_scope_and_meaning():
    names = [s.name for s in SETTINGS]
    assert len(names) == len(set(names))
    assert all(s.scope in (CLUSTER, GALAXY, HOST) and s.meaning for s in SETTINGS)


def test_a_misspelled_key_is_refused_with_the_closest_name():
    hosts = small_cluster(1)
    hosts[0] = inventory_host("head", "slurm_controller", "galaxy", address="10.0.0.10",
                              data={"galaxy_job_runner": "cli", "slurm_partiton": []})
    (problem,) = problems_of(hosts)
    assert problem == "host head: unknown setting slurm_partiton; did you mean slurm_partitions?"


def test_an_unknown_key_with_nothing_close_points_at_the_table():
    hosts = small_cluster(1)
    hosts[1] = inventory_host("c1", "slurm_compute", address="10.0.0.11", data={"colour": "blue"})
    assert problems_of(hosts) == ["host c1: unknown setting colour; see the README's settings table"]


def test_connector_keys_and_pyinfra_arguments_are_not_settings():
    hosts = small_cluster(1)
    hosts[1] = inventory_host("c1", "slurm_compute", address="10.0.0.11",
                              data={"ssh_user": "admin", "ssh_port": 2222, "_sudo": True})
    assert build_cluster(hosts, {}).name == "galaxy"


def test_a_cluster_setting_where_it_is_not_read_is_refused():
    # group_data/galaxy.py with a cluster setting, the Galaxy host not the controller.
    (problem,) = problems_of(split_cluster({"slurm_cluster_name": "other"}))
    assert problem.startswith("host gx: slurm_cluster_name is a cluster setting, read from head's data only")
    assert "set it in group_data/all.py" in problem


def test_a_cluster_setting_with_the_controllers_value_is_fine():
    # group_data/all.py (or --data) gives every host the same value.
    hosts = split_cluster({"slurm_cluster_name": "other"})
    hosts[0] = inventory_host("head", "slurm_controller", address="10.0.0.10", data={"slurm_cluster_name": "other"})
    assert build_cluster(hosts, {"slurm_cluster_name": "other"}).name == "other"


def test_a_galaxy_setting_on_a_host_that_is_not_the_galaxy_host_is_refused():
    hosts = split_cluster({})
    hosts[1] = inventory_host("c1", "slurm_compute", address="10.0.0.11", data={"galaxy_handlers": 2})
    (problem,) = problems_of(hosts)
    assert problem.startswith("host c1: galaxy_handlers is a galaxy setting, read from gx's data only")
    assert "group_data/galaxy.py" in problem


def test_galaxy_settings_are_not_checked_without_galaxy():
    hosts = split_cluster({})
    hosts[1] = inventory_host("c1", "slurm_compute", address="10.0.0.11", data={"galaxy_handlers": 2})
    assert build_cluster(hosts, {"deploy_galaxy": False}).galaxy is None


def test_host_settings_may_be_anywhere():
    hosts = split_cluster({})
    hosts[1] = inventory_host("c1", "slurm_compute", address="10.0.0.11",
                              data={"cluster_address": "10.0.0.11", "slurm_node": {"cpus": 2}})
    assert build_cluster(hosts, {}).nodes[0].cpus == 2


def test_readme_settings_table_is_the_declarations():
    text = README.read_text()
    match = re.search(r"<!-- settings table: .*? -->\n(.*?)\n<!-- end of settings table -->", text, re.S)
    assert match, "README.md has no generated settings table"
    assert match.group(1) == markdown_table(), (
        "README.md's settings table differs from tasks/model/settings.py: "
        "replace it with the output of `python -m tasks.model.settings`"
    )


def shipped_group_data(name: str) -> dict:
    """What pyinfra gives every host of a group from the shipped group_data/<name>.py."""
    return {k: v for k, v in runpy.run_path(str(README.parent / "group_data" / f"{name}.py")).items() if not k.startswith("__")}


def test_group_data_files_set_nothing_and_their_examples_are_declared_settings_of_their_scope():
    # One source per knob: the defaults live in tasks/model/settings.py; group_data shows examples.
    root = README.parent
    for name, scopes in (("all", {CLUSTER, GALAXY, HOST}), ("galaxy", {GALAXY})):
        assert shipped_group_data(name) == {}, f"group_data/{name}.py sets values: keep it to commented examples"
        examples = re.findall(r"^# ([a-z_]+) = ", (root / f"group_data/{name}.py").read_text(), re.M)
        assert examples and all(n in BY_NAME and BY_NAME[n].scope in scopes for n in examples), (name, examples)


def test_a_cluster_setting_in_the_controller_hosts_own_dict_is_read():
    # Tried as a new user would: slurm_cluster_name in the controller's dict only, the shipped
    # group_data applying to every host; it used to give the others "galaxy" and refuse the name.
    hosts = [
        inventory_host("head", "slurm_controller", "galaxy", address="10.0.0.10",
                       data={**shipped_group_data("all"), **shipped_group_data("galaxy"), **CLI_RUNNER,
                             "slurm_cluster_name": "alpha"}),
        inventory_host("c1", "slurm_compute", address="10.0.0.11", data=shipped_group_data("all")),
    ]
    assert build_cluster(hosts, hosts[0].data).name == "alpha"

