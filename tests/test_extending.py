"""A new method and a new benchmark reach the harness from their own module and YAMLs
alone (tests/toy/): the catalogue lists them, the config resolves, the run writes its
results and the summary reads them; no shared file is edited."""
import os
import sys

import pytest

from leclip import catalogue, harness, runner

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from toy import plugin  # noqa: E402


@pytest.fixture
def toy(tmp_path):
    import leclip.datasets  # noqa: F401  the registries hold the project's own first
    import leclip.trainers  # noqa: F401

    plugin.register()
    plugin.draw(str(tmp_path / "data"))
    yield tmp_path
    plugin.unregister()  # the other tests see the project's catalogue


def test_a_toy_method_and_benchmark_run_through_the_harness(toy, capsys):
    assert "toy" in catalogue.task_methods("A") and catalogue.task_methods("A")[-1] == "toy"
    assert ("toy_shapes", "2") in catalogue.task_columns("A")
    assert catalogue.trainer_configs("toy", "toy_shapes") == [os.path.join(plugin.HERE, "ToyCLIP", "toy_shapes.yaml")]
    assert catalogue.setting_note("toy_shapes", "2") is None
    with pytest.raises(catalogue.HarnessError, match="toy serves task A"):
        catalogue.check_serves("toy", "synth_ml", "0.1")
    plan = harness.plan("toy", "toy_shapes", "2", [], str(toy / "data"))
    out = harness.seed_dir(str(toy / "output"), "toy_shapes", "2", "toy", 1)
    stdout = sys.stdout
    try:
        results = runner.run(harness.seed_cfg(plan, 1, out))
    finally:
        tee, sys.stdout = sys.stdout, stdout  # the run tees stdout into its log.txt
        if tee is not stdout:
            tee.file.close()
    assert results["trainer"] == "ToyCLIP" and 0 <= results["closed_accuracy"] <= 100
    summary = harness.seed_summary("toy", "toy_shapes", "2", [1], str(toy / "output"), ran=[1])
    assert summary.startswith("== Toy zero-shot on toy_shapes 2: 1 of 1 seeds") and "(n = 1)" in summary
    capsys.readouterr()
    code = harness._main(["methods", "toy_shapes", "2"])
    assert code == 0 and capsys.readouterr().out.split()[-1] == "toy"
