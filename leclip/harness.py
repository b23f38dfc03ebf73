"""Seed sweeps, ablations and the command line of `scripts/*.sh` (`python -m leclip.harness`).

Each seed is one `train.py` child (`leclip.runner` makes the run). The harness refuses
overrides of the keys that place results (seed, setting, output folder), resolves each
seed's config before anything runs (an unknown key fails before any skip or resume),
reuses a finished seed only when its saved config is the one this command resolves
(else it refuses; `--force` moves the old seed folder aside), stops its child on SIGINT
or SIGTERM and resolves DATA and OUTPUT against the caller's working directory. With
GPUS=N (N > 1) each seed's child is `torchrun --standalone --nproc_per_node N train.py`.
"""
import json
import os
import os.path as osp
import signal
import subprocess
import sys
import time
from collections import namedtuple

from . import preflight
from .catalogue import (
    CONFIGS, REPO, HarnessError, ablated, check_method, check_serves, dataset_config, datasets, methods,
    setting_note, setting_opts, setup_cfg, task_methods, task_metrics, task_of_setting, task_settings, trainer_configs,
)
from .files import write_text_atomic
from .runner import CONFIG, RESULTS, RunStopped, config_changes, read_result, user_message
from .tables import cell, stat, text_table
from .tasks import TASK_NAMES

# keys the harness sets from its arguments: an override would file results in the wrong folder
HARNESS_KEYS = {
    "SEED": "give seeds as arguments: bash scripts/run.sh METHOD DATASET SETTING 1 2 3",
    "OUTPUT_DIR": "set the output root with OUTPUT=... (each seed gets its own folder below it)",
    "DATASET.ROOT": "set the data root with DATA=...",
    "RESUME": "the harness resumes each seed from its own folder",
    "TRAINER.NAME": "the method is the first argument",
    "DATASET.NAME": "the dataset is the second argument",
    "DATASET.NUM_LABELED": "the setting is the third argument (e.g. 5 or 20)",
    "DATASET.LABELED_RATIO": "the setting is the third argument (e.g. 0.1)",
    "DATASET.SETTING": "the setting is the third argument (e.g. unsup, in, inout)",
}
TRAIN_FLAGS = ("--overwrite", "--force-resume", "--skip-bad-images", "--viz", "--debug")
ROW_NAMES = "rows.json"  # in an ablation folder: {row folder: row name}
REPLACED = "replaced-"  # --force: a seed folder moved to <method folder>/replaced-<time>/seed<k>


class Reported(HarnessError):
    """A train.py child ended with exit status 2: it printed the one message already."""


def check_overrides(opts):
    """Refuse KEY VALUE overrides of the keys the harness sets from its arguments."""
    for key in list(opts)[::2]:
        if key in HARNESS_KEYS:
            raise HarnessError(f"{key} cannot be overridden through the harness: {HARNESS_KEYS[key]}")


def seed_dir(output_root, dataset_key, setting, method_key, seed):
    return osp.join(output_root, dataset_key, str(setting), method_key, f"seed{seed}")


class Children:
    """Runs train.py children one at a time; SIGINT/SIGTERM to the harness are passed on
    to the running child, which stops at a safe point, and no further child starts."""

    def __init__(self):
        self.proc = None
        self.signum = None

    def forward(self, signum, frame):
        self.signum = signum
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signum)

    def install(self):
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self.forward)

    def call(self, command):
        if self.signum is not None:
            raise RunStopped(self.signum)
        self.proc = subprocess.Popen(command)
        if self.signum is not None:  # arrived while the child was starting
            self.proc.send_signal(self.signum)
        code = self.proc.wait()
        self.proc = None
        if self.signum is not None:
            raise RunStopped(self.signum)
        return code


CHILDREN = Children()


def launcher(processes=1):
    """The command that starts train.py: python, or torchrun with `processes` processes
    on this machine (--standalone: a free rendezvous port of its own)."""
    if processes == 1:
        return [sys.executable]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]


def processes_from_env(value):
    """GPUS=N: the processes of one run (unset or empty: 1)."""
    if value in (None, ""):
        return 1
    if not value.isdigit() or int(value) < 1:
        raise HarnessError(f"GPUS={value!r}: give the number of processes per run, a positive integer (e.g. GPUS=4)")
    return int(value)


# what train.py is given for every seed of one command: its config files and overrides
Plan = namedtuple("Plan", "trainer files dataset_file opts flags data_root")


def plan(method_key, dataset_key, setting, opts, data_root, flags=()):
    """The checked plan of one command (unknown method, dataset, setting or key: HarnessError)."""
    trainer = check_method(method_key).trainer
    check_serves(method_key, dataset_key, setting)
    check_overrides(opts)
    # (ours) a checkpoint every epoch: a killed seed loses at most the epoch it was in
    base = [*setting_opts(dataset_key, setting), "TRAIN.CHECKPOINT_FREQ", "1"]
    return Plan(trainer, trainer_configs(method_key, dataset_key), dataset_config(dataset_key), base + list(opts),
                list(flags), data_root)


def seed_cfg(p, seed, out):
    """The config train.py resolves for one seed of plan `p`."""
    skip = ["DATALOADER.SKIP_BAD_IMAGES", "True"] if "--skip-bad-images" in p.flags else []  # as train.py sets it
    return setup_cfg(p.files, p.dataset_file, p.opts + skip, root=p.data_root, output_dir=out, seed=seed,
                     trainer=p.trainer)


def seed_command(p, seed, out, processes=1):
    return [*launcher(processes), osp.join(REPO, "train.py"), "--root", p.data_root, "--seed", str(seed),
            "--trainer", p.trainer, "--dataset-config-file", p.dataset_file, "--config-file", *p.files,
            "--output-dir", out, *p.flags, *p.opts]


def reuse_finished(out, cfg, force, tag):
    """True when seed folder `out` holds a finished run of this very config (skip it).
    A finished run of another config is refused, or with `force` moved aside."""
    results, why = read_result(osp.join(out, RESULTS))
    if results is None:
        if why != "missing":
            print(f"{tag} {out}/{RESULTS} is {why}: it does not count as done, running the seed")
        return False
    saved = osp.join(out, CONFIG)
    if osp.isfile(saved):
        with open(saved) as f:
            changes = config_changes(f.read(), cfg)
    else:  # as a resume: a folder of an older version, or written by hand
        print(f"{tag} warning: no {CONFIG} beside {out}/{RESULTS}: its config cannot be compared")
        changes = []
    if not changes:
        print(f"{tag} done already: {out}/{RESULTS} (--overwrite runs it again)")
        return True
    if force:
        moved = osp.join(osp.dirname(out), REPLACED + time.strftime("%Y%m%d-%H%M%S"), osp.basename(out))
        os.makedirs(osp.dirname(moved), exist_ok=True)
        os.replace(out, moved)
        print(f"{tag} the finished run of another config is moved aside to {moved} (--force)")
        return False
    listed = "\n  ".join(changes)
    raise HarnessError(
        f"{tag} {out} holds a finished run of another config; its results are not reused for this command. "
        f"Differing keys (finished -> this command):\n  {listed}\nEither give this command a new output root "
        f"(OUTPUT=...), or pass --force to move the finished seed folder aside (to {osp.dirname(out)}/"
        f"{REPLACED}<time>/; nothing is deleted) and run it again"
    )


def run_seeds(method_key, dataset_key, setting, seeds, opts=(), data_root="./data", output_root="./output", folder=None,
              flags=(), processes=1, force=False, dry_run=False):
    """Run one setting for each seed (a train.py subprocess each); skip finished seeds.

    Results go to <output_root>/<dataset>/<setting>/<folder or method>/seed<k>/. `flags`
    are passed to train.py (--overwrite, --force-resume, --skip-bad-images, --viz, --debug); with
    --overwrite, finished seeds run again. A seed that ends with exit status 2 (bad input)
    stops the harness: the others would fail the same way. `processes` > 1 runs each seed
    under torchrun on that many processes (GPUS=N). `dry_run`: print what would run and
    what it needs on disk (`leclip.preflight`), run nothing. Returns the seeds it ran."""
    data_root, output_root = osp.abspath(data_root), osp.abspath(output_root)
    p = plan(method_key, dataset_key, setting, opts, data_root, flags)
    configs = {seed: seed_cfg(p, seed, seed_dir(output_root, dataset_key, setting, folder or method_key, seed))
               for seed in seeds}
    note = setting_note(dataset_key, setting)
    if note:
        print(note, flush=True)
    if dry_run:
        from leclip.dassl import TRAINER_REGISTRY

        learns = getattr(TRAINER_REGISTRY.get(p.trainer), "learns", True)
        print("\n".join(preflight.report(configs[seeds[0]], [p.dataset_file, *p.files], learns)))
    failures, ran = [], []
    for seed in seeds:
        out = configs[seed].OUTPUT_DIR
        tag = f"[{method_key} {dataset_key} {setting} seed {seed}]"
        if "--overwrite" not in flags and reuse_finished(out, configs[seed], force and not dry_run, tag):
            continue
        if dry_run:
            print(f"{tag} would run -> {out}")
            continue
        print(f"{tag} -> {out}", flush=True)
        code = CHILDREN.call(seed_command(p, seed, out, processes))
        ran.append(seed)
        if code == 2:
            raise Reported(f"seed {seed} stopped on bad input")
        if code in (128 + signal.SIGINT, 128 + signal.SIGTERM):  # the child alone was stopped
            raise RunStopped(code - 128)
        if code != 0:
            failures.append((seed, code, out))
    if failures:
        raise HarnessError(f"{method_key} on {dataset_key} {setting}: " + "; ".join(_failure(*f) for f in failures))
    return ran


def _failure(seed, code, out):
    log = osp.join(out, "log.txt")
    where = f"its log: {log}" if osp.exists(log) else "it stopped before writing a log; its error is printed above"
    return f"seed {seed} failed with exit status {code} ({where})"


# ---------------------------------------------------------------- the end of run.sh
def seed_summary(method_key, dataset_key, setting, seeds, output_root, ran):
    """What scripts/run.sh prints last: each seed's metrics and time, their mean ± std,
    and where the results are. `ran`: the seeds run now (the others were done before)."""
    metrics = task_metrics(task_of_setting(dataset_key, setting))
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
    display = methods()[method_key].display if method_key in methods() else method_key
    return (f"== {display} on {dataset_key} {setting}: {len(results)} of {len(seeds)} "
            f"seeds, results in {where}/seed<k>/{RESULTS}\n" + text_table(header, body))


def ablation_rows(path):
    """[(row name, folder name, overrides)] from a "name | KEY VALUE ..." file."""
    if not osp.isfile(path):
        raise HarnessError(f"No ablation rows file {path}: write one ('name | KEY VALUE ...' per line)")
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if "|" not in line:
                raise HarnessError(f"{path}: rows read 'name | KEY VALUE ...', got {line!r}")
            name, overrides = (part.strip() for part in line.split("|", 1))
            folder = "".join(c if c.isalnum() or c in "+-=." else "_" for c in name)
            rows.append((name, folder, overrides.split()))
    return rows


def ablate(method_key, dataset_key, setting, seeds, rows_file, data_root, output_root, flags=(), opts=(), processes=1,
           force=False):
    """Run every ablation row (its overrides, then `opts`); returns the row folders in file order."""
    check_overrides(opts)
    rows = ablation_rows(rows_file)
    # the tables name each row as the rows file does, not by its folder
    ablation_dir = osp.join(output_root, dataset_key, setting, "ablation")
    os.makedirs(ablation_dir, exist_ok=True)
    names = {folder: name for name, folder, _ in rows}
    names_file = osp.join(ablation_dir, ROW_NAMES)
    if osp.isfile(names_file):  # rows of other rows files (another method's) keep their names
        with open(names_file) as f:
            names = {**json.load(f), **names}
    write_text_atomic(names_file, json.dumps(names, indent=1))
    folders = []
    for name, folder, overrides in rows:
        print(f"== ablation row: {name}", flush=True)
        run_seeds(method_key, dataset_key, setting, seeds, [*overrides, *opts], data_root, output_root,
                  osp.join("ablation", folder), flags, processes, force)
        folders.append(folder)
    return folders


# ---------------------------------------------------------------- the command line
def _parser():
    import argparse

    parser = argparse.ArgumentParser(prog="python -m leclip.harness")
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="one method, one setting, several seeds")
    run_p.add_argument("method")
    run_p.add_argument("dataset")
    run_p.add_argument("setting")
    run_p.add_argument("seeds", nargs="*", type=int)
    run_p.add_argument("--dry-run", action="store_true",
                       help="train nothing, load no weights: print the config files, the weights' place, the images "
                            "per split on disk and the estimated steps, or every missing piece")
    abl_p = sub.add_parser("ablate", help="every row of configs/ablations/<method>.txt")
    abl_p.add_argument("dataset")
    abl_p.add_argument("setting")
    abl_p.add_argument("seeds", nargs="*", type=int)
    abl_p.add_argument("--method", help="the method whose rows to run (default: the task's: cfsg, ccd or csa)")
    abl_p.add_argument("--rows", help="a rows file of the method's own (default: configs/ablations/<method>.txt)")
    abl_p.add_argument("--list", action="store_true", help="print the rows' folder names only")
    cmp_p = sub.add_parser("methods", help="the methods of a dataset's task")
    cmp_p.add_argument("dataset")
    cmp_p.add_argument("setting")
    set_p = sub.add_parser("settings", help="'dataset setting' of each setting of TASK whose dataset is under DATA")
    set_p.add_argument("task", choices=sorted(TASK_NAMES))
    for p in (run_p, abl_p):
        p.add_argument("--overwrite", action="store_true", help="run finished seeds again (old results kept beside)")
        p.add_argument("--force", action="store_true",
                       help="a finished seed of another config: move its folder aside (replaced-<time>/) and run it")
        p.add_argument("--force-resume", action="store_true", help="resume from checkpoints of another config")
        p.add_argument("--skip-bad-images", action="store_true", help="leave out unreadable images (recorded)")
        p.add_argument("--viz", action="store_true", help="each seed's figures (CCD, CSA) in its folder's viz/")
    for p in (run_p, abl_p, cmp_p, set_p):
        p.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def _command(args, opts, flags, data_root, output_root):
    processes = processes_from_env(os.environ.get("GPUS"))
    if args.command == "run":
        seeds = args.seeds or [1, 2, 3]
        ran = run_seeds(args.method, args.dataset, args.setting, seeds, opts, data_root, output_root, flags=flags,
                        processes=processes, force=args.force, dry_run=args.dry_run)
        if not args.dry_run:
            print(seed_summary(args.method, args.dataset, args.setting, seeds, output_root, ran))
    elif args.command == "settings":
        present, absent = task_settings(args.task, data_root)
        for dataset_key, why in absent.items():
            print(f"absent: {dataset_key} ({why}): its columns are marked absent", file=sys.stderr)
        print("\n".join(f"{dataset_key} {setting}" for dataset_key, setting in present))
    elif args.command == "ablate":
        args.method = args.method or ablated(task_of_setting(args.dataset, args.setting))
        rows_file = args.rows or osp.join(CONFIGS, "ablations", f"{args.method}.txt")
        if args.list:
            print("\n".join(folder for _, folder, _ in ablation_rows(rows_file)))
        else:
            ablate(args.method, args.dataset, args.setting, args.seeds or [1], rows_file, data_root, output_root,
                   flags, opts, processes, args.force)
    else:
        if opts:
            raise HarnessError(f"'methods' takes no config overrides (got {' '.join(opts)})")
        print("\n".join(task_methods(task_of_setting(args.dataset, args.setting))))


def _main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    opts = []
    if "--" in argv:
        opts = argv[argv.index("--") + 1 :]
        argv = argv[: argv.index("--")]
    args = _parser().parse_args(argv)
    debug = args.debug or bool(os.environ.get("LECLIP_DEBUG"))
    flags = [flag for flag in TRAIN_FLAGS if getattr(args, flag[2:].replace("-", "_"), False)]
    # relative DATA and OUTPUT are the caller's: scripts/*.sh do not change directory
    data_root = osp.abspath(os.environ.get("DATA") or "./data")
    output_root = osp.abspath(os.environ.get("OUTPUT") or "./output")
    try:
        _command(args, opts, flags, data_root, output_root)
    except RunStopped as stop:
        print(f"stopped by {signal.Signals(stop.signum).name}: no further seed starts; the running seed said above "
              "what it kept (rerun the same command to resume)", file=sys.stderr)
        return 128 + stop.signum
    except (HarnessError, ValueError, ImportError, OSError) as err:
        if debug:
            raise
        if not isinstance(err, Reported):
            print(f"error: {user_message(err)}\n(run with --debug to see the traceback)", file=sys.stderr)
        return 2
    return 0


def usage_lists():
    """The methods and datasets, for scripts/run.sh's usage line."""
    return f"methods: {' '.join(methods())}\ndatasets: {' '.join(datasets())}"


if __name__ == "__main__":
    CHILDREN.install()
    raise SystemExit(_main())
