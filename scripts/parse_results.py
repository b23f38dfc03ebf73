"""Aggregate results.json files into the paper-style tables (mean ± std over seeds).

    python scripts/parse_results.py output/<dataset>/<setting> [--methods coop cfsg ...] [--papers] [--plot]
    python scripts/parse_results.py output/<dataset>/<setting>/<method>
    python scripts/parse_results.py output --task A [--data DATA] [--papers]

The first form prints one setting's table and writes compare.md and compare.csv in the
setting folder (and compare.png with --plot: a bar chart, std as error bars). The last
prints the whole-paper tables of task A, B or C (a column per dataset and setting; a
dataset absent from DATA is marked). --papers adds the papers' own numbers
(configs/papers.yaml) below each method's row, labelled with their paper. The std is
the population std over seeds (numpy's default, as CoOp's parse script). A metric that
is undefined for a seed (JSON null) is left out of its mean, and the cell says over how
many seeds it is; "n/a" when no seed defines it. An unreadable results.json stops the
script with exit status 2, naming the file.
"""
import argparse
import glob
import os
import os.path as osp
import sys

from leclip import report


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", help="output/<dataset>/<setting>, a method folder below it, or (with --task) output")
    parser.add_argument("--methods", nargs="*", help="rows, in this order (default: all found, in the papers' order)")
    parser.add_argument("--papers", action="store_true", help="the papers' numbers below ours, labelled")
    parser.add_argument("--plot", action="store_true", help="also write compare.png (one setting)")
    parser.add_argument("--task", choices=["A", "B", "C"], help="the whole-paper tables of this task")
    parser.add_argument("--data", default=os.environ.get("DATA") or "./data", help="the data root (with --task)")
    args = parser.parse_args(argv)
    folder = args.folder.rstrip("/")
    if not osp.isdir(folder):
        print(f"error: no results folder {folder}", file=sys.stderr)
        return 2
    try:
        if args.task:
            report.task_report(args.task, osp.abspath(folder), osp.abspath(args.data), args.methods, args.papers)
            return 0
        methods = args.methods
        if glob.glob(osp.join(folder, "seed*")):  # a single method's folder
            folder, methods = osp.dirname(folder), [osp.basename(folder)]
        written = report.setting_report(folder, methods, args.papers, args.plot)
    except report.BadResults as err:
        print(f"error: {err}. Delete the file and rerun that seed (scripts/run.sh skips only finished seeds)",
              file=sys.stderr)
        return 2
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"\nwritten: {', '.join(written)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
