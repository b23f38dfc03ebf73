"""Contrastive pre-training of the embedded CLIP (`synth-vit`).

The model is the clip package's own `clip.model.CLIP` with its real BPE tokenizer,
shrunk to 64 px images: ViT with patch 8 (an 8 x 8 grid), 4 layers of width 128 (2
heads); text transformer with 3 layers of width 64 (1 head), context length 16; joint
space 64. Head counts equal width // 64, so clip's own `build_model` could rebuild it.

Two symmetric InfoNCE terms share the learned temperature: whole images (and crops)
against their captions, and regions against theirs, each also against the captions of
the look-alikes (the same caption with another part: hard negatives), where a region's feature is the
mean of the normalised patch features (last block's patch tokens through `ln_post` and
`proj`, what the methods read) over the patches of one object or of its part. The
second term is what makes patch tokens align with text. Every image is drawn fresh from
the world (seed stream `PRETRAIN_STREAM`), never from the benchmarks' streams.
"""
import math
import time

import clip
import numpy as np
import torch
import torch.nn.functional as F

from ..backbone.encoders import ImageEncoder
from ..backbone.loader import random_clip
from ..data.transforms import array_to_tensor
from . import captions

ARCH = dict(
    embed_dim=64,
    image_resolution=64,
    vision_layers=4,
    vision_width=128,
    vision_patch_size=8,
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


def to_tensor(images):
    """uint8 [N, H, W, 3] -> normalised float [N, 3, H, W], as the test view gives them."""
    return array_to_tensor(images, PIXEL_MEAN, PIXEL_STD)


def tokenize(model, texts):
    return clip.tokenize(list(texts), context_length=model.context_length, truncate=True)


def grid_size(model):
    """Patches per side of the model's image grid."""
    return model.visual.input_resolution // model.visual.conv1.weight.shape[-1]


def contrastive(features, text_features, text_ids, scale):
    """Symmetric InfoNCE of normalised features [A, D] against the batch's distinct texts
    [M, D]; item a's text is text_ids[a]. A text shared by several items has all of them
    as positives (soft target); texts no item has are negatives only."""
    logits = scale * features @ text_features.t()  # [A, M]
    ids = torch.as_tensor(text_ids)
    to_text = F.cross_entropy(logits, ids)
    present = torch.unique(ids)
    owners = (ids[None, :] == present[:, None]).float()  # [M', A]
    to_item = F.cross_entropy(logits.t()[present], owners / owners.sum(dim=1, keepdim=True))
    return (to_text + to_item) / 2


def batch_loss(model, encoder, images, texts, regions, negatives=()):
    """Whole-image term + region term for one captioned batch (see the module doc);
    `negatives` are extra texts that only ever serve as negatives."""
    region_image, region_masks, region_texts = zip(*regions)
    distinct = list(dict.fromkeys(list(texts) + list(region_texts) + list(negatives)))
    index = {t: i for i, t in enumerate(distinct)}
    text_features = F.normalize(model.encode_text(tokenize(model, distinct)), dim=-1)
    global_features, patch_features = encoder(to_tensor(images))
    masks = torch.from_numpy(np.stack(region_masks)).float()  # [R, P]
    patches = F.normalize(patch_features, dim=-1)[list(region_image)]  # [R, P, D]
    region_features = (patches * masks[..., None]).sum(dim=1) / masks.sum(dim=1, keepdim=True)
    scale = model.logit_scale.exp().clamp(max=100)
    whole = contrastive(F.normalize(global_features, dim=-1), text_features, [index[t] for t in texts], scale)
    local = contrastive(F.normalize(region_features, dim=-1), text_features, [index[t] for t in region_texts], scale)
    return whole, local


def pretrain(
    steps=900, batch_size=128, lr=1e-3, weight_decay=0.1, warmup=60, seed=0, region_weight=1.0,
    init_logit_scale=None, log=print, log_every=50,
):
    """Pre-train a fresh `ARCH` CLIP on captioned world images; deterministic per seed
    (and thread count). `region_weight` (ours) weighs the region term;
    `init_logit_scale` (ours) starts the learned temperature elsewhere than CLIP's 1/0.07."""
    torch.manual_seed(seed)
    model = random_clip(**ARCH, seed=seed).train()
    if init_logit_scale is not None:
        model.logit_scale.data.fill_(math.log(init_logit_scale))
    encoder = ImageEncoder(model)
    size, grid = model.visual.input_resolution, grid_size(model)
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
    running, start = None, time.time()
    for step in range(steps):
        whole, local = batch_loss(model, encoder, *captions.pretraining_batch(rng, batch_size, size, grid))
        loss = whole + region_weight * local
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        values = torch.stack([whole, local]).detach()
        running = values if running is None else 0.95 * running + 0.05 * values
        if log and ((step + 1) % log_every == 0 or step + 1 == steps):
            log(
                f"step {step + 1}/{steps}  loss whole {running[0]:.3f} regions {running[1]:.3f}  "
                f"logit scale {model.logit_scale.exp().item():.1f}  lr {scheduler.get_last_lr()[0]:.2e}  "
                f"{time.time() - start:.0f} s"
            )
    return model.eval()
