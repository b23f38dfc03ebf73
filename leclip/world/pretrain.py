"""Contrastive pre-training and zero-shot evaluation of the embedded CLIP (`synth-vit`).

The model is the clip package's own `clip.model.CLIP` with its real BPE tokenizer,
shrunk to 32 px images: ViT with patch 4, 4 layers of width 128 (2 heads); text
transformer with 3 layers of width 64 (1 head), context length 16; joint space 64.
Head counts equal width // 64, so clip's own `build_model` could rebuild it too.
Every image of pre-training is drawn fresh from the world (seed stream
`PRETRAIN_STREAM`), never from the benchmarks' streams.
"""
import math

import clip
import numpy as np
import torch
import torch.nn.functional as F

from ..backbone.loader import random_clip
from ..data.transforms import array_to_tensor
from ..metrics import closed_accuracy, mean_average_precision
from . import captions, synth_fg, synth_ml

ARCH = dict(
    embed_dim=64,
    image_resolution=32,
    vision_layers=4,
    vision_width=128,
    vision_patch_size=4,
    vision_heads=2,
    context_length=16,
    transformer_width=64,
    transformer_heads=1,
    transformer_layers=3,
)
PRETRAIN_STREAM = 1
# the data pipeline normalises with CLIP's statistics (INPUT.PIXEL_MEAN / PIXEL_STD)
PIXEL_MEAN = (0.48145466, 0.4578275, 0.40821073)
PIXEL_STD = (0.26862954, 0.26130258, 0.27577711)
TEMPLATE = "a photo of a {}."


def to_tensor(images):
    """uint8 [N, H, W, 3] -> normalised float [N, 3, H, W], as the test view gives them."""
    return array_to_tensor(images, PIXEL_MEAN, PIXEL_STD)


def tokenize(model, texts):
    return clip.tokenize(list(texts), context_length=model.context_length, truncate=True)


def _soft_targets(texts):
    """Identical captions are all positives of each other (the world repeats captions)."""
    ids = {t: i for i, t in enumerate(dict.fromkeys(texts))}
    group = torch.tensor([ids[t] for t in texts])
    same = (group[:, None] == group[None, :]).float()
    return same / same.sum(dim=1, keepdim=True)


def contrastive_loss(model, images, texts):
    image_features = F.normalize(model.encode_image(images), dim=-1)
    text_features = F.normalize(model.encode_text(tokenize(model, texts)), dim=-1)
    logits = model.logit_scale.exp().clamp(max=100) * image_features @ text_features.t()
    targets = _soft_targets(texts)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets)) / 2


def pretrain(steps=1500, batch_size=128, lr=1e-3, weight_decay=0.1, warmup=100, seed=0, log=print, log_every=50):
    """Pre-train a fresh `ARCH` CLIP on captioned world images; deterministic per seed."""
    torch.manual_seed(seed)
    model = random_clip(**ARCH, seed=seed).train()
    rng = np.random.default_rng([seed, PRETRAIN_STREAM])
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr, betas=(0.9, 0.98), eps=1e-6,
    )

    def lr_factor(step):  # linear warm-up, then cosine to zero
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    running = None
    for step in range(steps):
        images, texts = captions.pretraining_batch(rng, batch_size)
        loss = contrastive_loss(model, to_tensor(images), texts)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        if log and ((step + 1) % log_every == 0 or step + 1 == steps):
            log(f"step {step + 1}/{steps}  loss {running:.3f}  lr {scheduler.get_last_lr()[0]:.2e}")
    return model.eval()


@torch.no_grad()
def image_features(model, images, batch_size=256):
    feats = [model.encode_image(to_tensor(images[i : i + batch_size])) for i in range(0, len(images), batch_size)]
    return F.normalize(torch.cat(feats), dim=-1)


@torch.no_grad()
def text_features(model, classnames, template=TEMPLATE):
    return F.normalize(model.encode_text(tokenize(model, [template.format(c) for c in classnames])), dim=-1)


def zero_shot_scores(model, images, classnames, template=TEMPLATE):
    """Cosine similarity [N, C] of each image to each class prompt."""
    return image_features(model, images) @ text_features(model, classnames, template).t()


def evaluate(model, world_seed=0, pool_per_class=40, test_per_class=20, shots=5, probe_seeds=(1, 2, 3)):
    """Zero-shot figures of `model` on the world's benchmarks (test splits), plus a
    `shots`-per-ID-class logistic-regression probe on frozen image features as a
    cheap stand-in for what few-shot adaptation can reach."""
    from sklearn.linear_model import LogisticRegression

    k = synth_fg.NUM_ID
    test_images, test_labels = synth_fg.render_split(world_seed, "test", test_per_class)
    id_test = test_labels < k
    fg_scores = zero_shot_scores(model, test_images[id_test], synth_fg.CLASSNAMES[:k])

    pool_images, pool_labels = synth_fg.render_split(world_seed, "pool", pool_per_class)
    pool_feats = image_features(model, pool_images).numpy()
    test_feats = image_features(model, test_images[id_test]).numpy()
    probe = []
    for seed in probe_seeds:
        rng = np.random.default_rng(seed)
        picked = np.concatenate([rng.choice(np.flatnonzero(pool_labels == c), shots, replace=False) for c in range(k)])
        clf = LogisticRegression(C=10.0, max_iter=2000).fit(pool_feats[picked], pool_labels[picked])
        probe.append(100.0 * float((clf.predict(test_feats) == test_labels[id_test]).mean()))

    ml_images, ml_labels = synth_ml.render_split(world_seed, "test", test_per_class * len(synth_ml.CLASSNAMES))
    ml_scores = zero_shot_scores(model, ml_images, synth_ml.CLASSNAMES).numpy()
    frequency = np.broadcast_to(ml_labels.mean(axis=0), ml_labels.shape)
    return {
        "fg_closed_acc": closed_accuracy(fg_scores.numpy(), test_labels[id_test], k),
        "fg_chance": 100.0 / k,
        "fg_probe_acc": float(np.mean(probe)),
        "ml_map": mean_average_precision(ml_scores, ml_labels),
        "ml_frequency_map": mean_average_precision(frequency, ml_labels),
    }
