"""LE-CLIP's built-in Dassl-compatible engine (used when Dassl.pytorch is absent)."""
from .checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    load_pretrained_weights,
    resume_from_checkpoint,
    save_checkpoint,
)
from .config import DEFAULT_CFG, get_cfg_default
from .datamanager import DataManager
from .datasets import DATASET_REGISTRY, DatasetBase, Datum, build_dataset
from .evaluation import EVALUATOR_REGISTRY, Classification, EvaluatorBase, build_evaluator
from .optim import build_lr_scheduler, build_optimizer
from .registry import Registry
from .trainer import TRAINER_REGISTRY, SimpleTrainer, TrainerBase, TrainerX, TrainerXU, build_trainer
from .transforms import build_transform, build_view, register_view, view_names
from .utils import (
    AverageMeter,
    MetricMeter,
    collect_env_info,
    count_num_param,
    epoch_seed,
    mkdir_if_missing,
    read_image,
    set_random_seed,
    setup_logger,
)
