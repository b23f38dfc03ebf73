"""CoOp: learnable context vectors in front of (or around) the class name.

Zhou et al., "Learning to Prompt for Vision-Language Models", IJCV 2022. Same config
keys as the official TRAINER.COOP node, so a CoOp fork's extend_cfg stays compatible.
As released (github.com/KaiyangZhou/CoOp): CTX_INIT sets the number of context tokens
to its word count and CSC is then ignored (one shared context, a line is printed);
`TRAINER.COOP.CSC_FROM_INIT` True (ours) gives each class its own copy of the init
words instead. Logits: the logit scale (TRAINER.LOGIT_SCALE, "model" = the
checkpoint's, as released) times the cosine of image and prompt features; loss CE.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from leclip.backbone import ImageEncoder, PromptLearner, TextEncoder
from leclip.config import add_defaults
from leclip.dassl import TRAINER_REGISTRY
from leclip.trainer_base import CLIPTrainer

add_defaults(
    {
        "TRAINER.COOP.N_CTX": 16,
        "TRAINER.COOP.CSC": False,  # class-specific contexts
        "TRAINER.COOP.CTX_INIT": "",  # e.g. "a photo of a"
        # (ours) CSC with CTX_INIT: class-specific copies of the init words (released: CSC ignored)
        "TRAINER.COOP.CSC_FROM_INIT": False,
        "TRAINER.COOP.CLASS_TOKEN_POSITION": "end",  # end | middle | front
    }
)


class PromptedCLIP(nn.Module):
    """Frozen CLIP whose class text features come from a prompt learner.

    `encode_classes()` gives the normalised class text features [C, D]; `forward`
    returns dict(logits) and, with `local` ("tokens" or "value"), the patch-level
    logits `local_logits` [B, N, C] too (LoCoOp, GL-MCM).
    """

    def __init__(self, clip_model, prompt_learner, logit_scale, local=None):
        super().__init__()
        self.prompt_learner = prompt_learner
        self.text_encoder = TextEncoder(clip_model)
        self.image_encoder = ImageEncoder(clip_model)
        self.logit_scale = logit_scale
        self.local = local
        if local:
            self.image_encoder.require_vit("Local features")

    def encode_classes(self):
        return F.normalize(self.text_encoder(*self.prompt_learner()), dim=-1)

    def forward(self, images, text):
        with torch.no_grad():  # the image tower is frozen: no autograd graph
            image_features, patches = self.image_encoder(images, patches=bool(self.local), local=self.local or "tokens")
        out = {"logits": self.logit_scale * F.normalize(image_features, dim=-1) @ text.t()}
        if self.local:
            out["local_logits"] = self.logit_scale * F.normalize(patches, dim=-1) @ text.t()
        return out


@TRAINER_REGISTRY.register()
class LECoOp(CLIPTrainer):
    # the harness's method key of this trainer and its name in the tables
    methods = {"coop": "CoOp"}
    table_row = 3  # its place in each task's table: baselines first, the papers' methods last
    def build_model(self):
        cfg = self.cfg.TRAINER.COOP
        self.clip_model = self.load_clip()
        prompt_learner = PromptLearner(
            self.clip_model,
            self.classnames,
            n_ctx=cfg.N_CTX,
            ctx_init=cfg.CTX_INIT,
            csc=cfg.CSC,
            class_token_position=cfg.CLASS_TOKEN_POSITION,
            csc_from_init=cfg.CSC_FROM_INIT,
        )
        self.model = PromptedCLIP(self.clip_model, prompt_learner, self.logit_scale).to(self.device)
        self.setup_optimization("prompt_learner", self.model.prompt_learner)
