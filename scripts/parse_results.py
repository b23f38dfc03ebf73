"""Aggregate results.json files into the paper-style table (mean ± std over seeds).

    python scripts/parse_results.py output/<dataset>/<setting> [--methods coop cfsg ...]
    python scripts/parse_results.py output/<dataset>/<setting>/<method>

Prints the table and writes compare.md and compare.csv in the setting folder. The std
is the population std over seeds (numpy's default, as CoOp's parse script). A metric
that is undefined for a seed (JSON null) is left out of its mean, and the cell says over
how many seeds it is; "n/a" when no seed defines it. An unreadable results.json stops
the script with exit status 2, naming the file.
"""
import argparse
import csv
import glob
import os.path as osp
import sys

import numpy as np
from tabulate import tabulate

from leclip.harness import DATASETS, METHODS, SETTING_RESULTS, TASK_METRICS, read_result, task_of

DISPLAY = {key: method.display for key, method in METHODS.items()}


class BadResults(ValueError):
    pass


def load_method(method_dir):
    """results.json of every seed folder of one method, ordered by seed."""
    runs, bad = [], []
    for path in sorted(glob.glob(osp.join(method_dir, "seed*", "results.json"))):
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


def mean_std(values):
    """'mean ± std' over the seeds that define the metric; n/a when none does."""
    defined = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if defined.size == 0:
        return "n/a"
    cell = f"{defined.mean():.2f} ± {defined.std():.2f}"
    if defined.size < len(values):
        cell += f" ({defined.size} of {len(values)} seeds)"
    return cell


def summarise(setting_dir, methods=None):
    """(header, rows) of the table; rows follow `methods` or the harness order."""
    found = [osp.basename(p) for p in glob.glob(osp.join(setting_dir, "*")) if osp.isdir(p)]
    order = methods or [m for m in METHODS if m in found] + sorted(m for m in found if m not in METHODS)
    runs_by_method = {m: load_method(osp.join(setting_dir, m)) for m in order}
    runs_by_method = {m: runs for m, runs in runs_by_method.items() if runs}
    metrics = metrics_of(setting_dir, runs_by_method)
    header = ["method", "SSL mode", "seeds"] + metrics
    rows = []
    for method, runs in runs_by_method.items():
        modes = sorted({r.get("ssl_mode", "?") for r in runs})
        rows.append(
            [DISPLAY.get(method, method), "/".join(modes), len(runs)]
            + [mean_std([r.get(k) for r in runs]) for k in metrics]
        )
    return header, rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", help="output/<dataset>/<setting> or a method folder below it")
    parser.add_argument("--methods", nargs="*", help="rows, in this order (default: all found)")
    args = parser.parse_args(argv)
    folder = args.folder.rstrip("/")
    if not osp.isdir(folder):
        print(f"error: no results folder {folder}", file=sys.stderr)
        return 2
    methods = args.methods
    if glob.glob(osp.join(folder, "seed*")):  # a single method's folder
        folder, methods = osp.dirname(folder), [osp.basename(folder)]
    try:
        header, rows = summarise(folder, methods)
    except BadResults as err:
        print(f"error: {err}. Delete the file and rerun that seed (scripts/run.sh skips only finished seeds)",
              file=sys.stderr)
        return 2
    if not rows:
        print(f"error: no results.json under {folder}", file=sys.stderr)
        return 2
    print(tabulate(rows, headers=header))
    with open(osp.join(folder, "compare.md"), "w") as f:
        f.write(tabulate(rows, headers=header, tablefmt="github") + "\n")
    with open(osp.join(folder, "compare.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    print(f"\nwritten: {osp.join(folder, 'compare.md')}, {osp.join(folder, 'compare.csv')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
