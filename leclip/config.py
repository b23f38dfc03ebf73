"""LE-CLIP's config keys, added to the active engine's defaults.

Each trainer or dataset module declares its keys with `add_defaults({...})` at import
time. Keys are added only where missing, to the engine's default node (Dassl's
`cfg_default` or the built-in one), so `get_cfg_default()` returns them in any train.py
that imported `leclip.trainers` -- including an unmodified Dassl fork's -- and a fork's
own `extend_cfg` that defines the same node keeps working.
"""
from yacs.config import CfgNode as CN

from .data.bases import DATASET_DEFAULTS
from .dassl import DEFAULT_CFG, ENGINE, check_cfg_values


def merge_missing(cfg, defaults):
    """Set each dotted key of `defaults` in `cfg` unless it is already there."""
    for dotted, value in defaults.items():
        *parents, leaf = dotted.split(".")
        node = cfg
        for part in parents:
            if part not in node:
                node[part] = CN()
            node = node[part]
        if leaf not in node:
            node[leaf] = CN(value) if isinstance(value, dict) else value
    return cfg


# every key LE-CLIP declared, with its default (`leclip.plugin` puts them back into a
# node that a fork's extend_cfg replaces)
DECLARED = {}


def add_defaults(defaults):
    """Declare config keys with their defaults (dotted key -> value)."""
    for dotted, value in defaults.items():
        DECLARED.setdefault(dotted, value)
    merge_missing(DEFAULT_CFG, defaults)


# Keys shared by every LE-CLIP trainer and benchmark. "(ours)" marks choices the
# papers do not fix (see the README).
add_defaults(DATASET_DEFAULTS)
add_defaults(
    {
        # named views of LE-CLIP's DataManager (also in the built-in engine's defaults)
        "DATALOADER.TRAIN_X.VIEWS": ["weak"],
        "DATALOADER.TRAIN_U.VIEWS": ["weak", "strong"],
        # leave out images that do not decode, listed in OUTPUT_DIR/skipped_images.txt (train.py --skip-bad-images)
        "DATALOADER.SKIP_BAD_IMAGES": False,
        "INPUT.RANDAUGMENT_N": 2,
        "INPUT.RANDAUGMENT_M": 10,
        "MODEL.BACKBONE.PATH": "",  # explicit checkpoint path; else NAME is looked up
        # zero-shot template of the dataset ("a photo of a {}, a type of aircraft.")
        "DATASET.PROMPT_TEMPLATE": "a photo of a {}.",
        "TEST.OOD_QUANTILE": 0.05,  # (ours) threshold = this quantile of labeled ID scores
        "TRAINER.PREC": "amp",  # amp on CUDA, always fp32 on CPU
        # "model" = the checkpoint's exp(logit_scale) (100 on OpenAI's weights) or a number;
        # each trainer's YAMLs give its official value
        "TRAINER.LOGIT_SCALE": "model",
        "TRAINER.SSL.MODE": "none",  # none | fixmatch
        "TRAINER.SSL.CONF_THRESH": 0.7,  # (ours) tau_conf of the filter F
        "TRAINER.SSL.SCORE": "mcm",  # (ours) msp | mcm | glmcm
        "TRAINER.SSL.LAMBDA": 1.0,  # (ours) weight of the unlabeled loss
        "TRAINER.SSL.OOD_QUANTILE": 0.05,  # (ours) ID-score threshold of F, as at test
        # (ours) the filter's running threshold lives the whole run (checkpointed) or one epoch
        "TRAINER.SSL.FILTER_LIFETIME": "run",
        "TRAINER.VIZ_IMAGES": 4,  # (ours) images the figures of train.py --viz show (CCD, CSA)
    }
)

# Dassl keys that LE-CLIP's trainers do not read (their views, CLIP model and evaluators
# replace what these configure): set to anything but Dassl's default, they are an error.
IGNORED_KEYS = {
    "INPUT.NO_TRANSFORM": "LE-CLIP trainers always build named views",
    "INPUT.CROP_PADDING": "a Dassl transform option; LE-CLIP's views are test, weak, strong, jitter",
    "INPUT.CUTOUT_N": "a Dassl transform option; LE-CLIP's views are test, weak, strong, jitter",
    "INPUT.CUTOUT_LEN": "a Dassl transform option; LE-CLIP's views are test, weak, strong, jitter",
    "INPUT.GN_MEAN": "a Dassl transform option; LE-CLIP's views are test, weak, strong, jitter",
    "INPUT.GN_STD": "a Dassl transform option; LE-CLIP's views are test, weak, strong, jitter",
    "INPUT.COLORJITTER_B": "a Dassl transform option; the jitter view uses ColorJitter(0.5, 0.5, 0.5, 0.5)",
    "INPUT.COLORJITTER_C": "a Dassl transform option; the jitter view uses ColorJitter(0.5, 0.5, 0.5, 0.5)",
    "INPUT.COLORJITTER_S": "a Dassl transform option; the jitter view uses ColorJitter(0.5, 0.5, 0.5, 0.5)",
    "INPUT.COLORJITTER_H": "a Dassl transform option; the jitter view uses ColorJitter(0.5, 0.5, 0.5, 0.5)",
    "INPUT.RGS_P": "a Dassl transform option; LE-CLIP's views are test, weak, strong, jitter",
    "INPUT.GB_P": "a Dassl transform option; LE-CLIP's views are test, weak, strong, jitter",
    "INPUT.GB_K": "a Dassl transform option; LE-CLIP's views are test, weak, strong, jitter",
    "DATALOADER.TRAIN_X.N_DOMAIN": "only Dassl's domain samplers read it",
    "DATALOADER.TRAIN_X.N_INS": "only Dassl's domain samplers read it",
    "DATALOADER.TRAIN_U.N_DOMAIN": "only Dassl's domain samplers read it",
    "DATALOADER.TRAIN_U.N_INS": "only Dassl's domain samplers read it",
    "MODEL.INIT_WEIGHTS": "LE-CLIP trainers build CLIP from MODEL.BACKBONE.NAME / PATH",
    "MODEL.BACKBONE.PRETRAINED": "CLIP weights always load: MODEL.BACKBONE.NAME / PATH",
    "MODEL.HEAD.NAME": "LE-CLIP trainers have no Dassl head",
    "MODEL.HEAD.HIDDEN_LAYERS": "LE-CLIP trainers have no Dassl head",
    "MODEL.HEAD.ACTIVATION": "LE-CLIP trainers have no Dassl head",
    "MODEL.HEAD.BN": "LE-CLIP trainers have no Dassl head",
    "MODEL.HEAD.DROPOUT": "LE-CLIP trainers have no Dassl head",
}
# INPUT.TRANSFORMS: CoOp's configs list the ops of LE-CLIP's weak view; any other list is an error
WEAK_VIEW_TRANSFORMS = ("random_resized_crop", "random_flip", "normalize")
CHOICES = {
    "TRAINER.PREC": ("amp", "fp16", "fp32"),
    "TRAINER.SSL.MODE": ("none", "fixmatch"),
    "TRAINER.SSL.SCORE": ("msp", "mcm", "glmcm"),
    "TRAINER.SSL.FILTER_LIFETIME": ("run", "epoch"),
}
UNIT_INTERVAL = ("TRAINER.SSL.CONF_THRESH", "TRAINER.SSL.OOD_QUANTILE", "TEST.OOD_QUANTILE")


def value_of(cfg, dotted):
    node = cfg
    for part in dotted.split("."):
        node = node[part]
    return node


def has_key(cfg, dotted):
    node = cfg
    for part in dotted.split("."):
        if part not in node:
            return False
        node = node[part]
    return True


def check_config(cfg):
    """One clear error for a key LE-CLIP's trainers would ignore or a value they do not
    take, on either engine."""
    if ENGINE == "dassl":  # the built-in engine checks its loop keys itself; Dassl does not
        check_cfg_values(cfg)
    for dotted, why in IGNORED_KEYS.items():
        if has_key(DEFAULT_CFG, dotted) and value_of(cfg, dotted) != value_of(DEFAULT_CFG, dotted):
            raise ValueError(f"{dotted}={value_of(cfg, dotted)!r} is not used by LE-CLIP's trainers ({why}): remove it")
    transforms = tuple(cfg.INPUT.TRANSFORMS)
    if transforms and transforms != WEAK_VIEW_TRANSFORMS:
        raise ValueError(
            f"INPUT.TRANSFORMS={list(transforms)} is not used by LE-CLIP's trainers: they build named views "
            "(test, weak, strong, jitter); choose them with DATALOADER.TRAIN_X.VIEWS / TRAIN_U.VIEWS "
            f"(the weak view is {list(WEAK_VIEW_TRANSFORMS)})"
        )
    for dotted, allowed in CHOICES.items():
        if value_of(cfg, dotted) not in allowed:
            raise ValueError(f"{dotted}={value_of(cfg, dotted)!r}: use one of {allowed}")
    views_u = list(cfg.DATALOADER.TRAIN_U.VIEWS)
    if cfg.TRAINER.SSL.MODE == "fixmatch" and len(views_u) < 2:
        raise ValueError(
            f"DATALOADER.TRAIN_U.VIEWS={views_u}: FixMatch reads two views of each unlabeled image, the weak "
            "one first, then the strong one (e.g. [\"weak\", \"strong\"])"
        )
    for dotted in UNIT_INTERVAL:
        if not 0 <= value_of(cfg, dotted) <= 1:
            raise ValueError(f"{dotted}={value_of(cfg, dotted)!r}: use a value in [0, 1]")
    if cfg.TRAINER.VIZ_IMAGES < 1:
        raise ValueError(f"TRAINER.VIZ_IMAGES={cfg.TRAINER.VIZ_IMAGES}: use at least 1 image")
    if cfg.TRAINER.SSL.LAMBDA < 0:
        raise ValueError(f"TRAINER.SSL.LAMBDA={cfg.TRAINER.SSL.LAMBDA}: use a non-negative weight")
