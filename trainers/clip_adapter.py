"""CLIP-Adapter: a residual bottleneck adapter on the frozen image feature.

Gao et al., "CLIP-Adapter: Better Vision-Language Models with Feature Adapters" (IJCV
2023), as released (github.com/gaopengcuhk/CLIP-Adapter, clip_adapter.py): the image
feature f (before normalisation) becomes ratio * A(f) + (1 - ratio) * f with A two
bias-free linear layers with ReLUs (reduction 4, ratio 0.2; leclip.adapters); the text
features are the fixed hand-written prompts (DATASET.PROMPT_TEMPLATE); only A learns.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from leclip.adapters import ResidualAdapter
from leclip.backbone import class_text_features
from leclip.config import add_defaults
from leclip.dassl import TRAINER_REGISTRY
from leclip.trainer_base import CLIPTrainer

add_defaults({"TRAINER.CLIP_ADAPTER.RATIO": 0.2, "TRAINER.CLIP_ADAPTER.REDUCTION": 4})


class AdaptedCLIP(nn.Module):
    """Frozen CLIP + fixed prompt text features; the adapter on the image feature learns."""

    def __init__(self, clip_model, text_features, adapter, logit_scale):
        super().__init__()
        self.clip_model = clip_model
        self.adapter = adapter
        self.register_buffer("text_features", text_features, persistent=False)
        self.logit_scale = logit_scale

    def encode_classes(self):
        return self.text_features

    def forward(self, images, text):
        with torch.no_grad():  # the image tower is frozen
            features = self.clip_model.encode_image(images).float()
        features = F.normalize(self.adapter(features), dim=-1)
        return {"logits": self.logit_scale * features @ text.t()}


@TRAINER_REGISTRY.register()
class LECLIPAdapter(CLIPTrainer):
    # the harness's method key of this trainer and its name in the tables
    methods = {"clip_adapter": "CLIP-Adapter"}
    table_row = 2  # its place in each task's table: baselines first, the papers' methods last
    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        adapter = cfg.TRAINER.CLIP_ADAPTER
        if not 0 <= adapter.RATIO <= 1 or adapter.REDUCTION < 1:
            raise ValueError(
                f"TRAINER.CLIP_ADAPTER: RATIO={adapter.RATIO}, REDUCTION={adapter.REDUCTION}: "
                "RATIO is a blend weight in [0, 1] and REDUCTION at least 1 (released: 0.2, 4)"
            )

    def build_model(self):
        cfg = self.cfg.TRAINER.CLIP_ADAPTER
        self.clip_model = self.load_clip()
        text = class_text_features(self.clip_model, self.classnames, self.cfg.DATASET.PROMPT_TEMPLATE)
        width = self.clip_model.text_projection.shape[1]  # the joint space's width
        adapter = ResidualAdapter(width, cfg.REDUCTION, cfg.RATIO)
        self.model = AdaptedCLIP(self.clip_model, text, adapter, self.logit_scale).to(self.device)
        self.setup_optimization("adapter", self.model.adapter)
