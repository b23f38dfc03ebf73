r"""Train and evaluate one LE-CLIP run (Dassl-style flags; `scripts/run.sh` calls it per seed):

    python train.py --root DATA --seed 1 --trainer LECoOp \
        --dataset-config-file configs/datasets/synth_fg.yaml \
        --config-file configs/trainers/LECoOp/synth.yaml \
        --output-dir output/x DATASET.NUM_LABELED 5

Bad input ends with one message and exit status 2 (--debug shows the traceback); a run
missing its data or weights names every missing piece at once. SIGINT or SIGTERM stops
the run with exit status 130 / 143; its last epoch checkpoint (once an epoch has
finished) stays, and the same command resumes from it.

Several processes, one run (docs/DISTRIBUTED.md):

    torchrun --standalone --nproc_per_node 4 train.py ...   # the same flags

The process group comes from torchrun's environment; rank 0 alone prints and writes.
"""
import argparse
import os
import sys

from leclip import distributed, preflight
from leclip.catalogue import HarnessError, setup_cfg
from leclip.runner import RunStopped, install_stop_handlers, run, stop_message, user_message

# errors of bad input (paths, keys, values, files, engine choice): one message, no traceback
USER_ERRORS = (HarnessError, OSError, KeyError, ValueError, ImportError, FloatingPointError)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=str, default="", help="the data root (DATASET.ROOT)")
    parser.add_argument("--output-dir", type=str, default="", help="the run's folder (OUTPUT_DIR)")
    parser.add_argument("--resume", type=str, default="", help="a folder of checkpoints to resume from (RESUME)")
    parser.add_argument("--seed", type=int, default=-1, help="the run's seed (SEED; the labeled subset is drawn with it)")
    parser.add_argument(
        "--config-file", type=str, nargs="+", default=[""], help="the trainer's config file(s), merged in order"
    )
    parser.add_argument("--dataset-config-file", type=str, default="", help="the dataset's config file")
    parser.add_argument("--trainer", type=str, default="", help="the registered trainer (TRAINER.NAME), e.g. CFSG")
    parser.add_argument("--backbone", type=str, default="", help="the CLIP model (MODEL.BACKBONE.NAME), e.g. ViT-B/16")
    parser.add_argument("--eval-only", action="store_true", help="evaluate the model of --model-dir, train nothing")
    parser.add_argument("--model-dir", type=str, default="", help="load model from this directory for eval-only mode")
    parser.add_argument("--load-epoch", type=int, help="load model weights at this epoch for evaluation")
    parser.add_argument("--no-train", action="store_true", help="print the resolved config and stop")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a finished results.json (the old one is kept beside it)")
    parser.add_argument("--force-resume", action="store_true",
                        help="resume from checkpoints written with another config")
    parser.add_argument("--skip-bad-images", action="store_true",
                        help="leave out unreadable images, listed in OUTPUT_DIR/skipped_images.txt")
    parser.add_argument("--viz", action="store_true",
                        help="after the run, write the trainer's figures to OUTPUT_DIR/viz (CCD: CAM, box and crop of "
                             "TRAINER.VIZ_IMAGES training images; CSA: its contexts, the label correlation as a heat "
                             "map, and per-class attention maps of TRAINER.VIZ_IMAGES test images)")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (or LECLIP_DEBUG=1)")
    parser.add_argument("opts", default=None, nargs=argparse.REMAINDER, help="config overrides, KEY VALUE ... (e.g. OPTIM.MAX_EPOCH 5)")
    return parser.parse_args(argv)


def report(message):
    """Print to stderr and, once the run's log is open, into its log.txt too (rank 0
    only: every rank of a distributed run meets the same error)."""
    if distributed.launched_rank() != 0:
        return
    print(message, file=sys.stderr)
    log = getattr(sys.stdout, "file", None)
    if log is not None and not log.closed:
        log.write(message + "\n")
        log.flush()


def error_message(err, cfg):
    """The message of a bad-input error; a missing file (data, splits, weights) comes with
    every other missing piece of the run (rank 0 looks: the others print nothing)."""
    if isinstance(err, FileNotFoundError) and cfg is not None and distributed.launched_rank() == 0:
        pieces = preflight.missing_pieces(cfg)
        if len(pieces) > 1:
            return preflight.missing_message(pieces)
    return user_message(err, cfg)


def main(argv=None):
    args = parse_args(argv)
    opts = list(args.opts or [])
    if args.skip_bad_images:
        opts += ["DATALOADER.SKIP_BAD_IMAGES", "True"]
    cfg = None
    flags = dict(root=args.root, output_dir=args.output_dir, resume=args.resume,
                 seed=args.seed if args.seed >= 0 else None, trainer=args.trainer, backbone=args.backbone)
    try:
        cfg = setup_cfg(args.config_file, args.dataset_config_file, opts, **flags)
        # the config of the files alone: results.json records where the run departs from it
        recipe = setup_cfg(args.config_file, args.dataset_config_file, [], **flags)
        if args.no_train:
            if distributed.launched_rank() == 0:
                print(cfg.dump())
            return 0
        from leclip.dassl import ENGINE

        distributed.setup(cfg.USE_CUDA, ENGINE)
        if not distributed.is_main():
            sys.stdout = open(os.devnull, "w")  # one log: rank 0's
        run(cfg, eval_only=args.eval_only, model_dir=args.model_dir, load_epoch=args.load_epoch,
            overwrite=args.overwrite, force_resume=args.force_resume, viz=args.viz, recipe=recipe)
    except RunStopped as stop:
        report(stop_message(stop.signum, cfg.OUTPUT_DIR if cfg is not None else ""))
        return 128 + stop.signum
    except USER_ERRORS as err:
        if args.debug or os.environ.get("LECLIP_DEBUG"):
            raise
        report(f"error: {error_message(err, cfg)}\n(run with --debug to see the traceback)")
        return 2
    finally:
        distributed.cleanup()
    return 0


if __name__ == "__main__":
    install_stop_handlers()
    sys.exit(main())
