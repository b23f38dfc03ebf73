"""Shared semi-supervised pieces: pseudo-labels, ID scores, the filter F, diagnostics,
and the one FixMatch step built from them.

`FixMatchStep` is used by every baseline's `TRAINER.SSL.MODE fixmatch` and by both
branches of CFSG-CLIP, so the table compares methods, not training recipes. The
unlabeled-data strategies (`Unlabeled`, `FixMatch`; `STRATEGIES` by TRAINER.SSL.MODE) are
the components `CLIPTrainer` builds (`build_unlabeled`) and carries in its checkpoints.
"""
import torch
import torch.nn.functional as F

from . import distributed

ID_SCORES = ("msp", "mcm", "glmcm")
# how long the filter's running threshold lives: the whole run (checkpointed) or one epoch
FILTER_LIFETIMES = ("run", "epoch")


def hard_pseudo_labels(probs, conf_thresh):
    """FixMatch's hard labels: (argmax, its probability, probability >= threshold)."""
    confidence, labels = probs.max(dim=-1)
    return labels, confidence, confidence >= conf_thresh


def mcm(similarities):
    """Maximum concept matching: max softmax of cosine similarities (MCM's T = 1)."""
    return similarities.softmax(dim=-1).max(dim=-1).values


def id_score(name, logits_global, logits_local=None):
    """ID score of each image (higher = more in-distribution).

    msp: max softmax of the logits as given. mcm: pass cosine similarities (logits
    divided by the logit scale). glmcm: MCM of the global similarities plus the max
    over patches of the MCM of the local ones ([B, N, C]).
    """
    if name == "msp":
        return logits_global.softmax(dim=-1).max(dim=-1).values
    if name == "mcm":
        return mcm(logits_global)
    if name == "glmcm":
        if logits_local is None:
            raise ValueError("ID score glmcm needs local (patch) similarities: this method has none; use msp or mcm")
        return mcm(logits_global) + mcm(logits_local).max(dim=-1).values
    raise ValueError(f"Unknown ID score {name!r} (TRAINER.SSL.SCORE): use one of {ID_SCORES}")


def head_id_score(name, out, logit_scale):
    """`id_score` of a head's outputs: its logits (and per-patch `local_logits` where it has
    them) divided by the logit scale, i.e. its cosine similarities."""
    local = out.get("local_logits")
    return id_score(name, out["logits"].float() / logit_scale, None if local is None else local.float() / logit_scale)


class OODFilter:
    """Filter F: keep an unlabeled image iff confident and its ID score passes.

    The threshold (ours) follows the test-time rule: the `quantile` quantile of the
    labeled images' ID scores, tracked as an exponential moving average (momentum 0.9)
    over batches. Before any labeled batch, every score passes.
    """

    def __init__(self, conf_thresh, quantile, momentum=0.9):
        self.conf_thresh = conf_thresh
        self.quantile = quantile
        self.momentum = momentum
        self.threshold = float("-inf")

    def update(self, labeled_scores):
        """Move the threshold towards the quantile of the global labeled batch (all ranks)."""
        value = torch.quantile(distributed.gather_cat(labeled_scores).float(), self.quantile).item()
        if self.threshold == float("-inf"):
            self.threshold = value
        else:
            self.threshold = self.momentum * self.threshold + (1 - self.momentum) * value

    def __call__(self, confidence, scores):
        return (confidence >= self.conf_thresh) & (scores >= self.threshold)


def fixmatch_loss(logits_strong, pseudo_labels, mask):
    """Mean over the batch of mask * CE (FixMatch normalises by batch size)."""
    per_image = F.cross_entropy(logits_strong.float(), pseudo_labels, reduction="none")
    return (per_image * mask.float()).mean()


class PseudoLabelStats:
    """Per-epoch diagnostics of the filter: pass rate, precision, OOD rejection.

    Precision counts passed images whose hidden label is known (OOD counts as wrong).
    """

    def __init__(self):
        self.reset()

    def reset(self):
        self.seen = self.passed = self.passed_known = self.correct = self.ood_seen = self.ood_rejected = 0

    def update(self, mask, pseudo_labels, hidden_labels=None, num_id=None):
        mask = mask.bool().cpu()
        self.seen += mask.numel()
        self.passed += int(mask.sum())
        if hidden_labels is None or num_id is None:
            return
        hidden = hidden_labels.cpu()
        known = hidden >= 0  # -1: an unlabeled ID image whose class nobody knows (Semi-Aves U_in)
        is_ood = hidden >= num_id
        self.passed_known += int((mask & known).sum())
        self.correct += int((mask & ~is_ood & (pseudo_labels.cpu() == hidden)).sum())
        self.ood_seen += int(is_ood.sum())
        self.ood_rejected += int((is_ood & ~mask).sum())

    COUNTS = ("seen", "passed", "passed_known", "correct", "ood_seen", "ood_rejected")

    def sum_over_ranks(self):
        """Replace this rank's counts by the sums over every rank (a distributed run)."""
        totals = distributed.sum_over_ranks([getattr(self, name) for name in self.COUNTS])
        for name, total in zip(self.COUNTS, totals):
            setattr(self, name, total)

    def summary(self):
        out = {"pass_rate": 100.0 * self.passed / max(self.seen, 1)}
        if self.passed_known:
            out["precision"] = 100.0 * self.correct / self.passed_known
        if self.ood_seen:
            out["ood_rejection"] = 100.0 * self.ood_rejected / self.ood_seen
        return out

    def log_line(self):
        return " ".join(f"{k} {v:.1f}%" for k, v in self.summary().items()) + f" (n={self.seen})"


class FixMatchStep:
    """FixMatch with the filter F on named output groups and heads.

    `heads` maps a group (an ID score and a filter of its own: one for a baseline, one
    per branch for CFSG-CLIP) to {head name: key of its logits in the group's output}.
    Per step: the weak view's outputs give hard pseudo-labels without gradient; each
    group's filter takes its threshold from the labeled batch's ID scores and keeps the
    confident weak-view images whose ID score passes; each head's loss is the masked CE
    of the strong view's logits, normalised by the batch size.

    The outputs are dicts with `logits` ([B, K], scaled) and optionally `local_logits`
    ([B, N, K], for GL-MCM); `groups(out)` returns {group: that dict}.
    """

    def __init__(self, heads, conf_thresh, score, quantile, lifetime="run", momentum=0.9):
        if score not in ID_SCORES:
            raise ValueError(f"Unknown ID score {score!r} (TRAINER.SSL.SCORE): use one of {ID_SCORES}")
        if lifetime not in FILTER_LIFETIMES:
            raise ValueError(f"TRAINER.SSL.FILTER_LIFETIME={lifetime!r}: use one of {FILTER_LIFETIMES}")
        self.heads = heads
        self.conf_thresh = conf_thresh
        self.score = score
        self.lifetime = lifetime
        self.filters = {group: OODFilter(conf_thresh, quantile, momentum) for group in heads}
        self.stats = {(group, head): PseudoLabelStats() for group, keys in heads.items() for head in keys}

    def start_epoch(self):
        for stats in self.stats.values():
            stats.reset()
        if self.lifetime == "epoch":
            for flt in self.filters.values():
                flt.threshold = float("-inf")

    def __call__(self, groups_x, forward, images_weak, images_strong, logit_scale, hidden_labels=None, num_id=None):
        """{group: loss}. `groups_x`: the groups of the labeled batch's outputs;
        `forward(images, out_weak)`: the method's outputs as groups (`out_weak` is None
        for the weak view; a method whose strong-view forward depends on the weak view,
        as CFSG-CLIP's SFM class, reads it). `hidden_labels` only feed the diagnostics."""
        with torch.no_grad():
            groups_weak = forward(images_weak, None)
        groups_strong = forward(images_strong, groups_weak)
        losses = {}
        for group, keys in self.heads.items():
            flt = self.filters[group]
            flt.update(head_id_score(self.score, groups_x[group], logit_scale).detach())
            scores = head_id_score(self.score, groups_weak[group], logit_scale)
            loss = 0.0
            for head, key in keys.items():
                probs = groups_weak[group][key].float().softmax(dim=-1)
                pseudo, confidence, _ = hard_pseudo_labels(probs, self.conf_thresh)
                mask = flt(confidence, scores)
                self.stats[group, head].update(mask, pseudo, hidden_labels, num_id)
                loss = loss + fixmatch_loss(groups_strong[group][key], pseudo, mask)
            losses[group] = loss
        return losses

    def state(self):
        return {group: flt.threshold for group, flt in self.filters.items()}

    def load_state(self, thresholds):
        for group, threshold in thresholds.items():
            self.filters[group].threshold = threshold

    def log_line(self):
        """The epoch's diagnostics over every rank (call it on every rank)."""
        for stats in self.stats.values():
            stats.sum_over_ranks()
        if len(self.stats) == 1:
            return next(iter(self.stats.values())).log_line()
        return "; ".join(f"{group}/{head}: {stats.log_line()}" for (group, head), stats in self.stats.items())


# ---------------------------------------------------------------- unlabeled-data strategies
class Unlabeled:
    """How a trainer uses its unlabeled data: a component the trainer builds from its
    config (`CLIPTrainer.build_unlabeled`). This base uses none. A strategy reads the
    trainer it is given (its model, loaders, `score_pass`) and keeps its own state, which
    `state()` / `load_state()` carry through every epoch checkpoint.

    Hooks, called by `CLIPTrainer`: `reads_unlabeled(epoch)` (whether that epoch's loop
    reads train_u; a pure function of the epoch, as the ETA sums future epochs),
    `before_epoch()` / `after_epoch()` (around the epoch's loop, after the epoch's
    reseeding and before its checkpoint), and `losses(out_x, batch_u, classes)` (the
    unlabeled terms of one step, added to the supervised ones)."""

    def __init__(self, trainer):
        self.trainer = trainer

    def reads_unlabeled(self, epoch):
        return False

    def before_epoch(self):
        pass

    def after_epoch(self):
        pass

    def losses(self, out_x, batch_u, classes):
        return {}

    def state(self):
        return {}

    def load_state(self, state):
        pass


class FixMatch(Unlabeled):
    """`TRAINER.SSL.MODE fixmatch`: the `FixMatchStep` on the trainer's FixMatch groups
    (`fixmatch_heads`, `output_groups`, `unlabeled_weights`, `forward_unlabeled`); its
    state is the filters' running thresholds."""

    def __init__(self, trainer):
        super().__init__(trainer)
        cfg = trainer.cfg.TRAINER.SSL
        self.step = FixMatchStep(
            trainer.fixmatch_heads(), cfg.CONF_THRESH, cfg.SCORE, cfg.OOD_QUANTILE, cfg.FILTER_LIFETIME
        )

    def reads_unlabeled(self, epoch):
        return True

    def before_epoch(self):
        self.step.start_epoch()

    def after_epoch(self):
        trainer = self.trainer
        print(f"epoch [{trainer.epoch + 1}/{trainer.max_epoch}] unlabeled: {self.step.log_line()}")

    def losses(self, out_x, batch_u, classes):
        trainer = self.trainer

        def forward(images, groups_weak):
            return trainer.output_groups(trainer.forward_unlabeled(images, classes, groups_weak))

        per_group = self.step(
            trainer.output_groups(out_x),
            forward,
            # the first and second of DATALOADER.TRAIN_U.VIEWS (weak/strong, synth_weak/synth_strong...)
            *(trainer.to_device(batch_u, f"img_{view}") for view in trainer.cfg.DATALOADER.TRAIN_U.VIEWS[:2]),
            trainer.logit_scale,
            batch_u["label"],
            trainer.num_classes,
        )
        weights, weight = trainer.unlabeled_weights(), trainer.cfg.TRAINER.SSL.LAMBDA
        return {
            ("loss_u" if group == "main" else f"loss_u_{group}"): weight * weights[group] * loss
            for group, loss in per_group.items()
        }

    def state(self):
        return {"thresholds": self.step.state()}

    def load_state(self, state):
        self.step.load_state(state["thresholds"])


# TRAINER.SSL.MODE -> strategy; a method with its own (CSA's thresholds, CCD's label
# table) returns it from `build_unlabeled` instead
STRATEGIES = {"none": Unlabeled, "fixmatch": FixMatch}
