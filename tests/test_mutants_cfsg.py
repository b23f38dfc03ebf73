"""CFSG-CLIP's model against a hand composition of its parts (what mutmut's survivors showed
untested): each branch's logits are the scaled cosines of its own features (per patch for
the local logits), the SFM class rules, the keys that reach the parts, the configuration's
one-line description, and build_model's registration.

The wiring tests (test_wiring_methods.py) compare the trainer with the model's own outputs;
these compare the model with the parts, so a normalisation over the wrong axis is seen.
"""
import pytest
import torch

from leclip.adapters import ResidualAdapter
from leclip.backbone import DeepTokens, PromptLearner
from leclip.trainers.cfsg import CFSGModel
from test_wiring import CLASSES as WIRING_CLASSES, backbone, build  # noqa: F401 (backbone: a fixture)
from test_wiring_methods import CLASSES, cfsg_trainer, clip_model, images  # noqa: F401 (clip_model: a fixture)


def unit(x):
    return x / x.norm(dim=-1, keepdim=True)


def hand_branch(model, global_feature, patches, text, classes):
    """One branch written from the parts: scaled cosines (per patch for local_logits),
    the SFM pooling of class m's patches and its cosines."""
    scale = model.logit_scale
    logits = scale * unit(global_feature) @ text.t()
    local = scale * torch.einsum("bnd,kd->bnk", unit(patches), text)
    classes = logits.argmax(1) if classes is None else classes
    pooled, _, _ = model.sfm(patches, global_feature, text[classes])
    return {"logits": logits, "local_logits": local, "sfm_logits": scale * unit(pooled) @ text.t(),
            "pooled": pooled, "classes": classes}


def hand_forward(model, x, text, rule="branch", classes=None):
    classes = classes or {}
    frozen_global, frozen_patches = model.image_encoder(x)
    adapter = model.learnable["adapter"]
    coarse = hand_branch(model, adapter(frozen_global), adapter(frozen_patches), text["coarse"], classes.get("coarse"))
    token = model.learnable["inject"](coarse["pooled"])[:, None]
    hook = DeepTokens({block: token for block in range(model.depth)}, model.inject_mode)
    fine_global, fine_patches = model.image_encoder(x, token_hook=hook)
    fine_class = classes.get("fine")
    if fine_class is None and rule == "coarse":
        fine_class = coarse["logits"].argmax(1)
    fine = hand_branch(model, fine_global, fine_patches, text["fine"], fine_class)
    heads = [out[key].softmax(1) for out in (coarse, fine) for key in ("logits", "sfm_logits")]
    return {"coarse": coarse, "fine": fine, "logits": torch.stack(heads).mean(0).log()}


def assert_outputs_equal(out, hand):
    for b in ("coarse", "fine"):
        for key, value in hand[b].items():
            assert torch.allclose(out[b][key], value, rtol=1e-4, atol=1e-5), (b, key)
    assert torch.allclose(out["logits"], hand["logits"], rtol=1e-4, atol=1e-5)


def test_class_side_is_each_branchs_prompt_features_normalised_per_class(clip_model):
    model = cfsg_trainer(clip_model).model
    with torch.no_grad():
        text = model.encode_classes()
        for b in ("coarse", "fine"):
            raw = model.text_encoder(*model.learnable[f"{b}_prompts"]())
            assert text[b].shape == (len(CLASSES), raw.shape[1])
            assert torch.allclose(text[b], unit(raw), atol=1e-6), b


@pytest.mark.parametrize("rule", ["branch", "coarse"])
def test_forward_is_the_hand_composition_of_the_parts(clip_model, rule):
    model = cfsg_trainer(clip_model, **{"CFSG.SFM_CLASS": rule}).model
    x = images(5, 11)
    with torch.no_grad():
        text = model.encode_classes()
        assert_outputs_equal(model(x, text), hand_forward(model, x, text, rule))
        given = {"coarse": torch.tensor([3, 2, 1, 0, 0]), "fine": torch.tensor([1, 1, 0, 2, 3])}
        out = model(x, text, given)
        assert_outputs_equal(out, hand_forward(model, x, text, rule, given))
        assert all(torch.equal(out[b]["classes"], given[b]) for b in given)  # given classes win under either rule


def test_sfm_class_rule_picks_the_fine_branchs_class_m(clip_model):
    """"branch": the fine SFM pools the class of its own global argmax; "coarse": the coarse one's."""
    x = images(8, 12)
    with torch.no_grad():
        own = cfsg_trainer(clip_model).model
        by_coarse = cfsg_trainer(clip_model, **{"CFSG.SFM_CLASS": "coarse"}).model
        out_own, out_coarse = own(x, own.encode_classes()), by_coarse(x, by_coarse.encode_classes())
    coarse_argmax = out_own["coarse"]["logits"].argmax(1)
    assert torch.equal(out_own["fine"]["classes"], out_own["fine"]["logits"].argmax(1))
    assert not torch.equal(out_own["fine"]["classes"], coarse_argmax)  # the two rules differ on these images
    assert torch.equal(out_coarse["fine"]["classes"], out_coarse["coarse"]["logits"].argmax(1))
    assert torch.equal(out_coarse["fine"]["classes"], coarse_argmax)  # same parameters under both rules


def test_keys_reach_the_prompts_adapter_and_filter(clip_model):
    overrides = {"CFSG.CTX_INIT": "a photo of a", "CFSG.ADAPTER_RATIO": 0.6, "CFSG.ADAPTER_REDUCTION": 2,
                 "CFSG.WEIGHTING": "textual"}
    model = cfsg_trainer(clip_model, **overrides).model
    reference = PromptLearner(clip_model, CLASSES, n_ctx=4, ctx_init="a photo of a")
    for b in ("coarse", "fine"):
        assert torch.equal(model.learnable[f"{b}_prompts"].ctx, reference.ctx)
    adapter = model.learnable["adapter"]
    assert adapter.ratio == 0.6 and adapter.fc[0].weight.shape[0] == adapter.fc[0].weight.shape[1] // 2
    x = torch.randn(3, adapter.fc[0].weight.shape[1])
    same = ResidualAdapter(x.shape[1], 2, 0.6)
    same.load_state_dict(adapter.state_dict())
    assert torch.allclose(adapter(x), same(x))
    assert model.sfm.weighting == "textual"
    random_ctx = cfsg_trainer(clip_model).model.learnable["coarse_prompts"].ctx
    assert random_ctx.shape[0] == 4  # N_CTX (the learner's default is 16)


def test_an_ensemble_of_absent_heads_is_named(clip_model):
    with pytest.raises(ValueError, match=r"^TRAINER\.CFSG\.ENSEMBLE=\['fine_local'\] names no head this configuration has$"):
        cfsg_trainer(clip_model, **{"CFSG.ENSEMBLE": ["fine_local"], "CFSG.SFM_FINE": False, "CFSG.VSI": False})


def test_vsi_without_the_coarse_sfm_message(clip_model):
    with pytest.raises(ValueError, match=r"^TRAINER\.CFSG\.VSI injects the coarse SFM feature z_c: "
                                         r"set TRAINER\.CFSG\.SFM_COARSE True or VSI False$"):
        cfsg_trainer(clip_model, **{"CFSG.SFM_COARSE": False})


@pytest.mark.parametrize("overrides, expected", [
    ({}, "CFSG-CLIP | coarse: prompts + adapter | fine: prompts + VSI replace in blocks 1..2 | SFM (coarse/fine): "
         "top-3, visual weighting | inference: mean of coarse_global, coarse_local, fine_global, fine_local"),
    ({"CFSG.VSI": False, "CFSG.ADAPTER": False, "CFSG.WEIGHTING": "textual", "CFSG.INJECT_MODE": "concat",
      "CFSG.ENSEMBLE": ["fine_local", "coarse_global"]},
     "CFSG-CLIP | coarse: prompts | fine: prompts | SFM (coarse/fine): top-3, textual weighting | "
     "inference: mean of fine_local, coarse_global"),
    ({"CFSG.VSI": False, "CFSG.SFM_FINE": False, "CFSG.SFM_COARSE": False, "CFSG.INJECT_MODE": "concat"},
     "CFSG-CLIP | coarse: prompts + adapter | inference: mean of coarse_global"),
    ({"CFSG.INJECT_MODE": "concat", "CFSG.SFM_FINE": False, "CFSG.ENSEMBLE": ["fine_global"]},
     "CFSG-CLIP | coarse: prompts + adapter | fine: prompts + VSI concat in blocks 1..2 | SFM (coarse): top-3, "
     "visual weighting | inference: mean of fine_global"),
])
def test_describe_names_the_configurations_parts(clip_model, overrides, expected):
    assert cfsg_trainer(clip_model, **overrides).model.describe() == expected


def test_build_model_registers_the_learnable_parts_with_the_optimizer(backbone, tmp_path, capsys):  # noqa: F811
    trainer = build(backbone, tmp_path, "CFSG", ["TRAINER.CFSG.N_CTX", "4", "TRAINER.CFSG.CTX_INIT", "a photo of a"])
    model = trainer.model
    assert isinstance(model, CFSGModel) and model.logit_scale == trainer.logit_scale
    assert model.text_encoder.token_embedding is trainer.clip_model.token_embedding  # the loaded CLIP
    assert model.learnable["coarse_prompts"].ctx.shape[0] == 4  # its TRAINER.CFSG
    assert model.learnable["coarse_prompts"].n_cls == len(WIRING_CLASSES)
    assert trainer.get_model_names() == ["cfsg"]
    learnable = {id(p) for p in model.learnable.parameters()}
    assert {id(p) for group in trainer.optim.param_groups for p in group["params"]} == learnable
    assert model.describe() in capsys.readouterr().out


def test_build_model_moves_the_model_to_the_trainers_device(backbone, tmp_path):  # noqa: F811
    trainer = build(backbone, tmp_path, "CFSG", ["TRAINER.CFSG.N_CTX", "4"])
    trainer.device = torch.device("meta")  # any device but the CPU the CLIP is loaded on
    trainer.setup_optimization = lambda name, module: None
    trainer.build_model()
    assert {p.device.type for p in trainer.model.learnable.parameters()} == {"meta"}
