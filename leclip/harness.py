"""The run/compare harness in one place: method and dataset keys, settings, configs.

`scripts/run.sh`, `scripts/compare.sh`, `train.py`, the tests and the benchmarks all go
through these tables, so a method or benchmark is added in one spot.
"""
import json
import os
import os.path as osp
import sys
import time
from collections import OrderedDict

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = osp.join(REPO, "configs")

# harness key -> registered trainer name
METHODS = OrderedDict(
    zsclip="LEZeroshotCLIP",
    clip_lora="LECLIPLoRA",
    clip_adapter="LECLIPAdapter",
    coop="LECoOp",
    locoop="LELoCoOp",
    plot="LEPLOT",
    maple="LEMaPLe",
    cfsg="CFSG",
    ccd="CCD",
    csa="CSA",
)

# harness key -> (registered dataset name, task)
DATASETS = OrderedDict(
    synth_fg=("SynthFG", "A"),
    dogs=("LEStanfordDogs", "A"),
    cars=("LEStanfordCars", "A"),
    cub=("LECUB", "A"),
    aircraft=("LEFGVCAircraft", "A"),
    semiaves=("LESemiAves", "A"),
    synth_ml=("SynthML", "BC"),
    voc2007=("LEVOC2007", "BC"),
    voc2012=("LEVOC2012", "BC"),
    coco=("LECOCO", "BC"),
    nuswide=("LENUSWIDE", "BC"),
)

# the methods of each task, in the papers' row order
TASK_METHODS = {
    "A": ["zsclip", "clip_lora", "clip_adapter", "coop", "locoop", "plot", "maple", "cfsg"],
    "B": ["zsclip", "ccd"],
    "C": ["zsclip", "csa"],
}
TASK_METRICS = {
    "A": ["closed_accuracy", "balanced_accuracy", "auroc"],
    "B": ["mAP", "CF1", "OF1"],
    "C": ["mAP", "CF1", "OF1"],
}
SETTING_RESULTS = ("accuracy", "macro_f1", "closed_accuracy", "balanced_accuracy", "auroc", "mAP", "CF1", "OF1")


class HarnessError(ValueError):
    """A bad key, setting or config: the message says what to fix."""


def check_method(key):
    if key not in METHODS:
        raise HarnessError(f"Unknown method {key!r}; valid methods: {', '.join(METHODS)}")
    return METHODS[key]


def check_dataset(key):
    if key not in DATASETS:
        raise HarnessError(f"Unknown dataset {key!r}; valid datasets: {', '.join(DATASETS)}")
    return DATASETS[key]


def task_of(dataset_key, setting):
    """A, B or C: multi-label data is task B when unsupervised, C with a labeled ratio."""
    task = check_dataset(dataset_key)[1]
    if task == "A":
        return "A"
    return "B" if str(setting) == "unsup" else "C"


def setting_opts(dataset_key, setting):
    """Config overrides that select SETTING on the dataset."""
    setting = str(setting)
    if dataset_key == "semiaves":
        if setting not in ("in", "inout"):
            raise HarnessError(f"Semi-Aves settings are 'in' (U_in) and 'inout' (U_in + U_out), not {setting!r}")
        return ["DATASET.SETTING", setting]
    if check_dataset(dataset_key)[1] == "A":
        if not setting.isdigit() or int(setting) < 1:
            raise HarnessError(f"{dataset_key}: SETTING is the number of labels per ID class (5 or 20), not {setting!r}")
        return ["DATASET.NUM_LABELED", setting]
    if setting == "unsup":
        return ["DATASET.SETTING", "unsup"]
    try:
        ratio = float(setting)
    except ValueError:
        ratio = -1.0
    if not 0 < ratio <= 1:
        raise HarnessError(f"{dataset_key}: SETTING is 'unsup' (task B) or a labeled ratio in (0, 1] (task C), not {setting!r}")
    return ["DATASET.LABELED_RATIO", setting]


def dataset_config(dataset_key):
    check_dataset(dataset_key)
    return osp.join(CONFIGS, "datasets", f"{dataset_key}.yaml")


def trainer_config(method_key, dataset_key):
    """configs/trainers/<Trainer>/synth.yaml on the embedded world, else vit_b16.yaml."""
    folder = osp.join(CONFIGS, "trainers", check_method(method_key))
    synthetic = dataset_key.startswith("synth_")
    path = osp.join(folder, "synth.yaml" if synthetic else "vit_b16.yaml")
    if not osp.exists(path):
        raise HarnessError(f"No config for method {method_key!r} on {dataset_key!r}: expected {path}")
    return path


def _merge_file(cfg, path):
    if not osp.exists(path):
        raise HarnessError(f"Config file not found: {path}")
    try:
        cfg.merge_from_file(path)
    except (KeyError, AssertionError, ValueError) as err:
        raise HarnessError(f"Bad config in {path}: {err} (check the key's spelling and type)") from None


def setup_cfg(config_file="", dataset_config_file="", opts=(), **overrides):
    """Dassl's setup_cfg: defaults + dataset YAML + trainer YAML + opts + flags."""
    import leclip.datasets  # noqa: F401  registers datasets and their config keys
    import leclip.trainers  # noqa: F401
    from leclip.dassl import get_cfg_default

    cfg = get_cfg_default()
    if dataset_config_file:
        _merge_file(cfg, dataset_config_file)
    if config_file:
        _merge_file(cfg, config_file)
    flags = {
        "root": "DATASET.ROOT",
        "output_dir": "OUTPUT_DIR",
        "resume": "RESUME",
        "seed": "SEED",
        "trainer": "TRAINER.NAME",
        "backbone": "MODEL.BACKBONE.NAME",
        "dataset": "DATASET.NAME",
    }
    pairs = []
    for name, key in flags.items():
        value = overrides.get(name)
        if value not in (None, ""):
            pairs += [key, str(value)]
    opts = list(opts)
    if len(opts) % 2:
        raise HarnessError(f"Config overrides come in KEY VALUE pairs; got an odd list: {opts}")
    try:
        cfg.merge_from_list(pairs + opts)
    except (KeyError, AssertionError, ValueError) as err:
        raise HarnessError(f"Bad config override: {err} (check the key's spelling and type)") from None
    cfg.freeze()
    return cfg


def write_json_atomic(path, data):
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)


def run(cfg, eval_only=False, model_dir="", load_epoch=None):
    """Train (or evaluate) one configured run; write config.yaml and results.json."""
    from leclip.dassl import ENGINE, build_trainer, collect_env_info, set_random_seed, setup_logger

    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    if cfg.SEED >= 0:
        set_random_seed(cfg.SEED)
    setup_logger(cfg.OUTPUT_DIR)
    print(f"Engine: {ENGINE} | {collect_env_info()}")
    with open(osp.join(cfg.OUTPUT_DIR, "config.yaml"), "w") as f:
        f.write(cfg.dump())
    start = time.time()
    trainer = build_trainer(cfg)
    if eval_only:
        trainer.load_model(model_dir, epoch=load_epoch)
        trainer.test()
    else:
        trainer.train()
    metrics = getattr(trainer.evaluator, "last_results", {})
    results = OrderedDict((k, float(v)) for k, v in metrics.items() if k in SETTING_RESULTS)
    results.update(
        trainer=cfg.TRAINER.NAME,
        dataset=cfg.DATASET.NAME,
        seed=cfg.SEED,
        ssl_mode=cfg.TRAINER.SSL.MODE,
        backbone=cfg.MODEL.BACKBONE.NAME,
        engine=ENGINE,
        device=str(trainer.device),
        seconds=round(time.time() - start, 1),
    )
    # written last: a seed folder with results.json is a finished run
    write_json_atomic(osp.join(cfg.OUTPUT_DIR, "results.json"), results)
    sys.stdout.flush()
    return results


def seed_dir(output_root, dataset_key, setting, method_key, seed):
    return osp.join(output_root, dataset_key, str(setting), method_key, f"seed{seed}")


def run_seeds(method_key, dataset_key, setting, seeds, opts=(), data_root="./data", output_root="./output", folder=None):
    """Run one setting for each seed (a subprocess each); skip finished seeds.

    Results go to <output_root>/<dataset>/<setting>/<folder or method>/seed<k>/.
    """
    import subprocess
    import sys

    trainer = check_method(method_key)
    trainer_yaml = trainer_config(method_key, dataset_key)
    dataset_yaml = dataset_config(dataset_key)
    base_opts = setting_opts(dataset_key, setting)
    failures = []
    for seed in seeds:
        out = seed_dir(output_root, dataset_key, setting, folder or method_key, seed)
        if osp.exists(osp.join(out, "results.json")):
            print(f"[{method_key} {dataset_key} {setting} seed {seed}] done already: {out}/results.json (delete it to rerun)")
            continue
        print(f"[{method_key} {dataset_key} {setting} seed {seed}] -> {out}", flush=True)
        command = [
            sys.executable, osp.join(REPO, "train.py"),
            "--root", data_root, "--seed", str(seed), "--trainer", trainer,
            "--dataset-config-file", dataset_yaml, "--config-file", trainer_yaml,
            "--output-dir", out, *base_opts, *opts,
        ]
        if subprocess.call(command) != 0:
            failures.append(seed)
    if failures:
        raise HarnessError(f"{method_key} on {dataset_key} {setting}: seeds {failures} failed (see their log.txt)")


def ablation_rows(path):
    """[(row name, folder name, overrides)] from a "name | KEY VALUE ..." file."""
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


def ablate(method_key, dataset_key, setting, seeds, rows_file, data_root, output_root):
    """Run every ablation row; returns the row folders in file order."""
    folders = []
    for name, folder, overrides in ablation_rows(rows_file):
        print(f"== ablation row: {name}", flush=True)
        run_seeds(method_key, dataset_key, setting, seeds, overrides, data_root, output_root, osp.join("ablation", folder))
        folders.append(folder)
    return folders


def registered_trainers():
    import leclip.trainers  # noqa: F401
    from leclip.dassl import TRAINER_REGISTRY

    return set(TRAINER_REGISTRY.registered_names())


def _main(argv=None):
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m leclip.harness")
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="one method, one setting, several seeds")
    run_p.add_argument("method")
    run_p.add_argument("dataset")
    run_p.add_argument("setting")
    run_p.add_argument("seeds", nargs="*", type=int)
    abl_p = sub.add_parser("ablate", help="every row of configs/ablations/<method>.txt")
    abl_p.add_argument("dataset")
    abl_p.add_argument("setting")
    abl_p.add_argument("seeds", nargs="*", type=int)
    abl_p.add_argument("--method", default="cfsg")
    cmp_p = sub.add_parser("methods", help="the methods of a dataset's task that are available")
    cmp_p.add_argument("dataset")
    cmp_p.add_argument("setting")
    argv = list(sys.argv[1:] if argv is None else argv)
    opts = []
    if "--" in argv:
        opts = argv[argv.index("--") + 1 :]
        argv = argv[: argv.index("--")]
    args = parser.parse_args(argv)
    data_root = os.environ.get("DATA", "./data")
    output_root = os.environ.get("OUTPUT", "./output")
    try:
        if args.command == "run":
            run_seeds(args.method, args.dataset, args.setting, args.seeds or [1, 2, 3], opts, data_root, output_root)
        elif args.command == "ablate":
            rows_file = osp.join(CONFIGS, "ablations", f"{args.method}.txt")
            for folder in ablate(args.method, args.dataset, args.setting, args.seeds or [1], rows_file, data_root, output_root):
                print(f"row {folder}")
        else:
            available = registered_trainers()
            for key in TASK_METHODS[task_of(args.dataset, args.setting)]:
                if METHODS[key] in available:
                    print(key)
                else:
                    print(f"skipping {key}: trainer {METHODS[key]} is not available yet", file=sys.stderr)
    except HarnessError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
