"""Each baseline trainer's config keys reach the part they configure (test_wiring's tiny
CLIP, stand-in dataset and hand compositions): prompt learners, PLOT's transport, MaPLe's
depths, the adapter, LoRA; each bad value is refused with the key named, edge values pass."""
import pytest
import torch
import torch.nn.functional as F

from leclip.backbone import ImageEncoder, PromptLearner, TextEncoder, class_text_features
from leclip.lora import apply_lora
from leclip.ot import ot_similarity
from test_wiring import (  # noqa: F401 (backbone: a fixture)
    CLASSES, SCALE, TOL, backbone, build, cosine_logits, fresh_clip, hand_logits, images, perturb_,
)

# ---------------------------------------------------------------- the keys that build each model
def test_coop_keys_reach_the_prompt_learner(backbone, tmp_path):
    keys = {"N_CTX": 3, "CSC": True, "CLASS_TOKEN_POSITION": "middle"}
    opts = [item for k, v in keys.items() for item in (f"TRAINER.COOP.{k}", str(v))]
    trainer = build(backbone, tmp_path, "LECoOp", opts)
    reference = PromptLearner(fresh_clip(backbone), CLASSES, n_ctx=3, csc=True, class_token_position="middle")
    reference.load_state_dict(trainer.model.prompt_learner.state_dict())  # csc, n_ctx: the shapes
    embeds, tokens = reference()
    got_embeds, got_tokens = trainer.model.prompt_learner()
    assert torch.equal(got_tokens, tokens) and torch.allclose(got_embeds, embeds)  # position: the layout


@pytest.mark.parametrize("name,node", [("LELoCoOp", "LOCOOP"), ("LEPLOT", "PLOT")])
def test_coop_style_prompt_keys_of_locoop_and_plot(backbone, tmp_path, name, node):
    opts = [f"TRAINER.{node}.N_CTX", "3", f"TRAINER.{node}.CSC", "True", f"TRAINER.{node}.CLASS_TOKEN_POSITION", "front"]
    if name == "LEPLOT":
        opts += ["TRAINER.PLOT.N", "2"]
    trainer = build(backbone, tmp_path, name, opts)
    reference = PromptLearner(fresh_clip(backbone), CLASSES, n_ctx=3, csc=True, class_token_position="front",
                              n_sets=2 if name == "LEPLOT" else 1)
    reference.load_state_dict(trainer.model.prompt_learner.state_dict())
    assert torch.allclose(trainer.model.prompt_learner()[0], reference()[0])


@pytest.mark.parametrize("name,node", [("LECoOp", "COOP"), ("LELoCoOp", "LOCOOP"), ("LEPLOT", "PLOT")])
@pytest.mark.parametrize("csc_from_init", [False, True])
def test_ctx_init_and_csc_from_init_reach_the_prompt_learner(backbone, tmp_path, name, node, csc_from_init):
    opts = [f"TRAINER.{node}.CTX_INIT", "a photo of a", f"TRAINER.{node}.CSC", "True",
            f"TRAINER.{node}.CSC_FROM_INIT", str(csc_from_init)] + (["TRAINER.PLOT.N", "1"] if name == "LEPLOT" else [])
    trainer = build(backbone, tmp_path, name, opts)
    reference = PromptLearner(fresh_clip(backbone), CLASSES, ctx_init="a photo of a", csc=True, csc_from_init=csc_from_init)
    assert torch.equal(trainer.model.prompt_learner.ctx, reference.ctx)


@pytest.mark.parametrize("name,registered", [("LECoOp", "prompt_learner"), ("LELoCoOp", "prompt_learner"), ("LEPLOT", "prompt_learner"),
                                             ("LEMaPLe", "multimodal_prompts"), ("LECLIPAdapter", "adapter"), ("LECLIPLoRA", "lora")])
def test_the_learnable_module_is_registered_under_its_checkpoint_name(backbone, tmp_path, name, registered):
    """The name is the checkpoint folder (output/<name>/model.pth.tar-N) that --eval-only --model-dir reads."""
    assert build(backbone, tmp_path, name).get_model_names() == [registered]


@pytest.mark.parametrize("eps,max_iter", [(0.05, 1), (0.5, 100)])
def test_plot_keys_reach_the_transport(backbone, tmp_path, eps, max_iter):
    """N, EPS, MAX_ITER: the logits are those of this transport and differ from the
    transport with the other iteration cap and with the default EPS."""
    opts = ["TRAINER.PLOT.N", "3", "TRAINER.PLOT.EPS", str(eps), "TRAINER.PLOT.MAX_ITER", str(max_iter)]
    trainer = build(backbone, tmp_path, "LEPLOT", opts)
    perturb_(trainer.model)
    assert trainer.model.prompt_learner.ctx.shape[0] == 3
    x = images(trainer, 4)
    got = trainer.model(x, trainer.encode_classes())["logits"]
    assert torch.allclose(got, hand_logits(trainer, "LEPLOT", x)["logits"], **TOL)
    patches, prompts = ImageEncoder(trainer.clip_model)(x)[1], trainer.encode_classes()
    other_cap = 100 if max_iter == 1 else 1
    for other in (ot_similarity(patches, prompts, eps, other_cap), ot_similarity(patches, prompts, 0.1, max_iter)):
        assert not torch.allclose(got, SCALE * other, rtol=0, atol=1e-6)


@pytest.mark.parametrize("n_ctx,ctx_init,depth", [(2, "a photo of a", 2), (3, "a photo", 1), (2, "", 9)])
def test_maple_keys(backbone, tmp_path, n_ctx, ctx_init, depth):
    opts = ["TRAINER.MAPLE.N_CTX", str(n_ctx), "TRAINER.MAPLE.CTX_INIT", ctx_init, "TRAINER.MAPLE.PROMPT_DEPTH", str(depth)]
    trainer = build(backbone, tmp_path, "LEMaPLe", opts)
    model = trainer.model
    assert model.depths == {"text": min(depth, 2), "vision": min(depth, 2)}
    assert len(model.deep_text) == min(depth, 2) - 1 == len(model.deep_proj)
    reference = PromptLearner(fresh_clip(backbone), CLASSES, n_ctx=n_ctx, ctx_init=ctx_init, learn_init_prefix=True)
    if ctx_init:
        assert torch.equal(model.prompt_learner.ctx, reference.ctx)
    assert torch.equal(model.prompt_learner()[1], reference()[1])  # the tokens: prefix words + names
    perturb_(model)
    x = images(trainer, 5)
    assert torch.allclose(model(x, trainer.encode_classes())["logits"], hand_logits(trainer, "LEMaPLe", x)["logits"], **TOL)


@pytest.mark.parametrize("ratio,reduction", [(0.2, 4), (0.6, 2)])
def test_clip_adapter_keys(backbone, tmp_path, ratio, reduction):
    opts = ["TRAINER.CLIP_ADAPTER.RATIO", str(ratio), "TRAINER.CLIP_ADAPTER.REDUCTION", str(reduction)]
    trainer = build(backbone, tmp_path, "LECLIPAdapter", opts)
    assert trainer.model.adapter.fc[0].weight.shape == (32 // reduction, 32)
    perturb_(trainer.model)
    x = images(trainer, 6)
    got = trainer.model(x, trainer.encode_classes())["logits"]
    f = trainer.clip_model.encode_image(x)
    a = trainer.model.adapter.fc
    blended = ratio * F.relu(a[2](F.relu(a[0](f)))) + (1 - ratio) * f
    text = class_text_features(trainer.clip_model, CLASSES, trainer.cfg.DATASET.PROMPT_TEMPLATE, device=trainer.device)
    assert torch.allclose(got, cosine_logits(blended, text), **TOL)


@pytest.mark.parametrize(
    "keys",
    [
        {"R": 3, "ALPHA": 2.0, "ENCODERS": ["text"], "PARAMS": ["q", "v", "o"], "TEMPLATE": "an image of a {}"},
        {"R": 2, "ALPHA": 1.0, "ENCODERS": ["vision"], "PARAMS": ["k"], "TEMPLATE": ""},
    ],
)
def test_clip_lora_keys(backbone, tmp_path, keys):
    opts = ["TRAINER.CLIP_LORA.DROPOUT", "0.0"]
    for k, v in keys.items():
        opts += [f"TRAINER.CLIP_LORA.{k}", str(v) if not isinstance(v, list) else "[" + ",".join(f"'{i}'" for i in v) + "]"]
    trainer = build(backbone, tmp_path, "LECLIPLoRA", opts)
    perturb_(trainer.model)
    reference = fresh_clip(backbone).to(trainer.device)
    loras = apply_lora(reference, keys["ENCODERS"], keys["PARAMS"], keys["R"], keys["ALPHA"], 0.0)
    loras.load_state_dict(trainer.model.lora.state_dict())  # strict: the same towers, projections, rank
    x = images(trainer, 7)
    template = keys["TEMPLATE"] or trainer.cfg.DATASET.PROMPT_TEMPLATE
    tokens = TextEncoder(reference).tokenize([template.format(c) for c in CLASSES]).to(trainer.device)
    expected = cosine_logits(reference.encode_image(x), reference.encode_text(tokens))
    assert torch.allclose(trainer.model(x, trainer.encode_classes())["logits"], expected, **TOL)


def test_clip_lora_dropout_key(backbone, tmp_path):
    """Dropout on the delta's input in training only: two training passes differ, eval is CLIP + delta."""
    trainer = build(backbone, tmp_path, "LECLIPLoRA", ["TRAINER.CLIP_LORA.DROPOUT", "0.5"])
    perturb_(trainer.model)
    x = images(trainer, 8)
    first, second = (trainer.model(x, trainer.encode_classes())["logits"] for _ in range(2))
    assert not torch.allclose(first, second, atol=1e-4)
    trainer.set_model_mode("eval")
    with torch.no_grad():
        assert torch.allclose(trainer.model(x, trainer.encode_classes())["logits"], hand_logits(trainer, "LECLIPLoRA", x)["logits"], **TOL)


# ---------------------------------------------------------------- each key's bad values, one at a time
@pytest.mark.parametrize(
    "name,opts,message",
    [
        ("LEZeroshotCLIP", ["OPTIM.MAX_EPOCH", "1"], "learns nothing"),
        ("LEZeroshotCLIP", ["OPTIM.MAX_EPOCH", "0", "TRAINER.SSL.MODE", "fixmatch"], "learns nothing"),
        ("LEZeroshotCLIP", ["OPTIM.MAX_EPOCH", "0", "TRAINER.ZSCLIP.TOPK_POSITIVES", "0"], "TOPK_POSITIVES=0"),
        ("LECLIPAdapter", ["TRAINER.CLIP_ADAPTER.RATIO", "1.5"], "RATIO=1.5"),
        ("LECLIPAdapter", ["TRAINER.CLIP_ADAPTER.RATIO", "-0.1"], "RATIO=-0.1"),
        ("LECLIPAdapter", ["TRAINER.CLIP_ADAPTER.REDUCTION", "0"], "REDUCTION=0"),
        ("LEPLOT", ["TRAINER.PLOT.N", "0"], "N=0"),
        ("LEPLOT", ["TRAINER.PLOT.MAX_ITER", "0"], "MAX_ITER=0"),
        ("LEPLOT", ["TRAINER.PLOT.EPS", "0.0"], "EPS=0.0"),
        ("LEPLOT", ["TRAINER.PLOT.CTX_INIT", "a photo of a", "TRAINER.PLOT.N", "2"], "never diverge"),
        ("LELoCoOp", ["TRAINER.LOCOOP.LOCAL_FEATURES", "cls"], "LOCAL_FEATURES='cls'"),
        ("LELoCoOp", ["TRAINER.LOCOOP.TOPK", "5"], "TOPK=5 with 5 ID classes"),
        ("LECLIPLoRA", ["TRAINER.CLIP_LORA.TEMPLATE", "a photo"], "TEMPLATE='a photo' has no"),
        ("LEMaPLe", ["TRAINER.MAPLE.PROMPT_DEPTH", "0"], "PROMPT_DEPTH=0"),
    ],
)
def test_a_bad_key_is_named(backbone, tmp_path, name, opts, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
        build(backbone, tmp_path, name, opts)


@pytest.mark.parametrize("name,opts", [("LEPLOT", ["TRAINER.PLOT.CTX_INIT", "a photo of a", "TRAINER.PLOT.N", "1"]),
                                       ("LECLIPAdapter", ["TRAINER.CLIP_ADAPTER.RATIO", "1.0"]),
                                       ("LECLIPAdapter", ["TRAINER.CLIP_ADAPTER.RATIO", "0.0", "TRAINER.CLIP_ADAPTER.REDUCTION", "1"]),
                                       ("LEPLOT", ["TRAINER.PLOT.N", "1", "TRAINER.PLOT.MAX_ITER", "1"]),
                                       ("LEZeroshotCLIP", ["OPTIM.MAX_EPOCH", "0", "TRAINER.ZSCLIP.TOPK_POSITIVES", "1"])])
def test_the_edge_values_are_accepted(backbone, tmp_path, name, opts):
    build(backbone, tmp_path, name, opts)
