"""What mutmut's survivors in CSA showed untested: the global-feature path (DualCoOp) against
a hand computation, also on a ResNet CLIP (no patches asked for); the negative prompts'
own pooling and the attention weights returned; the keys that reach the prompts and the
adapter; build_model's float labels, clustering seed, logit scale and device; the
pseudo-label state on the trainer's device and through a checkpoint; the decision at a
score of exactly 0.5; and the config and ResNet messages in full."""
import pytest
import torch

from leclip import ssl
from leclip.backbone import PromptLearner, random_clip
from leclip.multilabel import contexts
from leclip.multilabel.label_features import label_specific_features
from leclip.trainer_base import CLIPTrainer
from leclip.trainers.csa import CSAModel, PseudoLabels
from test_csa_trainer import HIDDEN, LABELED, SCORES, bare_trainer, built, csa_cfg, csa_trainer, pseudo_trainer
from test_wiring_methods import CLASSES, clip_model, images  # noqa: F401 (clip_model: a fixture)

META = torch.device("meta")  # any device but the CPU everything starts on


def unit(x):
    return x / x.norm(dim=-1, keepdim=True)


# ---------------------------------------------------------------- the model's forward
def test_global_feature_path_is_the_dual_cosine_of_the_adapted_global_feature(clip_model):
    model = csa_trainer(clip_model, LABEL_SPECIFIC=False, CONTEXT_INPUT="global").model
    x = images(3, 5)
    with torch.no_grad():
        positive, negative = model.encode_classes()
        out = model(x, (positive, negative))
        frozen, _ = model.image_encoder(x, patches=False)
        feature = model.learnable["adapter"](frozen)
    expected = 20.0 * (unit(feature) @ unit(positive).t() - unit(feature) @ unit(negative).t())
    assert set(out) == {"logits", "context_logits"}
    assert torch.allclose(out["logits"], expected, atol=1e-4)
    assert torch.allclose(out["context_logits"], model.learnable["context_head"](feature), atol=1e-6)


def test_the_global_path_runs_on_a_resnet_clip_and_label_specific_features_name_the_need():
    resnet = random_clip(vision_layers=(1, 1, 1, 1), vision_width=16)
    cfg = csa_cfg(LABEL_SPECIFIC=False, CONTEXT_INPUT="global").TRAINER.CSA
    model = CSAModel(resnet, CLASSES, cfg, 20.0, 2)
    with torch.no_grad():
        out = model(images(2, 6), model.encode_classes())  # asks for no patch feature
    assert out["logits"].shape == (2, len(CLASSES)) and out["context_logits"].shape == (2, 2)
    with pytest.raises(ValueError) as error:
        CSAModel(resnet, CLASSES, csa_cfg().TRAINER.CSA, 20.0, 2)
    assert str(error.value) == ("CSA's label-specific features needs a ViT CLIP backbone (patch tokens and token "
                                "hooks); ResNet backbones are not supported: use e.g. MODEL.BACKBONE.NAME ViT-B/16")


def test_pooled_negatives_and_the_attention_weights_returned(clip_model):
    x = images(2, 7)
    model = csa_trainer(clip_model, POOL_NEGATIVES=True, TAU=0.5).model
    with torch.no_grad():
        positive, negative = model.encode_classes()
        out = model(x, (positive, negative))
        _, patches = model.image_encoder(x)
        patches = model.learnable["adapter"](patches)
        features, weights = label_specific_features(patches, positive, 0.5)
        negative_features, _ = label_specific_features(patches, negative, 0.5)
        shared = csa_trainer(clip_model, TAU=0.5).model(x, (positive, negative))["logits"]

    def cosine(f, t):  # f_k against its own t_k
        return (unit(f) * unit(t)).sum(-1)

    expected = 20.0 * (cosine(features, positive) - cosine(negative_features, negative))
    assert torch.allclose(out["logits"], expected, atol=1e-4)
    assert not torch.allclose(shared, expected, atol=1e-2)  # the negatives pool features of their own
    assert torch.allclose(out["attention"], weights, atol=1e-6)


# ---------------------------------------------------------------- keys reaching the parts
def test_keys_reach_the_prompts_and_the_adapter(clip_model):
    model = csa_trainer(clip_model, CTX_INIT="a photo of a", ADAPTER_RATIO=0.6, ADAPTER_REDUCTION=2).model
    learnable = model.learnable
    reference = PromptLearner(clip_model, CLASSES, n_ctx=4, ctx_init="a photo of a")
    assert torch.equal(learnable["positive_prompts"].ctx, reference.ctx)  # the words, not a random draw
    assert not torch.equal(learnable["negative_prompts"].ctx, reference.ctx)  # the negatives start random
    adapter = learnable["adapter"]
    assert adapter.ratio == 0.6 and adapter.fc[0].weight.shape[0] == adapter.fc[0].weight.shape[1] // 2
    # the negative context is as long as the positive one: N_CTX, or the init words'
    for overrides, n_ctx in (({"N_CTX": 3}, 3), ({"N_CTX": 5, "CTX_INIT": "a photo"}, 2)):
        learnable = csa_trainer(clip_model, **overrides).model.learnable
        assert learnable["positive_prompts"].ctx.shape[0] == learnable["negative_prompts"].ctx.shape[0] == n_ctx


def test_a_model_built_without_contexts_has_no_context_head(clip_model):
    assert "context_head" not in CSAModel(clip_model, CLASSES, csa_cfg().TRAINER.CSA, 20.0).learnable


# ---------------------------------------------------------------- build_model and the unlabeled strategy
def test_build_model_reads_float_labels_the_runs_seed_and_logit_scale(monkeypatch, clip_model, capsys):
    seeds = []

    def cluster(labels, n_contexts, seed=0):
        seeds.append(seed)
        return real(labels, n_contexts, seed=seed)

    real = contexts.cluster_classes
    monkeypatch.setattr(contexts, "cluster_classes", cluster)
    trainer = built(monkeypatch, clip_model, [[1, 0, 1, 0], [1, 0, 1, 0], [0, 0, 1, 0]])
    assert seeds == [3]  # the trainer's seed
    assert trainer.labeled_labels.dtype == torch.float32
    assert trainer.model.logit_scale == 20.0
    assert ("CSA: 2 classes have no positive among the 3 labeled images (navy square, amber star): they get no "
            "pseudo-positive and no context\n") in capsys.readouterr().out


def test_build_model_moves_the_model_to_the_trainers_device(monkeypatch, clip_model):
    trainer = built(monkeypatch, clip_model, [[1, 1, 0, 0], [0, 1, 1, 1]])
    trainer.device = META
    trainer.setup_optimization = lambda name, module: None
    trainer.build_model()
    assert {p.device.type for p in trainer.model.learnable.parameters()} == {"meta"}


def test_labeled_only_strategy_reads_its_trainer():
    trainer = bare_trainer(PSEUDO_LABELS=False)
    strategy = trainer.build_unlabeled()
    assert type(strategy) is ssl.Unlabeled and strategy.trainer is trainer


def test_the_epoch_pass_leaves_its_labels_on_the_trainers_device():
    trainer, strategy = pseudo_trainer(SCORES, LABELED, HIDDEN)
    trainer.device = META
    strategy.before_epoch()
    assert strategy.thresholds.device == META and strategy.pseudo.device == META


def test_loaded_pseudo_labels_go_to_the_trainers_device():
    trainer = bare_trainer()
    trainer.device = META
    strategy = PseudoLabels(trainer)
    strategy.load_state({"thresholds": torch.tensor([0.5, 0.2]), "pseudo": torch.tensor([[1.0, 0.0]])})
    assert strategy.thresholds.device == META and strategy.pseudo.device == META


def test_the_checkpoint_state_reaches_the_base_trainer_and_the_contexts(monkeypatch):
    received = []  # the base restores the engine's state and the strategy's
    monkeypatch.setattr(CLIPTrainer, "load_trainer_state", lambda self, state: received.append(state))
    trainer = bare_trainer()
    state = {"class_context": torch.tensor([1, 0, 1, -1]), "unlabeled": {"thresholds": None, "pseudo": None}}
    trainer.load_trainer_state(state)
    assert received == [state] and trainer.class_context.tolist() == [1, 0, 1, -1]


def test_a_score_of_exactly_one_half_is_a_positive():
    trainer = bare_trainer()
    trainer.forward_eval = lambda images, classes: {"logits": torch.tensor([[0.0, -1e-3, 1e-3, 0.0]])}
    scores, positives = trainer.predict(None, None)
    assert scores[0, 0].item() == 0.5
    assert positives.tolist() == [[True, False, True, True]]


# ---------------------------------------------------------------- the config messages in full
@pytest.mark.parametrize("overrides, message", [
    ({"SSL.MODE": "fixmatch"}, "CSA pseudo-labels unlabeled images with class-wise thresholds "
                               "(TRAINER.CSA.PSEUDO_LABELS): set TRAINER.SSL.MODE none"),
    ({"CSA.THRESHOLDS": "median"}, "TRAINER.CSA.THRESHOLDS='median': use one of ('classwise', 'global')"),
    ({"CSA.PL_SCHEDULE": "batch"}, "TRAINER.CSA.PL_SCHEDULE='batch': use one of ('epoch', 'step')"),
    ({"CSA.LABEL_SPECIFIC": False}, "TRAINER.CSA.CONTEXT_INPUT label_features reads the label-specific features: "
                                    "set TRAINER.CSA.LABEL_SPECIFIC True or CONTEXT_INPUT global"),
    ({"CSA.CONTEXT": False, "CSA.CONTEXT_NARROWING": True},
     "TRAINER.CSA.CONTEXT_NARROWING reweights class scores by the context head: set TRAINER.CSA.CONTEXT True"),
    ({"CSA.N_CONTEXTS": 0}, "TRAINER.CSA: TAU=0.01, N_CONTEXTS=0, PL_START_EPOCH=1: TAU must be positive, "
                            "N_CONTEXTS at least 1, PL_START_EPOCH at least 0"),
])
def test_config_messages_in_full(overrides, message):
    trainer = bare_trainer()
    for key, value in overrides.items():
        group, name = key.split(".")
        trainer.cfg.TRAINER[group][name] = value
    with pytest.raises(ValueError) as error:
        trainer.check_cfg(trainer.cfg)
    assert str(error.value) == message
