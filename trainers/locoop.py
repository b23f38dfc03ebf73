"""LoCoOp: CoOp plus entropy maximisation on the local regions that are not the label's.

Miyai et al., "LoCoOp: Few-Shot Out-of-Distribution Detection via Prompt Learning"
(NeurIPS 2023). A patch whose top-K classes exclude the image's label is treated as
OOD: its class distribution is pushed to high entropy (loss - lambda * H). Local
features are the last block's value path, as released (`LOCAL_FEATURES tokens` is the
option); the test-time ID score is GL-MCM.
"""
import torch

from leclip import ssl
from leclip.backbone import PromptLearner
from leclip.config import add_defaults
from leclip.dassl import TRAINER_REGISTRY
from leclip.trainer_base import CLIPTrainer
from leclip.trainers.coop import PromptedCLIP

add_defaults(
    {
        "TRAINER.LOCOOP.N_CTX": 16,
        "TRAINER.LOCOOP.CSC": False,
        "TRAINER.LOCOOP.CTX_INIT": "",
        "TRAINER.LOCOOP.CLASS_TOKEN_POSITION": "end",
        "TRAINER.LOCOOP.LAMBDA": 0.25,
        # (ours) 0 = 20% of the classes, the released ImageNet ratio (200 of 1000)
        "TRAINER.LOCOOP.TOPK": 0,
        "TRAINER.LOCOOP.LOCAL_FEATURES": "value",  # value (released) | tokens
    }
)


def non_label_region_entropy(local_logits, labels, top_k):
    """Mean entropy of the patches whose top-K classes exclude the label (0 if none)."""
    batch, patches, classes = local_logits.shape
    probs = local_logits.reshape(batch * patches, classes).float().softmax(dim=-1)
    top = probs.topk(top_k, dim=-1).indices
    contains_label = (top == labels.repeat_interleave(patches).unsqueeze(1)).any(dim=1)
    selected = probs[~contains_label]
    if selected.shape[0] == 0:
        return local_logits.new_zeros(())
    return -(selected * torch.log(selected + 1e-5)).sum(dim=1).mean()


@TRAINER_REGISTRY.register()
class LELoCoOp(CLIPTrainer):
    def build_model(self):
        cfg = self.cfg.TRAINER.LOCOOP
        self.clip_model = self.load_clip()
        prompt_learner = PromptLearner(
            self.clip_model, self.classnames, n_ctx=cfg.N_CTX, ctx_init=cfg.CTX_INIT, csc=cfg.CSC,
            class_token_position=cfg.CLASS_TOKEN_POSITION,
        )
        self.model = PromptedCLIP(self.clip_model, prompt_learner, local=cfg.LOCAL_FEATURES).to(self.device)
        self.top_k = min(cfg.TOPK, self.num_classes) if cfg.TOPK > 0 else max(1, round(0.2 * self.num_classes))
        self.setup_optimization("prompt_learner", self.model.prompt_learner)

    def forward_train(self, images):
        return self.model(images)

    def supervised_loss(self, out, labels):
        ce = super().supervised_loss(out, labels)
        entropy = non_label_region_entropy(out["local_logits"], labels, self.top_k)
        return ce - self.cfg.TRAINER.LOCOOP.LAMBDA * entropy

    def predict(self, images):
        out = self.forward_eval(images)
        scale = self.logit_scale_value()
        score = ssl.id_score("glmcm", out["logits"].float() / scale, out["local_logits"].float() / scale)
        return out["logits"].float().softmax(dim=-1), score
