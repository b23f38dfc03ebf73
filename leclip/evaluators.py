"""LE-CLIP evaluators, registered in the active engine's EVALUATOR_REGISTRY.

`OpenSetClassification` (task A): closed accuracy, open-set balanced accuracy with the
labeled-quantile threshold (`TEST.OOD_QUANTILE`), AUROC. The trainer passes the ID
scores of the labeled training images with `set_reference_scores` before testing.
`MultiLabelClassification` (tasks B, C): mAP, CF1, OF1; the trainer passes each
image's scores and its predicted positives (its own per-class decision rule).
Both keep the last results in `last_results` (percent), headline metric first.
`name_in_cfg` names the evaluator of the dataset's task, which the engine then builds.
"""
import math
from collections import OrderedDict

import torch

from . import config  # noqa: F401  declares TEST.OOD_QUANTILE, which OpenSetClassification reads
from . import metrics
from .dassl import EVALUATOR_REGISTRY, EvaluatorBase


def _cat(chunks):
    return torch.cat(chunks).numpy()


def name_in_cfg(task, cfg):
    """Name the evaluator of a dataset's task in TEST.EVALUATOR, so that the engine builds
    that one and its log names one evaluator; a Dassl fork's own (closed-set) dataset keeps
    the engine's TEST.EVALUATOR."""
    chosen = _TASK_EVALUATORS.get(task)
    if chosen is None:
        return
    _check(task, cfg, chosen)
    if cfg.TEST.EVALUATOR == chosen.__name__:
        return
    frozen = cfg.is_frozen()
    cfg.defrost()
    cfg.TEST.EVALUATOR = chosen.__name__
    if frozen:
        cfg.freeze()


def _check(task, cfg, chosen):
    if cfg.TEST.EVALUATOR not in ("Classification", chosen.__name__):
        raise ValueError(
            f"TEST.EVALUATOR={cfg.TEST.EVALUATOR!r}: LE-CLIP trainers evaluate a {task} dataset with "
            f"{chosen.__name__}; remove TEST.EVALUATOR"
        )
    for key in ("PER_CLASS_RESULT", "COMPUTE_CMAT"):
        if cfg.TEST[key]:
            raise ValueError(f"TEST.{key} is an option of Dassl's Classification evaluator, not of {chosen.__name__}: remove it")


@EVALUATOR_REGISTRY.register()
class OpenSetClassification(EvaluatorBase):
    metrics = ("closed_accuracy", "balanced_accuracy", "auroc")  # its last_results, in order

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
    metrics = ("mAP", "CF1", "OF1")  # its last_results, in order

    def __init__(self, cfg, lab2cname=None, **kwargs):
        super().__init__(cfg)
        self.last_results = OrderedDict()
        self.reset()

    def reset(self):
        self._scores, self._targets, self._positives = [], [], []

    def process(self, scores, gt, positives):
        """scores [B, C] (ranked for mAP), gt [B, C] multi-hot, positives [B, C] bool."""
        self._scores.append(scores.detach().float().cpu())
        self._targets.append(gt.detach().float().cpu())
        self._positives.append(positives.detach().bool().cpu())

    def evaluate(self):
        scores, targets = _cat(self._scores), _cat(self._targets)
        mean_ap = metrics.mean_average_precision(scores, targets)
        cf1, of1 = metrics.cf1_of1(_cat(self._positives), targets)
        self.last_results = OrderedDict(mAP=mean_ap, CF1=cf1, OF1=of1)
        present = int((targets.sum(axis=0) > 0).sum())
        print(
            f"=> result\n* total: {len(targets):,}\n"
            f"* classes with a positive: {present} of {targets.shape[1]} (only these are averaged)\n"
            f"* mAP: {mean_ap:.2f}%\n* CF1: {cf1:.2f}%\n* OF1: {of1:.2f}%"
        )
        return self.last_results


_TASK_EVALUATORS = {"ossl": OpenSetClassification, "multilabel": MultiLabelClassification}
