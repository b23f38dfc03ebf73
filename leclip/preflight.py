"""What a run needs on disk, checked without training and without loading weights: the
data (its folder, split files and images, counted per split) and the CLIP weights.
`scripts/run.sh ... --dry-run` prints it; a run that misses one piece reports them all.
"""
import contextlib
import io
import math

RUN_SPLITS = ("train_x", "train_u", "val", "test")


def data_counts(cfg):
    """({split: images} read from disk, None) or (None, what is missing and how to get it).
    Bad settings raise their one message, as in a run."""
    from leclip.dassl import build_dataset

    try:
        with contextlib.redirect_stdout(io.StringIO()):  # its "Loading dataset" lines
            data = build_dataset(cfg)
    except FileNotFoundError as err:  # the folder, a split file or images: DatasetNotFound, MissingImagesError
        return None, f"data: {err}"
    return {split: len(getattr(data, split) or []) for split in RUN_SPLITS}, None


def weights_status(cfg):
    """(the file the CLIP weights are read from, None) or (None, where they were looked
    for and how to get them)."""
    from leclip.backbone.loader import resolve_checkpoint

    try:
        return resolve_checkpoint(cfg.MODEL.BACKBONE.NAME, cfg.MODEL.BACKBONE.PATH), None
    except FileNotFoundError as err:
        return None, f"weights: {err}"


def missing_pieces(cfg):
    """Every missing piece of a run, each with where it was looked for and how to get it."""
    return [problem for _, problem in (data_counts(cfg), weights_status(cfg)) if problem]


def missing_message(pieces):
    listed = "\n  ".join(pieces)
    return f"{len(pieces)} piece(s) of this run are missing:\n  {listed}"


def _batches(images, batch_size):
    """Batches of an epoch over `images` (the engine drops the last partial batch)."""
    if not images:
        return 0
    return max(1, images // batch_size)


def estimated_steps(cfg, counts, learns=True):
    """(steps an epoch, steps in all): the engine counts an epoch's batches by
    TRAIN.COUNT_ITER over the labeled (train_x) and unlabeled (train_u) loaders."""
    if not learns:
        return 0, 0
    x = _batches(counts["train_x"], cfg.DATALOADER.TRAIN_X.BATCH_SIZE)
    u = _batches(counts["train_u"], cfg.DATALOADER.TRAIN_U.BATCH_SIZE)
    by_rule = {"train_x": x, "train_u": u, "smaller_one": min(x, u)}.get(cfg.TRAIN.COUNT_ITER, x)
    per_epoch = by_rule or x or u  # a loader that is empty (task B: no labels) leaves the other
    return per_epoch, per_epoch * cfg.OPTIM.MAX_EPOCH


def report(cfg, files, learns=True):
    """The dry run's lines; raises ValueError with every missing piece."""
    counts, data_problem = data_counts(cfg)
    weights, weights_problem = weights_status(cfg)
    pieces = [p for p in (data_problem, weights_problem) if p]
    if pieces:
        raise ValueError(missing_message(pieces))
    per_epoch, total = estimated_steps(cfg, counts, learns)
    lines = ["config files (merged in order): " + ", ".join(files),
             f"CLIP weights ({cfg.MODEL.BACKBONE.NAME}): {weights} (present)",
             "images read from " + (cfg.DATASET.ROOT or "the data root") + ": "
             + ", ".join(f"{split} {n:,}" for split, n in counts.items())]
    if learns:
        lines.append(f"estimated steps: {per_epoch:,} an epoch x {cfg.OPTIM.MAX_EPOCH} epochs = {total:,} "
                     f"(batch {cfg.DATALOADER.TRAIN_X.BATCH_SIZE} / {cfg.DATALOADER.TRAIN_U.BATCH_SIZE}, "
                     f"TRAIN.COUNT_ITER {cfg.TRAIN.COUNT_ITER})")
    else:
        lines.append("estimated steps: 0 (the method does not train; it evaluates "
                     f"{math.ceil(counts['test'] / cfg.DATALOADER.TEST.BATCH_SIZE):,} test batches)")
    return lines
