"""LoRA on the q, k, v (and output) projections of CLIP's attention, without patching clip.

Zanella & Ben Ayed, "Low-Rank Few-Shot Adaptation of Vision-Language Models" (CLIP-LoRA).
As released: delta W = B A scaled by alpha / sqrt(r), A Kaiming-uniform (a = sqrt(5)),
B zero (so the model is exactly the frozen one at initialisation), dropout on the LoRA
input (an independent mask per projection, in training only). Each adapted projection
has its own A, B; "o" is the attention's output projection (the release's option, off by
default). Each `nn.MultiheadAttention` of the chosen towers is replaced by
`LoRAAttention`, which computes the same attention from the frozen in/out projections
plus the deltas.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

PROJECTIONS = ("q", "k", "v", "o")


class LoRAProjections(nn.Module):
    """The trainable A, B pairs of one attention layer."""

    def __init__(self, width, r, alpha, dropout, params):
        super().__init__()
        unknown = set(params) - set(PROJECTIONS)
        if unknown:
            raise ValueError(f"LoRA params {sorted(unknown)}: use a subset of {PROJECTIONS}")
        self.params = tuple(params)
        self.scaling = alpha / math.sqrt(r)
        self.dropout = nn.Dropout(dropout)
        self.A = nn.ParameterDict({p: nn.Parameter(torch.empty(r, width)) for p in self.params})
        self.B = nn.ParameterDict({p: nn.Parameter(torch.zeros(width, r)) for p in self.params})
        for a in self.A.values():
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))

    def delta(self, name, x):
        if name not in self.params:
            return 0
        # B A formed first, as released: the same round-off as the official layer
        return (self.dropout(x) @ (self.B[name] @ self.A[name]).t()) * self.scaling


class LoRAAttention(nn.Module):
    """Drop-in for clip's self-attention call `attn(x, x, x, need_weights, attn_mask)`."""

    def __init__(self, base, lora):
        super().__init__()
        self.base = base
        self.lora = lora

    def forward(self, query, key=None, value=None, need_weights=False, attn_mask=None):
        x = query  # [L, B, W]; clip only uses self-attention
        length, batch, width = x.shape
        heads = self.base.num_heads
        w_q, w_k, w_v = self.base.in_proj_weight.chunk(3)
        b_q, b_k, b_v = self.base.in_proj_bias.chunk(3)
        q = F.linear(x, w_q, b_q) + self.lora.delta("q", x)
        k = F.linear(x, w_k, b_k) + self.lora.delta("k", x)
        v = F.linear(x, w_v, b_v) + self.lora.delta("v", x)

        def heads_first(t):
            return t.view(length, batch, heads, width // heads).permute(1, 2, 0, 3)

        if attn_mask is not None:
            attn_mask = attn_mask.to(q.dtype)
        out = F.scaled_dot_product_attention(heads_first(q), heads_first(k), heads_first(v), attn_mask=attn_mask)
        out = out.permute(2, 0, 1, 3).reshape(length, batch, width)
        return self.base.out_proj(out) + self.lora.delta("o", out), None


def apply_lora(clip_model, encoders=("vision", "text"), params=("q", "k", "v"), r=2, alpha=1, dropout=0.25):
    """Wrap every attention layer of the chosen towers; returns the LoRA modules."""
    towers = {"vision": clip_model.visual, "text": clip_model}
    loras = nn.ModuleList()
    for name in encoders:
        if name not in towers:
            raise ValueError(f"LoRA encoder {name!r}: use vision and/or text")
        tower = towers[name]
        if not hasattr(tower, "transformer"):
            raise ValueError("CLIP-LoRA's vision LoRA needs a ViT CLIP backbone (e.g. ViT-B/16)")
        for block in tower.transformer.resblocks:
            lora = LoRAProjections(block.attn.embed_dim, r, alpha, dropout, params)
            block.attn = LoRAAttention(block.attn, lora)
            loras.append(lora)
    return loras
