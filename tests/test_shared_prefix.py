"""Shared-prefix text encoding: the same features and gradients as the full encoder."""
import pytest
import torch

from leclip.backbone import PromptLearner, ReplaceAt, TextEncoder, concat_prompts, random_clip, shared_prefix
from leclip.lora import apply_lora
from leclip.trainers.maple import MaPLeModel

NAMES = ["red disc", "navy striped ring", "a", "big green square thing", "dot"]


@pytest.fixture(scope="module")
def clip_model():
    return random_clip(vision_width=64, vision_layers=2, seed=3).requires_grad_(False)


@pytest.fixture
def shared_runs(monkeypatch):
    """The SharedPrefix of every shared run, in order."""
    runs = []
    run = shared_prefix.run_shared

    def spy(blocks, x, eot, shared, token_hook=None):
        runs.append(shared)
        return run(blocks, x, eot, shared, token_hook)

    monkeypatch.setattr(shared_prefix, "run_shared", spy)
    return runs


def full(embeds):
    """The same embeddings without the mark: the full encoder runs."""
    return embeds + 0


def close(a, b, tol=1e-5):
    return (a - b).abs().max().item() <= tol * b.abs().max().item()


def features_and_grads(encode, params):
    """(features, grads of a loss touching every feature and every EOT's LayerNorm)."""
    features = encode()
    loss = (features * torch.linspace(-1, 1, features.shape[-1])).sum() + features.norm(dim=-1).sum()
    return features.detach(), torch.autograd.grad(loss, params)


def learner(clip_model, **options):
    pl = PromptLearner(clip_model, NAMES, n_ctx=options.pop("n_ctx", 4), **options)
    with torch.no_grad():
        pl.ctx.normal_()  # contexts far from zero, so a wrong prefix shows
    return pl


@pytest.mark.parametrize("position", ["end", "middle", "front"])
@pytest.mark.parametrize("n_sets", [1, 3])
@pytest.mark.parametrize("csc", [False, True])
def test_every_learner_and_position_gives_the_full_encoders_features_and_gradients(
    clip_model, shared_runs, position, n_sets, csc
):
    pl = learner(clip_model, class_token_position=position, n_sets=n_sets, csc=csc)
    encoder = TextEncoder(clip_model)
    shared = features_and_grads(lambda: encoder(*pl()), [pl.ctx])
    reference = features_and_grads(lambda: encoder(full(pl()[0]), pl.tokenized_prompts), [pl.ctx])
    assert close(shared[0], reference[0]) and close(shared[1][0], reference[1][0])
    expected = {"end": 1 + 4, "middle": 1 + 2, "front": None}[position]
    if csc or expected is None:  # class-specific prefix, or SOS only: the full encoder
        assert shared_runs == []
    else:
        assert shared_runs == [shared_prefix.SharedPrefix(expected, len(NAMES))]


def test_ctx_init_words_shared_by_every_prompt_join_the_prefix(clip_model, shared_runs):
    # "a photo of a" with 2 learnable tokens: "of a" is fixed text every prompt has
    pl = PromptLearner(clip_model, NAMES, n_ctx=2, ctx_init="a photo of a", learn_init_prefix=True)
    assert pl.shared_length == 1 + 4
    encoder = TextEncoder(clip_model)
    shared = features_and_grads(lambda: encoder(*pl()), [pl.ctx])
    reference = features_and_grads(lambda: encoder(full(pl()[0]), pl.tokenized_prompts), [pl.ctx])
    assert close(shared[0], reference[0]) and close(shared[1][0], reference[1][0])


def test_the_prefix_stops_before_the_first_eot(clip_model, shared_runs):
    # one class: every position is "shared", but the EOT must stay in the suffix
    pl = learner(clip_model, class_token_position="end")
    one = PromptLearner(clip_model, ["dot"], n_ctx=4)
    eot = int(one.tokenized_prompts.argmax())
    assert one.shared_length == eot
    encoder = TextEncoder(clip_model)
    features = encoder(*one())
    assert close(features, encoder(full(one()[0]), one.tokenized_prompts))
    assert pl.shared_length == 5


def test_maple_deep_prompts_inside_the_prefix_keep_it_shared(clip_model, shared_runs, monkeypatch):
    model = MaPLeModel(clip_model, NAMES, 2, "a photo of a", 3, logit_scale=10.0)
    with torch.no_grad():
        for p in model.deep_text:
            p.normal_()
    params = [model.prompt_learner.ctx, *model.deep_text]
    shared = features_and_grads(lambda: model.encode_classes()[0], params)
    assert shared_runs == [shared_prefix.SharedPrefix(5, len(NAMES))]
    monkeypatch.setattr(shared_prefix, "plan", lambda *args: None)
    reference = features_and_grads(lambda: model.encode_classes()[0], params)
    assert close(shared[0], reference[0])
    assert all(close(a, b) for a, b in zip(shared[1], reference[1]))


def test_two_learners_in_one_pass_keep_their_shortest_shared_prefix(clip_model, shared_runs):
    positive = PromptLearner(clip_model, NAMES, n_ctx=2, ctx_init="a photo of a", learn_init_prefix=True)
    negative = learner(clip_model, n_ctx=2)
    encoder = TextEncoder(clip_model)
    params = [positive.ctx, negative.ctx]
    shared = features_and_grads(lambda: encoder(*concat_prompts(positive(), negative())), params)
    assert shared_runs == [shared_prefix.SharedPrefix(3, len(NAMES))]
    embeds, tokens = concat_prompts(positive(), negative())
    reference = features_and_grads(lambda: encoder(full(torch.cat([positive()[0], negative()[0]])), tokens), params)
    assert close(shared[0], reference[0])
    assert all(close(a, b) for a, b in zip(shared[1], reference[1]))
    # a part without a mark (class-specific contexts): the whole pass runs in full
    concat_prompts(positive(), learner(clip_model, n_ctx=2, csc=True)())
    assert not hasattr(concat_prompts(positive(), learner(clip_model, csc=True)())[0], shared_prefix.ATTRIBUTE)


def test_hooks_that_could_reach_the_suffix_run_the_full_encoder(clip_model, shared_runs):
    pl = learner(clip_model)
    encoder = TextEncoder(clip_model)
    width = encoder.width
    encoder(*pl(), token_hook=ReplaceAt({1: torch.randn(4, width)}, start=1))  # positions 1..4 < 5: shared
    assert len(shared_runs) == 1
    encoder(*pl(), token_hook=ReplaceAt({1: torch.randn(4, width)}, start=2))  # reaches position 5
    two = PromptLearner(clip_model, NAMES[:2], n_ctx=4)
    encoder(*two(), token_hook=ReplaceAt({1: torch.randn(2, 2, width)}))  # one set per prompt
    encoder(*pl(), token_hook=lambda index, x: x)  # any other hook
    assert len(shared_runs) == 1


def test_lora_attention_runs_the_full_encoder(shared_runs):
    model = random_clip(vision_width=64, vision_layers=2, seed=4)
    apply_lora(model, ("text",), r=2, alpha=1, dropout=0.0)
    pl = learner(model)
    encoder = TextEncoder(model)
    assert close(encoder(*pl()), encoder(full(pl()[0]), pl.tokenized_prompts))
    assert shared_runs == []


def test_block_after_is_the_clip_block_and_continues_a_sequence(clip_model):
    block = clip_model.transformer.resblocks[0]
    x = torch.randn(3, 7, block.ln_1.weight.shape[0])
    whole = block(x.permute(1, 0, 2)).permute(1, 0, 2)
    out, _ = shared_prefix.block_after(block, x)
    assert close(out, whole)
    head, past = shared_prefix.block_after(block, x[:, :4])
    tail, _ = shared_prefix.block_after(block, x[:, 4:], past)
    assert close(torch.cat([head, tail], dim=1), whole)
    # the last positions alone, and the keys and values alone
    end, _ = shared_prefix.block_after(block, x[:, 4:], past, last=2)
    assert end.shape == (3, 2, x.shape[-1]) and close(end, whole[:, -2:])
    none, (k, v) = shared_prefix.block_after(block, x[:, :4], last=0)
    assert none is None and torch.equal(k, past[0]) and torch.equal(v, past[1])


def test_runs_under_autocast_as_the_full_encoder_does(clip_model, shared_runs):
    # bf16 autocast on the CPU stands in for CUDA's AMP: mixed dtypes meet in the attention
    pl = learner(clip_model)
    encoder = TextEncoder(clip_model)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        shared = encoder(*pl())
        reference = encoder(full(pl()[0]), pl.tokenized_prompts)
    assert shared_runs and shared.dtype == reference.dtype
    assert close(shared.float(), reference.float(), tol=3e-2)
