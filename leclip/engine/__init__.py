"""LE-CLIP's built-in Dassl-compatible engine (used when Dassl.pytorch is absent).

It builds on `leclip.data` (datasets, views, loaders), which imports no engine."""
from leclip.data import DataManager, build_transform  # noqa: F401

from .checkpoint import (  # noqa: F401
    latest_checkpoint,
    load_checkpoint,
    load_pretrained_weights,
    resume_from_checkpoint,
    save_checkpoint,
)
from .config import DEFAULT_CFG, get_cfg_default  # noqa: F401
from .datasets import DATASET_REGISTRY, DatasetBase, Datum, build_dataset  # noqa: F401
from .evaluation import EVALUATOR_REGISTRY, Classification, EvaluatorBase, build_evaluator  # noqa: F401
from .optim import build_lr_scheduler, build_optimizer  # noqa: F401
from .registry import Registry  # noqa: F401
from .trainer import TRAINER_REGISTRY, SimpleTrainer, TrainerBase, TrainerX, TrainerXU, build_trainer  # noqa: F401
from .utils import (  # noqa: F401
    AverageMeter,
    MetricMeter,
    collect_env_info,
    count_num_param,
    mkdir_if_missing,
    set_random_seed,
    setup_logger,
)
