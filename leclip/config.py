"""LE-CLIP's config keys, added to the active engine's defaults.

Each trainer or dataset module declares its keys with `add_defaults({...})` at import
time. Keys are added only where missing, to the engine's default node (Dassl's
`cfg_default` or the built-in one), so `get_cfg_default()` returns them in any train.py
that imported `leclip.trainers` -- including an unmodified Dassl fork's -- and a fork's
own `extend_cfg` that defines the same node keeps working.
"""
from yacs.config import CfgNode as CN

from .dassl import DEFAULT_CFG

_DECLARED = {}


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


def add_defaults(defaults):
    """Declare config keys with their defaults (dotted key -> value)."""
    _DECLARED.update(defaults)
    merge_missing(DEFAULT_CFG, defaults)


def declared_defaults():
    return dict(_DECLARED)


# Keys shared by every LE-CLIP trainer and benchmark. "(ours)" marks choices the
# papers do not fix (see the README).
add_defaults(
    {
        # named views of LE-CLIP's DataManager (also in the built-in engine's defaults)
        "DATALOADER.TRAIN_X.VIEWS": ["weak"],
        "DATALOADER.TRAIN_U.VIEWS": ["weak", "strong"],
        "INPUT.RANDAUGMENT_N": 2,
        "INPUT.RANDAUGMENT_M": 10,
        "MODEL.BACKBONE.PATH": "",  # explicit checkpoint path; else NAME is looked up
        "DATASET.ID_RATIO": 0.5,  # (ours) first half of the classes are ID
        "DATASET.LABELED_RATIO": 0.0,  # task C: share of training images that keep labels
        "DATASET.SETTING": "",  # e.g. "in"/"inout" for Semi-Aves, "unsup" for task B
        # zero-shot template of the dataset ("a photo of a {}, a type of aircraft.")
        "DATASET.PROMPT_TEMPLATE": "a photo of a {}.",
        "TEST.OOD_QUANTILE": 0.05,  # (ours) threshold = this quantile of labeled ID scores
        "TRAINER.PREC": "amp",  # amp on CUDA, always fp32 on CPU
        "TRAINER.SSL.MODE": "none",  # none | fixmatch
        "TRAINER.SSL.CONF_THRESH": 0.7,  # (ours) tau_conf of the filter F
        "TRAINER.SSL.SCORE": "mcm",  # (ours) msp | mcm | glmcm
        "TRAINER.SSL.LAMBDA": 1.0,  # (ours) weight of the unlabeled loss
        "TRAINER.SSL.OOD_QUANTILE": 0.05,  # (ours) ID-score threshold of F, as at test
    }
)
