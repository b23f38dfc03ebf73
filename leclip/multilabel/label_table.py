"""CCD's unlabeled-data strategy: the label table of the training images.

It holds what the classifier learns from and what the label-free model selection has seen:
the pseudo-labels of every training image (`targets`, rewritten by the CAM-guided update),
their per-image loss weights, CLIP's class bias, the labels before any update, the
per-epoch training mAP against the pseudo-labels (`history`) and the selected epoch.
It is the trainer's unlabeled-data strategy (`leclip.ssl.Unlabeled`): every epoch reads
the training images, and `state()` / `load_state()` carry what changes during training
into the epoch checkpoint, so a resumed run continues with the labels and history of the
weights it resumes.
"""
import torch

from ..ssl import Unlabeled
from .selection import pseudo_label_map, select_epoch


class LabelTable(Unlabeled):
    def __init__(self, trainer, targets, weights, bias=None, first_selectable=2):
        super().__init__(trainer)
        self.targets = targets.float()
        self.weights = weights.float()
        self.bias = bias
        self.initial = self.targets.clone()
        self.first_selectable = first_selectable
        self.history = []  # training mAP (%) against the pseudo-labels, one per finished epoch
        self.selected = -1  # the epoch the rule picked (0-based), -1 while none

    def __len__(self):
        return len(self.targets)

    def reads_unlabeled(self, epoch):
        return True  # the training images, whose labels the classifier never reads

    def rows(self, index, device):
        """(targets [B, C], weights [B]) of the images `index`, on `device`."""
        return self.targets[index].to(device), self.weights[index].to(device)

    def record_epoch(self, epoch, scores, seen=None):
        """Add epoch `epoch`'s training mAP of `scores` [N, C] (in index order) against the
        current labels, over the images `seen` [N] bool (default all: a loader that drops its
        last batch leaves some out); True when the rule picks this epoch."""
        seen = torch.ones(len(scores), dtype=torch.bool) if seen is None else seen
        self.history.append(pseudo_label_map(scores[seen], self.targets[seen]))
        if self.selected < 0 and select_epoch(self.history, self.first_selectable) == epoch:
            self.selected = epoch
            return True
        return False

    def state(self):
        return {"targets": self.targets.clone(), "history": torch.tensor(self.history, dtype=torch.float64),
                "selected": self.selected}

    def load_state(self, state):
        self.targets = state["targets"].float()
        self.history = state["history"].tolist()
        self.selected = int(state["selected"])
