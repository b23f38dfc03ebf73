"""Every (method, benchmark, setting) of the papers' tables, run as a user would run it,
at miniature scale: one epoch of training and one evaluation per case.

    python scripts/smoke_matrix.py [--methods coop csa ...] [--datasets voc2007 ...] [--keep DIR]
    python scripts/smoke_matrix.py --time cfsg dogs 20 [--steps 2] [--opts KEY VALUE ...]
                                   (training steps at ViT-B/16's real width)

Per case: the harness resolves the method's recipe on the benchmark (its config files,
the setting's key); the benchmark is a miniature replica of its official on-disk layout
(`tests/miniature.py`: its real class count for the multi-label sets, its typical image
size; task B's replicas hold one training batch, so a CCD case's epoch is one step of its
ResNet-50 at 448 px); the recipe's CLIP backbone is a random model of the
official architecture at a reduced width (patch 16 at 224 px for ViT-B/16; 77 text
tokens), saved as TorchScript under the official file name in a temporary clip cache
($LECLIP_CLIP_CACHE), as a user's download would be. The only overrides: one epoch
(`OPTIM.MAX_EPOCH 1`), CSA's pseudo-labels from the first epoch, data loading in this
process, and CCD's classifier from random weights (torchvision's download is not
assumed) with every image reliable (a random CLIP's labels are near uniform), trained on
batches of `CCD_BATCH` images instead of the recipe's 16 (a batch of 16 needs 7 GiB;
`--time ccd ...` measures it). Prints one
line per case (its wall and CPU seconds and metrics) and a summary; exit status 1 when a
case fails.

`--time METHOD DATASET SETTING`: the recipe's batch sizes with a random CLIP of the real
width (ViT-B/16: 768 wide, 12 blocks; text 512 wide); each training step's wall and CPU
time and floating-point operations (counted by torch's FlopCounterMode), and the peak
resident memory of the process. `TRAIN.COUNT_ITER train_x`: an epoch is one labeled
batch on the replicas (CSA's multi-label replicas have 200 images here, so that a ratio
of 0.2 fills its labeled batch).
"""
import argparse
import contextlib
import io
import os
import os.path as osp
import resource
import sys
import tempfile
import time
import traceback
import warnings

import torch

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, osp.join(REPO, "tests"))

import miniature  # noqa: E402

from leclip import catalogue, runner  # noqa: E402

# the benchmarks' replicas: enough images for 20 labels per ID class (task A) and for a
# labeled ratio of 0.05 to hold positives of at least CSA's N_CONTEXTS classes (task C)
REPLICAS = {
    "dogs": lambda root, size: miniature.dogs(root, train_per_class=22, size=size),
    "cars": lambda root, size: miniature.cars(root, train_per_class=22, size=size),
    "cub": lambda root, size: miniature.cub(root, train_per_class=22, size=size),
    "aircraft": lambda root, size: miniature.aircraft(root, per_split=11, size=size),
    "semiaves": lambda root, size: miniature.semiaves(root, size=size),
    "voc2007": lambda root, size: miniature.voc(root, "2007", ("trainval", "test"), size=size, images=40),
    "voc2012": lambda root, size: miniature.voc(root, "2012", ("train", "val"), size=size, images=40),
    "coco": lambda root, size: miniature.coco(root, size=size, classes=80, images=40),
    "nuswide": lambda root, size: miniature.nuswide(root, missing=1, size=size, concepts=81, images=40),
}
# task B: one training batch and as many test images (a quarter on COCO and NUS-WIDE; NUS-WIDE lists one
# more, missing on disk). CCD's cases train on batches of CCD_BATCH images, not the recipe's 16: its
# ResNet-50 at 448 px needs 7 GiB and 21 CPU seconds a step at 16 (`--time ccd` measures that step)
CCD_BATCH = 4
UNSUP_REPLICAS = {
    "voc2007": lambda root, size: miniature.voc(root, "2007", ("trainval", "test"), size=size, images=CCD_BATCH),
    "voc2012": lambda root, size: miniature.voc(root, "2012", ("train", "val"), size=size, images=CCD_BATCH),
    "coco": lambda root, size: miniature.coco(root, size=size, classes=80, images=CCD_BATCH),
    "nuswide": lambda root, size: miniature.nuswide(root, missing=1, size=size, concepts=81, images=CCD_BATCH + 1),
}
# the official CLIP architectures at a reduced width (random weights; the real input size)
REDUCED = dict(embed_dim=64, context_length=77, transformer_width=64, transformer_heads=1, transformer_layers=2)
ARCHITECTURES = {
    "ViT-B/16": dict(image_resolution=224, vision_layers=2, vision_width=64, vision_patch_size=16),
    "ViT-B/32": dict(image_resolution=224, vision_layers=2, vision_width=64, vision_patch_size=32),
    "RN50": dict(image_resolution=224, vision_layers=(1, 1, 1, 1), vision_width=8, vision_patch_size=None),
    "RN101": dict(image_resolution=224, vision_layers=(1, 1, 1, 1), vision_width=8, vision_patch_size=None),
    "RN50x64": dict(image_resolution=448, vision_layers=(1, 1, 1, 1), vision_width=8, vision_patch_size=None),
}
# --time: 200 multi-label images, so that a ratio of 0.2 fills a labeled batch of 32
TIMING_REPLICAS = {
    **REPLICAS,
    "voc2007": lambda root, size: miniature.voc(root, "2007", ("trainval", "test"), size=size, images=200),
    "coco": lambda root, size: miniature.coco(root, size=size, classes=80, images=200),
}
REAL_WIDTH = {
    "ViT-B/16": dict(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768, vision_patch_size=16,
                     context_length=77, transformer_width=512, transformer_heads=8, transformer_layers=12),
}


def cases(methods=None, datasets=None):
    """[(method, dataset, setting)] of the papers' tables: each task's methods (the
    baselines included) on each of its benchmarks in the papers' settings."""
    out = []
    for task in catalogue.TASK_NAMES:
        for dataset, setting in catalogue.task_columns(task):
            if dataset not in REPLICAS:  # the embedded world: its own tests
                continue
            for method in catalogue.task_methods(task):
                if (methods is None or method in methods) and (datasets is None or dataset in datasets):
                    out.append((method, dataset, setting))
    return out


def save_official_format(model, path):
    """`model` (LE-CLIP's CLIP) as OpenAI ships CLIP: a traced TorchScript archive of the
    `clip` package's own model class, under the official file name."""
    from clip.model import build_model

    official = build_model({k: v.clone() for k, v in model.state_dict().items()}).float().eval()
    resolution = official.visual.input_resolution
    example = (torch.zeros(1, 3, resolution, resolution), torch.zeros(1, official.context_length, dtype=torch.long))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(official, example, check_trace=False), path)


def clip_cache(folder, names, shapes=None):
    """A clip cache in `folder` with a random model of each backbone in `names` (the
    official file names); `shapes`: {name: random_clip arguments} instead of the reduced ones."""
    from clip import clip as clip_api

    from leclip.backbone import random_clip

    os.makedirs(folder, exist_ok=True)
    for name in names:
        path = osp.join(folder, osp.basename(clip_api._MODELS[name]))
        if not osp.exists(path):
            shape = (shapes or {}).get(name) or {**REDUCED, **ARCHITECTURES[name]}
            save_official_format(random_clip(**shape), path)
    return folder


def case_cfg(method, dataset, setting, data_root, output_dir, opts=()):
    trainer = catalogue.check_method(method).trainer
    recipe = catalogue.setup_cfg(catalogue.trainer_configs(method, dataset), catalogue.dataset_config(dataset))
    extra = ["DATALOADER.NUM_WORKERS", "0"]
    if recipe.OPTIM.MAX_EPOCH > 0:
        extra += ["OPTIM.MAX_EPOCH", "1"]
    if trainer == "CSA":
        extra += ["TRAINER.CSA.PL_START_EPOCH", "0"]
    if trainer == "CCD":  # torchvision's ImageNet ResNet-50 is not downloaded here (CI, offline); a random
        # CLIP's softmax is near uniform: every image would be unreliable, none left for the class bias
        extra += ["TRAINER.CCD.WEIGHTS", "random", "TRAINER.CCD.MAX_ENTROPY", "100.0"]
    return catalogue.setup_cfg(
        catalogue.trainer_configs(method, dataset),
        catalogue.dataset_config(dataset),
        catalogue.setting_opts(dataset, setting) + extra + list(opts),
        root=data_root, output_dir=output_dir, seed=1, trainer=trainer,
    )


def backbones(selected):
    """The CLIP backbones of the cases' recipes (a case whose recipe is missing fails on its own)."""
    names = set()
    for method, dataset, _ in selected:
        with contextlib.suppress(catalogue.HarnessError):
            names.add(catalogue.setup_cfg(catalogue.trainer_configs(method, dataset)).MODEL.BACKBONE.NAME)
    return sorted(names)


def data_root(work, dataset, setting):
    """Where a case's replica is: task B's own (`UNSUP_REPLICAS`) in `work`/unsup, the others in `work`."""
    return osp.join(work, "unsup") if catalogue.task_of_setting(dataset, setting) == "B" else work


def build_replicas(work, selected):
    """The replicas that the cases `selected` read, each written once."""
    for root, dataset in sorted({(data_root(work, dataset, setting), dataset) for _, dataset, setting in selected}):
        (REPLICAS if root == work else UNSUP_REPLICAS)[dataset](root, miniature.REAL_SIZES[dataset])


def run_case(method, dataset, setting, work, output_dir):
    """runner.run of the case on its replica in `work`, its log silenced; returns (results, (wall
    s, CPU s)): the CPU time is the case's own on a machine that others share."""
    ccd = catalogue.check_method(method).trainer == "CCD"
    cfg = case_cfg(method, dataset, setting, data_root(work, dataset, setting), output_dir,
                   ["DATALOADER.TRAIN_U.BATCH_SIZE", str(CCD_BATCH)] if ccd else ())
    start, cpu = time.perf_counter(), time.process_time()
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = runner.run(cfg)
    return results, (time.perf_counter() - start, time.process_time() - cpu)


def time_steps(method, dataset, setting, work, steps=2, opts=()):
    """([(wall s, CPU s, FLOPs) of each training step], peak resident MiB) at the real
    width; the CPU time is the step's own on a machine that others share."""
    from torch.utils.flop_counter import FlopCounterMode

    from leclip.dassl import build_trainer

    os.environ["LECLIP_CLIP_CACHE"] = clip_cache(osp.join(work, "clip"), backbones([(method, dataset, setting)]),
                                                 REAL_WIDTH)
    TIMING_REPLICAS[dataset](work, miniature.REAL_SIZES[dataset])
    output = tempfile.mkdtemp(prefix="time-", dir=work)  # a fresh folder: never a resume
    cfg = case_cfg(method, dataset, setting, work, output,
                   ["TRAIN.COUNT_ITER", "train_x", "OPTIM.MAX_EPOCH", str(steps), *opts])  # one step an epoch
    with contextlib.redirect_stdout(io.StringIO()):
        trainer = build_trainer(cfg)
    times = []
    step = trainer.forward_backward

    def timed(*batches):
        start, cpu = time.perf_counter(), time.process_time()
        with FlopCounterMode(display=False) as flops:
            out = step(*batches)
        times.append((time.perf_counter() - start, time.process_time() - cpu, flops.get_total_flops()))
        return out

    trainer.forward_backward = timed
    with contextlib.redirect_stdout(io.StringIO()):
        trainer.train()
    return times, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", choices=list(catalogue.methods()))
    parser.add_argument("--datasets", nargs="+", choices=list(REPLICAS))
    parser.add_argument("--keep", help="build the replicas and outputs here (kept) instead of a temporary folder")
    parser.add_argument("--time", nargs=3, metavar=("METHOD", "DATASET", "SETTING"))
    parser.add_argument("--steps", type=int, default=2, help="--time: training steps (the first warms up)")
    parser.add_argument("--opts", nargs="+", default=[], help="--time: config overrides (KEY VALUE ...)")
    args = parser.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or tmp
        if args.time:
            times, memory = time_steps(*args.time, work, args.steps, args.opts)
            steps = ", ".join(f"{wall:.1f} s ({cpu:.1f} s CPU, {flops / 1e12:.2f} TFLOP)" for wall, cpu, flops in times)
            print(f"{' '.join(args.time)}: steps {steps}; peak resident {memory:.0f} MiB")
            return 0
        selected = cases(args.methods, args.datasets)
        os.environ["LECLIP_CLIP_CACHE"] = clip_cache(osp.join(work, "clip"), backbones(selected))
        build_replicas(work, selected)
        failed, total = [], [0.0, 0.0]
        for method, dataset, setting in selected:
            out = osp.join(work, "out", method, dataset, setting)
            try:
                results, (seconds, cpu) = run_case(method, dataset, setting, work, out)
            except Exception as err:  # noqa: BLE001  a failing case is reported, the others still run
                failed.append((method, dataset, setting))
                print(f"FAIL {method:<13}{dataset:<10}{setting:<7}{type(err).__name__}: {str(err)[:300]}")
                if not isinstance(err, catalogue.HarnessError):
                    traceback.print_exc(limit=-3)
                continue
            total = [total[0] + seconds, total[1] + cpu]
            shown = ", ".join(f"{k} {v:.1f}" for k, v in results.items()
                              if k not in runner.RUN_FIELDS and isinstance(v, float))
            print(f"ok   {method:<13}{dataset:<10}{setting:<7}{seconds:6.1f} s ({cpu:5.1f} s CPU)  {shown}", flush=True)
    print(f"\n{len(selected) - len(failed)} of {len(selected)} cases passed in {total[0]:.0f} s of runs "
          f"({total[1]:.0f} s CPU, {torch.get_num_threads()} threads)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
