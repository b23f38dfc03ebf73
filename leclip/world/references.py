"""Reference learners that measure the world's headroom, none of them a paper's method.

The premises of the world are measured with plain learners, so the world is not tuned
to any one method:
- `fixmatch_head`: a linear head on frozen CLIP global features, started from the class
  prompts' text features (zero-shot), trained with cross-entropy on the labeled images
  and, when an unlabeled pool is given, plain FixMatch (a confident weak view's argmax
  is the target of the strong view). Views are drawn once per image (`views`) and
  encoded once, so a run costs seconds.
- `label_preserving_views`: this world's strong view. RandAugment at 64 px changes the
  colour and shape that define a class; here a strong view keeps both (a crop of at
  least 70 % of the image with no flip, brightness, contrast, pixel noise), as a strong
  view must on real data too.
- `bce_classifier`: CCD's classifier (the shipped world-pretrained CNN, a 1x1 conv for
  CAMs, Adam with the head at 10x, cosine) trained with BCE on the true labels: what a
  distillation from CLIP's labels could at best approach.
"""
import numpy as np
import torch
import torch.nn.functional as F

from . import render

CROP_SCALE = (0.7, 1.0)  # share of the image a view keeps (weak and strong)
BRIGHTNESS, CONTRAST, NOISE = 0.3, 0.3, 8.0  # strong view: factors within 1 +- x, pixel noise std


def _crops(rng, images, scale):
    """Random square crops keeping `scale` of the area, resized back (no flip: a flip
    moves a part to where another class has it)."""
    n, size = len(images), images.shape[1]
    side = np.sqrt(rng.uniform(*scale, size=n)) * size
    x0, y0 = rng.uniform(0, 1, size=(2, n)) * (size - side)
    return render.crop_and_resize(images, np.stack([x0, y0, x0 + side, y0 + side], axis=1), size)


def label_preserving_views(rng, images, strong):
    """uint8 [N, H, W, 3] views: a crop (weak); with `strong` also brightness, contrast and
    pixel noise that keep each object's hue and its part."""
    views = _crops(rng, images, CROP_SCALE).astype(np.float32)
    if strong:
        n = len(views)
        mean = views.mean(axis=(1, 2, 3), keepdims=True)
        contrast = rng.uniform(1 - CONTRAST, 1 + CONTRAST, size=(n, 1, 1, 1))
        brightness = rng.uniform(1 - BRIGHTNESS, 1 + BRIGHTNESS, size=(n, 1, 1, 1))
        views = ((views - mean) * contrast + mean) * brightness + rng.normal(0, NOISE, size=views.shape)
    return np.clip(np.rint(views), 0, 255).astype(np.uint8)


def encoded_views(encode, rng, images, count, strong):
    """[count, N, D] global features of `count` views of every image."""
    return torch.stack([encode(label_preserving_views(rng, images, strong)) for _ in range(count)])


def fixmatch_head(text, scale, labeled, labels, test, unlabeled=None, seed=0, steps=300, lr=0.01,
                  threshold=0.95, weight=1.0, batch=32, unlabeled_ratio=4):
    """Predicted test classes of a linear head (init: the text features [C, D]) on frozen
    features; labeled [V, N, D] (views), test [M, D]; unlabeled None (labels only) or
    (weak [V, U, D], strong [V, U, D]). Plain FixMatch: cross-entropy of the strong view
    against the weak view's argmax where its softmax passes `threshold`."""
    generator = torch.Generator().manual_seed(seed)
    weight_matrix = torch.nn.Parameter(text.clone())
    optimizer = torch.optim.AdamW([weight_matrix], lr=lr, weight_decay=0.0)
    labels = torch.as_tensor(labels)

    def logits(features):
        return scale * F.normalize(features, dim=-1) @ weight_matrix.t()

    def pick(views, size):  # a random view of `size` random items
        item = torch.randint(views.shape[1], (size,), generator=generator)
        view = torch.randint(views.shape[0], (size,), generator=generator)
        return views[view, item], item, view

    for _ in range(steps):
        x, item, _ = pick(labeled, batch)
        loss = F.cross_entropy(logits(x), labels[item])
        if unlabeled is not None:
            weak_views, strong_views = unlabeled
            weak, item, view = pick(weak_views, batch * unlabeled_ratio)
            strong = strong_views[torch.randint(strong_views.shape[0], (len(item),), generator=generator), item]
            with torch.no_grad():
                confidence, target = logits(weak).softmax(dim=-1).max(dim=-1)
            mask = (confidence >= threshold).float()
            loss = loss + weight * (F.cross_entropy(logits(strong), target, reduction="none") * mask).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return logits(test).argmax(dim=-1).numpy()


def bce_classifier(train_images, train_labels, test_images, weights_path, backbone, input_size, seed=0, epochs=10,
                   lr=1e-3, batch=16, head_lr_mult=10.0):
    """Test scores [M, C] of CCD's classifier trained with BCE on the true labels."""
    from ..multilabel.cam import CAMClassifier
    from .trunk import to_input

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = CAMClassifier(train_labels.shape[1], backbone, weights_path).train()
    optimizer = torch.optim.Adam(model.param_groups(lr, head_lr_mult))
    steps = epochs * int(np.ceil(len(train_images) / batch))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + np.cos(np.pi * s / steps)))
    targets = torch.as_tensor(train_labels, dtype=torch.float32)
    for _ in range(epochs):
        order = rng.permutation(len(train_images))
        for start in range(0, len(order), batch):
            rows = order[start:start + batch]
            if len(rows) < 2:  # batch norm needs two images
                continue
            loss = F.binary_cross_entropy_with_logits(model(to_input(train_images[rows], input_size)), targets[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
    model.eval()
    with torch.no_grad():
        _, cams = model(to_input(test_images[:2], input_size), return_cams=True)
        scores = torch.cat([model(to_input(test_images[i:i + 128], input_size)) for i in range(0, len(test_images), 128)])
    return scores.numpy(), tuple(cams.shape[-2:])
