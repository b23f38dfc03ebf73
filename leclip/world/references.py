"""Reference learners that measure the world's headroom, none of them a paper's method.

The premises of the world are measured with plain learners, so the world is not tuned
to any one method:
- `fixmatch_head`: a linear head on frozen CLIP global features, started from the class
  prompts' text features (zero-shot), trained with cross-entropy on the labeled images
  and, when an unlabeled pool is given, plain FixMatch (a confident weak view's argmax
  is the target of the strong view). Views are drawn once per image (`views`) and
  encoded once, so a run costs seconds.
- `view_ops`: this world's weak and strong views (also the benchmarks' views
  `synth_weak` / `synth_strong`). RandAugment at 64 px changes the colour and shape that
  define a class; here a strong view keeps both, as a strong view must on real data too.
- `bce_classifier`: CCD's classifier (the shipped world-pretrained CNN, a 1x1 conv for
  CAMs, Adam with the head at 10x, cosine) trained with BCE on the true labels: what a
  distillation from CLIP's labels could at best approach.
"""
import numpy as np
import torch
import torch.nn.functional as F


CROP_SCALE = (0.7, 1.0)  # share of the image a view keeps (weak and strong)
JITTER = dict(brightness=0.4, contrast=0.4, saturation=0.3)  # strong view; no hue change


def view_ops(size, strong):
    """torchvision PIL ops of this world's views: a square crop of at least 70 % of the
    image, resized back, with no flip (a flip moves a part to where another class has
    it); the strong view adds brightness, contrast and saturation jitter, which keep each
    object's hue and its part (RandAugment at 64 px does not: it changes both)."""
    import torchvision.transforms as T

    ops = [T.RandomResizedCrop(size, scale=CROP_SCALE, ratio=(1.0, 1.0), interpolation=T.InterpolationMode.BICUBIC)]
    return ops + [T.ColorJitter(**JITTER)] if strong else ops


def encoded_views(encode, images, count, strong, seed):
    """[count, N, D] global features of `count` views of every uint8 image [N, H, W, 3]."""
    from PIL import Image
    import torchvision.transforms as T

    ops = T.Compose(view_ops(images.shape[1], strong))
    torch.manual_seed(seed)
    return torch.stack([
        encode(np.stack([np.asarray(ops(Image.fromarray(image))) for image in images])) for _ in range(count)
    ])


def fixmatch_head(text, scale, labeled, labels, test, unlabeled=None, seed=0, steps=300, lr=0.003,
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
