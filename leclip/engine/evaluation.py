"""Evaluator registry and Dassl's `Classification` evaluator (accuracy, macro-F1)."""
import os.path as osp
from collections import OrderedDict, defaultdict

import numpy as np
import torch

from .registry import Registry

EVALUATOR_REGISTRY = Registry("EVALUATOR")


def macro_f1(pred, gt):
    """Macro-F1 (percent) over the classes present in gt."""
    from sklearn.metrics import f1_score  # on use: sklearn is slow to import

    return 100.0 * f1_score(gt, pred, average="macro", labels=np.unique(gt), zero_division=0)


def build_evaluator(cfg, **kwargs):
    names = EVALUATOR_REGISTRY.registered_names()
    if cfg.TEST.EVALUATOR not in names:
        raise KeyError(
            f"Unknown evaluator {cfg.TEST.EVALUATOR!r} (TEST.EVALUATOR); registered: {', '.join(sorted(names))}"
        )
    if cfg.VERBOSE:
        print(f"Loading evaluator: {cfg.TEST.EVALUATOR}")
    return EVALUATOR_REGISTRY.get(cfg.TEST.EVALUATOR)(cfg, **kwargs)


class EvaluatorBase:
    def __init__(self, cfg):
        self.cfg = cfg

    def reset(self):
        raise NotImplementedError

    def process(self, mo, gt):
        raise NotImplementedError

    def evaluate(self):
        raise NotImplementedError


@EVALUATOR_REGISTRY.register()
class Classification(EvaluatorBase):
    """Top-1 accuracy and macro-F1 (over the classes present in gt) of `mo.argmax(1)`.

    Results (percent): accuracy, error_rate, macro_f1 (+ perclass_accuracy with
    TEST.PER_CLASS_RESULT); the last ones are kept in `last_results`.
    """

    def __init__(self, cfg, lab2cname=None, **kwargs):
        super().__init__(cfg)
        if cfg.TEST.PER_CLASS_RESULT and lab2cname is None:
            raise ValueError("TEST.PER_CLASS_RESULT needs the class names: build_evaluator(cfg, lab2cname=...)")
        self._lab2cname = lab2cname
        self.last_results = OrderedDict()
        self.reset()

    def reset(self):
        self._y_true = []
        self._y_pred = []

    def process(self, mo, gt):
        # mo: [B, num_classes] outputs; gt: [B] class indices
        self._y_pred.extend(mo.max(1)[1].detach().cpu().tolist())
        self._y_true.extend(gt.detach().cpu().tolist())

    def evaluate(self):
        if not self._y_true:
            raise RuntimeError("Classification.evaluate(): no prediction was processed (is the split empty?)")
        y_true, y_pred = np.asarray(self._y_true), np.asarray(self._y_pred)
        total = len(y_true)
        correct = int((y_true == y_pred).sum())
        acc = 100.0 * correct / total
        err = 100.0 - acc
        f1 = macro_f1(y_pred, y_true)
        # the first value is what trainer.test() returns
        results = OrderedDict(accuracy=acc, error_rate=err, macro_f1=f1)
        print(
            "=> result\n"
            f"* total: {total:,}\n"
            f"* correct: {correct:,}\n"
            f"* accuracy: {acc:.1f}%\n"
            f"* error: {err:.1f}%\n"
            f"* macro_f1: {f1:.1f}%"
        )
        if self.cfg.TEST.PER_CLASS_RESULT:
            results["perclass_accuracy"] = self._per_class(y_true, y_pred)
        if self.cfg.TEST.COMPUTE_CMAT:
            self._save_confusion_matrix(y_true, y_pred)
        self.last_results = results
        return results

    def _per_class(self, y_true, y_pred):
        hits = defaultdict(list)
        for label, pred in zip(y_true.tolist(), y_pred.tolist()):
            hits[label].append(label == pred)
        print("=> per-class result")
        accs = []
        for label in sorted(hits):
            total, correct = len(hits[label]), sum(hits[label])
            accs.append(100.0 * correct / total)
            print(
                f"* class: {label} ({self._lab2cname[label]})\t"
                f"total: {total:,}\tcorrect: {correct:,}\tacc: {accs[-1]:.1f}%"
            )
        mean_acc = float(np.mean(accs))
        print(f"* average: {mean_acc:.1f}%")
        return mean_acc

    def _save_confusion_matrix(self, y_true, y_pred):
        from sklearn.metrics import confusion_matrix

        cmat = confusion_matrix(y_true, y_pred, normalize="true")
        save_path = osp.join(self.cfg.OUTPUT_DIR, "cmat.pt")
        torch.save(cmat, save_path)
        print(f"Confusion matrix is saved to {save_path}")
