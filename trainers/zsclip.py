"""Zero-shot CLIP: "a photo of a {}, a type of <domain>." (DATASET.PROMPT_TEMPLATE).

Single-label data: softmax over the classes. Multi-label data (tasks B, C): the scores
are the softmax probabilities and an image's predicted positives are its
`TRAINER.ZSCLIP.TOPK_POSITIVES` best classes (ours, the usual top-3 convention), never a
softmax at 0.5 (which allows one positive per image).
"""
import torch.nn as nn
import torch.nn.functional as F

from leclip.backbone import class_text_features
from leclip.config import add_defaults
from leclip.dassl import TRAINER_REGISTRY
from leclip.metrics import top_k_positives
from leclip.trainer_base import CLIPTrainer

add_defaults({"TRAINER.ZSCLIP.TOPK_POSITIVES": 3})  # (ours) multi-label: the top-k classes are positive


class ZeroShotCLIP(nn.Module):
    def __init__(self, clip_model, text_features, logit_scale):
        super().__init__()
        self.clip_model = clip_model
        self.register_buffer("text_features", text_features, persistent=False)
        self.logit_scale = logit_scale

    def encode_classes(self):
        return self.text_features

    def forward(self, images, text):
        image_features = F.normalize(self.clip_model.encode_image(images).float(), dim=-1)
        return {"logits": self.logit_scale * image_features @ text.t()}


@TRAINER_REGISTRY.register()
class LEZeroshotCLIP(CLIPTrainer):
    # the harness's method key of this trainer and its name in the tables
    methods = {"zsclip": "ZeroshotCLIP"}
    table_row = 0  # its place in each task's table: baselines first, the papers' methods last
    learns = False
    tasks = ("A", "B", "C")

    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        if cfg.OPTIM.MAX_EPOCH != 0 or cfg.TRAINER.SSL.MODE != "none":
            raise ValueError("LEZeroshotCLIP learns nothing: set OPTIM.MAX_EPOCH 0 and TRAINER.SSL.MODE none")
        if cfg.TRAINER.ZSCLIP.TOPK_POSITIVES < 1:
            raise ValueError(f"TRAINER.ZSCLIP.TOPK_POSITIVES={cfg.TRAINER.ZSCLIP.TOPK_POSITIVES}: use a positive integer")

    def build_model(self):
        self.clip_model = self.load_clip()
        template = self.cfg.DATASET.PROMPT_TEMPLATE
        print(f"Zero-shot prompts: {template!r} over {len(self.classnames)} classes")
        text = class_text_features(self.clip_model, self.classnames, template)
        self.model = ZeroShotCLIP(self.clip_model, text, self.logit_scale).to(self.device)

    def predict(self, images, classes):
        probs, score = super().predict(images, classes)
        if self.task != "multilabel":
            return probs, score
        return probs, top_k_positives(probs, self.cfg.TRAINER.ZSCLIP.TOPK_POSITIVES)
