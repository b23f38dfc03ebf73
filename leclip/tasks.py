"""The papers' three tasks: the one task vocabulary of trainers (`tasks`), the harness
and the tables.

A dataset's `task` attribute says what its labels are ("ossl": one class an image, an
open set; "multilabel": multi-hot; a Dassl fork's own dataset has none: "closed"); its
setting says whether some training labels are given. The two make the task (`task_of`).
"""
from collections import OrderedDict

TASK_NAMES = OrderedDict(
    A="fine-grained open-set semi-supervised classification",
    B="unsupervised multi-label classification",
    C="semi-supervised multi-label classification",
)
# the dataset tasks (label formats) each task runs on
LABEL_FORMATS = {"A": ("ossl", "closed"), "B": ("multilabel",), "C": ("multilabel",)}
UNSUPERVISED = "unsup"  # the setting (DATASET.SETTING) of multi-label data without labels: task B


def task_of(label_format, setting):
    """A, B or C: single-label data is task A (a Dassl fork's closed-set data too: the
    task-A methods serve it); multi-label data is task B when unsupervised, else C."""
    if label_format == "multilabel":
        return "B" if str(setting) == UNSUPERVISED else "C"
    return "A"


def describe(tasks):
    """'A (fine-grained ...)' or 'B/C (...; ...)'."""
    return f"{'/'.join(tasks)} ({'; '.join(TASK_NAMES[t] for t in tasks)})"
