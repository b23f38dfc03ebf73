"""CLIP encoders with the hooks prompt methods need, without patching the clip package.

`TextEncoder` takes prompt embeddings instead of token ids. `ImageEncoder` returns the
global feature and the per-patch features in the joint space (`ln_post` then `proj`).
Both run their transformer block by block and call `token_hook(block_index, x)` before
each block with `x` batch-first [B, L, W]; the image side also calls it with index -1
on the embedded tokens (class token, patches, positional embedding) before `ln_pre`.
One mechanism for deep prompts (MaPLe: its first-layer vision prompts join at -1, so
`ln_pre` normalises them too, as released), appended prompt tokens and CFSG-CLIP's
visual-semantic injection (blocks 0..D-1).
"""
import contextlib

import torch
import torch.nn as nn
import torch.nn.functional as F
from clip import clip as clip_api

from . import shared_prefix
from .model import causal_length


def autocast(device, prec="amp"):
    """AMP on CUDA (fp16) when prec is amp/fp16; fp32 (a no-op context) on CPU."""
    device = torch.device(device)
    if device.type == "cuda" and prec in ("amp", "fp16"):
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def resolve_logit_scale(clip_model, setting="model"):
    """The logit scale (TRAINER.LOGIT_SCALE) as a float: "model" = the checkpoint's
    exp(logit_scale) (100 for OpenAI's CLIP weights), or a positive number."""
    if setting == "model":
        return float(clip_model.logit_scale.detach().exp())
    try:
        value = float(setting)
    except (TypeError, ValueError):
        value = -1.0
    if not value > 0:
        raise ValueError(f"TRAINER.LOGIT_SCALE={setting!r}: use \"model\" or a positive number such as 100")
    return value


def run_blocks(blocks, x, token_hook=None):
    """Run clip residual blocks on batch-first x, calling the hook before each block."""
    for index, block in enumerate(blocks):
        if token_hook is not None:
            x = token_hook(index, x)
        # clip's blocks are sequence-first
        x = block(x.permute(1, 0, 2)).permute(1, 0, 2)
    return x


def value_path(block, x):
    """The block's output when attention is replaced by its value projection (no mixing
    between tokens): keeps each patch's own content. x is batch-first [B, L, W]."""
    width = x.shape[-1]
    attn = block.attn
    v = F.linear(block.ln_1(x), attn.in_proj_weight[2 * width :], attn.in_proj_bias[2 * width :])
    v = attn.out_proj(v) + x
    return v + block.mlp(block.ln_2(v))


def class_token_output(block, x):
    """The block's output at the class token only, [B, W] (all a global feature reads):
    keys and values of every token, but the query, out_proj and MLP of one token.
    x is batch-first [B, L, W]; the block's attention is unmasked (image side)."""
    attn = block.attn
    width = x.shape[-1]
    h = block.ln_1(x)
    q = F.linear(h[:, :1], attn.in_proj_weight[:width], attn.in_proj_bias[:width])
    k, v = F.linear(h, attn.in_proj_weight[width:], attn.in_proj_bias[width:]).chunk(2, dim=-1)
    heads = attn.num_heads

    def split(t):
        return t.view(t.shape[0], t.shape[1], heads, -1).transpose(1, 2)

    out = F.scaled_dot_product_attention(split(q), split(k), split(v)).transpose(1, 2).reshape(-1, width)
    y = x[:, 0] + attn.out_proj(out)
    return y + block.mlp(block.ln_2(y))


class TextEncoder(nn.Module):
    """Prompt embeddings [C, L, W] -> text features [C, D] (not normalised).

    Only the positions up to the longest prompt's EOT run through the transformer
    (`causal_length`: with causal attention the padding after it reaches no feature), so a
    CoOp prompt of ~20 tokens costs 20 positions, not the context length (77). Hooks on the
    text side may only replace tokens before the EOT (MaPLe's deep prompts at 1..n_ctx):
    the causal mask and the EOT position assume the sequence length is unchanged.
    Embeddings a prompt learner marked as sharing a prefix (`shared_prefix.mark`) run
    that prefix once (see shared_prefix.py); the features are the same.
    """

    def __init__(self, clip_model):
        super().__init__()
        self.transformer = clip_model.transformer
        self.positional_embedding = clip_model.positional_embedding
        self.ln_final = clip_model.ln_final
        self.text_projection = clip_model.text_projection
        self.token_embedding = clip_model.token_embedding
        self.context_length = clip_model.positional_embedding.shape[0]

    @property
    def width(self):
        return self.ln_final.weight.shape[0]

    @property
    def num_blocks(self):
        return len(self.transformer.resblocks)

    def tokenize(self, texts):
        return clip_api.tokenize(texts, context_length=self.context_length, truncate=True).to(
            self.positional_embedding.device
        )

    def token_embed(self, tokenized):
        return self.token_embedding(tokenized).to(self.positional_embedding.dtype)

    def forward(self, prompt_embeds, tokenized, token_hook=None):
        length = causal_length(tokenized)
        eot = tokenized.argmax(dim=-1)  # the EOT token has the largest id
        blocks = self.transformer.resblocks
        x = prompt_embeds[:, :length] + self.positional_embedding[:length].to(prompt_embeds.dtype)
        shared = shared_prefix.plan(prompt_embeds, eot, blocks, token_hook)
        if shared is None:
            x = run_blocks(blocks, x, token_hook)[torch.arange(x.shape[0], device=x.device), eot]
        else:  # the prefix once per block of rows, then each prompt's suffix
            x = shared_prefix.run_shared(blocks, x, eot, shared, token_hook)
        # ln_final is per token: pooling the EOT first changes nothing
        return self.ln_final(x) @ self.text_projection


class ImageEncoder(nn.Module):
    """Images -> (global feature [B, D], patch features [B, N, D]) for a ViT CLIP."""

    def __init__(self, clip_model):
        super().__init__()
        self.visual = clip_model.visual
        self.is_vit = hasattr(self.visual, "conv1") and hasattr(self.visual, "class_embedding")

    def require_vit(self, method):
        if not self.is_vit:
            raise ValueError(
                f"{method} needs a ViT CLIP backbone (patch tokens and token hooks); "
                "ResNet backbones are not supported: use e.g. MODEL.BACKBONE.NAME ViT-B/16"
            )

    @property
    def dtype(self):
        return self.visual.conv1.weight.dtype

    @property
    def width(self):
        return self.visual.conv1.weight.shape[0]

    @property
    def num_blocks(self):
        return len(self.visual.transformer.resblocks)

    @property
    def num_patches(self):
        return self.visual.positional_embedding.shape[0] - 1

    @property
    def output_dim(self):
        return self.visual.proj.shape[1] if self.is_vit else self.visual.output_dim

    def embed(self, images, token_hook=None):
        """Patch embedding + class token + positional embedding, `token_hook(-1, x)`,
        then ln_pre: [B, 1+N, W] plus any tokens the hook appends."""
        v = self.visual
        x = v.conv1(images.to(self.dtype)).flatten(2).permute(0, 2, 1)
        cls = v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype)
        if token_hook is not None:
            x = token_hook(-1, x)
        return v.ln_pre(x)

    LOCAL_FEATURES = ("tokens", "value")

    def forward(self, images, token_hook=None, patches=True, local="tokens"):
        """`local`: "tokens" (the last block's patch tokens) or "value" (the value path
        of the last block, as LoCoOp / GL-MCM take it)."""
        if not self.is_vit:
            if token_hook is not None or patches:
                self.require_vit("Patch features and token hooks")
            return self.visual(images.to(self.dtype)), None
        if local not in self.LOCAL_FEATURES:
            raise ValueError(f"Local features {local!r}: use one of {self.LOCAL_FEATURES}")
        blocks = self.visual.transformer.resblocks
        x = run_blocks(blocks[:-1], self.embed(images, token_hook), token_hook)
        if token_hook is not None:
            x = token_hook(len(blocks) - 1, x)
        n = 1 + self.num_patches  # hook tokens sit after the patches and are never patches
        last = blocks[-1]
        # without the last block's patch tokens, it runs for the class token alone
        # (a LoRA-wrapped attention has its own projections: the full block)
        if type(last.attn) is nn.MultiheadAttention and (not patches or local == "value"):
            global_feature = self.visual.ln_post(class_token_output(last, x)) @ self.visual.proj
            if not patches:
                return global_feature, None
            source = value_path(last, x[:, 1:n])  # per token: the patches alone
        else:
            source = run_blocks(blocks[-1:], x)
            global_feature = self.visual.ln_post(source[:, 0]) @ self.visual.proj
            if not patches:
                return global_feature, None
            source = (source if local == "tokens" else value_path(last, x))[:, 1:n]
        return global_feature, self.visual.ln_post(source) @ self.visual.proj


def block_tokens(per_block, index, x):
    """The tokens listed for this block as [B, n, W] in x's dtype, or None."""
    tokens = per_block.get(index)
    if tokens is None:
        return None
    if tokens.dim() == 2:
        tokens = tokens.unsqueeze(0).expand(x.shape[0], -1, -1)
    return tokens.to(x.dtype)


class DeepTokens:
    """Token hook: extra tokens appended, then replaced or concatenated per block.

    `per_block` maps block index -> tokens [n, W] or [B, n, W]; index -1 is the image
    side's embedded tokens before `ln_pre` (MaPLe's first-layer prompts). At the first
    listed index the tokens are appended at the end of the sequence; at a later listed
    block `replace` overwrites the last n tokens, `concat` appends them again; unlisted
    blocks let the tokens flow on.
    """

    MODES = ("replace", "concat")

    def __init__(self, per_block, mode="replace"):
        if mode not in self.MODES:
            raise ValueError(f"DeepTokens mode {mode!r}: use one of {self.MODES}")
        self.per_block = per_block
        self.mode = mode
        self.first = min(per_block) if per_block else None

    def __call__(self, index, x):
        tokens = block_tokens(self.per_block, index, x)
        if tokens is None:
            return x
        if index == self.first or self.mode == "concat":
            return torch.cat([x, tokens], dim=1)
        return torch.cat([x[:, : -tokens.shape[1]], tokens], dim=1)


class ReplaceAt:
    """Token hook: at the listed blocks, overwrite x[:, start:start+n] (MaPLe's text side)."""

    def __init__(self, per_block, start=1):
        self.per_block = per_block
        self.start = start

    def writes_shared_tokens_before(self, length):
        """Whether every write is one set of tokens for all prompts, inside positions
        0..length-1 (then a shared prefix of that length stays shared)."""
        return all(t.dim() == 2 and self.start + t.shape[0] <= length for t in self.per_block.values())

    def __call__(self, index, x):
        tokens = block_tokens(self.per_block, index, x)
        if tokens is None:
            return x
        end = self.start + tokens.shape[1]
        return torch.cat([x[:, : self.start], tokens, x[:, end:]], dim=1)
