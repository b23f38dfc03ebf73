"""Table pieces with no knowledge of methods or datasets: mean ± std over seeds, the
Markdown and CSV files of a table, and its bar chart.

The std is the population std over seeds (numpy's default, as CoOp's parse script).
Importing this module costs the standard library only (the harness prints with it).
A value that is undefined for a seed (None, NaN) is left out of its mean, and the cell
says over how many seeds it is; "n/a" when no seed defines it.
"""
import csv
import math
import os.path as osp
from collections import namedtuple

TABLE_FILES = ("compare.md", "compare.csv")
PLOT_FILE = "compare.png"
# std None: a number given without one (a paper's single run)
Stat = namedtuple("Stat", "mean std defined seeds")


def stat(values):
    """Mean and population std over the values that are defined (None when none is)."""
    defined = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not defined:
        return None
    mean = math.fsum(defined) / len(defined)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in defined) / len(defined))
    return Stat(mean, std, len(defined), len(values))


def cell(s):
    """'mean ± std', with '(k of n seeds)' when some seeds leave the metric undefined;
    'mean (n = 1)' from one seed (no spread to show)."""
    if s is None:
        return "n/a"
    if s.defined == 1:
        return f"{s.mean:.2f} (n = 1)" if s.seeds == 1 else f"{s.mean:.2f} (1 of {s.seeds} seeds)"
    text = f"{s.mean:.2f} ± {s.std:.2f}"
    if s.defined < s.seeds:
        text += f" ({s.defined} of {s.seeds} seeds)"
    return text


# paper: "" for our runs, else the label of the paper the numbers are from
Row = namedtuple("Row", "key label modes seeds stats paper")


def paper_text(s):
    if s is None:
        return "—"
    return f"{s.mean:.2f}" if s.std is None else f"{s.mean:.2f} ± {s.std:.2f}"


def table_rows(metrics, rows):
    """(header, body) of a table: a row per Row, a column per metric."""
    header = ["method", "SSL mode", "seeds"] + metrics
    body = []
    for row in rows:
        cells = [paper_text(row.stats[k]) if row.paper else cell(row.stats[k]) for k in metrics]
        body.append([row.label, row.modes, row.seeds] + cells)
    return header, body


def text_table(header, body):
    """A plain-text table: left-aligned columns, a rule under the header."""
    rows = [[str(c) for c in header]] + [[str(c) for c in row] for row in body]
    widths = [max(len(row[j]) for row in rows) for j in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_tables(folder, header, body):
    """compare.md and compare.csv in `folder`; returns their paths."""
    from tabulate import tabulate

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
    import numpy as np

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
    # a bar of one seed has no error bar to show: its label says so
    axes.set_xticklabels([row.label + (f" (n = {row.seeds})" if row.seeds < 2 else "") for row in ours],
                         rotation=30, ha="right")
    axes.set_ylabel("% (mean, std over seeds as error bars)")
    axes.set_ylim(0, 100)
    axes.set_title(title)
    axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path
