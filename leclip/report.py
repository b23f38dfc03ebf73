"""Reports of finished runs (`scripts/parse_results.py`, `scripts/compare.sh`): the
table of one setting as text, Markdown, CSV and a bar chart; the whole-paper tables of
a task; the papers' own numbers beside ours (`configs/papers.yaml`, each labelled with
its paper). Means, stds and the files are `leclip.tables`'.
"""
import glob
import json
import os.path as osp
import re

import yaml
from tabulate import tabulate

from . import catalogue
from .catalogue import CONFIGS, dataset_present, task_columns, task_metrics, task_of_setting
from .harness import ROW_NAMES, seed_dir
from .runner import RESULTS, RUN_FIELDS, read_result
from .tasks import TASK_NAMES
from .tables import PLOT_FILE, Row, Stat, cell, paper_text, plot, stat, table_rows, write_tables

PAPERS_FILE = osp.join(CONFIGS, "papers.yaml")


class BadResults(ValueError):
    """A results.json that cannot be read: the message names it."""


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


def dataset_and_setting(setting_dir):
    """(dataset, setting) of an <output>/<dataset>/<setting> folder."""
    setting_dir = setting_dir.rstrip("/")
    return osp.basename(osp.dirname(setting_dir)), osp.basename(setting_dir)


def metrics_of(setting_dir, runs_by_method):
    """The task's columns; in a folder outside the harness's layout, the metrics its runs report."""
    dataset, setting = dataset_and_setting(setting_dir)
    if dataset in catalogue.datasets():
        return task_metrics(task_of_setting(dataset, setting))
    found = []
    for runs in runs_by_method.values():
        for r in runs:
            found += [k for k, v in r.items() if k not in RUN_FIELDS and k not in found and not isinstance(v, (list, dict))]
    return found


# a row with a run that departs from its recipe (results.json's recipe_followed false)
NOT_RECIPE = " †"
NOT_RECIPE_NOTE = "† a run departs from its recipe (its overrides are in its results.json): not comparable to a paper"


def display(key):
    """A method's name in the tables (a key the catalogue does not know: itself)."""
    known = catalogue.methods()
    return known[key].display if key in known else key


def off_recipe(runs):
    return any(r.get("recipe_followed") is False for r in runs)


def collect(setting_dir, methods=None):
    """(metrics, rows) of one setting folder; rows follow `methods` or the papers' order."""
    found = [osp.basename(p) for p in glob.glob(osp.join(setting_dir, "*")) if osp.isdir(p)]
    known = catalogue.methods()
    order = methods or [m for m in known if m in found] + sorted(m for m in found if m not in known)
    runs_by_method = {m: load_method(osp.join(setting_dir, m)) for m in order}
    runs_by_method = {m: runs for m, runs in runs_by_method.items() if runs}
    metrics = metrics_of(setting_dir, runs_by_method)
    names = {key: method.display for key, method in known.items()}
    row_names = osp.join(setting_dir, ROW_NAMES)  # an ablation folder names its rows
    ablation = osp.isfile(row_names)
    if ablation:
        with open(row_names) as f:
            names.update(json.load(f))
    rows = []
    for method, runs in runs_by_method.items():
        modes = "/".join(sorted({r.get("ssl_mode", "?") for r in runs}))
        stats = {k: stat([r.get(k) for r in runs]) for k in metrics}
        # an ablation row departs from the recipe by design: its name says how
        mark = NOT_RECIPE if off_recipe(runs) and not ablation else ""
        rows.append(Row(method, names.get(method, method) + mark, modes, len(runs), stats, ""))
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


def papers_markdown(papers=None):
    """docs/PROTOCOLS.md's tables of the papers' numbers, from configs/papers.yaml."""
    papers = papers or load_papers()
    sources = "\n".join(f"- {paper['label']}: {paper['cite']}." for paper in papers["papers"].values())
    blocks = [f"The papers' numbers, not runs of this repository (`configs/papers.yaml`):\n\n{sources}"]
    for table in papers["tables"]:
        header = ["method"] + [f"{key} {setting}" if setting is not None else key for key, setting in table["columns"]]
        body = [[display(name)] + [value if value is not None else "—" for value in cells]
                for name, cells in table["rows"].items()]
        label = papers["papers"][table["paper"]]["label"]
        blocks.append(f"**{table['name']}**, from the {label} (`{table['metric']}`):\n\n"
                      + tabulate(body, headers=header, tablefmt="github"))
    return "\n\n".join(blocks) + "\n"


# ---------------------------------------------------------------- one setting
def setting_report(setting_dir, methods=None, papers=False, make_plot=False):
    """Print one setting's table and write compare.md / compare.csv (and compare.png);
    returns the files written. Raises BadResults, or ValueError when nothing is there."""
    metrics, rows = collect(setting_dir, methods)
    if not rows:
        raise ValueError(f"no {RESULTS} under {setting_dir}")
    dataset, setting = dataset_and_setting(setting_dir)
    if papers:
        rows = with_paper_rows(rows, metrics, dataset, setting, load_papers())
    header, body = table_rows(metrics, rows)
    print(tabulate(body, headers=header))
    if any(row.label.endswith(NOT_RECIPE) for row in rows):
        print(NOT_RECIPE_NOTE)
    written = write_tables(setting_dir, header, body)
    if make_plot:
        written.append(plot(osp.join(setting_dir, PLOT_FILE), metrics, rows, f"{dataset} {setting}"))
    return written


# ---------------------------------------------------------------- a whole task
def task_report(task, output_root, data_root, methods=None, papers=False):
    """The whole-paper tables of a task (one per metric): a row per method (the papers'
    order), a column per dataset and setting; a dataset absent from `data_root` is
    marked in its column. Returns the text printed."""
    methods = methods or catalogue.task_methods(task)
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
    marked = False
    for metric in task_metrics(task):
        header = ["method"] + [f"{key} {setting}" for key, setting in columns]
        body = []
        for method in methods:
            cells = []
            for key, setting in columns:
                found = runs[key, setting, method]
                cells.append("absent" if key in absent else cell(stat([r.get(metric) for r in found])) if found else "—")
            off = any(off_recipe(runs[column + (method,)]) for column in columns)
            marked |= off
            body.append([display(method) + (NOT_RECIPE if off else "")] + cells)
            if paper_data is not None:
                found = [paper_stat(paper_data, metric, method, key, setting) for key, setting in columns]
                labels = sorted({f[1] for f in found if f is not None})
                if labels:
                    body.append([f"{display(method)} [{', '.join(labels)}]"]
                                + [paper_text(f[0]) if f else "—" for f in found])
        texts.append(f"Task {task} ({TASK_NAMES[task]}): {metric}, mean ± std over seeds "
                     f"(— = not run, absent = not under DATA)\n" + tabulate(body, headers=header))
    if marked:
        texts.append(NOT_RECIPE_NOTE)
    if absent:
        texts.append("absent from " + data_root + ": " + "; ".join(f"{key} ({why})" for key, why in absent.items()))
    text = "\n\n".join(texts)
    print(text)
    return text


def _main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(prog="python -m leclip.report")
    parser.add_argument("command", choices=["papers"], help="papers: docs/PROTOCOLS.md's tables of the papers' numbers")
    parser.parse_args(argv)
    print(papers_markdown(), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
