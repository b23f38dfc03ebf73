"""CLIP-Adapter: a residual bottleneck adapter on the frozen image feature.

Gao et al., "CLIP-Adapter: Better Vision-Language Models with Feature Adapters" (IJCV
2023). Text features are the zero-shot prompts (DATASET.PROMPT_TEMPLATE), fixed; the
adapter (reduction 4) is blended with ratio 0.2 (leclip.adapters.ResidualAdapter).
"""
import torch
import torch.nn.functional as F

from leclip.adapters import ResidualAdapter
from leclip.backbone import class_text_features
from leclip.config import add_defaults
from leclip.dassl import TRAINER_REGISTRY
from leclip.trainer_base import CLIPTrainer

add_defaults({"TRAINER.CLIP_ADAPTER.RATIO": 0.2, "TRAINER.CLIP_ADAPTER.REDUCTION": 4})


@TRAINER_REGISTRY.register()
class LECLIPAdapter(CLIPTrainer):
    def build_model(self):
        cfg = self.cfg.TRAINER.CLIP_ADAPTER
        self.clip_model = self.load_clip().to(self.device)
        self.text_features = class_text_features(
            self.clip_model, self.classnames, self.cfg.DATASET.PROMPT_TEMPLATE, self.device
        )
        width = self.clip_model.text_projection.shape[1]
        self.adapter = ResidualAdapter(width, cfg.REDUCTION, cfg.RATIO).to(self.device)
        self.setup_optimization("adapter", self.adapter)

    def forward_train(self, images):
        with torch.no_grad():
            features = self.clip_model.encode_image(images).float()
        features = F.normalize(self.adapter(features), dim=-1)
        return {"logits": self.logit_scale_value() * features @ self.text_features.t()}
