"""Optimizer and per-epoch LR-scheduler builders with Dassl's config keys.

The schedule is a closed-form function of the epoch (warm-up, then the successor
schedule), so it matches Dassl's warm-up wrappers without their removed `verbose`
argument, and resumes exactly from `last_epoch`.
"""
import math

import torch
import torch.nn as nn

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULERS = ("single_step", "multi_step", "cosine", "constant")
WARMUPS = ("constant", "linear")


def build_optimizer(model, optim_cfg, param_groups=None):
    name = optim_cfg.NAME
    if name not in OPTIMIZERS:
        raise ValueError(f"OPTIM.NAME={name!r}: use one of {OPTIMIZERS}")
    if param_groups is not None:
        params = param_groups
    elif isinstance(model, nn.Module):
        params = [p for p in model.parameters() if p.requires_grad]
    else:
        params = list(model)
    if not params:
        raise ValueError("build_optimizer: no trainable parameter was given")
    lr, wd = optim_cfg.LR, optim_cfg.WEIGHT_DECAY
    if name == "sgd":
        return torch.optim.SGD(
            params,
            lr=lr,
            momentum=optim_cfg.MOMENTUM,
            weight_decay=wd,
            dampening=optim_cfg.SGD_DAMPNING,
            nesterov=optim_cfg.SGD_NESTEROV,
        )
    betas = (optim_cfg.ADAM_BETA1, optim_cfg.ADAM_BETA2)
    cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
    return cls(params, lr=lr, weight_decay=wd, betas=betas)


def _successor_factor(optim_cfg, epoch):
    """Multiplier of the base LR after warm-up, at successor epoch `epoch`."""
    name = optim_cfg.LR_SCHEDULER
    stepsize = list(optim_cfg.STEPSIZE) if isinstance(optim_cfg.STEPSIZE, (list, tuple)) else [optim_cfg.STEPSIZE]
    if name == "cosine":
        return 0.5 * (1 + math.cos(math.pi * epoch / max(1, optim_cfg.MAX_EPOCH)))
    if name == "single_step":
        step = stepsize[-1]
        if step <= 0:
            step = optim_cfg.MAX_EPOCH  # Dassl: no decay when the step is not set
        return optim_cfg.GAMMA ** (epoch // step)
    if name == "multi_step":
        return optim_cfg.GAMMA ** sum(epoch >= m for m in stepsize)
    return 1.0


def build_lr_scheduler(optimizer, optim_cfg):
    if optim_cfg.LR_SCHEDULER not in SCHEDULERS:
        raise ValueError(f"OPTIM.LR_SCHEDULER={optim_cfg.LR_SCHEDULER!r}: use one of {SCHEDULERS}")
    warmup = optim_cfg.WARMUP_EPOCH
    if warmup > 0 and optim_cfg.WARMUP_TYPE not in WARMUPS:
        raise ValueError(f"OPTIM.WARMUP_TYPE={optim_cfg.WARMUP_TYPE!r}: use one of {WARMUPS}")

    def factor_for(base_lr):
        def factor(epoch):
            if warmup > 0 and epoch < warmup:
                if optim_cfg.WARMUP_TYPE == "constant":
                    return optim_cfg.WARMUP_CONS_LR / base_lr
                if epoch == 0:
                    return optim_cfg.WARMUP_MIN_LR / base_lr
                return epoch / warmup
            successor_epoch = epoch - warmup if (warmup > 0 and optim_cfg.WARMUP_RECOUNT) else epoch
            return _successor_factor(optim_cfg, successor_epoch)

        return factor

    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, [factor_for(group["lr"]) for group in optimizer.param_groups]
    )
