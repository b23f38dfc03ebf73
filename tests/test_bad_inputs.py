"""Bad input, given the way a new user gives it: through `train.py`, `scripts/run.sh`,
`scripts/compare.sh` and `scripts/parse_results.py`. Each case checks the exit status,
one message naming the fix with no traceback, and that no earlier result or checkpoint
changed. docs/ERRORS.md lists every case with its message.

Most cases call train.py's `main` and the harness in-process (the same code the scripts
run); subprocesses only where the script itself is the point (signals, working
directory, the engine choice at import).
"""
import glob
import hashlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import SMALL_WORLD

import miniature
from leclip import catalogue, harness, runner
from leclip.dassl import load_checkpoint  # the engine's reader: Dassl's checkpoints hold its scheduler objects

REPO = catalogue.REPO
VENV_BIN = os.path.dirname(sys.executable)


def _load_script(name, path):
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TRAIN = _load_script("leclip_train_entry", "train.py")
PARSE = _load_script("leclip_parse_results", "scripts/parse_results.py")


class Payload:
    """A pickle that creates `marker` when it is unpickled."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


# ---------------------------------------------------------------- helpers
def train_args(root, out, trainer="LEZeroshotCLIP", *opts, dataset="synth_fg", setting="5"):
    method = {m.trainer: key for key, m in catalogue.methods().items()}[trainer]
    world = SMALL_WORLD if dataset.startswith("synth_") else []
    return [
        "--root", str(root), "--seed", "1", "--trainer", trainer,
        "--dataset-config-file", catalogue.dataset_config(dataset),
        "--config-file", catalogue.trainer_config(method, dataset),
        "--output-dir", str(out), *catalogue.setting_opts(dataset, setting), *world, *opts,
    ]


def train(capsys, *args):
    """(exit status, stdout, stderr) of `python train.py ARGS`, run in-process."""
    capsys.readouterr()
    stdout = sys.stdout
    try:
        code = TRAIN.main([str(a) for a in args])
    finally:
        sys.stdout.flush()
        sys.stdout = stdout  # a run tees stdout into its log.txt
    out, err = capsys.readouterr()
    return code, out, err


def harness_main(capsys, *argv):
    capsys.readouterr()
    code = harness._main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_message(err, *fragments):
    """One error message with each fragment, and no traceback."""
    assert "Traceback" not in err, err
    assert err.count("error:") == 1, err
    for fragment in fragments:
        assert fragment in err, f"{fragment!r} not in {err!r}"


def snapshot(folder, everything=False):
    """{relative path: sha1} of the results and checkpoints below `folder` (every file but
    log.txt, which records each attempt, and config.yaml, which a run that started writes)."""
    found = {}
    for path in glob.glob(os.path.join(str(folder), "**", "*"), recursive=True):
        if os.path.isfile(path) and (everything or os.path.basename(path) not in ("log.txt", "config.yaml")):
            with open(path, "rb") as f:
                found[os.path.relpath(path, str(folder))] = hashlib.sha1(f.read()).hexdigest()
    return found


@pytest.fixture
def no_launch(monkeypatch, tmp_path):
    """The harness's train.py launches, recorded instead of run (each returns 0); OUTPUT
    and DATA in the test's folder (never the checkout's ./output)."""
    launched = []
    monkeypatch.setenv("OUTPUT", str(tmp_path / "output"))
    monkeypatch.setenv("DATA", str(tmp_path / "data"))

    def call(command):
        launched.append(command)
        return 0

    monkeypatch.setattr(harness.CHILDREN, "call", call)
    return launched


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory, synth_root):
    """A CoOp run folder with its epoch-1 checkpoint and config.yaml but no results.json,
    as a run stopped after its first epoch leaves it; copy it before changing it."""
    out = tmp_path_factory.mktemp("stopped") / "run"
    stdout = sys.stdout
    try:
        assert TRAIN.main(train_args(synth_root, out, "LECoOp", "OPTIM.MAX_EPOCH", "1")) == 0
    finally:
        sys.stdout = stdout
    os.remove(out / "results.json")
    return out


@pytest.fixture
def run_copy(stopped_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(stopped_run, copy)
    return copy


def coop_args(synth_root, out, *opts):
    return train_args(synth_root, out, "LECoOp", "OPTIM.MAX_EPOCH", "1", *opts)


# ---------------------------------------------------------------- security
def test_pickled_weights_file_is_refused_and_never_run(tmp_path, synth_root, capsys):
    marker = tmp_path / "payload-ran"
    weights = tmp_path / "weights.pt"
    torch.save({"state_dict": {"text_projection": Payload(marker)}}, weights)
    code, _, err = train(capsys, *train_args(synth_root, tmp_path / "out"), "MODEL.BACKBONE.PATH", weights)
    assert code == 2
    one_message(err, str(weights), "refused because loading it could run code")
    assert not marker.exists()
    run_on_unpickling, args = Payload(marker).__reduce__()
    run_on_unpickling(*args)  # the payload is real: what unpickling it would call writes the marker
    assert marker.exists()


def test_pickled_checkpoint_is_refused_and_never_run(run_copy, tmp_path, synth_root, capsys):
    marker = tmp_path / "payload-ran"
    checkpoint = run_copy / "prompt_learner" / "model.pth.tar-1"
    torch.save({"state_dict": Payload(marker), "epoch": 1}, checkpoint)
    before = snapshot(run_copy)
    code, _, err = train(capsys, *coop_args(synth_root, run_copy))
    assert code == 2
    one_message(err, str(checkpoint), "refused because loading it could run code")
    assert not marker.exists() and snapshot(run_copy) == before


# ---------------------------------------------------------------- files that are not what they claim
@pytest.mark.parametrize("kind,fragment", [
    ("empty", "is empty"),
    ("text", "is a text file (it starts with 'version https://git-lfs"),
    ("truncated", "is truncated or corrupt"),
    ("not_clip", "hold no CLIP state dict"),
])
def test_bad_weights_file_is_one_message(tmp_path, synth_root, capsys, kind, fragment):
    weights = tmp_path / "ViT-B-16.pt"
    if kind == "empty":
        weights.write_bytes(b"")
    elif kind == "text":  # what a Git LFS pointer or a failed download leaves
        weights.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0\n")
    elif kind == "truncated":
        torch.save({"state_dict": {"text_projection": torch.zeros(4, 4)}}, weights)
        weights.write_bytes(weights.read_bytes()[:100])
    else:
        torch.save({"fc.weight": torch.zeros(2, 2)}, weights)
    code, _, err = train(capsys, *train_args(synth_root, tmp_path / "out"), "MODEL.BACKBONE.PATH", weights)
    assert code == 2
    one_message(err, str(weights), fragment, "give an official CLIP checkpoint")


def test_truncated_checkpoint_names_the_fix(run_copy, synth_root, capsys):
    checkpoint = run_copy / "prompt_learner" / "model.pth.tar-1"
    checkpoint.write_bytes(checkpoint.read_bytes()[:200])
    before = snapshot(run_copy)
    code, _, err = train(capsys, *coop_args(synth_root, run_copy))
    assert code == 2
    one_message(err, str(checkpoint), "truncated or corrupt", "delete it", "to start the run again")
    assert snapshot(run_copy) == before


def test_empty_checkpoint_marker_names_the_fix(run_copy, synth_root, capsys):
    (run_copy / "prompt_learner" / "checkpoint").write_text("")
    before = snapshot(run_copy)
    code, _, err = train(capsys, *coop_args(synth_root, run_copy))
    assert code == 2
    one_message(err, "checkpoint is empty", "model.pth.tar-<epoch>")
    assert snapshot(run_copy) == before


# ---------------------------------------------------------------- resume
def test_resume_with_a_changed_config_is_refused_listing_the_keys(run_copy, synth_root, capsys):
    before = snapshot(run_copy, everything=True)  # refused before the run starts: not even its log changes
    code, _, err = train(capsys, *coop_args(synth_root, run_copy, "TRAINER.COOP.N_CTX", "8", "OPTIM.LR", "0.5"))
    assert code == 2
    one_message(err, "holds checkpoints of a run with another config", "OPTIM.LR: 0.02 -> 0.5",
                "TRAINER.COOP.N_CTX: 4 -> 8", "--force-resume")
    assert snapshot(run_copy, everything=True) == before


def test_forced_resume_after_a_shape_change_is_one_message(run_copy, synth_root, capsys):
    checkpoints = {k: v for k, v in snapshot(run_copy).items() if k.startswith("prompt_learner")}
    saved_config = (run_copy / "config.yaml").read_text()
    code, _, err = train(capsys, "--force-resume", *coop_args(synth_root, run_copy, "TRAINER.COOP.N_CTX", "8"))
    assert code == 2
    one_message(err, "does not fit the one this config builds", "size mismatch for ctx")
    after = snapshot(run_copy)
    assert {k: v for k, v in after.items() if k.startswith("prompt_learner")} == checkpoints
    kept = glob.glob(str(run_copy / "config.before-resume-*.yaml"))  # the checkpoints' own config stays
    assert len(kept) == 1 and open(kept[0]).read() == saved_config


def test_forced_resume_with_another_learning_rate_runs(run_copy, synth_root, capsys):
    code, out, _ = train(capsys, "--force-resume", *coop_args(synth_root, run_copy, "OPTIM.LR", "0.5"))
    assert code == 0 and "OPTIM.LR: 0.02 -> 0.5" in out and "Previous epoch: 1" in out
    assert json.loads((run_copy / "results.json").read_text())["trainer"] == "LECoOp"


# ---------------------------------------------------------------- folders
def test_output_folder_that_cannot_be_written(tmp_path, synth_root, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    code, _, err = train(capsys, *train_args(synth_root, blocker / "out"))
    assert code == 2
    one_message(err, f"Cannot write the output folder {blocker / 'out'}", "--output-dir", "OUTPUT=")


def test_data_folder_that_cannot_be_written(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    code, _, err = train(capsys, *train_args(blocker / "data", tmp_path / "out"))
    assert code == 2
    one_message(err, str(blocker / "data"), "the data folder must be writable", "--root", "DATA=")


# ---------------------------------------------------------------- config values
def test_input_size_that_does_not_fit_the_backbone(tmp_path, synth_root, capsys):
    code, _, err = train(capsys, *train_args(synth_root, tmp_path / "out"), "INPUT.SIZE", "(32, 32)")
    assert code == 2
    one_message(err, "INPUT.SIZE=(32, 32)", "takes 64x64 images", "set INPUT.SIZE (64, 64)")


@pytest.mark.parametrize("method,dataset,setting,task", [
    ("cfsg", "synth_ml", "0.1", "C"), ("coop", "synth_ml", "0.1", "C"), ("coop", "voc2007", "unsup", "B"),
    ("csa", "synth_fg", "5", "A"),
])
def test_harness_refuses_a_method_on_a_task_it_does_not_serve(capsys, no_launch, method, dataset, setting, task):
    code, _, err = harness_main(capsys, "run", method, dataset, setting)
    assert code == 2 and no_launch == []
    one_message(err, f"{method} serves task", f"is task {task}", f"run one of {', '.join(catalogue.task_methods(task))}")


def test_train_py_refuses_a_trainer_on_a_task_it_does_not_serve(tmp_path, synth_root, capsys):
    args = train_args(synth_root, tmp_path / "out", "LEZeroshotCLIP", dataset="synth_ml", setting="0.1")
    args[args.index("--trainer") + 1] = "LECoOp"  # CoOp's softmax cross-entropy on multi-hot labels
    code, _, err = train(capsys, *args)
    assert code == 2
    one_message(err, "LECoOp does not serve SynthML's task (C (semi-supervised multi-label classification)); it serves task A")


def test_run_sh_refuses_before_launching(tmp_path):
    out = run_bash(["scripts/run.sh", "coop", "synth_ml", "0.1"], env={"OUTPUT": str(tmp_path)})
    assert out.returncode == 2
    one_message(out.stderr, "coop serves task A")
    assert not os.listdir(tmp_path)


def test_dassl_engine_that_is_not_installed(tmp_path, synth_root):
    if importlib.util.find_spec("dassl") is not None:
        pytest.skip("Dassl.pytorch is installed here")
    out = subprocess.run(
        [sys.executable, "train.py", *train_args(synth_root, tmp_path / "out")], cwd=REPO, capture_output=True,
        text=True, env={**os.environ, "LECLIP_ENGINE": "dassl"}, timeout=300,
    )
    assert out.returncode == 2
    one_message(out.stderr, "LECLIP_ENGINE=dassl but Dassl.pytorch is not importable", "pip install",
                "unset LECLIP_ENGINE")


def test_debug_shows_the_traceback(tmp_path, synth_root):
    stdout = sys.stdout
    try:
        with pytest.raises(ValueError, match="INPUT.SIZE"):
            TRAIN.main(["--debug", *train_args(synth_root, tmp_path / "out"), "INPUT.SIZE", "(32, 32)"])
    finally:
        sys.stdout = stdout


# ---------------------------------------------------------------- images
def corrupt_cub(root):
    miniature.cub(root)
    bad = root / "CUB_200_2011" / "images" / "003.Sooty_Albatross" / "Sooty_Albatross_9.jpg"  # a test image
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    return bad


def replica_args(root, out, dataset, setting):
    return [*train_args(root, out, "LEZeroshotCLIP", dataset=dataset, setting=setting),
            "MODEL.BACKBONE.NAME", "synth-vit", "INPUT.SIZE", "(64, 64)"]


def test_unreadable_image_is_named(tmp_path, capsys):
    bad = corrupt_cub(tmp_path)
    code, _, err = train(capsys, *replica_args(tmp_path, tmp_path / "out", "cub", "2"))
    assert code == 2
    one_message(err, f"Cannot read image {bad}", "re-download the file", "--skip-bad-images")


def test_skip_bad_images_records_what_it_skipped(tmp_path, capsys):
    bad = corrupt_cub(tmp_path)
    code, out, _ = train(capsys, "--skip-bad-images", *replica_args(tmp_path, tmp_path / "out", "cub", "2"))
    assert code == 0 and "Skipped 1 unreadable images" in out
    listed = (tmp_path / "out" / "skipped_images.txt").read_text().splitlines()
    assert len(listed) == 1 and listed[0].startswith(f"test\t{bad}\t")
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["skipped_images"] == 1


# ---------------------------------------------------------------- results
def finished(folder, **metrics):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps({"trainer": "LECoOp", "seed": 1, "ssl_mode": "none", **metrics}))


def test_finished_results_are_never_overwritten(run_copy, synth_root, capsys):
    finished(run_copy, closed_accuracy=12.5)
    before = snapshot(run_copy, everything=True)
    code, _, err = train(capsys, *coop_args(synth_root, run_copy))
    assert code == 2
    one_message(err, "holds a finished run (LECoOp, seed 1): it is never overwritten", "--overwrite")
    assert snapshot(run_copy, everything=True) == before
    # --overwrite writes the new results and keeps the old ones beside them
    code, _, _ = train(capsys, "--overwrite", *coop_args(synth_root, run_copy))
    assert code == 0
    kept = glob.glob(str(run_copy / "results.replaced-*.json"))
    assert len(kept) == 1 and json.loads(open(kept[0]).read())["closed_accuracy"] == 12.5
    assert json.loads((run_copy / "results.json").read_text())["closed_accuracy"] != 12.5


def test_unreadable_results_do_not_count_as_done(run_copy, synth_root, tmp_path, capsys, no_launch, monkeypatch):
    seed_folder = tmp_path / "output" / "synth_fg" / "5" / "coop" / "seed1"
    seed_folder.mkdir(parents=True)
    (seed_folder / "results.json").write_text('{"closed_accuracy": 5')  # a disk that filled up
    monkeypatch.setenv("OUTPUT", str(tmp_path / "output"))
    code, out, _ = harness_main(capsys, "run", "coop", "synth_fg", "5", "1")
    assert code == 0 and "does not count as done, running the seed" in out
    assert len(no_launch) == 1 and no_launch[0][no_launch[0].index("--output-dir") + 1] == str(seed_folder)
    # train.py runs it and keeps the unreadable file beside the new results
    (run_copy / "results.json").write_text('{"closed_accuracy": 5')
    code, _, _ = train(capsys, *coop_args(synth_root, run_copy))
    assert code == 0
    kept = glob.glob(str(run_copy / "results.unreadable-*.json"))
    assert len(kept) == 1 and open(kept[0]).read() == '{"closed_accuracy": 5'


def test_results_are_written_through_a_unique_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    renames = []
    replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (renames.append((src, dst)), replace(src, dst)))
    runner.write_json_atomic(str(path), {"a": 1.0})
    runner.write_json_atomic(str(path), {"a": 2.0})
    (first, dst1), (second, dst2) = renames
    assert dst1 == dst2 == str(path) and first != second
    assert os.path.dirname(first) == str(tmp_path)  # a rename within one file system
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    with pytest.raises(OSError):
        runner.write_json_atomic(str(path), {"a": 3.0})
    assert json.loads(path.read_text()) == {"a": 2.0} and os.listdir(tmp_path) == ["results.json"]
    with pytest.raises(ValueError):  # never a bare NaN in JSON
        runner.write_json_atomic(str(path), {"a": float("nan")})


def test_undefined_metrics_are_null_and_the_table_says_n_a(tmp_path, capsys):
    miniature.semiaves(tmp_path)  # Semi-Aves' test set is ID only: AUROC is undefined
    out = tmp_path / "output" / "semiaves" / "in" / "zsclip" / "seed1"
    code, _, _ = train(capsys, *replica_args(tmp_path, out, "semiaves", "in"))
    assert code == 0
    text = (out / "results.json").read_text()
    assert '"auroc": null' in text and "NaN" not in text
    assert PARSE.main([str(tmp_path / "output" / "semiaves" / "in")]) == 0
    row = (tmp_path / "output" / "semiaves" / "in" / "compare.csv").read_text().splitlines()[1]
    # the replica's overrides depart from the recipe: the row is marked
    assert row.startswith("ZeroshotCLIP †,none,1,") and row.endswith(",n/a")


@pytest.mark.parametrize("content,why", [
    ("", "is empty"), ('{"mAP": 4', "is unreadable"), ("[1, 2]", "is not a JSON object"),
])
def test_parse_results_names_an_unreadable_results_file(tmp_path, capsys, content, why):
    setting = tmp_path / "synth_fg" / "5"
    finished(setting / "coop" / "seed1", closed_accuracy=60.0, balanced_accuracy=50.0, auroc=70.0)
    bad = setting / "coop" / "seed2" / "results.json"
    bad.parent.mkdir(parents=True)
    bad.write_text(content)
    before = snapshot(setting)
    capsys.readouterr()
    assert PARSE.main([str(setting)]) == 2
    one_message(capsys.readouterr().err, f"{bad} {why}", "Delete the file and rerun that seed")
    assert snapshot(setting) == before


def test_parse_results_averages_the_seeds_that_define_a_metric(tmp_path):
    setting = tmp_path / "semiaves" / "in"
    finished(setting / "coop" / "seed1", closed_accuracy=60.0, balanced_accuracy=50.0, auroc=70.0)
    finished(setting / "coop" / "seed2", closed_accuracy=64.0, balanced_accuracy=54.0, auroc=None)
    assert PARSE.main([str(setting)]) == 0
    row = (setting / "compare.csv").read_text().splitlines()[1]
    assert row == "CoOp,none,2,62.00 ± 2.00,52.00 ± 2.00,70.00 (1 of 2 seeds)"


# ---------------------------------------------------------------- where results go
@pytest.mark.parametrize("key,fix", [
    ("SEED", "give seeds as arguments"), ("DATASET.NUM_LABELED", "the setting is the third argument"),
    ("OUTPUT_DIR", "set the output root with OUTPUT="), ("DATASET.LABELED_RATIO", "the setting is the third argument"),
    ("DATASET.ROOT", "set the data root with DATA="),
])
def test_harness_refuses_overrides_that_would_file_results_elsewhere(capsys, no_launch, key, fix):
    code, _, err = harness_main(capsys, "run", "coop", "synth_fg", "5", "--", key, "7")
    assert code == 2 and no_launch == []
    one_message(err, f"{key} cannot be overridden through the harness", fix)


def test_ablation_row_that_overrides_the_seed_is_refused(tmp_path, no_launch):
    rows = tmp_path / "rows.txt"
    rows.write_text("full | SEED 4\n")
    with pytest.raises(catalogue.HarnessError, match="SEED cannot be overridden"):
        harness.ablate("cfsg", "synth_fg", "5", [1], str(rows), str(tmp_path), str(tmp_path))
    assert no_launch == []


def test_ablate_applies_overrides_to_every_row(capsys, no_launch):
    """`ablate.sh DATASET SETTING -- KEY VALUE` used to drop the overrides silently."""
    code, _, _ = harness_main(capsys, "ablate", "synth_fg", "5", "--", "OPTIM.MAX_EPOCH", "2")
    rows = harness.ablation_rows(os.path.join(catalogue.CONFIGS, "ablations", "cfsg.txt"))
    assert code == 0 and len(no_launch) == len(rows)
    assert all(command[-2:] == ["OPTIM.MAX_EPOCH", "2"] for command in no_launch)
    code, _, err = harness_main(capsys, "ablate", "synth_fg", "5", "--", "SEED", "2")
    assert code == 2 and len(no_launch) == len(rows)
    one_message(err, "SEED cannot be overridden")


def test_ablate_runs_the_rows_file_it_is_given(tmp_path, capsys, no_launch, monkeypatch):
    """--rows runs another rows file of the task's method (CSA's choices), each row under its own folder."""
    monkeypatch.setenv("OUTPUT", str(tmp_path))
    rows = tmp_path / "choices.txt"
    rows.write_text("as shipped |\nTAU 0.1 | TRAINER.CSA.TAU 0.1\n")
    code, out, _ = harness_main(capsys, "ablate", "synth_ml", "0.1", "--rows", rows, "--list")
    assert code == 0 and out.split() == ["as_shipped", "TAU_0.1"] and no_launch == []
    assert harness_main(capsys, "ablate", "synth_ml", "0.1", "--rows", rows)[0] == 0
    folders = [c[c.index("--output-dir") + 1] for c in no_launch]
    assert folders == [str(tmp_path / "synth_ml" / "0.1" / "ablation" / row / "seed1") for row in ("as_shipped", "TAU_0.1")]
    assert no_launch[0][-2:] != ["TRAINER.CSA.TAU", "0.1"] and no_launch[1][-2:] == ["TRAINER.CSA.TAU", "0.1"]
    assert all(c[c.index("--trainer") + 1] == "CSA" for c in no_launch)


def test_seeds_go_to_their_own_folders(tmp_path, capsys, no_launch, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATA", "my_data")  # relative: the caller's folder, not the repository
    monkeypatch.setenv("OUTPUT", "my_out")
    assert harness_main(capsys, "run", "coop", "synth_fg", "5", "1", "2")[0] == 0
    folders = [c[c.index("--output-dir") + 1] for c in no_launch]
    assert folders == [str(tmp_path / "my_out" / "synth_fg" / "5" / "coop" / f"seed{k}") for k in (1, 2)]
    assert {c[c.index("--root") + 1] for c in no_launch} == {str(tmp_path / "my_data")}
    assert all(c[c.index("--seed") + 1] == str(k) for c, k in zip(no_launch, (1, 2)))


def run_bash(args, cwd=REPO, env=None, timeout=300):
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}", **(env or {})}
    return subprocess.run(["bash", *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=timeout)


def test_run_sh_resolves_data_and_output_against_the_callers_folder(tmp_path):
    finished(tmp_path / "out" / "synth_fg" / "5" / "zsclip" / "seed1", closed_accuracy=1.0)
    out = run_bash([os.path.join(REPO, "scripts", "run.sh"), "zsclip", "synth_fg", "5", "1"], cwd=tmp_path,
                   env={"OUTPUT": "out", "DATA": "data"})
    assert out.returncode == 0, out.stderr
    assert f"done already: {tmp_path}/out/synth_fg/5/zsclip/seed1/results.json" in out.stdout


def test_a_setting_no_paper_uses_runs_with_one_note(capsys, no_launch):
    code, out, _ = harness_main(capsys, "run", "coop", "dogs", "7", "1")
    assert code == 0 and len(no_launch) == 1
    assert out.count("note:") == 1 and "setting 7 on dogs is not one the papers report (5, 20)" in out
    code, out, _ = harness_main(capsys, "run", "zsclip", "voc2007", "1.0", "1")
    assert code == 0 and "setting 1.0 on voc2007 is not one the papers report" in out
    code, out, _ = harness_main(capsys, "run", "zsclip", "voc2007", "0.10", "1")
    assert code == 0 and "note:" not in out


# ---------------------------------------------------------------- messages that were unclear
def test_failed_seed_says_where_its_error_is(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(harness.CHILDREN, "call", lambda command: 1)
    with pytest.raises(catalogue.HarnessError, match="seed 1 failed with exit status 1 \\(it stopped before writing a log"):
        harness.run_seeds("coop", "synth_fg", "5", [1], output_root=str(tmp_path))
    log = tmp_path / "synth_fg" / "5" / "coop" / "seed1" / "log.txt"
    log.parent.mkdir(parents=True)
    log.write_text("...")
    with pytest.raises(catalogue.HarnessError, match=f"seed 1 failed with exit status 1 \\(its log: {log}\\)"):
        harness.run_seeds("coop", "synth_fg", "5", [1], output_root=str(tmp_path))


def test_bad_input_of_a_seed_stops_the_harness_with_its_one_message(capsys, monkeypatch):
    calls = []
    monkeypatch.setattr(harness.CHILDREN, "call", lambda command: calls.append(command) or 2)
    code, _, err = harness_main(capsys, "run", "coop", "synth_fg", "5")
    assert code == 2 and len(calls) == 1 and err == ""  # train.py printed the message; seeds 2, 3 not started


def test_known_method_without_a_config_names_the_file(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "trainers" / "LECoOp"
    folder.mkdir(parents=True)
    (folder / "synth.yaml").write_text("")
    monkeypatch.setattr(catalogue, "CONFIGS", str(tmp_path))
    with pytest.raises(catalogue.HarnessError, match=r"no config for dogs: expected .*dogs.yaml or .*vit_b16.yaml .*holds "
                                                   r"synth.yaml\)\. Write it with the paper's backbone") as err:
        catalogue.trainer_config("coop", "dogs")
    assert "start from" not in str(err.value)  # never the embedded world's recipe for a real benchmark
    with pytest.raises(catalogue.HarnessError, match="'csa' \\(trainer CSA\\) is not implemented in this version"):
        catalogue.trainer_config("csa", "synth_ml")


# ---------------------------------------------------------------- one run per folder
def test_two_runs_cannot_write_one_folder(tmp_path, synth_root, capsys):
    out = tmp_path / "out"
    out.mkdir()
    with runner.RunLock(str(out)):
        holder = (out / "run.lock").read_text()
        assert f"pid {os.getpid()} on " in holder
        code, _, err = train(capsys, *train_args(synth_root, out))
    assert code == 2
    one_message(err, f"{out} is in use by another run (pid {os.getpid()} on", "Wait for it to finish")
    assert os.listdir(out) == []  # nothing written, and the lock is gone with its holder


# ---------------------------------------------------------------- signals
def session_processes(session):
    """Live processes of a session (Linux /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session and fields[0] != "Z":
            found.append(int(entry))
    return found


def wait_for(predicate, proc, timeout=240):
    start = time.time()
    while not predicate():
        assert proc.poll() is None, proc.communicate()
        assert time.time() - start < timeout, "timed out"
        time.sleep(0.02)


KILL_OPTS = [*SMALL_WORLD, "OPTIM.MAX_EPOCH", "3", "TRAIN.PRINT_FREQ", "1"]


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="raised again by SIGALRM (POSIX)")
def test_a_stop_that_python_drops_is_raised_again(capsys):
    """SIGTERM arriving in a __del__ (or an at-fork hook: DataLoader workers stopping or
    starting) raises RunStopped where Python drops it; it is raised again right after."""

    class StopsWhileCollected:
        def __del__(self):
            signal.raise_signal(signal.SIGTERM)  # the handler runs here, and what it raises is dropped

    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM)}
    hook = sys.unraisablehook
    try:
        runner.install_stop_handlers()
        with pytest.raises(runner.RunStopped) as stop:
            StopsWhileCollected()
            time.sleep(30)  # where a run goes on: the stop must come here, not be lost
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        sys.unraisablehook = hook
        for signum, handler in saved.items():
            signal.signal(signum, handler)
    assert stop.value.signum == signal.SIGTERM
    assert "Exception ignored" not in capsys.readouterr().err


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="lists processes through /proc")
def test_sigterm_mid_epoch_then_rerun_ends_as_an_uninterrupted_run(tmp_path, synth_root, capsys):
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}", "DATA": synth_root,
           "OUTPUT": str(tmp_path / "out"), "OMP_NUM_THREADS": "1"}
    command = ["bash", "scripts/run.sh", "coop", "synth_fg", "5", "1", "--", *KILL_OPTS]
    seed = tmp_path / "out" / "synth_fg" / "5" / "coop" / "seed1"
    log = seed / "log.txt"
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    wait_for(lambda: log.exists() and "epoch [2/3] batch [1/3]" in log.read_text(), proc)
    proc.send_signal(signal.SIGTERM)  # to the harness: run.sh exec'd it
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM
    assert session_processes(proc.pid) == []  # train.py stopped with it
    assert "stopped by SIGTERM" in err and "Traceback" not in err
    assert not (seed / "results.json").exists()
    assert "epoch [2/3] batch [1/3]" in log.read_text()  # the log was written line by line
    assert load_checkpoint(str(seed / "prompt_learner" / "model.pth.tar-1"))["epoch"] == 1

    rerun = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "Previous epoch: " in log.read_text()
    resumed = json.loads((seed / "results.json").read_text())
    # the same run uninterrupted, in-process (one thread, as OMP_NUM_THREADS=1 above)
    straight = tmp_path / "straight"
    code, _, _ = train(capsys, *train_args(synth_root, straight, "LECoOp", "TRAIN.CHECKPOINT_FREQ", "1", *KILL_OPTS))
    assert code == 0
    expected = json.loads((straight / "results.json").read_text())
    for metric in catalogue.task_metrics("A"):
        assert resumed[metric] == expected[metric], metric


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="lists processes through /proc")
def test_ctrl_c_on_compare_sh_stops_every_child(tmp_path, synth_root):
    # a fresh data folder: train.py is rendering the default world when the signal comes
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}", "DATA": str(tmp_path / "data"),
           "OUTPUT": str(tmp_path / "out"), "SEEDS": "1", "OMP_NUM_THREADS": "1"}
    log = tmp_path / "out" / "synth_fg" / "5" / "zsclip" / "seed1" / "log.txt"
    proc = subprocess.Popen(["bash", "scripts/compare.sh", "synth_fg", "5", "zsclip"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    wait_for(log.exists, proc)  # train.py is running
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGINT
    assert session_processes(proc.pid) == []
    assert "Traceback" not in err and "stopped by SIG" in err
    assert not (log.parent / "results.json").exists()
