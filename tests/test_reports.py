"""Reports: the summary that ends run.sh, compare.sh's table as Markdown, CSV and a bar
chart (read back), the papers' numbers beside ours, the whole-paper table of a task
with absent datasets marked, and docs/PROTOCOLS.md's tables generated from
configs/papers.yaml."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from leclip import catalogue, harness, report, tables

REPO = catalogue.REPO
VENV_BIN = os.path.dirname(sys.executable)


def finished(output, dataset, setting, method, seed, seconds=10.0, **metrics):
    folder = output / dataset / setting / method / f"seed{seed}"
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({"seed": seed, "ssl_mode": "none", "seconds": seconds, **metrics}))


def script(*args, tmp_path):
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}", "DATA": str(tmp_path / "data"),
           "OUTPUT": str(tmp_path / "out"), "SEEDS": "1 2", "OMP_NUM_THREADS": "1"}
    (tmp_path / "data").mkdir(exist_ok=True)
    return subprocess.run(["bash", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_seed_summary_gives_each_seed_its_mean_std_and_time(tmp_path):
    finished(tmp_path, "cars", "5", "coop", 1, seconds=12.5, closed_accuracy=60.0, balanced_accuracy=50.0, auroc=None)
    finished(tmp_path, "cars", "5", "coop", 2, seconds=7.5, closed_accuracy=64.0, balanced_accuracy=56.0, auroc=70.0)
    text = harness.seed_summary("coop", "cars", "5", [1, 2, 3], str(tmp_path), ran=[2])
    lines = text.splitlines()
    assert lines[0] == f"== CoOp on cars 5: 2 of 3 seeds, results in {tmp_path}/cars/5/coop/seed<k>/results.json"
    assert lines[1].split() == ["seed", "closed_accuracy", "balanced_accuracy", "auroc", "time"]
    assert lines[3].split() == ["1", "60.00", "50.00", "n/a", "12.5", "s", "(an", "earlier", "run)"]
    assert lines[4].split() == ["2", "64.00", "56.00", "70.00", "7.5", "s"]
    assert lines[5].split()[:2] == ["3", "—"] and "no results (missing)" in lines[5]
    # population std: |64 - 60| / 2; AUROC over the one seed that defines it
    assert lines[6].split() == ["mean", "±", "std", "62.00", "±", "2.00", "53.00", "±", "3.00", "70.00",  # one seed: no std
                                "(1", "of", "2", "seeds)", "20.0", "s", "in", "all"]


def test_papers_numbers_come_with_their_label_and_only_where_reported():
    papers = report.load_papers()
    assert report.paper_stat(papers, "closed_accuracy", "coop", "cars", "5") == (
        tables.Stat(85.45, 0.31, 1, 1), "CFSG-CLIP paper")
    assert report.paper_stat(papers, "closed_accuracy", "coop", "cars", "20")[0].mean == 87.64
    assert report.paper_stat(papers, "auroc", "coop", "cars", "5") is None  # the paper reports no AUROC
    assert report.paper_stat(papers, "closed_accuracy", "clip_lora", "semiaves", "in") is None  # no CLIP-LoRA row
    assert report.paper_stat(papers, "mAP", "ccd", "voc2012", "unsup") == (tables.Stat(90.1, None, 1, 1), "CCD paper")
    # an ablation row, whose setting the paper does not state, matches any setting
    assert report.paper_stat(papers, "closed_accuracy", "concat injection", "aircraft", "5")[0].mean == 60.47


def test_compare_sh_writes_markdown_csv_and_a_plot_with_the_papers_beside(tmp_path):
    out = tmp_path / "out"
    for seed, (closed, balanced, auroc) in enumerate([(60.0, 50.0, 70.0), (64.0, 54.0, 74.0)], start=1):
        finished(out, "cars", "5", "coop", seed, closed_accuracy=closed, balanced_accuracy=balanced, auroc=auroc)
        finished(out, "cars", "5", "zsclip", seed, closed_accuracy=40.0, balanced_accuracy=30.0, auroc=60.0)
    done = script("scripts/compare.sh", "cars", "5", "zsclip", "coop", "--plot", "--papers", tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("done already") == 4  # the seeds are finished: nothing runs
    assert "== CoOp on cars 5: 2 of 2 seeds" in done.stdout  # run.sh's summary
    setting = out / "cars" / "5"
    csv_lines = (setting / "compare.csv").read_text().splitlines()
    assert csv_lines == [
        "method,SSL mode,seeds,closed_accuracy,balanced_accuracy,auroc",
        "ZeroshotCLIP,none,2,40.00 ± 0.00,30.00 ± 0.00,60.00 ± 0.00",
        "ZeroshotCLIP [CFSG-CLIP paper],paper,,75.97 ± 0.00,75.70 ± 0.00,—",
        "CoOp,none,2,62.00 ± 2.00,52.00 ± 2.00,72.00 ± 2.00",
        "CoOp [CFSG-CLIP paper],paper,,85.45 ± 0.31,84.63 ± 0.36,—",
    ]
    markdown = [line.split("|")[1:-1] for line in (setting / "compare.md").read_text().splitlines()]
    assert [cell.strip() for cell in markdown[-1]] == ["CoOp [CFSG-CLIP paper]", "paper", "", "85.45 ± 0.31",
                                                       "84.63 ± 0.36", "—"]
    with Image.open(setting / "compare.png") as image:
        assert image.format == "PNG" and image.size == (850, 450)  # 6 in of bars and 2.5 of legend x 4.5 in, at 100 dpi
        pixels = np.asarray(image.convert("RGB"))
    assert (pixels.min(axis=2) < 40).sum() > 50  # drawn: axes, labels and the papers' black diamonds


def test_compare_sh_task_marks_the_absent_datasets(tmp_path):
    out = tmp_path / "out"
    finished(out, "synth_ml", "unsup", "zsclip", 1, mAP=58.0, CF1=40.0, OF1=45.0)
    finished(out, "synth_ml", "unsup", "zsclip", 2, mAP=60.0, CF1=42.0, OF1=47.0)
    done = script("scripts/compare.sh", "B", "zsclip", "--papers", tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    for key, folder in (("voc2007", "VOCdevkit/VOC2007"), ("coco", "coco"), ("nuswide", "nuswide")):
        assert f"absent: {key} (Dataset folder not found: {tmp_path}/data/{folder})" in done.stderr
    table = done.stdout[done.stdout.index("Task B (unsupervised multi-label classification): mAP"):]
    header = table.splitlines()[1].split()
    assert header == ["method", "synth_ml", "unsup", "voc2007", "unsup", "voc2012", "unsup", "coco", "unsup", "nuswide",
                      "unsup"]
    row = table.splitlines()[3]
    assert row.split() == ["ZeroshotCLIP", "59.00", "±", "1.00", "absent", "absent", "absent", "absent"]
    assert f"absent from {tmp_path}/data: voc2007" in done.stdout


def test_protocols_shows_the_papers_numbers_generated_from_papers_yaml():
    with open(os.path.join(REPO, "docs", "PROTOCOLS.md")) as f:
        text = f.read()
    begin, end = "<!-- generated by python -m leclip.report papers: begin -->\n", "<!-- generated: end -->"
    assert text[text.index(begin) + len(begin):text.index(end)].strip() == report.papers_markdown().strip()


@pytest.mark.parametrize("task,first,last", [
    ("A", ("synth_fg", "5"), ("semiaves", "inout")), ("B", ("synth_ml", "unsup"), ("nuswide", "unsup")),
    ("C", ("synth_ml", "0.05"), ("nuswide", "0.2")),
])
def test_a_task_table_has_every_dataset_and_setting_of_the_papers(task, first, last):
    columns = catalogue.task_columns(task)
    assert columns[0] == first and columns[-1] == last
    assert len(columns) == {"A": 12, "B": 5, "C": 20}[task]


def test_an_ablation_table_names_its_rows_as_the_rows_file_does(tmp_path, monkeypatch):
    rows_file = tmp_path / "rows.txt"
    rows_file.write_text("CSA (full) | A 1\nw/o context task | A 2\n")
    ran = []

    def run_seeds(method, dataset, setting, seeds, opts, data_root, output_root, subfolder, flags, processes, force):
        ran.append((subfolder, opts))
        finished(tmp_path / "out", dataset, setting, subfolder, 1, mAP=40.0 + len(ran))

    monkeypatch.setattr(harness, "run_seeds", run_seeds)
    folders = harness.ablate("csa", "synth_ml", "0.05", [1], str(rows_file), str(tmp_path), str(tmp_path / "out"))
    assert folders == ["CSA__full_", "w_o_context_task"]
    assert ran == [("ablation/CSA__full_", ["A", "1"]), ("ablation/w_o_context_task", ["A", "2"])]
    _, rows = report.collect(str(tmp_path / "out" / "synth_ml" / "0.05" / "ablation"), folders)
    assert [(r.label, r.stats["mAP"].mean) for r in rows] == [("CSA (full)", 41.0), ("w/o context task", 42.0)]
