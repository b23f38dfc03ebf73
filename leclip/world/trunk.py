"""The embedded world's stand-in for ImageNet weights: a small torchvision CNN
pre-trained on single objects of the world, for CCD's classifier on `synth_ml`.

CCD's released classifier starts from an ImageNet-pretrained ResNet-50; ImageNet holds
single objects of many of VOC's classes. Here the same holds: the CNN learns to name
single objects (any shape, shade, texture, size and pose, with clutter; 7 shapes x 5
colour families = 35 classes, the single-object images that also pre-train `synth-vit`)
drawn fresh from `TRUNK_STREAM`, never from a benchmark's stream. It never sees a
multi-object scene or a `synth_ml` label. Saved as a torchvision state dict without the
final classifier layer (CCD replaces it), in fp16.
"""
import math
import os
import os.path as osp

import numpy as np
import torch
import torch.nn.functional as F
import torchvision

from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD, array_to_tensor
from ..files import write_atomic
from ..multilabel import classifier_weights
from . import render, synth_fg

ASSETS = osp.join(osp.dirname(__file__), "assets")
TRUNK_STREAM = 2  # the CLIP's pre-training uses stream 1, the benchmarks 11 and up
CLASSES = tuple((shape, family) for shape in render.SHAPES for family in render.FAMILIES)


def asset_path(backbone):
    """Where the shipped weights of torchvision model `backbone` live (they may not exist)."""
    return osp.join(ASSETS, f"synth-{backbone}.pt")


def shipped_backbones():
    """torchvision model names whose world-pretrained weights ship in the package."""
    names = (f[len("synth-"):-len(".pt")] for f in os.listdir(ASSETS) if f.startswith("synth-") and f.endswith(".pt"))
    return sorted(set(names).intersection(torchvision.models.list_models()))


def embedded_weights(backbone):
    """The shipped weights file of `backbone`: TRAINER.CCD.WEIGHTS "embedded" (registered below)."""
    path = asset_path(backbone)
    if not osp.isfile(path):
        raise FileNotFoundError(
            f"No embedded world-pretrained weights for classifier backbone {backbone!r} (shipped for: "
            f"{', '.join(shipped_backbones()) or 'none'}): use one of those backbones, build them with "
            f"`python scripts/pretrain_synth_trunk.py --backbone {backbone}`, or set TRAINER.CCD.WEIGHTS"
        )
    return path


classifier_weights.register("embedded", embedded_weights)  # the classifier layer never imports the world


def single_objects(rng, n, size=render.IMAGE_SIZE):
    """(uint8 images [n, size, size, 3], class indices into CLASSES [n])."""
    labels = rng.integers(len(CLASSES), size=n)
    shapes = [CLASSES[k][0] for k in labels]
    shades = [rng.choice(sorted(render.FAMILIES[CLASSES[k][1]])) for k in labels]
    textures = rng.choice(render.TEXTURES, size=n)
    scenes = synth_fg.object_scenes(rng, shapes, shades, textures, [None] * n, size)
    return render.render(scenes, rng, size), labels


def to_input(images, input_size):
    """uint8 [N, H, W, 3] -> ImageNet-normalised [N, 3, input_size, input_size], the
    geometry of CCD's classifier view (the whole image resized, bicubic)."""
    return array_to_tensor(images, IMAGENET_MEAN, IMAGENET_STD, size=input_size)


def final_layer_keys(model):
    """State-dict keys of the final classifier layer of a torchvision classification model
    (the last module with a weight of shape [num_classes, ...])."""
    last = [name for name, module in model.named_modules() if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d))][-1]
    return [key for key in model.state_dict() if key.startswith(last + ".")]


def pretrain(backbone="mobilenet_v3_small", steps=300, batch_size=64, lr=2e-3, input_size=64, seed=0, log=print,
             log_every=50):
    """A torchvision `backbone` trained with cross-entropy on CLASSES (AdamW, cosine);
    deterministic per seed (and thread count). Returns the model in eval mode."""
    torch.manual_seed(seed)
    model = torchvision.models.get_model(backbone, weights=None, num_classes=len(CLASSES)).train()
    rng = np.random.default_rng([seed, TRUNK_STREAM])
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    running = None
    for step in range(steps):
        images, labels = single_objects(rng, batch_size)
        x = to_input(images, input_size)
        if rng.random() < 0.5:
            x = x.flip(3)
        logits = model(x)
        loss = F.cross_entropy(logits, torch.from_numpy(labels))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        accuracy = (logits.argmax(1).numpy() == labels).mean()
        values = np.array([loss.item(), accuracy])
        running = values if running is None else 0.95 * running + 0.05 * values
        if log and ((step + 1) % log_every == 0 or step + 1 == steps):
            log(f"step {step + 1}/{steps}  loss {running[0]:.3f}  train accuracy {100 * running[1]:.1f}%")
    return model.eval()


@torch.no_grad()
def feature_accuracy(model, n=400, input_size=64, seed=0):
    """Accuracy (%) of the nearest class centroid of the model's pooled features (eval
    mode): centroids from n/2 fresh single objects of a held-out stream, tested on the
    other n/2. (The trained head's own eval-mode accuracy says little: mobilenet's
    batch-norm statistics, momentum 0.01, lag its weights; CCD replaces the head and
    fine-tunes with batch statistics.)"""
    model.eval()
    images, labels = single_objects(np.random.default_rng([seed, TRUNK_STREAM, 1]), n)
    trunk = torch.nn.Sequential(*list(model.children())[:-1])  # all but the classifier: features + pooling
    features = torch.cat([trunk(to_input(images[i:i + 200], input_size)).flatten(1) for i in range(0, n, 200)])
    labels = torch.from_numpy(labels)
    fit, test = slice(0, n // 2), slice(n // 2, n)
    centroids = torch.stack([
        features[fit][labels[fit] == k].mean(0) if (labels[fit] == k).any() else torch.full_like(features[0], float("inf"))
        for k in range(len(CLASSES))
    ])
    predicted = torch.cdist(features[test], centroids).argmin(1)
    return 100.0 * float((predicted == labels[test]).float().mean())


def save_trunk(model, path):
    """The state dict without the final classifier layer, in fp16."""
    drop = set(final_layer_keys(model))
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items() if k not in drop}
    write_atomic(path, lambda tmp: torch.save(state, tmp))
