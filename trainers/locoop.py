"""LoCoOp: CoOp plus entropy maximisation on the local regions that are not the label's.

Miyai et al., "LoCoOp: Few-Shot Out-of-Distribution Detection via Prompt Learning"
(NeurIPS 2023), as released (github.com/AtsuMiyai/LoCoOp). A patch whose top-K
classes exclude the image's label is treated as OOD and its class distribution is
pushed to high entropy: loss = CE - lambda * H. The test-time ID score is GL-MCM.

Local features (`TRAINER.LOCOOP.LOCAL_FEATURES`): `value` (default, as released: the
value path of the last block, ln_post, proj) or `tokens` (LE-CLIP's patch features:
the last block's patch tokens through ln_post and proj, ours). The prompts are CoOp's
(CSC ignored with CTX_INIT unless `TRAINER.LOCOOP.CSC_FROM_INIT`, ours).

GL-MCM turns the logits back into cosines before its softmax (T = 1). The release
divides them by a fixed 100, the exp(logit_scale) of OpenAI's weights; we divide by the
logit scale actually used (TRAINER.LOGIT_SCALE), which is the same on ViT-B/16 and
keeps the score a softmax over cosines on any checkpoint (synth-vit's scale is ~17).
"""
import torch
import torch.nn.functional as F

from leclip import ssl
from leclip.backbone import ImageEncoder, PromptLearner
from leclip.config import add_defaults
from leclip.dassl import TRAINER_REGISTRY
from leclip.trainer_base import CLIPTrainer
from leclip.trainers.coop import PromptedCLIP

add_defaults(
    {
        "TRAINER.LOCOOP.N_CTX": 16,
        "TRAINER.LOCOOP.CSC": False,
        "TRAINER.LOCOOP.CTX_INIT": "",
        "TRAINER.LOCOOP.CSC_FROM_INIT": False,  # (ours) as TRAINER.COOP.CSC_FROM_INIT
        "TRAINER.LOCOOP.CLASS_TOKEN_POSITION": "end",
        "TRAINER.LOCOOP.LAMBDA": 0.25,  # the release's --lambda_value
        # the release's --topk (200 of ImageNet's 1000 classes); 0 = 20% of the ID
        # classes, the same ratio, for datasets the release gives no value for (ours)
        "TRAINER.LOCOOP.TOPK": 0,
        "TRAINER.LOCOOP.LOCAL_FEATURES": "value",  # value (released) | tokens
    }
)


def resolve_top_k(top_k, num_classes):
    """TRAINER.LOCOOP.TOPK for this dataset: 0 means 20% of the ID classes."""
    if top_k == 0:
        return max(1, round(0.2 * num_classes))
    if not 0 < top_k < num_classes:
        raise ValueError(
            f"TRAINER.LOCOOP.TOPK={top_k} with {num_classes} ID classes: a patch's top-K must be able to miss "
            f"the label, so use 1..{num_classes - 1} (0 = 20% of the classes)"
        )
    return top_k


def non_label_regions(local_logits, labels, top_k):
    """[B, N] mask of the patches whose top-K classes do not contain the image's label
    (the top-K of the logits are those of the probabilities)."""
    top = local_logits.topk(top_k, dim=-1).indices  # [B, N, K]
    return ~(top == labels.view(-1, 1, 1)).any(dim=-1)


def non_label_region_entropy(local_logits, labels, top_k):
    """Mean entropy of the class distributions of the non-label regions (0 if none).

    log(p + 1e-5), as released, keeps the term finite when a probability underflows.
    """
    probs = local_logits.float().softmax(dim=-1)[non_label_regions(local_logits, labels, top_k)]
    if probs.shape[0] == 0:
        return local_logits.new_zeros((), dtype=torch.float32)
    return -(probs * torch.log(probs + 1e-5)).sum(dim=-1).mean()


def locoop_loss(logits, local_logits, labels, top_k, lam):
    """CE on the global logits minus lambda times the entropy of the non-label regions."""
    return F.cross_entropy(logits, labels) - lam * non_label_region_entropy(local_logits, labels, top_k)


@TRAINER_REGISTRY.register()
class LELoCoOp(CLIPTrainer):
    # the harness's method key of this trainer and its name in the tables
    methods = {"locoop": "LoCoOp"}
    table_row = 4  # its place in each task's table: baselines first, the papers' methods last
    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        local = cfg.TRAINER.LOCOOP.LOCAL_FEATURES
        if local not in ImageEncoder.LOCAL_FEATURES:
            raise ValueError(f"TRAINER.LOCOOP.LOCAL_FEATURES={local!r}: use one of {ImageEncoder.LOCAL_FEATURES}")

    def build_model(self):
        cfg = self.cfg.TRAINER.LOCOOP
        self.top_k = resolve_top_k(cfg.TOPK, self.num_classes)
        print(f"LoCoOp: lambda {cfg.LAMBDA}, top-K {self.top_k} of {self.num_classes} classes, {cfg.LOCAL_FEATURES} local features")
        self.clip_model = self.load_clip()
        prompt_learner = PromptLearner(
            self.clip_model, self.classnames, n_ctx=cfg.N_CTX, ctx_init=cfg.CTX_INIT, csc=cfg.CSC,
            class_token_position=cfg.CLASS_TOKEN_POSITION, csc_from_init=cfg.CSC_FROM_INIT,
        )
        self.model = PromptedCLIP(self.clip_model, prompt_learner, self.logit_scale, local=cfg.LOCAL_FEATURES)
        self.model.to(self.device)
        self.setup_optimization("prompt_learner", self.model.prompt_learner)

    def supervised_loss(self, out, labels):
        return locoop_loss(out["logits"], out["local_logits"], labels, self.top_k, self.cfg.TRAINER.LOCOOP.LAMBDA)

    def predict(self, images, classes):
        """Closed-set probabilities from the global logits; ID score GL-MCM (T = 1) on the
        cosines (logits / the logit scale used; released: / 100, equal on ViT-B/16)."""
        out = self.forward_eval(images, classes)
        scale = self.logit_scale
        score = ssl.id_score("glmcm", out["logits"].float() / scale, out["local_logits"].float() / scale)
        return out["logits"].float().softmax(dim=-1), score
