"""Evaluator registry and Dassl's `Classification` evaluator (accuracy, macro-F1)."""
from collections import OrderedDict

import torch

from .registry import Registry

EVALUATOR_REGISTRY = Registry("EVALUATOR")


def build_evaluator(cfg, **kwargs):
    names = EVALUATOR_REGISTRY.registered_names()
    if cfg.TEST.EVALUATOR not in names:
        raise KeyError(f"Unknown evaluator {cfg.TEST.EVALUATOR!r} (TEST.EVALUATOR); registered: {', '.join(sorted(names))}")
    return EVALUATOR_REGISTRY.get(cfg.TEST.EVALUATOR)(cfg, **kwargs)


class EvaluatorBase:
    def __init__(self, cfg, **kwargs):
        self.cfg = cfg

    def reset(self):
        raise NotImplementedError

    def process(self, mo, gt):
        raise NotImplementedError

    def evaluate(self):
        raise NotImplementedError


def _to_numpy(x):
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x


@EVALUATOR_REGISTRY.register()
class Classification(EvaluatorBase):
    def __init__(self, cfg, lab2cname=None, **kwargs):
        super().__init__(cfg)
        self._lab2cname = lab2cname
        self.last_results = OrderedDict()
        self.reset()

    def reset(self):
        self._y_true, self._y_pred = [], []

    def process(self, mo, gt):
        self._y_pred.extend(_to_numpy(mo.max(1)[1]).tolist())
        self._y_true.extend(_to_numpy(gt).tolist())

    def evaluate(self):
        from leclip.metrics import accuracy, macro_f1

        acc = accuracy(self._y_pred, self._y_true)
        f1 = macro_f1(self._y_pred, self._y_true)
        total = len(self._y_true)
        correct = round(acc * total / 100)
        print(
            "=> result\n"
            f"* total: {total:,}\n* correct: {correct:,}\n* accuracy: {acc:.1f}%\n"
            f"* error: {100 - acc:.1f}%\n* macro_f1: {f1:.1f}%"
        )
        self.last_results = OrderedDict(accuracy=acc, error=100 - acc, macro_f1=f1)
        return self.last_results
