"""CCD's label-free model selection (the released `bestccd` rule).

Each epoch e the trainer records m_e = `pseudo_label_map(scores, labels)`: the mAP of the
sigmoid scores of that epoch's training forwards (view 1, train mode, as they come during
the epoch) against the pseudo-labels the epoch trained on. The selected epoch is the first
e >= 2 at which the change of m starts to grow: d_e > d_{e-1} with d_e = m_e - m_{e-1}.
The released code writes it with placeholders d_0 = d_{-1} = 100, which can never fire at
e = 0 or 1 (mAP is in [0, 100]); `select_epoch` starts at e = 2 directly, same result.
The selected model is the one saved after epoch e's training (0-based epochs).
"""
import numpy as np
import torch
from sklearn.metrics import average_precision_score


def _numpy(x):
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def pseudo_label_map(scores, pseudo_labels):
    """mAP (%) of scores [N, C] against pseudo-labels [N, C], as released: positive only
    where a label equals 1.0 exactly, and a class without any positive counts as AP 0
    (it stays in the mean)."""
    scores, targets = _numpy(scores), _numpy(pseudo_labels) == 1.0
    aps = [
        average_precision_score(targets[:, c], scores[:, c]) if targets[:, c].any() else 0.0
        for c in range(targets.shape[1])
    ]
    return 100.0 * float(np.mean(aps))


def select_epoch(train_maps, first=2):
    """Index of the first epoch e >= `first` with m_e - m_{e-1} > m_{e-1} - m_{e-2}
    (strict), from the per-epoch history m; None while no epoch qualifies (the trainer
    then deploys the last epoch, ours: the released code has no model then and fails at
    its final log line)."""
    m = [float(v) for v in train_maps]
    for e in range(max(first, 2), len(m)):
        if m[e] - m[e - 1] > m[e - 1] - m[e - 2]:
            return e
    return None
