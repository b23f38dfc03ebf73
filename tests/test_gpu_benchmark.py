"""benchmarks/gpu.py: its arithmetic by hand, and the whole command at toy size on a CPU."""
import json
import os.path as osp
import sys

import pytest
import torch

sys.path.insert(0, osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), "benchmarks"))
import gpu  # noqa: E402
import step_time  # noqa: E402


def test_flops_of_a_step_are_the_matrix_products_of_forward_and_backward():
    class OneProduct:
        def forward_backward(self, batch):
            (batch["img"] @ weight).sum().backward()

    weight = torch.randn(5, 7, requires_grad=True)
    # forward 2*3*5*7; backward: the weight's gradient, another 2*3*5*7 (the input needs none)
    assert step_time.count_flops(OneProduct(), [{"img": torch.randn(3, 5)}]) == 2 * (2 * 3 * 5 * 7)


def test_mfu_images_per_second_and_the_zero_shot_ratio_by_hand():
    row = gpu.finish({"step": 0.5, "flops": 2e12, "step_images": 32, "eval": 300.0}, peak=8e12, zero_shot=400.0)
    assert row["mfu"] == pytest.approx(2e12 / 0.5 / 8e12) == 0.5
    assert row["images_per_s"] == 64 and row["eval_vs_zero_shot"] == 0.75
    untimed = gpu.finish({"step": None, "flops": None, "step_images": 0, "eval": 400.0}, peak=None, zero_shot=400.0)
    assert untimed["mfu"] is None and untimed["images_per_s"] is None


def test_known_cards_get_their_own_peak():
    assert gpu.table_peak("NVIDIA H100 PCIe") == 756e12
    assert gpu.table_peak("NVIDIA H100 80GB HBM3") == 989e12
    assert gpu.table_peak("NVIDIA A100-SXM4-40GB") == 312e12
    assert gpu.table_peak("Some Future Card") is None
    assert gpu.device_peak(torch.device("cpu"), 0) == ("cpu", None)
    assert gpu.device_peak(torch.device("cpu"), 2.5) == ("cpu", 2.5e12)


def test_the_command_runs_at_toy_size_and_writes_its_table_as_json(synth_root, tmp_path, capsys):
    out = tmp_path / "gpu.json"
    gpu.main(["--toy", "--methods", "coop", "zsclip", "--eval-images", "2", "--data", synth_root, "--json", str(out)])
    saved = json.loads(out.read_text())
    assert saved["shape"] == "small" and saved["device"] == "cpu"
    zero_shot, coop = saved["rows"]
    assert (zero_shot["method"], coop["method"]) == ("zsclip", "coop")
    assert zero_shot["step"] is None and zero_shot["eval_vs_zero_shot"] == 1.0
    assert coop["batch"] == 2 and coop["step"] > 0 and coop["flops"] > 0 and coop["memory"] > 0
    assert coop["images_per_s"] == pytest.approx(2 / coop["step"])
    assert coop["eval_vs_zero_shot"] == pytest.approx(coop["eval"] / zero_shot["eval"])
    table = capsys.readouterr().out
    assert "coop" in table and str(out) in table


def test_a_method_that_fails_gets_its_error_row_and_the_others_still_run(synth_root, tmp_path, monkeypatch, capsys):
    run = gpu.run_method

    def failing(method, *args):
        if method == "coop":
            raise ValueError("no reliable image")
        return run(method, *args)

    monkeypatch.setattr(gpu, "run_method", failing)
    out = tmp_path / "gpu.json"
    gpu.main(["--toy", "--methods", "coop", "zsclip", "--eval-images", "2", "--data", synth_root, "--json", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert rows[1] == {"method": "coop", "error": "ValueError: no reliable image"}
    assert rows[0]["method"] == "zsclip" and rows[0]["eval"] > 0
    assert "coop          failed: ValueError: no reliable image" in capsys.readouterr().out


def test_every_method_runs_at_toy_size(synth_root, tmp_path):
    """Each method's step and evaluation, as the GPU command runs them (CSA's and CCD's epoch
    start included), so that the script cannot rot while no GPU runs it."""
    out = tmp_path / "gpu.json"
    gpu.main(["--toy", "--eval-images", "2", "--data", synth_root, "--json", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert [row.get("error") for row in rows] == [None] * len(rows)
    assert {"cfsg", "ccd", "csa", "coop", "maple", "plot", "locoop"} <= {row["method"] for row in rows}
    assert all(row["step"] > 0 for row in rows if row["method"] != "zsclip")
