"""Shared-prefix text encoding: the class-independent start of the prompts runs once.

With the causal text mask a token's hidden state depends only on the tokens before it.
When every prompt of a block of rows starts with the same tokens (SOS, a shared learned
context, fixed words such as MaPLe's "of a"), their hidden states are the same at every
layer: the prefix runs once per block (a batch of one for CoOp, one per set for PLOT),
its keys and values are kept per layer, and only each class's suffix (the class name,
the period, EOT) runs, attending to them. The same numbers up to float rounding (the
matrix shapes differ); gradients reach the context through the one prefix, summed over
the classes as the full encoder's `expand` sums them. Suffixes of the same length run as
one batch, each only up to its EOT, so no padding position runs either.

A prompt learner says which rows share which prefix by marking the embeddings tensor it
returns (`mark`); any operation on that tensor (cat, clone, .to()) gives a new tensor
without the mark, which the text encoder then runs in full. So the mark can only be
wrong if the marked tensor is edited in place.
"""
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

ATTRIBUTE = "_leclip_shared_prefix"


@dataclass(frozen=True)
class SharedPrefix:
    """Rows come in consecutive blocks of `rows`; within a block, positions 0..length-1
    are the same embeddings for every row (taken from the block's first row)."""

    length: int
    rows: int


def mark(prompt_embeds, length, rows):
    """Marks prompt embeddings [G * rows, L, W] as sharing their first `length` positions
    within each block of `rows` rows; returns the tensor. A length below 2 (SOS only)
    saves nothing: no mark."""
    if length >= 2:
        setattr(prompt_embeds, ATTRIBUTE, SharedPrefix(int(length), int(rows)))
    return prompt_embeds


def concat(*prompts):
    """(embeds, tokens) of several prompt learners -> one (embeds, tokens) for one text
    pass, keeping the shared prefix (the shortest one) when every part has one with the
    same block size."""
    embeds = torch.cat([e for e, _ in prompts])
    tokens = torch.cat([t for _, t in prompts])
    marks = [getattr(e, ATTRIBUTE, None) for e, _ in prompts]
    if all(m is not None for m in marks) and len({m.rows for m in marks}) == 1:
        mark(embeds, min(m.length for m in marks), marks[0].rows)
    return embeds, tokens


def plan(prompt_embeds, eot, blocks, token_hook):
    """The SharedPrefix to use for this call, or None (run the full encoder): the mark is
    there, every EOT falls after the prefix, the blocks are plain causal CLIP blocks, and
    the hook (if any) only writes shared tokens inside the prefix."""
    shared = getattr(prompt_embeds, ATTRIBUTE, None)
    if shared is None or prompt_embeds.shape[0] % shared.rows:
        return None
    if int(eot.min()) < shared.length:
        return None
    if not all(type(b.attn) is nn.MultiheadAttention and getattr(b, "causal", False) for b in blocks):
        return None  # e.g. LoRA-wrapped attention: its own projections
    if token_hook is not None and not getattr(token_hook, "writes_shared_tokens_before", lambda n: False)(
        shared.length
    ):
        return None
    return shared


def heads_first(t, heads):
    """[B, L, W] -> [B, heads, L, W / heads]."""
    return t.view(t.shape[0], t.shape[1], heads, -1).transpose(1, 2)


def block_after(block, x, past=None, last=None):
    """One causal CLIP block on batch-first x [B, L, W] whose positions follow `past`
    (keys, values) [B, P, W] of earlier positions (None: x starts the sequence).
    Returns (output, (keys, values) of x): the output [B, L, W], or with `last` only that
    of the last `last` positions (their queries, out_proj and MLP; 0: no output)."""
    attn = block.attn
    width, length = x.shape[-1], x.shape[1]
    h = block.ln_1(x)
    k, v = F.linear(h, attn.in_proj_weight[width:], attn.in_proj_bias[width:]).chunk(2, dim=-1)
    if last == 0:
        return None, (k, v)
    rows = length if last is None else last
    x, h = x[:, length - rows :], h[:, length - rows :]
    q = F.linear(h, attn.in_proj_weight[:width], attn.in_proj_bias[:width])
    allowed = torch.ones(length, length, dtype=torch.bool, device=x.device).tril_()[length - rows :]
    keys, values = k, v
    if past is not None:
        keys, values = torch.cat([past[0], k], dim=1), torch.cat([past[1], v], dim=1)
        allowed = torch.cat([allowed.new_ones(rows, past[0].shape[1]), allowed], dim=1)
    heads = attn.num_heads
    out = F.scaled_dot_product_attention(
        heads_first(q, heads), heads_first(keys, heads), heads_first(values, heads), attn_mask=allowed
    )
    x = x + attn.out_proj(out.transpose(1, 2).reshape(x.shape))
    return x + block.mlp(block.ln_2(x)), (k, v)


def run_shared(blocks, x, eot, shared, token_hook=None):
    """x [G * rows, L, W] (positional embedding added) -> each row's last-block state at
    its EOT, [G * rows, W]. The prefix runs once per block of rows (its rows are
    x[::rows]) and the hook sees only the prefix; the suffixes run in buckets of equal
    length, each up to its own EOT (no padding position runs). In the last block only the
    keys and values of the prefix and the EOT's output are needed."""
    n, start = x.shape[0], shared.length
    group = torch.arange(n, device=x.device) // shared.rows
    ends = eot - start + 1  # suffix positions each row needs
    buckets = [(ends == e).nonzero().squeeze(1) for e in ends.unique().tolist()]
    prefix = x[:: shared.rows, :start]
    suffixes = [x[rows, start : start + int(ends[rows[0]])] for rows in buckets]
    final = len(blocks) - 1
    for index, block in enumerate(blocks):
        if token_hook is not None:
            prefix = token_hook(index, prefix)
        prefix, (k, v) = block_after(block, prefix, last=0 if index == final else None)
        suffixes = [
            block_after(block, s, (k[group[rows]], v[group[rows]]), last=1 if index == final else None)[0]
            for rows, s in zip(buckets, suffixes)
        ]
    # back to the rows' order
    return torch.cat([s[:, -1] for s in suffixes])[torch.cat(buckets).argsort()]
