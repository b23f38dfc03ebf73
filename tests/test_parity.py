"""Faithfulness of the task-A baselines: logits and loss of each method against the
released equations, re-derived here from the raw CLIP modules (token / positional
embeddings, the residual blocks, ln_final, text_projection, conv1, class embedding,
ln_pre, ln_post, proj) and never through LE-CLIP's encoders, hooks or prompt learners.
Small random fp32 CLIPs; every learnable tensor is moved off its initial value first.
"""
import functools
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from clip import clip as clip_api
from yacs.config import CfgNode

from leclip import catalogue
from leclip.adapters import ResidualAdapter
from leclip.backbone import PromptLearner, class_text_features, random_clip, resolve_logit_scale
from leclip.lora import apply_lora
from leclip.ot import sinkhorn
from leclip.trainers.clip_adapter import AdaptedCLIP
from leclip.trainers.clip_lora import LoRACLIP
from leclip.trainers.coop import PromptedCLIP
from leclip.trainers.locoop import LELoCoOp
from leclip.trainers.maple import MaPLeModel
from leclip.trainers.plot import PLOTModel
from leclip.trainers.zsclip import ZeroShotCLIP

CLASSES = ["cat", "golden_retriever", "sea lion"]  # names of 1, 2 and 2 tokens
LABELS = torch.tensor([0, 2, 1])
TOKENIZER = clip_api._tokenizer
SOS, EOS = TOKENIZER.encoder["<|startoftext|>"], TOKENIZER.encoder["<|endoftext|>"]
TOL = dict(rtol=1e-5, atol=1e-5)  # fp32 round-off on logits of size ~10


def encode(text):
    return TOKENIZER.encode(text.replace("_", " "))


def images_for(clip_model, batch=3, seed=0):
    size = clip_model.visual.input_resolution
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def perturb_(*params, seed=1, std=0.05):
    """Move learnable tensors off their initial values (so init equalities hide nothing)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params:
            p.add_(std * torch.randn(p.shape, generator=g))


# ---------------------------------------------------------------- reference CLIP
def sequence(clip_model, slots):
    """SOS, slots (token ids or context vectors [W]), EOS, zero padding ->
    (embeddings [L, W], ids [L]); context slots get id 0, so the EOS stays the argmax."""
    seq = [SOS] + list(slots) + [EOS]
    length = clip_model.positional_embedding.shape[0]
    ids = torch.tensor([s if isinstance(s, int) else 0 for s in seq] + [0] * (length - len(seq)))
    rows = clip_model.token_embedding(ids)
    rows = [s if torch.is_tensor(s) else rows[i] for i, s in enumerate(seq)] + list(rows[len(seq):])
    return torch.stack(rows), ids


def sequences(clip_model, slot_lists):
    embeds, ids = zip(*(sequence(clip_model, s) for s in slot_lists))
    return torch.stack(embeds), torch.stack(ids)


def plain_block(index, block, x):
    return block(x)


def text_tower(clip_model, embeds, ids, deep=(), block_fn=plain_block):
    """CLIP's text tower on embeddings [C, L, W]; deep[i - 1] replaces tokens 1..n before block i."""
    x = (embeds + clip_model.positional_embedding).permute(1, 0, 2)
    for i, block in enumerate(clip_model.transformer.resblocks):
        if 1 <= i <= len(deep):
            n = deep[i - 1].shape[0]
            x = torch.cat([x[:1], deep[i - 1].unsqueeze(1).expand(-1, x.shape[1], -1), x[1 + n :]])
        x = block_fn(i, block, x)
    x = clip_model.ln_final(x.permute(1, 0, 2))
    return x[torch.arange(len(x)), ids.argmax(dim=-1)] @ clip_model.text_projection


def image_tower(clip_model, images, shallow=None, deep=(), block_fn=plain_block):
    """CLIP's ViT: `shallow` [n, W] joins after the positional embedding, before ln_pre;
    deep[i - 1] replaces the last n tokens before block i. Returns the global feature,
    the last block's patch tokens through ln_post / proj, and the last block's input."""
    v = clip_model.visual
    x = v.conv1(images).reshape(len(images), v.conv1.out_channels, -1).permute(0, 2, 1)
    x = torch.cat([v.class_embedding + torch.zeros(len(x), 1, x.shape[-1]), x], dim=1) + v.positional_embedding
    if shallow is not None:
        x = torch.cat([x, shallow.expand(len(x), -1, -1)], dim=1)
    x = v.ln_pre(x).permute(1, 0, 2)
    blocks = v.transformer.resblocks
    for i, block in enumerate(blocks):
        if 1 <= i <= len(deep):
            x = torch.cat([x[: -deep[i - 1].shape[0]], deep[i - 1].unsqueeze(1).expand(-1, x.shape[1], -1)])
        last_input = x
        x = block_fn(i, block, x)
    x = x.permute(1, 0, 2)
    patches = v.positional_embedding.shape[0] - 1
    return v.ln_post(x[:, 0]) @ v.proj, v.ln_post(x[:, 1 : 1 + patches]) @ v.proj, last_input.permute(1, 0, 2)


def cosine_logits(scale, image, text):
    return scale * F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).t()


def exp_scale(clip_model):
    return clip_model.logit_scale.exp().item()


def check_logits_and_loss(logits, expected):
    assert torch.allclose(logits, expected, **TOL)
    assert torch.allclose(F.cross_entropy(logits, LABELS), F.cross_entropy(expected, LABELS), **TOL)


@pytest.fixture(scope="module")
def clip_model():
    return random_clip(vision_layers=2, transformer_layers=2, seed=11)


# ---------------------------------------------------------------- zero-shot CLIP
def test_zero_shot_clip(clip_model):
    template = "a photo of a {}, a type of shape."
    model = ZeroShotCLIP(clip_model, class_text_features(clip_model, CLASSES, template), exp_scale(clip_model))
    images = images_for(clip_model)
    embeds, ids = sequences(clip_model, [encode(template.format(c)) for c in CLASSES])
    expected = cosine_logits(exp_scale(clip_model), image_tower(clip_model, images)[0], text_tower(clip_model, embeds, ids))
    check_logits_and_loss(model(images, model.encode_classes())["logits"], expected)


# ---------------------------------------------------------------- CoOp
def coop_slots(name, ctx, position):
    """The released CoOp prompt of one class: context vectors ctx [n, W] around the name."""
    name_ids, half = encode(name), len(ctx) // 2
    layouts = {
        "end": [*ctx, *name_ids],
        "front": [*name_ids, *ctx],
        "middle": [*ctx[:half], *name_ids, *ctx[half:]],  # odd n: the larger half after the name
    }
    return layouts[position] + encode(".")


def coop_reference(clip_model, ctx, images, position="end"):
    per_class = [ctx[i] if ctx.dim() == 3 else ctx for i in range(len(CLASSES))]
    embeds, ids = sequences(clip_model, [coop_slots(c, k, position) for c, k in zip(CLASSES, per_class)])
    text = text_tower(clip_model, embeds, ids)
    return cosine_logits(exp_scale(clip_model), image_tower(clip_model, images)[0], text)


@pytest.mark.parametrize(
    "position,csc,n_ctx",
    [(p, csc, 4) for p in ("end", "middle", "front") for csc in (False, True)] + [("middle", False, 3), ("middle", True, 3)],
)
def test_coop(clip_model, position, csc, n_ctx):
    learner = PromptLearner(clip_model, CLASSES, n_ctx=n_ctx, csc=csc, class_token_position=position)
    assert learner.ctx.shape == ((len(CLASSES),) if csc else ()) + (n_ctx, clip_model.ln_final.weight.shape[0])
    model = PromptedCLIP(clip_model, learner, exp_scale(clip_model))
    images = images_for(clip_model)
    logits = model(images, model.encode_classes())["logits"]
    check_logits_and_loss(logits, coop_reference(clip_model, learner.ctx.detach(), images, position))


def test_coop_csc_with_ctx_init_learns_one_shared_context_as_released(clip_model, capsys):
    learner = PromptLearner(clip_model, CLASSES, n_ctx=16, ctx_init="a photo of a", csc=True)
    assert "CSC ignored" in capsys.readouterr().out
    words = clip_model.token_embedding(torch.tensor(encode("a photo of a")))
    assert learner.ctx.shape == words.shape and torch.equal(learner.ctx, words)  # N_CTX follows the words
    perturb_(learner.ctx)
    model = PromptedCLIP(clip_model, learner, exp_scale(clip_model))
    images = images_for(clip_model)
    check_logits_and_loss(model(images, model.encode_classes())["logits"], coop_reference(clip_model, learner.ctx.detach(), images))


def test_coop_csc_from_init_copies_the_words_per_class(clip_model):
    learner = PromptLearner(clip_model, CLASSES, ctx_init="a photo of a", csc=True, csc_from_init=True)
    words = clip_model.token_embedding(torch.tensor(encode("a photo of a")))
    assert learner.ctx.shape == (len(CLASSES),) + words.shape
    assert all(torch.equal(c, words) for c in learner.ctx)
    perturb_(learner.ctx)
    model = PromptedCLIP(clip_model, learner, exp_scale(clip_model))
    images = images_for(clip_model)
    check_logits_and_loss(model(images, model.encode_classes())["logits"], coop_reference(clip_model, learner.ctx.detach(), images))
    with pytest.raises(ValueError, match="CSC_FROM_INIT True with CSC=False"):
        PromptLearner(clip_model, CLASSES, ctx_init="a photo of a", csc_from_init=True)


# ---------------------------------------------------------------- LoCoOp
def value_path_tokens(clip_model, last_input):
    """LoCoOp's local features: the last block with attention replaced by its value path."""
    block, v = clip_model.visual.transformer.resblocks[-1], clip_model.visual
    width = last_input.shape[-1]
    w_v, b_v = block.attn.in_proj_weight[2 * width :], block.attn.in_proj_bias[2 * width :]
    y = last_input + block.attn.out_proj(block.ln_1(last_input) @ w_v.t() + b_v)
    y = y + block.mlp(block.ln_2(y))
    return v.ln_post(y[:, 1:]) @ v.proj


def test_locoop_loss_and_gl_mcm(clip_model):
    top_k, lam, scale = 1, 0.25, 40.0  # a scale other than the checkpoint's: GL-MCM works on cosines
    learner = PromptLearner(clip_model, CLASSES, n_ctx=4)
    model = PromptedCLIP(clip_model, learner, scale, local="value")
    images = images_for(clip_model)
    out = model(images, model.encode_classes())

    embeds, ids = sequences(clip_model, [coop_slots(c, learner.ctx.detach(), "end") for c in CLASSES])
    text = F.normalize(text_tower(clip_model, embeds, ids), dim=-1)
    image, _, last_input = image_tower(clip_model, images)
    logits = scale * F.normalize(image, dim=-1) @ text.t()
    local = scale * F.normalize(value_path_tokens(clip_model, last_input), dim=-1) @ text.t()  # [B, M, C]
    assert torch.allclose(out["logits"], logits, **TOL)
    assert torch.allclose(out["local_logits"], local, **TOL)

    # loss = CE - lambda * mean entropy over the regions whose top-K classes miss the label
    entropies = []
    for b in range(len(images)):
        for m in range(local.shape[1]):
            if LABELS[b] not in local[b, m].topk(top_k).indices:
                p = local[b, m].softmax(dim=-1)
                entropies.append(-(p * torch.log(p + 1e-5)).sum())
    assert 0 < len(entropies) < local.shape[0] * local.shape[1]
    expected = F.cross_entropy(logits, LABELS) - lam * torch.stack(entropies).mean()
    trainer = SimpleNamespace(top_k=top_k, cfg=CfgNode({"TRAINER": {"LOCOOP": {"LAMBDA": lam}}}))
    assert LELoCoOp.supervised_loss(trainer, out, LABELS).item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-5)

    # GL-MCM (T = 1): max softmax of the global cosines + max over regions of the local ones
    trainer.forward_eval, trainer.logit_scale = (lambda images, classes: out), scale
    _, score = LELoCoOp.predict(trainer, images, None)
    cos_global, cos_local = logits / scale, local / scale
    expected = cos_global.softmax(-1).max(-1).values + cos_local.softmax(-1).amax(dim=(1, 2))
    assert torch.allclose(score, expected, atol=1e-6)


# ---------------------------------------------------------------- PLOT
def reference_plan(sim, eps=0.1, max_iter=100, thresh=1e-2):
    """The released Sinkhorn on similarities [P, M, N]: cost 1 - sim, uniform marginals,
    stop once the mean change of the row scaling over all P problems is below thresh."""
    p, m, n = sim.shape
    kernel = torch.exp(-(1 - sim) / eps)
    u, v = torch.full((p, m), 1 / m), torch.full((p, n), 1 / n)
    r, c = torch.ones_like(u), torch.ones_like(v)
    for _ in range(max_iter):
        r_prev = r
        r = u / torch.einsum("pmn,pn->pm", kernel, c)
        c = v / torch.einsum("pmn,pm->pn", kernel, r)
        if (r - r_prev).abs().mean() < thresh:
            break
    return r[:, :, None] * kernel * c[:, None, :]


def test_plot_plan_and_logits(clip_model):
    learner = PromptLearner(clip_model, CLASSES, n_ctx=4, n_sets=3)
    model = PLOTModel(clip_model, learner, exp_scale(clip_model))
    images = images_for(clip_model)
    logits = model(images, model.encode_classes())["logits"]

    # set s, class c: SOS ctx[s] name . EOS
    sets = []
    for ctx in learner.ctx.detach():
        embeds, ids = sequences(clip_model, [coop_slots(c, ctx, "end") for c in CLASSES])
        sets.append(F.normalize(text_tower(clip_model, embeds, ids), dim=-1))
    text = torch.stack(sets)  # [N, C, D]
    local = F.normalize(image_tower(clip_model, images)[1], dim=-1)  # [B, M, D]: ViT patch tokens (ours)
    batch, m, _ = local.shape
    sim = torch.einsum("bmd,ncd->bcmn", local, text).reshape(batch * len(CLASSES), m, len(sets))
    plan = reference_plan(sim)
    kernel = torch.exp(-(1 - sim) / 0.1)
    ours = sinkhorn(kernel, torch.full((len(sim), m), 1 / m), torch.full((len(sim), len(sets)), 1 / len(sets)))
    assert torch.allclose(ours, plan, atol=1e-7)
    expected = exp_scale(clip_model) * (plan * sim).sum(dim=(1, 2)).view(batch, len(CLASSES))
    check_logits_and_loss(logits, expected)


# ---------------------------------------------------------------- MaPLe
def maple_reference(clip_model, model, name_prefix, depth, images):
    """Released MaPLe: text [SOS, ctx, rest of "<prefix> <name>."] with the first n tokens
    replaced by ctx; vision prompts proj(ctx) before ln_pre; tower T replaces its prompts
    at blocks 1..min(depth, blocks_T) - 1."""
    ctx = model.prompt_learner.ctx.detach()
    n = len(ctx)
    deep_text = [p.detach() for p in model.deep_text]
    text_depth = min(depth, len(clip_model.transformer.resblocks))
    vision_depth = min(depth, len(clip_model.visual.transformer.resblocks))
    embeds, ids = sequences(clip_model, [[*ctx, *encode(f"{name_prefix} {c}.")[n:]] for c in CLASSES])
    text = text_tower(clip_model, embeds, ids, deep=deep_text[: text_depth - 1])
    weight, bias = model.shallow_proj.weight.detach(), model.shallow_proj.bias.detach()
    deep_vision = [
        deep_text[j] @ model.deep_proj[j].weight.detach().t() + model.deep_proj[j].bias.detach()
        for j in range(vision_depth - 1)
    ]
    image = image_tower(clip_model, images, shallow=ctx @ weight.t() + bias, deep=deep_vision)[0]
    return cosine_logits(exp_scale(clip_model), image, text)


@functools.lru_cache(maxsize=None)
def maple_clip(text_blocks, vision_blocks):  # never modified by the tests: shared
    return random_clip(vision_layers=vision_blocks, transformer_layers=text_blocks, seed=20 + 10 * text_blocks + vision_blocks)


@pytest.mark.parametrize(
    "text_blocks,vision_blocks,depth",
    [(3, 3, 1), (3, 3, 2), (3, 3, 3), (3, 2, 3), (2, 3, 3), (2, 3, 9), (3, 2, 2)],
    ids=["d1", "d2", "full", "text-deeper", "vision-deeper", "d9-vision-deeper", "d2-text-deeper"],
)
def test_maple_depths_per_tower(text_blocks, vision_blocks, depth):
    clip_model = maple_clip(text_blocks, vision_blocks)
    model = MaPLeModel(clip_model, CLASSES, 2, "a photo of a", depth, exp_scale(clip_model))
    text_depth, vision_depth = min(depth, text_blocks), min(depth, vision_blocks)
    assert model.depths == {"text": text_depth, "vision": vision_depth}
    assert len(model.deep_text) == max(text_depth, vision_depth) - 1 and len(model.deep_proj) == vision_depth - 1
    # the deep projections start as copies of one layer
    assert all(torch.equal(p.weight, model.deep_proj[0].weight) and torch.equal(p.bias, model.deep_proj[0].bias) for p in model.deep_proj)
    perturb_(*model.learnable().parameters())
    images = images_for(clip_model)
    logits = model(images, model.encode_classes())["logits"]
    check_logits_and_loss(logits, maple_reference(clip_model, model, "a photo of a", depth, images))


@pytest.mark.parametrize(
    "n_ctx,ctx_init,prefix",
    [
        (2, "a photo of a", "a photo of a"),  # fewer tokens than words: "of a" stays text
        (4, "a photo of a", "a photo of a"),
        (4, "a photo", "a photo"),  # more tokens than words: EOS / pad init, the name's first tokens overwritten
        (5, "a photo of a", "X X X X X"),  # N_CTX > 4: CTX_INIT not used
        (2, "", "X X"),
    ],
)
def test_maple_context_init_rule(n_ctx, ctx_init, prefix, capsys):
    clip_model = maple_clip(3, 2)
    model = MaPLeModel(clip_model, CLASSES, n_ctx, ctx_init, 2, exp_scale(clip_model))
    assert ("is not used" in capsys.readouterr().out) == (ctx_init != "" and n_ctx > 4)
    if prefix == ctx_init:  # the first n tokens of "SOS <words> EOS pad..." (token 0 pads)
        ids = encode(ctx_init) + [EOS] + [0] * n_ctx
        assert torch.equal(model.prompt_learner.ctx, clip_model.token_embedding(torch.tensor(ids[:n_ctx])))
    else:
        assert model.prompt_learner.ctx.std().item() == pytest.approx(0.02, rel=0.5)
    perturb_(*model.learnable().parameters())
    images = images_for(clip_model)
    logits = model(images, model.encode_classes())["logits"]
    check_logits_and_loss(logits, maple_reference(clip_model, model, prefix, 2, images))


# ---------------------------------------------------------------- CLIP-Adapter
def test_clip_adapter(clip_model):
    template = "a photo of a {}."
    width = clip_model.text_projection.shape[1]
    adapter = ResidualAdapter(width, reduction=4, ratio=0.2)
    model = AdaptedCLIP(clip_model, class_text_features(clip_model, CLASSES, template), adapter, exp_scale(clip_model))
    images = images_for(clip_model)
    logits = model(images, model.encode_classes())["logits"]
    f = image_tower(clip_model, images)[0]
    w1, w2 = adapter.fc[0].weight.detach(), adapter.fc[2].weight.detach()
    blended = 0.2 * F.relu(F.relu(f @ w1.t()) @ w2.t()) + 0.8 * f
    embeds, ids = sequences(clip_model, [encode(template.format(c)) for c in CLASSES])
    check_logits_and_loss(logits, cosine_logits(exp_scale(clip_model), blended, text_tower(clip_model, embeds, ids)))


# ---------------------------------------------------------------- CLIP-LoRA
def lora_block_fn(adapters, r, alpha):
    """A residual block whose attention is written out, with W x + b + (alpha / sqrt r) B A x
    on each adapted projection; adapters[i] = {name: (A, B)} for block i."""
    scaling = alpha / math.sqrt(r)

    def run(index, block, x):
        attn, lora = block.attn, adapters[index]
        length, batch, width = x.shape
        heads = attn.num_heads
        h = block.ln_1(x)
        w = dict(zip("qkv", attn.in_proj_weight.chunk(3)))
        b = dict(zip("qkv", attn.in_proj_bias.chunk(3)))

        def project(name, inp, weight, bias):
            out = inp @ weight.t() + bias
            if name in lora:
                a_mat, b_mat = lora[name]
                out = out + scaling * (inp @ a_mat.t()) @ b_mat.t()
            return out

        q, k, v = (project(n, h, w[n], b[n]).reshape(length, batch * heads, width // heads).transpose(0, 1) for n in "qkv")
        scores = q @ k.transpose(1, 2) / math.sqrt(width // heads)
        if block.causal:  # the text tower: token i sees tokens 0..i
            scores = scores + torch.full((length, length), float("-inf")).triu(1)
        mixed = (scores.softmax(dim=-1) @ v).transpose(0, 1).reshape(length, batch, width)
        x = x + project("o", mixed, attn.out_proj.weight, attn.out_proj.bias)
        return x + block.mlp(block.ln_2(x))

    return run


@pytest.mark.parametrize("encoders,params", [(["vision", "text"], ["q", "k", "v"]), (["text"], ["q", "k", "v", "o"])])
def test_clip_lora_after_one_step(encoders, params):
    r, alpha, scale, template = 2, 1.0, 100.0, "a photo of a {}."
    clip_model = random_clip(vision_layers=2, transformer_layers=2, seed=13)
    reference = random_clip(vision_layers=2, transformer_layers=2, seed=13)  # the same weights, never adapted
    clip_model.requires_grad_(False)
    loras = apply_lora(clip_model, encoders, params, r=r, alpha=alpha, dropout=0.0)
    assert loras[0].scaling == pytest.approx(1 / math.sqrt(2))
    tokens = clip_api.tokenize([template.format(c.replace("_", " ")) for c in CLASSES], context_length=clip_model.context_length)
    model = LoRACLIP(clip_model, loras, tokens, scale).train()
    images = images_for(clip_model)
    optim = torch.optim.SGD(loras.parameters(), lr=0.5)
    loss = F.cross_entropy(model(images, model.encode_classes())["logits"], LABELS)
    optim.zero_grad()
    loss.backward()
    optim.step()
    assert all(torch.count_nonzero(lora.B[p]) > 0 for lora in loras for p in params)  # B moved off 0
    assert not torch.allclose(loras[0].B["q"], loras[0].B["k"])

    towers = {"vision": len(reference.visual.transformer.resblocks), "text": len(reference.transformer.resblocks)}
    adapters = {t: [{} for _ in range(n)] for t, n in towers.items()}
    flat = iter(loras)  # apply_lora's order: the towers as listed, blocks in order
    for tower in encoders:
        for block in adapters[tower]:
            lora = next(flat)
            block.update({p: (lora.A[p].detach(), lora.B[p].detach()) for p in params})
    embeds, ids = sequences(reference, [encode(template.format(c)) for c in CLASSES])
    text = text_tower(reference, embeds, ids, block_fn=lora_block_fn(adapters["text"], r, alpha))
    image = image_tower(reference, images, block_fn=lora_block_fn(adapters["vision"], r, alpha))[0]
    with torch.no_grad():
        logits = model(images, model.encode_classes())["logits"]
    check_logits_and_loss(logits, cosine_logits(scale, image, text))


# ---------------------------------------------------------------- released logit scales and prompts
RELEASED_SCALE = {"LEZeroshotCLIP": None, "LECoOp": None, "LELoCoOp": None, "LEPLOT": None, "LEMaPLe": None,
                  "LECLIPAdapter": None, "LECLIPLoRA": 100.0}  # None: the checkpoint's exp(logit_scale)


@pytest.mark.parametrize("recipe", ["vit_b16", "synth"])
def test_recipes_use_each_methods_released_logit_scale_and_prompt(clip_model, recipe):
    for trainer, released in RELEASED_SCALE.items():
        cfg = catalogue.setup_cfg(f"{catalogue.REPO}/configs/trainers/{trainer}/{recipe}.yaml")
        scale = resolve_logit_scale(clip_model, cfg.TRAINER.LOGIT_SCALE)
        assert scale == pytest.approx(released or exp_scale(clip_model)), trainer
    assert cfg.TRAINER.CLIP_LORA.TEMPLATE == "a photo of a {}."
