"""MaPLe: coupled text and vision deep prompts.

Khattak et al., "MaPLe: Multi-modal Prompt Learning" (CVPR 2023). Text prompts of
N_CTX tokens (the first N_CTX tokens of "a photo of a" learn, the rest stays text) and,
for blocks 1..depth-1, deep text prompts replacing those tokens; vision prompts are
linear projections of the text ones (text width -> vision width, any widths) appended
to the image tokens and replaced up to the depth, through the CLIP layer's token hooks.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from leclip.backbone import DeepTokens, ImageEncoder, PromptLearner, ReplaceAt, TextEncoder
from leclip.config import add_defaults
from leclip.dassl import TRAINER_REGISTRY
from leclip.trainer_base import CLIPTrainer

add_defaults(
    {
        "TRAINER.MAPLE.N_CTX": 2,
        "TRAINER.MAPLE.CTX_INIT": "a photo of a",
        "TRAINER.MAPLE.PROMPT_DEPTH": 9,
    }
)


class MaPLeModel(nn.Module):
    def __init__(self, clip_model, classnames, n_ctx, ctx_init, depth, logit_scale):
        super().__init__()
        self.text_encoder = TextEncoder(clip_model)
        self.image_encoder = ImageEncoder(clip_model)
        self.image_encoder.require_vit("MaPLe")
        self.logit_scale = logit_scale
        max_depth = min(self.text_encoder.num_blocks, self.image_encoder.num_blocks)
        if depth > max_depth:
            print(f"MaPLe: PROMPT_DEPTH {depth} > {max_depth} blocks of this CLIP; using {max_depth}")
            depth = max_depth
        self.depth = depth
        text_width, vision_width = self.text_encoder.width, self.image_encoder.width
        self.prompt_learner = PromptLearner(clip_model, classnames, n_ctx=n_ctx, ctx_init=ctx_init, learn_init_prefix=True)
        n_ctx = self.prompt_learner.n_ctx
        self.deep_text = nn.ParameterList(
            [nn.Parameter(torch.empty(n_ctx, text_width).normal_(std=0.02)) for _ in range(depth - 1)]
        )
        self.shallow_proj = nn.Linear(text_width, vision_width)
        self.deep_proj = nn.ModuleList([nn.Linear(text_width, vision_width) for _ in range(depth - 1)])

    def hooks(self):
        """(text hook, vision hook) for the current prompts."""
        text = ReplaceAt({j + 1: p for j, p in enumerate(self.deep_text)}, start=1)
        vision = {0: self.shallow_proj(self.prompt_learner.ctx)}
        vision.update({j + 1: proj(p) for j, (proj, p) in enumerate(zip(self.deep_proj, self.deep_text))})
        return text, DeepTokens(vision, mode="replace")

    def encode_classes(self):
        """(normalised class text features [C, D], the vision hook of the current prompts)."""
        text_hook, vision_hook = self.hooks()
        prompts, tokens = self.prompt_learner()
        text = F.normalize(self.text_encoder(prompts, tokens, token_hook=text_hook), dim=-1)
        return text, vision_hook

    def forward(self, images, classes):
        text, vision_hook = classes
        image, _ = self.image_encoder(images, token_hook=vision_hook, patches=False)
        return {"logits": self.logit_scale * F.normalize(image, dim=-1) @ text.t()}

    def learnable(self):
        return nn.ModuleList([self.prompt_learner, self.deep_text, self.shallow_proj, self.deep_proj])


@TRAINER_REGISTRY.register()
class LEMaPLe(CLIPTrainer):
    def build_model(self):
        cfg = self.cfg.TRAINER.MAPLE
        self.clip_model = self.load_clip()
        self.model = MaPLeModel(
            self.clip_model, self.classnames, cfg.N_CTX, cfg.CTX_INIT, cfg.PROMPT_DEPTH, self.logit_scale
        )
        self.model.to(self.device)
        self.setup_optimization("multimodal_prompts", self.model.learnable())
