"""Reports of finished runs: the table of one setting (mean ± std over seeds) as text,
Markdown, CSV and a bar chart; the whole-paper tables of a task; the papers' own
numbers beside ours (`configs/papers.yaml`, each labelled with its paper); and the
summary that ends `scripts/run.sh`.

The std is the population std over seeds (numpy's default, as CoOp's parse script).
A metric that is undefined for a seed (JSON null) is left out of its mean, and the cell
says over how many seeds it is; "n/a" when no seed defines it.
"""
import csv
import glob
import os.path as osp
import re
from collections import OrderedDict, namedtuple

import numpy as np
import yaml
from tabulate import tabulate

from .harness import (
    CONFIGS,
    DATASETS,
    METHODS,
    PAPER_SETTINGS,
    RESULTS,
    SETTING_RESULTS,
    TASK_METHODS,
    TASK_METRICS,
    TASK_NAMES,
    dataset_present,
    read_result,
    seed_dir,
    task_of,
)

PAPERS_FILE = osp.join(CONFIGS, "papers.yaml")
DISPLAY = {key: method.display for key, method in METHODS.items()}
TABLE_FILES = ("compare.md", "compare.csv")
PLOT_FILE = "compare.png"


class BadResults(ValueError):
    """A results.json that cannot be read: the message names it."""


# ---------------------------------------------------------------- statistics
Stat = namedtuple("Stat", "mean std defined seeds")


def stat(values):
    """Mean and std over the values that are defined (None when none is)."""
    defined = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if defined.size == 0:
        return None
    return Stat(float(defined.mean()), float(defined.std()), int(defined.size), len(values))


def cell(s):
    """'mean ± std', with '(k of n seeds)' when some seeds leave the metric undefined."""
    if s is None:
        return "n/a"
    text = f"{s.mean:.2f} ± {s.std:.2f}"
    if s.defined < s.seeds:
        text += f" ({s.defined} of {s.seeds} seeds)"
    return text


def mean_std(values):
    return cell(stat(values))


# ---------------------------------------------------------------- results on disk
def load_method(method_dir):
    """results.json of every seed folder of one method, ordered by seed."""
    runs, bad = [], []
    for path in sorted(glob.glob(osp.join(method_dir, "seed*", RESULTS))):
        data, why = read_result(path)
        if data is None:
            bad.append(f"{path} is {why}")
        else:
            runs.append(data)
    if bad:
        raise BadResults("; ".join(bad))
    return sorted(runs, key=lambda r: r.get("seed", 0))


def metrics_of(setting_dir, runs_by_method):
    setting, dataset = osp.basename(setting_dir.rstrip("/")), osp.basename(osp.dirname(setting_dir.rstrip("/")))
    if dataset in DATASETS:
        return TASK_METRICS[task_of(dataset, setting)]
    present = {k for runs in runs_by_method.values() for r in runs for k in r}
    return [k for k in SETTING_RESULTS if k in present]


# paper: "" for our runs, else the label of the paper the numbers are from
Row = namedtuple("Row", "key label modes seeds stats paper")


def collect(setting_dir, methods=None):
    """(metrics, rows) of one setting folder; rows follow `methods` or the papers' order."""
    found = [osp.basename(p) for p in glob.glob(osp.join(setting_dir, "*")) if osp.isdir(p)]
    order = methods or [m for m in METHODS if m in found] + sorted(m for m in found if m not in METHODS)
    runs_by_method = {m: load_method(osp.join(setting_dir, m)) for m in order}
    runs_by_method = {m: runs for m, runs in runs_by_method.items() if runs}
    metrics = metrics_of(setting_dir, runs_by_method)
    rows = []
    for method, runs in runs_by_method.items():
        modes = "/".join(sorted({r.get("ssl_mode", "?") for r in runs}))
        stats = {k: stat([r.get(k) for r in runs]) for k in metrics}
        rows.append(Row(method, DISPLAY.get(method, method), modes, len(runs), stats, ""))
    return metrics, rows


# ---------------------------------------------------------------- the papers' numbers
def _parse_paper_cell(text):
    if text is None:
        return None
    numbers = [float(x) for x in re.findall(r"-?\d+(?:\.\d+)?", str(text))]
    return Stat(numbers[0], numbers[1] if len(numbers) > 1 else None, 1, 1)


def load_papers(path=PAPERS_FILE):
    with open(path) as f:
        return yaml.safe_load(f)


def paper_stat(papers, metric, row, dataset, setting):
    """(Stat, paper label) of the paper's number for `row` (a method key or an
    ablation row name) on (dataset, setting), or None when no paper reports it."""
    for table in papers["tables"]:
        if table["metric"] != metric or row not in table["rows"]:
            continue
        for (key, paper_setting), value in zip(table["columns"], table["rows"][row]):
            same_setting = paper_setting is None or str(paper_setting) == str(setting)
            if key == dataset and same_setting and value is not None:
                return _parse_paper_cell(value), papers["papers"][table["paper"]]["label"]
    return None


def with_paper_rows(rows, metrics, dataset, setting, papers):
    """Each row followed by the papers' numbers for it, when a paper reports any."""
    out = []
    for row in rows:
        out.append(row)
        found = {k: paper_stat(papers, k, row.key, dataset, setting) for k in metrics}
        labels = ", ".join(sorted({f[1] for f in found.values() if f is not None}))
        if labels:
            stats = {k: (f[0] if f else None) for k, f in found.items()}
            out.append(Row(row.key, f"{row.label} [{labels}]", "paper", "", stats, labels))
    return out


def paper_text(s):
    if s is None:
        return "—"
    return f"{s.mean:.2f}" if s.std is None else f"{s.mean:.2f} ± {s.std:.2f}"


def papers_markdown(papers=None):
    """docs/PROTOCOLS.md's tables of the papers' numbers, from configs/papers.yaml."""
    papers = papers or load_papers()
    blocks = []
    for table in papers["tables"]:
        paper = papers["papers"][table["paper"]]
        header = ["method"] + [f"{key} {setting}" if setting is not None else key for key, setting in table["columns"]]
        body = [[DISPLAY.get(name, name)] + [value if value is not None else "—" for value in cells]
                for name, cells in table["rows"].items()]
        blocks.append(f"**{table['name']}.** {paper['label']} ({paper['cite']}); metric `{table['metric']}`.\n\n"
                      + tabulate(body, headers=header, tablefmt="github"))
    return "\n\n".join(blocks) + "\n"


# ---------------------------------------------------------------- one setting
def table_rows(metrics, rows):
    header = ["method", "SSL mode", "seeds"] + metrics
    body = []
    for row in rows:
        cells = [paper_text(row.stats[k]) if row.paper else cell(row.stats[k]) for k in metrics]
        body.append([row.label, row.modes, row.seeds] + cells)
    return header, body


def write_tables(folder, header, body):
    """compare.md and compare.csv in `folder`; returns their paths."""
    paths = [osp.join(folder, name) for name in TABLE_FILES]
    with open(paths[0], "w") as f:
        f.write(tabulate(body, headers=header, tablefmt="github") + "\n")
    with open(paths[1], "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(body)
    return paths


def plot(path, metrics, rows, title=""):
    """A bar chart of each method's mean per metric with std error bars; the papers'
    numbers (rows marked paper) are black diamonds on the bar of the method they report."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ours = [row for row in rows if not row.paper]
    papers = {row.key: row for row in rows if row.paper}
    width = 0.8 / max(len(metrics), 1)
    # the legend gets 2.5 in to the right of the axes
    figure, axes = plt.subplots(figsize=(max(6.0, 1.1 * len(ours) + 2.0) + 2.5, 4.5), dpi=100)
    x = np.arange(len(ours))
    labelled = False
    for j, metric in enumerate(metrics):
        offsets = x - 0.4 + width * (j + 0.5)
        means = [row.stats[metric].mean if row.stats[metric] else np.nan for row in ours]
        stds = [row.stats[metric].std if row.stats[metric] else 0.0 for row in ours]
        axes.bar(offsets, means, width, yerr=stds, capsize=3, label=metric)
        for offset, row in zip(offsets, ours):
            paper = papers.get(row.key)
            if paper is not None and paper.stats[metric] is not None:
                label = None if labelled else f"the paper's number ({paper.paper})"
                axes.plot([offset], [paper.stats[metric].mean], "kD", markersize=5, label=label)
                labelled = True
    axes.set_xticks(x)
    axes.set_xticklabels([row.label for row in ours], rotation=30, ha="right")
    axes.set_ylabel("% (mean, std over seeds as error bars)")
    axes.set_ylim(0, 100)
    axes.set_title(title)
    axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def setting_report(setting_dir, methods=None, papers=False, make_plot=False):
    """Print one setting's table and write compare.md / compare.csv (and compare.png);
    returns the files written. Raises BadResults, or ValueError when nothing is there."""
    metrics, rows = collect(setting_dir, methods)
    if not rows:
        raise ValueError(f"no {RESULTS} under {setting_dir}")
    dataset, setting = osp.basename(osp.dirname(setting_dir.rstrip("/"))), osp.basename(setting_dir.rstrip("/"))
    if papers:
        rows = with_paper_rows(rows, metrics, dataset, setting, load_papers())
    header, body = table_rows(metrics, rows)
    print(tabulate(body, headers=header))
    written = write_tables(setting_dir, header, body)
    if make_plot:
        written.append(plot(osp.join(setting_dir, PLOT_FILE), metrics, rows, f"{dataset} {setting}"))
    return written


# ---------------------------------------------------------------- a whole task
def task_columns(task):
    """(dataset, setting) columns of a task's whole-paper table, in DATASETS order."""
    columns = []
    for key, (_, tasks) in DATASETS.items():
        if task == "A" and tasks == "A":
            settings = PAPER_SETTINGS["semiaves" if key == "semiaves" else "A"]
        elif task in "BC" and tasks == "BC":
            settings = ["unsup"] if task == "B" else [s for s in PAPER_SETTINGS["BC"] if s != "unsup"]
        else:
            continue
        columns += [(key, s) for s in settings]
    return columns


def task_report(task, output_root, data_root, methods=None, papers=False):
    """The whole-paper tables of a task (one per metric): a row per method (the papers'
    order), a column per dataset and setting; a dataset absent from `data_root` is
    marked in its column. Returns the text printed."""
    methods = methods or TASK_METHODS[task]
    columns = task_columns(task)
    absent = {}
    for key in dict(columns):
        if not glob.glob(osp.join(output_root, key, "*", "*", "seed*", RESULTS)):  # nothing run: is it there?
            present, why = dataset_present(key, data_root)
            if not present:
                absent[key] = why
    paper_data = load_papers() if papers else None
    runs = {}
    for key, setting in columns:
        for method in methods:
            folder = osp.dirname(seed_dir(output_root, key, setting, method, 0))
            runs[key, setting, method] = [] if key in absent else load_method(folder)
    texts = []
    for metric in TASK_METRICS[task]:
        header = ["method"] + [f"{key} {setting}" for key, setting in columns]
        body = []
        for method in methods:
            cells = []
            for key, setting in columns:
                found = runs[key, setting, method]
                cells.append("absent" if key in absent else cell(stat([r.get(metric) for r in found])) if found else "—")
            body.append([DISPLAY.get(method, method)] + cells)
            if paper_data is not None:
                found = [paper_stat(paper_data, metric, method, key, setting) for key, setting in columns]
                labels = sorted({f[1] for f in found if f is not None})
                if labels:
                    body.append([f"{DISPLAY.get(method, method)} [{', '.join(labels)}]"]
                                + [paper_text(f[0]) if f else "—" for f in found])
        texts.append(f"Task {task} ({TASK_NAMES[task]}): {metric}, mean ± std over seeds "
                     f"(— = not run, absent = not under DATA)\n" + tabulate(body, headers=header))
    if absent:
        texts.append("absent from " + data_root + ": " + "; ".join(f"{key} ({why})" for key, why in absent.items()))
    text = "\n\n".join(texts)
    print(text)
    return text


# ---------------------------------------------------------------- the end of run.sh
def seed_summary(method_key, dataset_key, setting, seeds, output_root, ran):
    """What scripts/run.sh prints last: each seed's metrics and time, their mean ± std,
    and where the results are. `ran`: the seeds run now (the others were done before)."""
    metrics = TASK_METRICS[task_of(dataset_key, setting)]
    header = ["seed"] + metrics + ["time"]
    body, results = [], []
    for seed in seeds:
        data, why = read_result(osp.join(seed_dir(output_root, dataset_key, setting, method_key, seed), RESULTS))
        if data is None:
            body.append([seed] + ["—"] * len(metrics) + [f"no results ({why})"])
            continue
        results.append(data)
        seconds = data.get("seconds")
        when = "" if seed in ran else " (an earlier run)"
        values = [f"{data[k]:.2f}" if data.get(k) is not None else "n/a" for k in metrics]
        body.append([seed] + values + [f"{seconds:.1f} s{when}" if seconds is not None else f"?{when}"])
    body.append(["mean ± std"] + [cell(stat([r.get(k) for r in results])) for k in metrics]
                + [f"{sum(r.get('seconds') or 0 for r in results):.1f} s in all"])
    where = osp.dirname(seed_dir(output_root, dataset_key, setting, method_key, 0))
    return (f"== {DISPLAY.get(method_key, method_key)} on {dataset_key} {setting}: {len(results)} of {len(seeds)} "
            f"seeds, results in {where}/seed<k>/{RESULTS}\n" + tabulate(body, headers=header))


def _main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(prog="python -m leclip.report")
    parser.add_argument("command", choices=["papers"], help="papers: docs/PROTOCOLS.md's tables of the papers' numbers")
    parser.parse_args(argv)
    print(papers_markdown(), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
