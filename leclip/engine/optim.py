"""Optimizer and per-epoch LR-scheduler builders with Dassl's config keys and semantics.

The scheduler is one closed-form function of the epoch that gives the LR of Dassl's
warm-up wrappers around StepLR / MultiStepLR / CosineAnnealingLR at every epoch of a
run (including WARMUP_RECOUNT=False, where the successor restarts from the base LR at
the end of the warm-up and keeps counting epochs from 0), without their `verbose`
argument that current torch removed. Step it once per epoch, as Dassl does.
"""
import math
import warnings

import torch
import torch.nn as nn
from torch.optim.lr_scheduler import LRScheduler

OPTIMIZERS = ("adam", "amsgrad", "sgd", "rmsprop", "adamw")
SCHEDULERS = ("single_step", "multi_step", "cosine")
WARMUPS = ("constant", "linear")


def _staged_param_groups(model, optim_cfg):
    """Children named in NEW_LAYERS train at LR; the others at LR * BASE_LR_MULT."""
    if not isinstance(model, nn.Module):
        raise TypeError("OPTIM.STAGED_LR=True needs build_optimizer(model) with an nn.Module, not a parameter list")
    if isinstance(model, nn.DataParallel):
        model = model.module
    new_layers = [optim_cfg.NEW_LAYERS] if isinstance(optim_cfg.NEW_LAYERS, str) else list(optim_cfg.NEW_LAYERS)
    base_params, new_params = [], []
    for name, module in model.named_children():
        (new_params if name in new_layers else base_params).extend(module.parameters())
    return [{"params": base_params, "lr": optim_cfg.LR * optim_cfg.BASE_LR_MULT}, {"params": new_params}]


def build_optimizer(model, optim_cfg, param_groups=None):
    """`model`: an nn.Module or an iterable of parameters / param-group dicts;
    `param_groups`, when given, is optimized instead (and STAGED_LR is ignored)."""
    name = optim_cfg.NAME
    if name not in OPTIMIZERS:
        raise ValueError(f"OPTIM.NAME={name!r}: use one of {OPTIMIZERS}")
    if param_groups is not None and optim_cfg.STAGED_LR:
        warnings.warn("OPTIM.STAGED_LR is ignored when param_groups are given; set the groups' lr yourself")
    if param_groups is None:
        if optim_cfg.STAGED_LR:
            param_groups = _staged_param_groups(model, optim_cfg)
        else:
            param_groups = model.parameters() if isinstance(model, nn.Module) else model
    param_groups = list(param_groups)
    if not param_groups:
        raise ValueError("build_optimizer: no parameter to optimize (empty model or parameter list)")

    lr, weight_decay = optim_cfg.LR, optim_cfg.WEIGHT_DECAY
    betas = (optim_cfg.ADAM_BETA1, optim_cfg.ADAM_BETA2)
    if name == "sgd":
        return torch.optim.SGD(
            param_groups,
            lr=lr,
            momentum=optim_cfg.MOMENTUM,
            weight_decay=weight_decay,
            dampening=optim_cfg.SGD_DAMPNING,
            nesterov=optim_cfg.SGD_NESTEROV,
        )
    if name == "rmsprop":
        return torch.optim.RMSprop(
            param_groups, lr=lr, momentum=optim_cfg.MOMENTUM, weight_decay=weight_decay, alpha=optim_cfg.RMSPROP_ALPHA
        )
    if name == "adamw":
        return torch.optim.AdamW(param_groups, lr=lr, weight_decay=weight_decay, betas=betas)
    return torch.optim.Adam(param_groups, lr=lr, weight_decay=weight_decay, betas=betas, amsgrad=name == "amsgrad")


class EpochLRScheduler(LRScheduler):
    """Dassl's schedule (optional warm-up, then single_step / multi_step / cosine) as a
    closed form of `last_epoch`; its state_dict holds plain numbers only."""

    def __init__(self, optimizer, schedule, max_epoch, stepsize, gamma, warmup_epoch=0, warmup_type="linear",
                 warmup_cons_lr=1e-5, warmup_min_lr=1e-5, warmup_recount=True):
        self.schedule = schedule
        self.max_epoch = max_epoch
        self.stepsize = stepsize  # an int for single_step, a list of milestones for multi_step
        self.gamma = gamma
        self.warmup_epoch = max(warmup_epoch, 0)
        self.warmup_type = warmup_type
        self.warmup_cons_lr = warmup_cons_lr
        self.warmup_min_lr = warmup_min_lr
        self.warmup_recount = warmup_recount
        super().__init__(optimizer)

    def get_lr(self):
        return [self.lr_at(base_lr, self.last_epoch) for base_lr in self.base_lrs]

    def lr_at(self, base_lr, epoch):
        warmup = self.warmup_epoch
        if epoch < warmup:
            if self.warmup_type == "constant":
                return self.warmup_cons_lr
            return self.warmup_min_lr if epoch == 0 else base_lr * epoch / warmup
        if self.warmup_recount:
            return base_lr * self._decay(epoch - warmup, 0)
        # Dassl sets the successor's last_epoch to WARMUP_EPOCH: it starts from the base
        # LR there and decays relative to that epoch
        return base_lr * self._decay(epoch, warmup)

    def _decay(self, epoch, since):
        """LR multiplier of the successor at `epoch` relative to epoch `since`."""
        if self.schedule == "cosine":
            period = max(self.max_epoch, 1)
            return (1 + math.cos(math.pi * epoch / period)) / (1 + math.cos(math.pi * since / period))
        if self.schedule == "single_step":
            return self.gamma ** (epoch // self.stepsize - since // self.stepsize)
        return self.gamma ** sum(since < milestone <= epoch for milestone in self.stepsize)


def build_lr_scheduler(optimizer, optim_cfg):
    schedule = optim_cfg.LR_SCHEDULER
    if schedule not in SCHEDULERS:
        raise ValueError(f"OPTIM.LR_SCHEDULER={schedule!r}: use one of {SCHEDULERS}")
    stepsize = optim_cfg.STEPSIZE
    if schedule == "single_step":
        stepsize = stepsize[-1] if isinstance(stepsize, (list, tuple)) else stepsize
        if not isinstance(stepsize, int):
            raise TypeError(f"OPTIM.STEPSIZE={optim_cfg.STEPSIZE!r}: single_step needs an integer step size")
        if stepsize <= 0:
            stepsize = max(optim_cfg.MAX_EPOCH, 1)
    elif schedule == "multi_step":
        if not isinstance(stepsize, (list, tuple)):
            raise TypeError(f"OPTIM.STEPSIZE={stepsize!r}: multi_step needs a list of milestone epochs")
        stepsize = list(stepsize)
    warmup = optim_cfg.WARMUP_EPOCH
    if warmup > 0:
        if optim_cfg.WARMUP_TYPE not in WARMUPS:
            raise ValueError(f"OPTIM.WARMUP_TYPE={optim_cfg.WARMUP_TYPE!r}: use one of {WARMUPS}")
        if schedule == "cosine" and not optim_cfg.WARMUP_RECOUNT and warmup >= optim_cfg.MAX_EPOCH:
            raise ValueError(
                f"OPTIM.WARMUP_EPOCH={warmup} >= MAX_EPOCH={optim_cfg.MAX_EPOCH} with WARMUP_RECOUNT=False leaves "
                "no cosine epoch: lower WARMUP_EPOCH or set WARMUP_RECOUNT True"
            )
    return EpochLRScheduler(
        optimizer,
        schedule,
        optim_cfg.MAX_EPOCH,
        stepsize,
        optim_cfg.GAMMA,
        warmup_epoch=warmup,
        warmup_type=optim_cfg.WARMUP_TYPE,
        warmup_cons_lr=optim_cfg.WARMUP_CONS_LR,
        warmup_min_lr=optim_cfg.WARMUP_MIN_LR,
        warmup_recount=optim_cfg.WARMUP_RECOUNT,
    )
