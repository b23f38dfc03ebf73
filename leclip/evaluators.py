"""LE-CLIP evaluators, registered in the active engine's EVALUATOR_REGISTRY.

`OpenSetClassification` (task A): closed accuracy, open-set balanced accuracy with the
labeled-quantile threshold (`TEST.OOD_QUANTILE`), AUROC. The trainer passes the ID
scores of the labeled training images with `set_reference_scores` before testing.
`MultiLabelClassification` (tasks B, C): mAP, CF1, OF1 (threshold 0.5).
Both keep the last results in `last_results` (percent), headline metric first.
"""
import math
from collections import OrderedDict

import torch

from . import metrics
from .dassl import EVALUATOR_REGISTRY, EvaluatorBase


def _cat(chunks):
    return torch.cat(chunks).numpy() if chunks else None


@EVALUATOR_REGISTRY.register()
class OpenSetClassification(EvaluatorBase):
    def __init__(self, cfg, lab2cname=None, **kwargs):
        super().__init__(cfg)
        self.num_id = len(lab2cname) if lab2cname else None
        self.quantile = cfg.TEST.OOD_QUANTILE
        self.threshold = None
        self.last_results = OrderedDict()
        self.reset()

    def reset(self):
        self._probs, self._labels, self._scores = [], [], []

    def set_reference_scores(self, labeled_id_scores):
        self.threshold = metrics.ood_threshold(labeled_id_scores, self.quantile)

    def process(self, output, gt, id_score=None):
        output = output.detach().float().cpu()
        self._probs.append(output)
        self._labels.append(gt.detach().cpu().long())
        score = output.max(dim=1).values if id_score is None else id_score.detach().float().cpu()
        self._scores.append(score)

    def evaluate(self):
        if self.threshold is None:
            raise RuntimeError(
                "OpenSetClassification needs the labeled ID scores: the trainer must call "
                "evaluator.set_reference_scores(scores) before evaluate()"
            )
        probs, labels, scores = _cat(self._probs), _cat(self._labels), _cat(self._scores)
        num_id = self.num_id or probs.shape[1]
        is_ood = labels >= num_id
        closed = metrics.closed_accuracy(probs, labels, num_id)
        balanced = metrics.open_set_balanced_accuracy(probs.argmax(axis=1), scores < self.threshold, labels, num_id)
        auroc = metrics.auroc(scores[~is_ood], scores[is_ood])
        self.last_results = OrderedDict(closed_accuracy=closed, balanced_accuracy=balanced, auroc=auroc)
        lines = [
            "=> result",
            f"* total: {len(labels):,} (ID {int((~is_ood).sum()):,}, OOD {int(is_ood.sum()):,})",
            f"* accuracy: {closed:.2f}%",
            f"* closed_accuracy: {closed:.2f}%",
            f"* balanced_accuracy: {balanced:.2f}%  (threshold {self.threshold:.4f} = "
            f"{self.quantile:g} quantile of labeled ID scores)",
        ]
        if math.isnan(auroc):
            lines.append("* auroc: n/a (no OOD test image)")
        else:
            lines.append(f"* auroc: {auroc:.2f}%")
        print("\n".join(lines))
        return self.last_results


@EVALUATOR_REGISTRY.register()
class MultiLabelClassification(EvaluatorBase):
    def __init__(self, cfg, lab2cname=None, **kwargs):
        super().__init__(cfg)
        self.last_results = OrderedDict()
        self.reset()

    def reset(self):
        self._scores, self._targets = [], []

    def process(self, output, gt):
        self._scores.append(output.detach().float().cpu())
        self._targets.append(gt.detach().float().cpu())

    def evaluate(self):
        scores, targets = _cat(self._scores), _cat(self._targets)
        mean_ap = metrics.mean_average_precision(scores, targets)
        cf1, of1 = metrics.cf1_of1(scores, targets, 0.5)
        self.last_results = OrderedDict(mAP=mean_ap, CF1=cf1, OF1=of1)
        print(
            f"=> result\n* total: {len(targets):,}\n* mAP: {mean_ap:.2f}%\n"
            f"* CF1: {cf1:.2f}%\n* OF1: {of1:.2f}%"
        )
        return self.last_results
