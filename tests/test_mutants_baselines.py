"""What mutmut's survivors in the baseline trainers showed untested: each built model on
the trainer's device, the bad-key and ResNet messages in full (they name the method and
the fix), MaPLe's depth note only when a tower is shallower, CLIP-LoRA's prompt line, and
LoCoOp's entropy term as float32 when no region is a non-label one (whatever the logits'
precision)."""
import pytest
import torch

from leclip.backbone import random_clip
from leclip.dassl import get_cfg_default
from leclip.trainers.clip_adapter import LECLIPAdapter
from leclip.trainers.clip_lora import LECLIPLoRA
from leclip.trainers.coop import PromptedCLIP
from leclip.trainers.locoop import non_label_region_entropy, resolve_top_k
from leclip.trainers.maple import MaPLeModel
from leclip.trainers.plot import LEPLOT, PLOTModel
from test_wiring import LEARNABLE, backbone, build  # noqa: F401 (backbone: a fixture)


@pytest.mark.parametrize("name", sorted(LEARNABLE))
def test_build_model_moves_the_model_to_the_trainers_device(backbone, tmp_path, name):  # noqa: F811
    trainer = build(backbone, tmp_path, name)
    trainer.device = torch.device("meta")  # any device but the CPU the CLIP is loaded on
    trainer.setup_optimization = lambda name, module: None
    trainer.build_model()
    learnable = [p for p in trainer.model.parameters() if p.requires_grad]
    assert learnable and {p.device.type for p in learnable} == {"meta"}


@pytest.mark.parametrize("ratio, reduction", [(1.5, 4), (0.2, 0)])
def test_clip_adapter_bad_keys_message(ratio, reduction):
    cfg = get_cfg_default()
    cfg.TRAINER.CLIP_ADAPTER.RATIO, cfg.TRAINER.CLIP_ADAPTER.REDUCTION = ratio, reduction
    with pytest.raises(ValueError, match=rf"^TRAINER\.CLIP_ADAPTER: RATIO={ratio}, REDUCTION={reduction}: RATIO is a "
                                         r"blend weight in \[0, 1\] and REDUCTION at least 1 \(released: 0\.2, 4\)$"):
        object.__new__(LECLIPAdapter).check_cfg(cfg)


def test_locoop_entropy_without_non_label_regions_is_a_float32_zero():
    local = torch.randn(2, 3, 4).half()  # [B, N, K]; top_k = K: every region ranks its label
    zero = non_label_region_entropy(local, torch.tensor([0, 3]), top_k=4)
    assert zero.dtype == torch.float32 and zero.item() == 0.0


@pytest.mark.parametrize("method, build_model", [
    ("MaPLe", lambda clip: MaPLeModel(clip, ["a", "b"], 2, "", 1, 100.0)),
    ("PLOT", lambda clip: PLOTModel(clip, None, 100.0)),
])
def test_a_resnet_backbone_names_the_method(method, build_model):
    resnet = random_clip(vision_layers=(1, 1, 1, 1), vision_width=16)
    with pytest.raises(ValueError, match=rf"^{method} needs a ViT CLIP backbone \(patch tokens and token hooks\); "
                                         r"ResNet backbones are not supported: use e\.g\. MODEL\.BACKBONE\.NAME ViT-B/16$"):
        build_model(resnet)


@pytest.mark.parametrize("depth, note", [
    (2, ""),  # as deep as the shallower tower: no note
    (3, "MaPLe: PROMPT_DEPTH 3 exceeds the text (2 blocks) tower of this CLIP; prompting text to depth 2, "
        "vision to depth 3\n"),
])
def test_maple_notes_a_depth_beyond_the_shallower_tower_only(capsys, depth, note):
    clip = random_clip(vision_layers=3, transformer_layers=2, context_length=24, seed=1)
    model = MaPLeModel(clip, ["a", "b"], 2, "", depth, 100.0)
    assert capsys.readouterr().out == note
    assert model.depths == {"text": min(depth, 2), "vision": depth}


def test_clip_lora_template_without_a_slot_message():
    cfg = get_cfg_default()
    cfg.TRAINER.CLIP_LORA.TEMPLATE = "a photo"
    with pytest.raises(ValueError, match=r"^TRAINER\.CLIP_LORA\.TEMPLATE='a photo' has no \{\} for the class name "
                                         r'\(released: "a photo of a \{\}\."; "" = DATASET\.PROMPT_TEMPLATE\)$'):
        object.__new__(LECLIPLoRA).check_cfg(cfg)


@pytest.mark.parametrize("template, used", [("a blurry photo of a {}.", "a blurry photo of a {}."),
                                            ("", "a photo of a {}.")])
def test_clip_lora_prints_its_prompt_template(backbone, tmp_path, capsys, template, used):  # noqa: F811
    build(backbone, tmp_path, "LECLIPLoRA", ["TRAINER.CLIP_LORA.TEMPLATE", template,
                                             "DATASET.PROMPT_TEMPLATE", "a photo of a {}."])
    assert f"CLIP-LoRA prompts: {used!r}\n" in capsys.readouterr().out


@pytest.mark.parametrize("opts, message", [
    ({"N": 0}, r"^TRAINER\.PLOT: N=0, MAX_ITER=100, EPS=0\.1: N and MAX_ITER must be at least 1 and EPS positive "
               r"\(released: 4, 100, 0\.1\)$"),
    ({"N": 2, "CTX_INIT": "a photo of a"},
     r"^TRAINER\.PLOT\.CTX_INIT='a photo of a' starts all 2 prompt sets from the same words, so they never diverge; "
     r"leave CTX_INIT empty \(random init, as released\) or set TRAINER\.PLOT\.N 1$"),
])
def test_plot_bad_keys_messages(opts, message):
    cfg = get_cfg_default()
    for key, value in opts.items():
        cfg.TRAINER.PLOT[key] = value
    with pytest.raises(ValueError, match=message):
        object.__new__(LEPLOT).check_cfg(cfg)


def test_locoop_accepts_a_top_k_of_one():
    assert resolve_top_k(1, 5) == 1 and resolve_top_k(4, 5) == 4 and resolve_top_k(0, 5) == 1
    with pytest.raises(ValueError, match=r"^TRAINER\.LOCOOP\.TOPK=5 with 5 ID classes: .* so use 1\.\.4 "):
        resolve_top_k(5, 5)


def test_locoop_prints_its_keys(backbone, tmp_path, capsys):  # noqa: F811
    build(backbone, tmp_path, "LELoCoOp", ["TRAINER.LOCOOP.LAMBDA", "0.4", "TRAINER.LOCOOP.TOPK", "2"])
    assert "LoCoOp: lambda 0.4, top-K 2 of 5 classes, value local features\n" in capsys.readouterr().out


def test_local_features_on_a_resnet_are_named():
    resnet = random_clip(vision_layers=(1, 1, 1, 1), vision_width=16)
    with pytest.raises(ValueError, match=r"^Local features needs a ViT CLIP backbone"):
        PromptedCLIP(resnet, None, 100.0, local="tokens")
    PromptedCLIP(resnet, None, 100.0)  # global features only: a ResNet is fine


def test_maple_reads_ctx_init_up_to_four_context_tokens(capsys):
    clip = random_clip(vision_layers=2, transformer_layers=2, context_length=24, seed=1)

    def ctx(n_ctx, seed):
        torch.manual_seed(seed)
        return MaPLeModel(clip, ["a", "b"], n_ctx, "a photo of a", 1, 100.0).prompt_learner.ctx

    assert torch.equal(ctx(4, 0), ctx(4, 1)) and capsys.readouterr().out == ""  # the words, not a random draw
    assert not torch.equal(ctx(5, 0), ctx(5, 1))
    assert capsys.readouterr().out == ("MaPLe: N_CTX 5 > 4, so CTX_INIT 'a photo of a' is not used (as released): "
                                       "random context\n") * 2


def test_maple_deep_prompts_start_at_std_002():
    clip = random_clip(vision_layers=2, transformer_layers=2, context_length=24, seed=1)
    torch.manual_seed(0)
    deep = torch.cat([p.flatten() for p in MaPLeModel(clip, ["a", "b"], 16, "", 2, 100.0).deep_text])
    assert 0.015 < deep.std().item() < 0.025
