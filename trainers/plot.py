"""PLOT: N prompt sets matched to local image features by optimal transport.

Chen et al., "PLOT: Prompt Learning with Optimal Transport for Vision-Language Models"
(ICLR 2023). The class score is the transport-weighted cosine between the image's patch
features and the class's N prompt features (Sinkhorn, eps 0.1, at most 100 iterations,
the released stopping rule; leclip.ot). The released code uses ResNet feature maps; on
a ViT the patch tokens play that role.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from leclip.backbone import ImageEncoder, PromptLearner, TextEncoder
from leclip.config import add_defaults
from leclip.dassl import TRAINER_REGISTRY
from leclip.ot import ot_similarity
from leclip.trainer_base import CLIPTrainer

add_defaults(
    {
        "TRAINER.PLOT.N_CTX": 16,
        "TRAINER.PLOT.CSC": False,
        "TRAINER.PLOT.CTX_INIT": "",
        "TRAINER.PLOT.CLASS_TOKEN_POSITION": "end",
        "TRAINER.PLOT.N": 4,
        "TRAINER.PLOT.EPS": 0.1,
        "TRAINER.PLOT.MAX_ITER": 100,
    }
)


class PLOTModel(nn.Module):
    def __init__(self, clip_model, prompt_learner, eps, max_iter):
        super().__init__()
        self.prompt_learner = prompt_learner
        self.text_encoder = TextEncoder(clip_model)
        self.image_encoder = ImageEncoder(clip_model)
        self.image_encoder.require_vit("PLOT")
        self.logit_scale = clip_model.logit_scale
        self.eps, self.max_iter = eps, max_iter

    def forward(self, images):
        with torch.no_grad():
            _, patches = self.image_encoder(images)
        text = self.text_encoder(*self.prompt_learner())
        n_sets, n_cls = self.prompt_learner.n_sets, self.prompt_learner.n_cls
        text = F.normalize(text, dim=-1).view(n_sets, n_cls, -1)
        return {"logits": self.logit_scale.exp() * ot_similarity(patches, text, self.eps, self.max_iter)}


@TRAINER_REGISTRY.register()
class LEPLOT(CLIPTrainer):
    def build_model(self):
        cfg = self.cfg.TRAINER.PLOT
        self.clip_model = self.load_clip()
        prompt_learner = PromptLearner(
            self.clip_model, self.classnames, n_ctx=cfg.N_CTX, ctx_init=cfg.CTX_INIT, csc=cfg.CSC,
            class_token_position=cfg.CLASS_TOKEN_POSITION, n_sets=cfg.N,
        )
        self.model = PLOTModel(self.clip_model, prompt_learner, cfg.EPS, cfg.MAX_ITER).to(self.device)
        self.setup_optimization("prompt_learner", self.model.prompt_learner)

    def forward_train(self, images):
        return self.model(images)
