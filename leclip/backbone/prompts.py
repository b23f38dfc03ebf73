"""Prompt pieces shared by CoOp, CFSG-CLIP, LoCoOp, PLOT and MaPLe.

`PromptLearner` follows CoOp: learnable context vectors (N(0, 0.02) or the embedding of
`ctx_init` words) placed before, around or after the class-name tokens, with the SOS
prefix and the "<name>." + EOS suffix kept as fixed buffers. `n_sets > 1` gives PLOT's
N independent context sets.

Class-specific contexts (`csc`) with `ctx_init`: the official CoOp never reads CSC when
CTX_INIT is set, so one context shared by all classes is learned; that is the default
here too. `csc_from_init=True` (ours) gives each class its own copy of the init words.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from clip import clip as clip_api

from . import shared_prefix
from .encoders import TextEncoder

POSITIONS = ("end", "middle", "front")


def clean_name(name):
    return name.replace("_", " ")


@torch.no_grad()
def class_text_features(clip_model, classnames, template="a photo of a {}.", device="cpu"):
    """Normalised zero-shot text features [C, D] of `template` filled with each class."""
    encoder = TextEncoder(clip_model)
    tokens = encoder.tokenize([template.format(clean_name(c)) for c in classnames]).to(device)
    features = encoder(encoder.token_embed(tokens), tokens)
    return F.normalize(features.float(), dim=-1)


class PromptLearner(nn.Module):
    def __init__(
        self,
        clip_model,
        classnames,
        n_ctx=16,
        ctx_init="",
        csc=False,
        class_token_position="end",
        n_sets=1,
        learn_init_prefix=False,
        csc_from_init=False,
    ):
        """`learn_init_prefix` (MaPLe): with ctx_init, only its first n_ctx tokens are
        learnable and the rest of the init words stay fixed text. `csc_from_init`
        (ours): with csc and ctx_init, class-specific copies of the init words instead
        of the official shared context."""
        super().__init__()
        if class_token_position not in POSITIONS:
            raise ValueError(f"CLASS_TOKEN_POSITION={class_token_position!r}: use one of {POSITIONS}")
        if csc_from_init and not (csc and ctx_init):
            raise ValueError(
                f"CSC_FROM_INIT True with CSC={csc} and CTX_INIT={ctx_init!r}: it only applies with CSC True "
                "and CTX_INIT set; set CSC_FROM_INIT False"
            )
        if csc and ctx_init and not csc_from_init:
            print(
                f"CSC ignored with CTX_INIT {ctx_init!r} (as in the official CoOp): one context shared by all "
                "classes; CSC_FROM_INIT True gives class-specific copies of the init words"
            )
            csc = False
        encoder = TextEncoder(clip_model)
        names = [clean_name(c) for c in classnames]
        self.n_cls, self.n_sets = len(names), n_sets
        self.class_token_position = class_token_position

        if ctx_init:
            ctx_init = clean_name(ctx_init)
            if not learn_init_prefix:
                n_ctx = len(ctx_init.split(" "))
            with torch.no_grad():
                init = encoder.token_embed(encoder.tokenize([ctx_init]))[0, 1 : 1 + n_ctx]
            prefix_words = ctx_init
        else:
            init = None
            prefix_words = " ".join(["X"] * n_ctx)
        self.n_ctx = n_ctx

        shape = [n_ctx, encoder.width]
        if csc:
            shape.insert(0, self.n_cls)
        if n_sets > 1:
            shape.insert(0, n_sets)
        if init is None:
            ctx = torch.empty(*shape).normal_(std=0.02)
        else:
            ctx = init.expand(*shape).clone()
        self.ctx = nn.Parameter(ctx)

        prompts = [f"{prefix_words} {name}." for name in names]
        longest = max(len(clip_api._tokenizer.encode(p)) for p in prompts) + 2  # SOS, EOS
        if longest > encoder.context_length:
            raise ValueError(
                f"Prompts of {n_ctx} context tokens plus the longest class name need {longest} tokens, "
                f"more than this CLIP's context length {encoder.context_length}: lower N_CTX"
            )
        tokenized = encoder.tokenize(prompts)
        with torch.no_grad():
            embedding = encoder.token_embed(tokenized)
        self.register_buffer("token_prefix", embedding[:, :1], persistent=False)  # SOS
        self.register_buffer("token_suffix", embedding[:, 1 + n_ctx :], persistent=False)  # name . EOS
        self.register_buffer("tokenized_prompts", tokenized.repeat(n_sets, 1), persistent=False)
        self.name_lens = [len(clip_api._tokenizer.encode(name)) for name in names]
        self.shared_length = 0 if csc else self._shared_length(tokenized)

    def _shared_length(self, tokenized):
        """How many leading positions are the same for every class with one shared context:
        SOS, the context before the class name, and (class token at the end) the fixed
        words after the context that every prompt has (MaPLe's "of a"); never past an EOT."""
        if self.class_token_position == "front":
            return 1
        if self.class_token_position == "middle":
            return 1 + self.n_ctx // 2
        length = 1 + self.n_ctx
        after = tokenized[:, length:]
        same = (after == after[:1]).all(dim=0).long()
        length += int(same.cumprod(dim=0).sum())
        return min(length, int(tokenized.argmax(dim=-1).min()))

    def _assemble(self, ctx):
        """ctx [n_ctx, W] or [C, n_ctx, W] -> prompt embeddings [C, L, W]."""
        if ctx.dim() == 2:
            ctx = ctx.unsqueeze(0).expand(self.n_cls, -1, -1)
        prefix, suffix = self.token_prefix, self.token_suffix
        if self.class_token_position == "end":
            return torch.cat([prefix, ctx, suffix], dim=1)
        prompts = []
        half = self.n_ctx // 2
        for i, name_len in enumerate(self.name_lens):
            name, rest = suffix[i : i + 1, :name_len], suffix[i : i + 1, name_len:]
            if self.class_token_position == "middle":
                parts = [prefix[i : i + 1], ctx[i : i + 1, :half], name, ctx[i : i + 1, half:], rest]
            else:  # front
                parts = [prefix[i : i + 1], name, ctx[i : i + 1], rest]
            prompts.append(torch.cat(parts, dim=1))
        return torch.cat(prompts, dim=0)

    def forward(self):
        """(prompt embeddings [n_sets*C, L, W], token ids [n_sets*C, L])."""
        if self.n_sets == 1:
            prompts = self._assemble(self.ctx)
        else:
            prompts = torch.cat([self._assemble(c) for c in self.ctx], dim=0)
        # each set's prompts share their first `shared_length` positions: the text encoder runs them once
        return shared_prefix.mark(prompts, self.shared_length, self.n_cls), self.tokenized_prompts
