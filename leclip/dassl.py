"""The one import point for the Dassl API used by LE-CLIP's trainers and datasets.

Uses Dassl.pytorch when it is importable (after fixing its known breakages on current
torch, see `leclip.dassl_compat`; `DASSL_FIXES` lists the fixes applied), else LE-CLIP's
built-in engine `leclip.engine`. `LECLIP_ENGINE=builtin|dassl` forces one. The choice
is logged once.
"""
import logging
import os

_logger = logging.getLogger("leclip")

# Every name below exists in both engines; plugins import them from here only.
__all__ = [
    "ENGINE",
    "DASSL_FIXES",
    "DEFAULT_CFG",
    "Registry",
    "TRAINER_REGISTRY",
    "TrainerBase",
    "SimpleTrainer",
    "TrainerX",
    "TrainerXU",
    "build_trainer",
    "DATASET_REGISTRY",
    "DatasetBase",
    "Datum",
    "build_dataset",
    "EVALUATOR_REGISTRY",
    "EvaluatorBase",
    "build_evaluator",
    "get_cfg_default",
    "build_optimizer",
    "build_lr_scheduler",
    "load_checkpoint",
    "load_pretrained_weights",
    "save_checkpoint",
    "set_random_seed",
    "setup_logger",
    "mkdir_if_missing",
    "count_num_param",
    "collect_env_info",
    "MetricMeter",
    "AverageMeter",
    "check_cfg_values",
]


class EngineError(ValueError):
    """LECLIP_ENGINE names an engine that cannot be used."""


def _choose_engine():
    wanted = os.environ.get("LECLIP_ENGINE", "").strip().lower()
    if wanted not in ("", "builtin", "dassl"):
        raise EngineError(f"LECLIP_ENGINE={wanted!r}: use 'builtin' or 'dassl' (or leave it unset)")
    if wanted == "builtin":
        return "builtin"
    try:
        import dassl  # noqa: F401
    except ImportError as err:
        if wanted == "dassl":
            raise EngineError(
                f"LECLIP_ENGINE=dassl but Dassl.pytorch is not importable ({err}): install it "
                "(git clone https://github.com/KaiyangZhou/Dassl.pytorch && pip install -e Dassl.pytorch) "
                "or unset LECLIP_ENGINE to use the built-in engine"
            ) from None
        return "builtin"
    return "dassl"


ENGINE = _choose_engine()
# the Dassl fixes this process applied (none on the built-in engine)
DASSL_FIXES = []

# engine-independent: the loop keys' valid values, checked for LE-CLIP's trainers on both
from .engine.config import check_cfg_values  # noqa: E402,F401

if ENGINE == "dassl":
    from . import dassl_compat

    try:
        DASSL_FIXES = dassl_compat.patch()
    except ValueError as err:  # a bad LECLIP_DASSL_FIXES
        raise EngineError(str(err)) from None
    from dassl.config import cfg_default as DEFAULT_CFG
    from dassl.config import get_cfg_default
    from dassl.data.datasets import DATASET_REGISTRY, DatasetBase, Datum, build_dataset
    from dassl.engine import TRAINER_REGISTRY, TrainerX, TrainerXU, build_trainer
    from dassl.engine.trainer import SimpleTrainer, TrainerBase
    from dassl.evaluation import EVALUATOR_REGISTRY, EvaluatorBase, build_evaluator
    from dassl.optim import build_lr_scheduler, build_optimizer
    from dassl.utils import (
        AverageMeter,
        MetricMeter,
        Registry,
        collect_env_info,
        count_num_param,
        load_checkpoint,
        load_pretrained_weights,
        mkdir_if_missing,
        save_checkpoint,
        set_random_seed,
        setup_logger,
    )
else:
    from .engine import (  # noqa: F401
        DEFAULT_CFG,
        DATASET_REGISTRY,
        EVALUATOR_REGISTRY,
        TRAINER_REGISTRY,
        AverageMeter,
        DatasetBase,
        Datum,
        EvaluatorBase,
        MetricMeter,
        Registry,
        SimpleTrainer,
        TrainerBase,
        TrainerX,
        TrainerXU,
        build_dataset,
        build_evaluator,
        build_lr_scheduler,
        build_optimizer,
        build_trainer,
        collect_env_info,
        count_num_param,
        get_cfg_default,
        load_checkpoint,
        load_pretrained_weights,
        mkdir_if_missing,
        save_checkpoint,
        set_random_seed,
        setup_logger,
    )

_logger.info("LE-CLIP engine: %s%s", ENGINE, f" (Dassl fixes: {', '.join(DASSL_FIXES)})" if DASSL_FIXES else "")
