"""LE-CLIP's own CLIP (leclip.backbone.model) against the clip package's reference.

The reference is `clip.model` of the installed clip package (OpenAI's architecture):
both are built from one state dict, whose every tensor is jittered so that biases, norms
and batch-norm statistics are not the identity they start as. The last test runs LE-CLIP
under a fake fork of the clip package whose model class wants another signature, as
MaPLe's vendored `clip` does.
"""
import json
import os
import os.path as osp
import shutil
import subprocess
import sys
import textwrap

import clip
import mini_dassl
import pytest
import torch
from clip import model as reference

from leclip.backbone import load_clip, random_clip
from leclip.backbone.loader import EMBEDDED_MODELS
from leclip.world import pretrain, synth_fg

TOKENS = clip.tokenize(["a red disc", "two small blue rings on grass", "a photo of a striped kite"], context_length=16)


def jittered(model, seed=0):
    """The model's state dict with every float tensor moved off its initial value."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, tensor in model.state_dict().items():
        if name.endswith("running_var"):
            tensor = torch.rand(tensor.shape, generator=generator) + 0.5
        elif tensor.is_floating_point():
            tensor = tensor + 0.1 * torch.randn(tensor.shape, generator=generator)
        state[name] = tensor
    return state


def reference_vit(embed_dim, resolution, layers, width, patch, heads, context, text_width, text_heads, text_layers):
    """clip.model.CLIP with a ViT of any head count (its constructor ties heads to width // 64)."""
    model = reference.CLIP(embed_dim, resolution, layers, 64 * heads, patch, context, 49408, text_width, text_heads,
                           text_layers)
    model.visual = reference.VisionTransformer(resolution, patch, width, layers, heads, embed_dim)
    return model


def max_differences(ours, ref, images):
    """Max |ours - reference| of the image features, text features and logits."""
    with torch.no_grad():
        pairs = [
            (ours.encode_image(images), ref.encode_image(images)),
            (ours.encode_text(TOKENS), ref.encode_text(TOKENS)),
            (ours(images, TOKENS)[0], ref(images, TOKENS)[0]),
            (ours(images, TOKENS)[1], ref(images, TOKENS)[1]),
        ]
    assert all(a.shape == b.shape for a, b in pairs)
    return [float((a - b).abs().max()) for a, b in pairs]


@pytest.mark.parametrize("vision_heads, text_heads", [(1, 2), (2, 1), (4, 4)])
def test_vit_equals_the_reference_on_the_same_state_dict(vision_heads, text_heads):
    ours = random_clip(vision_width=64, vision_heads=vision_heads, transformer_heads=text_heads, seed=vision_heads)
    assert ours.visual.transformer.resblocks[0].attn.num_heads == vision_heads
    assert ours.transformer.resblocks[0].attn.num_heads == text_heads
    state = jittered(ours)
    ours.load_state_dict(state)
    ref = reference_vit(32, 32, 2, 64, 8, vision_heads, 16, 32, text_heads, 2).eval()
    ref.load_state_dict(state)  # strict: the same names and shapes
    assert list(ref.state_dict()) == list(ours.state_dict())
    differences = max_differences(ours, ref, torch.randn(3, 3, 32, 32))
    print("ViT heads", vision_heads, text_heads, "max |diff| image, text, logits:", differences)
    assert max(differences) <= 1e-6


def test_modified_resnet_equals_the_reference_on_the_same_state_dict():
    # stage 2 holds a block without shortcut conv; 64 px leaves a 2 x 2 map to attention-pool
    ours = random_clip(image_resolution=64, vision_layers=(1, 2, 1, 1), vision_width=16, seed=3)
    assert ours.visual.attnpool.num_heads == 16 * 32 // 64
    state = jittered(ours)
    ours.load_state_dict(state)
    ref = reference.CLIP(32, 64, (1, 2, 1, 1), 16, None, 16, 49408, 32, 2, 2).eval()
    ref.load_state_dict(state)
    assert list(ref.state_dict()) == list(ours.state_dict())
    differences = max_differences(ours, ref, torch.randn(2, 3, 64, 64))
    print("ModifiedResNet max |diff| image, text, logits:", differences)
    assert max(differences) <= 1e-6


def test_random_weights_are_the_references_draws_for_the_same_seed():
    """So the recipe of the shipped synth-vit (scripts/pretrain_synth_clip.py) still starts
    from the same weights."""
    arch = pretrain.ARCH
    torch.manual_seed(7)
    ref = reference.CLIP(
        arch["embed_dim"], arch["image_resolution"], arch["vision_layers"], arch["vision_width"],
        arch["vision_patch_size"], arch["context_length"], 49408, arch["transformer_width"],
        arch["transformer_heads"], arch["transformer_layers"],
    )
    ref.initialize_parameters()
    ours = random_clip(**arch, seed=7).state_dict()
    assert all(torch.equal(ours[name], tensor) for name, tensor in ref.state_dict().items())


def test_shipped_synth_vit_loads_strictly_and_gives_the_references_features():
    stored = torch.load(EMBEDDED_MODELS["synth-vit"], map_location="cpu", weights_only=True)
    state = {k: v.float() for k, v in stored["state_dict"].items()}
    arch = pretrain.ARCH
    # its heads are width // 64, so clip's own constructor builds it
    ref = reference.CLIP(
        arch["embed_dim"], arch["image_resolution"], arch["vision_layers"], arch["vision_width"],
        arch["vision_patch_size"], arch["context_length"], 49408, arch["transformer_width"],
        arch["transformer_heads"], arch["transformer_layers"],
    ).eval()
    ref.load_state_dict(state)
    ours = load_clip("synth-vit")
    assert list(ours.state_dict()) == list(state)
    images, _ = synth_fg.render_split(0, "test", 1)
    differences = max_differences(ours, ref, pretrain.to_tensor(images[:8]))
    print("synth-vit max |diff| image, text, logits:", differences)
    assert max(differences) <= 1e-6


FORK_RUN = '''
import json, sys
import clip, torch
torch.set_num_threads(1)
assert clip.__file__.startswith(sys.argv[1]), clip.__file__  # the fork shadows clip-anytorch
from leclip import catalogue
from leclip.backbone import load_clip
from leclip.dassl import build_trainer

features = load_clip("synth-vit").encode_text(clip.tokenize(["a red disc"], context_length=16))
cfg = catalogue.setup_cfg(
    catalogue.trainer_config("maple", "synth_fg"), catalogue.dataset_config("synth_fg"),
    catalogue.setting_opts("synth_fg", 5) + sys.argv[4:], root=sys.argv[2], output_dir=sys.argv[3],
    seed=1, trainer="LEMaPLe",
)
trainer = build_trainer(cfg)
learnt = [p for p in trainer.model.parameters() if p.requires_grad]
before = [p.detach().clone() for p in learnt]
trainer.set_model_mode("train")
trainer.batch_idx, trainer.num_batches = 0, 2
loss = trainer.forward_backward(next(iter(trainer.train_loader_x)))["loss"]
moved = sum(not torch.equal(a, p) for a, p in zip(before, learnt))
print(json.dumps({"features": features.shape[-1], "loss": loss, "moved": moved, "learnt": len(learnt)}))
'''


def test_loads_and_trains_under_a_fork_of_clip_with_another_model_class(tmp_path):
    fork = tmp_path / "fork"
    # the fork keeps clip's tokenizer and weight names; only its model file differs
    shutil.copytree(osp.dirname(clip.__file__), fork / "clip", ignore=shutil.ignore_patterns("model.py", "__pycache__"))
    (fork / "clip" / "model.py").write_text(mini_dassl.MAPLE_CLIP_MODEL)
    env = dict(os.environ, PYTHONPATH=str(fork), OMP_NUM_THREADS="1")
    script = textwrap.dedent(FORK_RUN)
    tiny_world = ["DATASET.SYNTH.POOL_PER_CLASS", "6", "DATASET.SYNTH.TEST_PER_CLASS", "1"]
    args = [str(fork), str(tmp_path / "data"), str(tmp_path / "out")] + tiny_world
    done = subprocess.run([sys.executable, "-c", script, *args], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["features"] == pretrain.ARCH["embed_dim"]
    assert result["loss"] > 0 and result["moved"] == result["learnt"] > 0
