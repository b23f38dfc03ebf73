"""CLIP pseudo-labels for multi-label images (CCD, task B): pure tensor functions.

CCD (Kim & Shim) scores every class with CLIP's softmax over the classes, then corrects
CLIP's class-wise bias: for class c, the mean top-1 probability over the reliable images
whose top-1 class is c. Debiased label y = clamp(max(p, 1/LS_COEFF) / bias, 0, 1) -- the
label-smoothing floor first, then the division, as released; the bias has no floor.

Also here: the unreliable flag (entropy > 2, as released), CLIP's top-1 class as the
single positive label of the annotation-free baselines, CDUL's global + tile aggregation
(the CDUL baseline's initial labels) and CCD's blend of the old labels with the crops'.
"""
import torch
import torch.nn.functional as F


def entropy(probs):
    """Shannon entropy (nats) of each row of class probabilities [N, C] -> [N]."""
    return -(probs * torch.log(probs.clamp_min(1e-12))).sum(dim=-1)


def clip_probs(image_features, text_features, logit_scale=100.0):
    """softmax over the classes of logit_scale * cos(image, class text) -> [N, C].

    Features need not be normalised. The released code uses a fixed scale of 100, not
    the model's own logit_scale (a synthetic CLIP may have learned another one)."""
    cos = F.normalize(image_features.float(), dim=-1) @ F.normalize(text_features.float(), dim=-1).t()
    return (logit_scale * cos).softmax(dim=-1)


def unreliable(probs, max_entropy=2.0):
    """[N] bool: images whose CLIP softmax has entropy > max_entropy (2 as released)."""
    return entropy(probs) > max_entropy


def class_bias(probs, reliable=None, fix=""):
    """[C] mean top-1 probability of each class over the (reliable) images whose top-1
    class it is. A class that is never top-1 gets the mean of the others' biases (the
    released code divides by zero there). `fix`: what the caller's user should change when
    no image is reliable (ends the error message)."""
    top_prob, top_class = probs.max(dim=-1)
    if reliable is not None:
        top_prob, top_class = top_prob[reliable], top_class[reliable]
    num_classes = probs.shape[1]
    total = probs.new_zeros(num_classes).index_add_(0, top_class, top_prob)
    count = probs.new_zeros(num_classes).index_add_(0, top_class, torch.ones_like(top_prob))
    seen = count > 0
    if not bool(seen.any()):
        raise ValueError("class_bias: no (reliable) image to estimate CLIP's class bias from" + (f": {fix}" if fix else ""))
    bias = torch.where(seen, total / count.clamp_min(1), torch.zeros_like(total))
    bias[~seen] = bias[seen].mean()
    return bias


def debias(probs, bias, ls_coeff=20.0):
    """clamp(max(p, 1/ls_coeff) / bias, 0, 1): floor first, then divide by the class bias.

    For the ablation without debiasing pass a bias of ones (the floor stays, as released,
    where the floor and the division are separate switches)."""
    return (probs.clamp_min(1.0 / ls_coeff) / bias).clamp(0.0, 1.0)


def blend_update(old_labels, crop_max, bias, ratio=0.2, ls_coeff=20.0, clamp_local=False):
    """CCD's label update: clamp(r * old + (1 - r) * local, 0, 1), r = `ratio` (0.2).

    local = max(crop_max, 1/ls_coeff) / bias, where crop_max is the element-wise max of
    CLIP's softmax over an image's crops (zeros when no class was selected). As released,
    local is NOT clamped before the blend (only the blend is), so a local score above the
    bias pushes the label further up than `debias` would; `clamp_local=True` clamps it
    first, i.e. local = debias(crop_max, bias, ls_coeff)."""
    local = crop_max.clamp_min(1.0 / ls_coeff) / bias
    if clamp_local:
        local = local.clamp(0.0, 1.0)
    return (ratio * old_labels + (1.0 - ratio) * local).clamp(0.0, 1.0)


def single_positive(probs):
    """[N, C] one-hot of CLIP's top-1 class: the annotation-free single-positive label."""
    return F.one_hot(probs.argmax(dim=-1), probs.shape[-1]).to(probs.dtype)


def grid_boxes(height, width, grid=3):
    """[grid*grid, 4] (x1, y1, x2, y2) tiles of a height x width image, row by row; the
    tile edges are rounded to whole pixels (ours), so the tiles cover the image exactly."""
    ys = torch.linspace(0, height, grid + 1).round()
    xs = torch.linspace(0, width, grid + 1).round()
    y1, x1 = torch.meshgrid(ys[:-1], xs[:-1], indexing="ij")
    y2, x2 = torch.meshgrid(ys[1:], xs[1:], indexing="ij")
    return torch.stack([x1, y1, x2, y2], dim=-1).reshape(-1, 4)


def cdul_aggregate(global_probs, tile_probs, zeta=0.5):
    """CDUL's initial pseudo-labels from the whole image and its tiles.

    global_probs [N, C]: CLIP softmax of the whole image; tile_probs [N, T, C]: of each
    tile. Per class, alpha = max over the tiles, beta = min over the tiles,
    aggregated = gamma * alpha + (1 - gamma) * beta with gamma = 1[alpha >= zeta] (the
    CDUL paper's aggregator, Abdelfattah et al., ICCV 2023). The label is the mean of the
    global and the aggregated score: CDUL's combination as we recall the paper, not
    checked against its text here, so ours until checked; zeta 0.5 is ours."""
    alpha = tile_probs.amax(dim=1)
    beta = tile_probs.amin(dim=1)
    aggregated = torch.where(alpha >= zeta, alpha, beta)
    return 0.5 * (global_probs + aggregated)
