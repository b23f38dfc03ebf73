"""The run/compare harness: keys, settings, configs, results, and end-to-end runs."""
import json
import os
import signal
import subprocess
import sys

import pytest
import zero_shot
from conftest import SMALL_WORLD
from test_bad_inputs import (  # noqa: F401 (no_launch, run_copy, stopped_run: fixtures)
    coop_args, harness_main, no_launch, one_message, run_copy, stopped_run, train,
)

from leclip import catalogue, harness, runner
from leclip.dassl import build_dataset

REPO = catalogue.REPO


def run_script(*args, env=None):
    return subprocess.run(
        ["bash", *args], cwd=REPO, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=300
    )


def test_unknown_method_and_dataset_list_the_valid_keys(tmp_path):
    out = run_script("scripts/run.sh", "coopp", "synth_fg", "5", env={"OUTPUT": str(tmp_path)})
    assert out.returncode == 2 and "valid methods: bce_full, zsclip" in out.stderr
    out = run_script("scripts/run.sh", "coop", "aircrafts", "5", env={"OUTPUT": str(tmp_path)})
    assert out.returncode == 2 and "valid datasets: synth_fg" in out.stderr


@pytest.mark.parametrize(
    "dataset,setting,message",
    [("aircraft", "five", "labels per ID class"), ("semiaves", "5", "'in'"), ("coco", "2.0", "labeled ratio")],
)
def test_bad_settings(dataset, setting, message):
    with pytest.raises(catalogue.HarnessError, match=message):
        catalogue.setting_opts(dataset, setting)


def test_settings_map_to_config_keys():
    assert catalogue.setting_opts("cars", 20) == ["DATASET.NUM_LABELED", "20"]
    assert catalogue.setting_opts("semiaves", "inout") == ["DATASET.SETTING", "inout"]
    assert catalogue.setting_opts("voc2007", "unsup") == ["DATASET.SETTING", "unsup"]
    assert catalogue.setting_opts("coco", "0.1") == ["DATASET.LABELED_RATIO", "0.1"]
    assert catalogue.task_of_setting("coco", "unsup") == "B" and catalogue.task_of_setting("coco", "0.1") == "C"


def test_config_key_typo_is_one_clear_message(tmp_path):
    out = subprocess.run(
        [sys.executable, "train.py", "--trainer", "LECoOp", "--output-dir", str(tmp_path),
         "--dataset-config-file", "configs/datasets/synth_fg.yaml", "OPTIM.LRR", "0.1"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 2
    assert "OPTIM.LRR" in out.stderr and "Traceback" not in out.stderr


def write_result(folder, method, seed, **metrics):
    path = folder / method / f"seed{seed}"
    path.mkdir(parents=True)
    (path / "results.json").write_text(json.dumps({"seed": seed, "ssl_mode": "none", **metrics}))


def test_parse_results_mean_and_std(tmp_path):
    setting = tmp_path / "synth_fg" / "5"
    write_result(setting, "coop", 1, closed_accuracy=60.0, balanced_accuracy=50.0, auroc=70.0)
    write_result(setting, "coop", 2, closed_accuracy=64.0, balanced_accuracy=54.0, auroc=72.0)
    write_result(setting, "zsclip", 1, closed_accuracy=40.0, balanced_accuracy=30.0, auroc=60.0)
    out = subprocess.run(
        [sys.executable, "scripts/parse_results.py", str(setting)], cwd=REPO, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    lines = (setting / "compare.csv").read_text().splitlines()
    assert lines[0] == "method,SSL mode,seeds,closed_accuracy,balanced_accuracy,auroc"
    assert lines[1].startswith("ZeroshotCLIP,none,1,40.00 (n = 1)")  # the paper's row order; one seed: no std
    assert lines[2] == "CoOp,none,2,62.00 ± 2.00,52.00 ± 2.00,71.00 ± 1.00"
    assert "| CoOp" in (setting / "compare.md").read_text()


def finished_seed(output_root, method="coop", dataset="synth_fg", setting="5", seed=1, opts=(), data_root="./data"):
    """A finished seed folder: results.json and the config.yaml the command resolves."""
    plan = harness.plan(method, dataset, setting, list(opts), os.path.abspath(data_root))
    out = harness.seed_dir(str(output_root), dataset, setting, method, seed)
    os.makedirs(out)
    cfg = harness.seed_cfg(plan, seed, out)
    with open(os.path.join(out, runner.CONFIG), "w") as f:
        f.write(cfg.dump())
    with open(os.path.join(out, runner.RESULTS), "w") as f:
        json.dump({"seed": seed, "ssl_mode": "none", "closed_accuracy": 1.0}, f)
    return out


def test_run_sh_skips_a_finished_seed(tmp_path):
    finished_seed(tmp_path)
    out = run_script("scripts/run.sh", "coop", "synth_fg", "5", "1", env={"OUTPUT": str(tmp_path)})
    assert out.returncode == 0 and "done already" in out.stdout


def test_zero_shot_equals_an_independent_computation(run_trainer, synth_root):
    results = run_trainer("LEZeroshotCLIP", "configs/trainers/LEZeroshotCLIP/synth.yaml")
    cfg = catalogue.setup_cfg(
        dataset_config_file=catalogue.dataset_config("synth_fg"),
        opts=catalogue.setting_opts("synth_fg", "5") + SMALL_WORLD,
        root=synth_root,
        seed=1,
    )
    sims, labels = zero_shot.similarities(build_dataset(cfg), cfg.DATASET.PROMPT_TEMPLATE)
    assert results["closed_accuracy"] == pytest.approx(zero_shot.closed_accuracy(sims, labels), abs=1e-6)
    assert results["closed_accuracy"] > 100 / 12 + 10  # and well above chance
    assert results["trainer"] == "LEZeroshotCLIP" and results["ssl_mode"] == "none"


def test_ablation_rows(tmp_path):
    rows_file = tmp_path / "rows.txt"
    rows_file.write_text("# comment\nCoOp+Adapter | TRAINER.CFSG.VSI False\n+SFM (fine) | A 1 B 2\n")
    assert harness.ablation_rows(str(rows_file)) == [
        ("CoOp+Adapter", "CoOp+Adapter", ["TRAINER.CFSG.VSI", "False"]),
        ("+SFM (fine)", "+SFM__fine_", ["A", "1", "B", "2"]),
    ]
    rows_file.write_text("no separator here\n")
    with pytest.raises(catalogue.HarnessError, match="name \\| KEY VALUE"):
        harness.ablation_rows(str(rows_file))


def test_each_row_of_csas_choices_changes_the_one_value_it_names(tmp_path):
    """A row whose key is misspelt, or whose value is already the recipe's, would measure
    nothing; the first row is the recipe itself."""
    def cfg(overrides):
        return runner.flat(catalogue.setup_cfg(
            os.path.join(REPO, "configs/trainers/CSA/synth.yaml"), catalogue.dataset_config("synth_ml"),
            catalogue.setting_opts("synth_ml", "0.1") + overrides, root=str(tmp_path), output_dir=str(tmp_path),
            seed=1, trainer="CSA",
        ))

    recipe = cfg([])
    rows = harness.ablation_rows(os.path.join(catalogue.CONFIGS, "ablations", "csa_choices.txt"))
    assert rows[0][2] == [] and len(rows) > 10
    for name, _, overrides in rows[1:]:
        changed = {key for key, value in cfg(overrides).items() if value != recipe[key]}
        assert changed == {overrides[0]}, name


def test_one_method_table_gives_each_task_its_methods_in_row_order(monkeypatch):
    assert {task: catalogue.task_methods(task) for task in "ABC"} == {
        "A": ["zsclip", "clip_lora", "clip_adapter", "coop", "locoop", "plot", "maple", "cfsg"],
        "B": ["bce_full", "zsclip", "an", "an_ls", "role", "cdul", "ccd"],
        "C": ["zsclip", "dualcoop", "dualcoop_pl", "csa"],
    }
    assert catalogue.check_method("coop").trainer == "LECoOp" and catalogue.methods()["cfsg"].display == "CFSG-CLIP"
    # a baseline that is another trainer with switches: its variant file follows the recipe
    recipe, variant = catalogue.trainer_configs("cdul", "synth_ml")
    assert recipe.endswith("CCD/synth.yaml") and variant.endswith("CCD/variants/cdul.yaml")
    cfg = catalogue.setup_cfg([recipe, variant], catalogue.dataset_config("synth_ml"), ["DATASET.SETTING", "unsup"])
    assert (cfg.TRAINER.CCD.LABELS, cfg.TRAINER.CCD.UPDATE) == ("cdul", False)
    assert catalogue.trainer_configs("coop", "synth_fg") == [catalogue.trainer_config("coop", "synth_fg")]
    catalogue.check_serves("zsclip", "coco", "0.1")  # zero-shot serves every task
    with pytest.raises(catalogue.HarnessError, match="ccd serves task B .* coco 0.1 is task C"):
        catalogue.check_serves("ccd", "coco", "0.1")


@pytest.mark.parametrize("value, expected", [("100", 100), ("12.5", 12.5), ("model", "model")])
def test_the_logit_scale_takes_a_word_or_a_number_over_any_recipe(value, expected):
    for recipe in ("LECLIPLoRA", "LECoOp"):  # the recipes set 100 and "model"
        cfg = catalogue.setup_cfg(
            f"{catalogue.CONFIGS}/trainers/{recipe}/synth.yaml", catalogue.dataset_config("synth_fg"),
            ["TRAINER.LOGIT_SCALE", value],
        )
        assert cfg.TRAINER.LOGIT_SCALE == expected



# ---------------------------------------------------------------- a finished seed is reused only for its own config
def test_a_finished_seed_of_the_same_config_is_skipped(tmp_path, capsys, no_launch):
    finished_seed(tmp_path / "output", data_root=tmp_path / "data")
    code, out, _ = harness_main(capsys, "run", "coop", "synth_fg", "5", "1")
    assert code == 0 and "done already" in out and no_launch == []


def test_a_finished_seed_of_another_config_is_refused_naming_the_keys(tmp_path, capsys, no_launch):
    out_dir = finished_seed(tmp_path / "output", data_root=tmp_path / "data")
    code, _, err = harness_main(capsys, "run", "coop", "synth_fg", "5", "1", "--", "OPTIM.MAX_EPOCH", "3")
    assert code == 2 and no_launch == []
    one_message(err, "holds a finished run of another config", "OPTIM.MAX_EPOCH:", "-> 3", "OUTPUT=", "--force",
                "nothing is deleted")
    assert os.path.isfile(os.path.join(out_dir, runner.RESULTS))  # untouched


def test_force_moves_the_finished_seed_aside_and_runs_it(tmp_path, capsys, no_launch):
    out_dir = finished_seed(tmp_path / "output", data_root=tmp_path / "data")
    code, out, _ = harness_main(capsys, "run", "coop", "synth_fg", "5", "1", "--force", "--", "OPTIM.MAX_EPOCH", "3")
    assert code == 0 and len(no_launch) == 1 and "moved aside" in out
    moved = [os.path.join(root, f) for root, _, files in os.walk(os.path.dirname(out_dir)) for f in files
             if f == runner.RESULTS]
    assert len(moved) == 1 and f"{os.sep}{harness.REPLACED}" in moved[0]  # kept, not deleted
    assert not os.path.exists(out_dir)


def test_a_finished_seed_without_its_config_is_skipped_with_a_warning(tmp_path, capsys, no_launch):
    """As a resume without config.yaml: a folder of an older version or written by hand."""
    out_dir = finished_seed(tmp_path / "output", data_root=tmp_path / "data")
    os.remove(os.path.join(out_dir, runner.CONFIG))
    code, out, _ = harness_main(capsys, "run", "coop", "synth_fg", "5", "1")
    assert code == 0 and no_launch == [] and "cannot be compared" in out and "done already" in out


def test_an_unknown_key_fails_before_any_skip(tmp_path, capsys, no_launch):
    finished_seed(tmp_path / "output", data_root=tmp_path / "data")
    code, _, err = harness_main(capsys, "run", "coop", "synth_fg", "5", "1", "--", "TRAINER.CFSG.TOPK", "3")
    assert code == 2 and no_launch == []
    one_message(err, "TRAINER.CFSG.TOPK")
    assert "done already" not in err


# ---------------------------------------------------------------- --dry-run
def test_dry_run_prints_the_plan_and_trains_nothing(synth_root, tmp_path, capsys, no_launch, monkeypatch):
    monkeypatch.setenv("DATA", synth_root)
    code, out, err = harness_main(capsys, "run", "coop", "synth_fg", "5", "1", "--dry-run", "--", *SMALL_WORLD)
    assert code == 0 and no_launch == [], err
    assert "LECoOp/synth.yaml" in out and "synth-vit.pt (present)" in out
    assert "train_x 60" in out and "test 240" in out  # 12 ID classes x 5 labels; 24 classes x 10
    assert "estimated steps:" in out and "would run" in out
    assert not os.path.exists(tmp_path / "output")


def test_dry_run_and_a_run_name_every_missing_piece_at_once(tmp_path, capsys, no_launch, monkeypatch):
    monkeypatch.setenv("LECLIP_CLIP_CACHE", str(tmp_path / "clip"))
    code, _, err = harness_main(capsys, "run", "coop", "dogs", "5", "1", "--dry-run")
    assert code == 2 and no_launch == []
    one_message(err, "2 piece(s) of this run are missing", "data: Dataset folder not found",
                "weights: CLIP weights for 'ViT-B/16' not found", str(tmp_path / "clip"))
    code, _, err = train(capsys, "--config-file", catalogue.trainer_config("coop", "dogs"), "--root", tmp_path / "data",
                         "--output-dir", tmp_path / "run", "--seed", 1, "--trainer", "LECoOp",
                         "--dataset-config-file", catalogue.dataset_config("dogs"), "DATASET.NUM_LABELED", 5)
    assert code == 2
    one_message(err, "2 piece(s) of this run are missing", "Dataset folder not found", "CLIP weights")


# ---------------------------------------------------------------- how a result was made
def test_overrides_of_the_recipe_are_recorded_and_the_setting_is_not_one():
    files = catalogue.trainer_configs("coop", "synth_fg")
    recipe = catalogue.setup_cfg(files, catalogue.dataset_config("synth_fg"), [])
    cfg = catalogue.setup_cfg(files, catalogue.dataset_config("synth_fg"),
                              ["DATASET.NUM_LABELED", "5", "OPTIM.MAX_EPOCH", "2", "TRAIN.PRINT_FREQ", "3"])
    assert runner.recipe_overrides(recipe, cfg) == {"OPTIM.MAX_EPOCH": 2}
    assert runner.recipe_overrides(recipe, recipe) == {}


def test_a_resumed_run_reports_its_whole_time_and_its_overrides(run_copy, synth_root, capsys):
    runner.write_json_atomic(str(run_copy / runner.ELAPSED), {"seconds": 1000.0})  # a stopped session's time
    code, _, err = train(capsys, *coop_args(synth_root, run_copy))
    assert code == 0, err
    results = json.loads((run_copy / runner.RESULTS).read_text())
    assert results["seconds"] >= 1000.0 and not (run_copy / runner.ELAPSED).exists()
    assert results["overrides"]["OPTIM.MAX_EPOCH"] == 1 and results["recipe_followed"] is False


def test_the_stop_message_claims_a_checkpoint_only_once_one_exists(tmp_path, run_copy):
    early = runner.stop_message(signal.SIGTERM, str(tmp_path))
    assert "no checkpoint was written" in early and "starts the run over" in early and "kept" not in early
    assert "the last epoch checkpoint in" in runner.stop_message(signal.SIGINT, str(run_copy))


def test_tables_mark_the_rows_that_depart_from_their_recipe(tmp_path, capsys):
    from leclip import report

    setting = tmp_path / "synth_fg" / "5"
    write_result(setting, "coop", 1, closed_accuracy=60.0, recipe_followed=False, overrides={"OPTIM.MAX_EPOCH": 1})
    write_result(setting, "zsclip", 1, closed_accuracy=40.0, recipe_followed=True, overrides={})
    _, rows = report.collect(str(setting))
    assert [r.label for r in rows] == ["ZeroshotCLIP", "CoOp" + report.NOT_RECIPE]
    report.setting_report(str(setting), papers=True)
    assert report.NOT_RECIPE_NOTE in capsys.readouterr().out


# ---------------------------------------------------------------- entry points a new user meets first
def test_check_dataset_exits_2_on_a_missing_folder(tmp_path, capsys):
    import runpy

    check = runpy.run_path(os.path.join(REPO, "scripts", "check_dataset.py"))
    assert check["main"](["cub", "--root", str(tmp_path)]) == 2
    assert "Dataset folder not found" in capsys.readouterr().err


def test_train_py_help_shows_le_clips_flags_and_its_example_line_by_line():
    out = subprocess.run([sys.executable, "train.py", "--help"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0
    assert "--trainer LECoOp \\\n        --dataset-config-file" in out.stdout  # the example keeps its lines
    assert "--viz" in out.stdout and "--skip-bad-images" in out.stdout
    for flag in ("--source-domains", "--target-domains", "--transforms", "--head"):
        assert flag not in out.stdout
