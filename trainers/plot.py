"""PLOT: N prompt sets matched to local image features by optimal transport.

Chen et al., "PLOT: Prompt Learning with Optimal Transport for Vision-Language Models"
(ICLR 2023), as released (github.com/CHENGY12/PLOT, plot-coop). Each class has N
learnable prompts; its logit is the logit scale times the transport-weighted cosine
between the image's patch features and the class's N prompt features (Sinkhorn, eps
0.1, at most 100 iterations, the released stopping rule; leclip.ot), loss CE.

Ours, not in the release:
- local features: plot-coop is released for ResNet-50 only (the attention-pool outputs at
  every position of the feature map are the local features); here the ViT's last-block
  patch tokens through ln_post and proj play that role;
- CSC, CTX_INIT (with N 1) and the middle / front class-token positions: the release
  runs only generic random contexts with the class token at the end. CSC with CTX_INIT
  follows CoOp (CSC ignored unless `TRAINER.PLOT.CSC_FROM_INIT`);
- no term adding the global CLIP logits, which the release adds on ImageNet only (not
  one of LE-CLIP's datasets).
"""
import torch
import torch.nn as nn

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
        "TRAINER.PLOT.CSC_FROM_INIT": False,  # (ours) as TRAINER.COOP.CSC_FROM_INIT
        "TRAINER.PLOT.CLASS_TOKEN_POSITION": "end",
        "TRAINER.PLOT.N": 4,  # prompt sets
        "TRAINER.PLOT.EPS": 0.1,  # entropic regularisation of the transport
        "TRAINER.PLOT.MAX_ITER": 100,  # Sinkhorn iterations at most
    }
)


class PLOTModel(nn.Module):
    def __init__(self, clip_model, prompt_learner, logit_scale, eps=0.1, max_iter=100):
        super().__init__()
        self.prompt_learner = prompt_learner
        self.text_encoder = TextEncoder(clip_model)
        self.image_encoder = ImageEncoder(clip_model)
        self.image_encoder.require_vit("PLOT")
        self.logit_scale = logit_scale
        self.eps, self.max_iter = eps, max_iter

    def encode_classes(self):
        """Prompt features [N, C, D]: the prompt learner is set-major (set s, class c at s * C + c)."""
        text = self.text_encoder(*self.prompt_learner())
        return text.view(self.prompt_learner.n_sets, self.prompt_learner.n_cls, -1)

    def forward(self, images, prompt_features):
        with torch.no_grad():  # the image tower is frozen
            _, patches = self.image_encoder(images)
        similarity = ot_similarity(patches, prompt_features, self.eps, self.max_iter)
        return {"logits": self.logit_scale * similarity}


@TRAINER_REGISTRY.register()
class LEPLOT(CLIPTrainer):
    # the harness's method key of this trainer and its name in the tables
    methods = {"plot": "PLOT"}
    table_row = 5  # its place in each task's table: baselines first, the papers' methods last
    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        plot = cfg.TRAINER.PLOT
        if plot.N < 1 or plot.MAX_ITER < 1 or plot.EPS <= 0:
            raise ValueError(
                f"TRAINER.PLOT: N={plot.N}, MAX_ITER={plot.MAX_ITER}, EPS={plot.EPS}: "
                "N and MAX_ITER must be at least 1 and EPS positive (released: 4, 100, 0.1)"
            )
        if plot.CTX_INIT and plot.N > 1:
            # identical prompts get identical plans and gradients: they would never diverge
            raise ValueError(
                f"TRAINER.PLOT.CTX_INIT={plot.CTX_INIT!r} starts all {plot.N} prompt sets from the same words, "
                "so they never diverge; leave CTX_INIT empty (random init, as released) or set TRAINER.PLOT.N 1"
            )

    def build_model(self):
        cfg = self.cfg.TRAINER.PLOT
        self.clip_model = self.load_clip()
        prompt_learner = PromptLearner(
            self.clip_model, self.classnames, n_ctx=cfg.N_CTX, ctx_init=cfg.CTX_INIT, csc=cfg.CSC,
            class_token_position=cfg.CLASS_TOKEN_POSITION, n_sets=cfg.N, csc_from_init=cfg.CSC_FROM_INIT,
        )
        self.model = PLOTModel(self.clip_model, prompt_learner, self.logit_scale, cfg.EPS, cfg.MAX_ITER)
        self.model.to(self.device)
        self.setup_optimization("prompt_learner", self.model.prompt_learner)
