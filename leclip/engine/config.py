"""Default config of the built-in engine: Dassl's key names and default values for the
subset LE-CLIP uses, so that configs written for Dassl forks merge unchanged.

Values differ from Dassl's only where CLIP needs it: CLIP's pixel mean/std and bicubic
interpolation; and DATALOADER.NUM_WORKERS is 0 (set it in a config on a GPU machine).
"""
from yacs.config import CfgNode as CN

from leclip.data.datamanager import SAMPLERS

_C = CN()
_C.VERSION = 1
_C.OUTPUT_DIR = "./output"
# folder holding the checkpoints to resume from (default: OUTPUT_DIR)
_C.RESUME = ""
# < 0: a random seed per run
_C.SEED = -1
_C.USE_CUDA = True
_C.VERBOSE = True

_C.INPUT = CN()
_C.INPUT.SIZE = (224, 224)
_C.INPUT.INTERPOLATION = "bicubic"
# kept for configs written for Dassl; the built-in engine builds named views instead
_C.INPUT.TRANSFORMS = ()
_C.INPUT.NO_TRANSFORM = False
_C.INPUT.PIXEL_MEAN = [0.48145466, 0.4578275, 0.40821073]
_C.INPUT.PIXEL_STD = [0.26862954, 0.26130258, 0.27577711]
_C.INPUT.CROP_PADDING = 4
_C.INPUT.RRCROP_SCALE = (0.08, 1.0)
_C.INPUT.CUTOUT_N = 1
_C.INPUT.CUTOUT_LEN = 16
_C.INPUT.GN_MEAN = 0.0
_C.INPUT.GN_STD = 0.15
_C.INPUT.RANDAUGMENT_N = 2
_C.INPUT.RANDAUGMENT_M = 10
_C.INPUT.COLORJITTER_B = 0.4
_C.INPUT.COLORJITTER_C = 0.4
_C.INPUT.COLORJITTER_S = 0.4
_C.INPUT.COLORJITTER_H = 0.1
_C.INPUT.RGS_P = 0.2
_C.INPUT.GB_P = 0.5
_C.INPUT.GB_K = 21

_C.DATASET = CN()
_C.DATASET.ROOT = ""
_C.DATASET.NAME = ""
_C.DATASET.SOURCE_DOMAINS = ()
_C.DATASET.TARGET_DOMAINS = ()
_C.DATASET.NUM_LABELED = -1
_C.DATASET.NUM_SHOTS = -1
_C.DATASET.VAL_PERCENT = 0.1
_C.DATASET.ALL_AS_UNLABELED = False
# CoOp's base-to-new key: all | base | new
_C.DATASET.SUBSAMPLE_CLASSES = "all"

_C.DATALOADER = CN()
_C.DATALOADER.NUM_WORKERS = 0
_C.DATALOADER.K_TRANSFORMS = 1
_C.DATALOADER.RETURN_IMG0 = False
_C.DATALOADER.TRAIN_X = CN()
_C.DATALOADER.TRAIN_X.SAMPLER = "RandomSampler"
_C.DATALOADER.TRAIN_X.BATCH_SIZE = 32
_C.DATALOADER.TRAIN_X.N_DOMAIN = 0
_C.DATALOADER.TRAIN_X.N_INS = 16
# named views (leclip/data/transforms.py); batch["img"] is the first
_C.DATALOADER.TRAIN_X.VIEWS = ["weak"]
_C.DATALOADER.TRAIN_U = CN()
# True: train_u uses TRAIN_X's sampler and batch size
_C.DATALOADER.TRAIN_U.SAME_AS_X = True
_C.DATALOADER.TRAIN_U.SAMPLER = "RandomSampler"
_C.DATALOADER.TRAIN_U.BATCH_SIZE = 32
_C.DATALOADER.TRAIN_U.N_DOMAIN = 0
_C.DATALOADER.TRAIN_U.N_INS = 16
_C.DATALOADER.TRAIN_U.VIEWS = ["weak", "strong"]
_C.DATALOADER.TEST = CN()
_C.DATALOADER.TEST.SAMPLER = "SequentialSampler"
_C.DATALOADER.TEST.BATCH_SIZE = 32

_C.MODEL = CN()
_C.MODEL.INIT_WEIGHTS = ""
_C.MODEL.BACKBONE = CN()
_C.MODEL.BACKBONE.NAME = ""
_C.MODEL.BACKBONE.PRETRAINED = True
_C.MODEL.HEAD = CN()
_C.MODEL.HEAD.NAME = ""
_C.MODEL.HEAD.HIDDEN_LAYERS = ()
_C.MODEL.HEAD.ACTIVATION = "relu"
_C.MODEL.HEAD.BN = True
_C.MODEL.HEAD.DROPOUT = 0.0

_C.OPTIM = CN()
_C.OPTIM.NAME = "adam"
_C.OPTIM.LR = 0.0003
_C.OPTIM.WEIGHT_DECAY = 5e-4
_C.OPTIM.MOMENTUM = 0.9
_C.OPTIM.SGD_DAMPNING = 0
_C.OPTIM.SGD_NESTEROV = False
_C.OPTIM.RMSPROP_ALPHA = 0.99
_C.OPTIM.ADAM_BETA1 = 0.9
_C.OPTIM.ADAM_BETA2 = 0.999
# STAGED_LR: children of the model not in NEW_LAYERS get LR * BASE_LR_MULT
_C.OPTIM.STAGED_LR = False
_C.OPTIM.NEW_LAYERS = ()
_C.OPTIM.BASE_LR_MULT = 0.1
_C.OPTIM.LR_SCHEDULER = "single_step"
# -1 or 0: the step size is MAX_EPOCH
_C.OPTIM.STEPSIZE = (-1,)
_C.OPTIM.GAMMA = 0.1
_C.OPTIM.MAX_EPOCH = 10
# > 0 turns warm-up on: constant (WARMUP_CONS_LR) or linear (from WARMUP_MIN_LR)
_C.OPTIM.WARMUP_EPOCH = -1
_C.OPTIM.WARMUP_TYPE = "linear"
_C.OPTIM.WARMUP_CONS_LR = 1e-5
_C.OPTIM.WARMUP_MIN_LR = 1e-5
# True: the schedule after warm-up starts from its epoch 0
_C.OPTIM.WARMUP_RECOUNT = True

_C.TRAIN = CN()
# save a checkpoint every N epochs (<= 0: only the last one)
_C.TRAIN.CHECKPOINT_FREQ = 0
_C.TRAIN.PRINT_FREQ = 10
# train_x | train_u | smaller_one: which loader sets the epoch length of TrainerXU
_C.TRAIN.COUNT_ITER = "train_x"

_C.TEST = CN()
_C.TEST.EVALUATOR = "Classification"
_C.TEST.PER_CLASS_RESULT = False
# saves the row-normalised confusion matrix to OUTPUT_DIR/cmat.pt
_C.TEST.COMPUTE_CMAT = False
_C.TEST.NO_TEST = False
_C.TEST.SPLIT = "test"
# last_step | best_val (tests on val after every epoch, test set when there is no val)
_C.TEST.FINAL_MODEL = "last_step"

_C.TRAINER = CN()
_C.TRAINER.NAME = ""

DEFAULT_CFG = _C


def get_cfg_default():
    return DEFAULT_CFG.clone()


# values of the loop's keys that the built-in engine (and LE-CLIP's trainers on Dassl)
# act on; Dassl silently treats anything else as the default
CHOICES = {
    "TEST.FINAL_MODEL": ("last_step", "best_val"),
    "TEST.SPLIT": ("val", "test"),
    "TRAIN.COUNT_ITER": ("train_x", "train_u", "smaller_one"),
    "OPTIM.WARMUP_TYPE": ("constant", "linear"),
    "DATALOADER.TRAIN_X.SAMPLER": SAMPLERS,
    "DATALOADER.TRAIN_U.SAMPLER": SAMPLERS,
    "DATALOADER.TEST.SAMPLER": SAMPLERS,
}
POSITIVE_INTS = ("DATALOADER.TRAIN_X.BATCH_SIZE", "DATALOADER.TRAIN_U.BATCH_SIZE", "DATALOADER.TEST.BATCH_SIZE")


def check_cfg_values(cfg):
    """One clear error for a value of the loop's keys that would be silently replaced."""
    for dotted, allowed in CHOICES.items():
        section, *rest = dotted.split(".")
        value = cfg[section]
        for part in rest:
            value = value[part]
        if value not in allowed:
            raise ValueError(f"{dotted}={value!r}: use one of {allowed}")
    for dotted in POSITIVE_INTS:
        section, sub, key = dotted.split(".")
        value = cfg[section][sub][key]
        if type(value) is not int or value < 1:
            raise ValueError(f"{dotted}={value!r}: use a positive integer")
