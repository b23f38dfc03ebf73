"""CLIP-LoRA: low-rank adapters on q, k, v of every block of both encoders.

Zanella & Ben Ayed, "Low-Rank Few-Shot Adaptation of Vision-Language Models" (CVPRW
2024), as released (github.com/MaxZanella/CLIP-LoRA): r 2, alpha 1 (scale
alpha / sqrt(r)), dropout 0.25, q/k/v (optionally "o") of every block (leclip.lora);
text features are recomputed from the prompt through the adapted text tower once per
step (and once per evaluation). Released: the prompt is "a photo of a {}." for every
dataset (`TRAINER.CLIP_LORA.TEMPLATE`) and the logit scale a fixed 100, whatever the
checkpoint's (the YAMLs set TRAINER.LOGIT_SCALE "100"); loss CE. The release evaluates
with the deltas merged into the weights, the same function up to round-off.
"""
import torch.nn as nn
import torch.nn.functional as F

from leclip.backbone import TextEncoder, clean_name
from leclip.config import add_defaults
from leclip.dassl import TRAINER_REGISTRY
from leclip.lora import apply_lora
from leclip.trainer_base import CLIPTrainer

add_defaults(
    {
        "TRAINER.CLIP_LORA.R": 2,
        "TRAINER.CLIP_LORA.ALPHA": 1.0,
        "TRAINER.CLIP_LORA.DROPOUT": 0.25,
        "TRAINER.CLIP_LORA.ENCODERS": ["vision", "text"],
        "TRAINER.CLIP_LORA.PARAMS": ["q", "k", "v"],  # a subset of q, k, v, o
        # the prompt of every class, as released; "" = DATASET.PROMPT_TEMPLATE (ours)
        "TRAINER.CLIP_LORA.TEMPLATE": "a photo of a {}.",
    }
)


class LoRACLIP(nn.Module):
    """CLIP whose attention layers carry LoRA deltas (`lora`, the modules that learn)."""

    def __init__(self, clip_model, lora, tokens, logit_scale):
        super().__init__()
        self.clip_model = clip_model
        self.lora = lora
        self.register_buffer("tokens", tokens, persistent=False)
        self.logit_scale = logit_scale

    def encode_classes(self):
        return F.normalize(self.clip_model.encode_text(self.tokens).float(), dim=-1)

    def forward(self, images, text):
        image = F.normalize(self.clip_model.encode_image(images).float(), dim=-1)
        return {"logits": self.logit_scale * image @ text.t()}


@TRAINER_REGISTRY.register()
class LECLIPLoRA(CLIPTrainer):
    # the harness's method key of this trainer and its name in the tables
    methods = {"clip_lora": "CLIP-LoRA"}
    table_row = 1  # its place in each task's table: baselines first, the papers' methods last
    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        template = cfg.TRAINER.CLIP_LORA.TEMPLATE
        if template and "{}" not in template:
            raise ValueError(
                f"TRAINER.CLIP_LORA.TEMPLATE={template!r} has no {{}} for the class name "
                '(released: "a photo of a {}."; "" = DATASET.PROMPT_TEMPLATE)'
            )

    def build_model(self):
        cfg = self.cfg.TRAINER.CLIP_LORA
        self.clip_model = self.load_clip()
        lora = apply_lora(self.clip_model, cfg.ENCODERS, cfg.PARAMS, cfg.R, cfg.ALPHA, cfg.DROPOUT)
        encoder = TextEncoder(self.clip_model)
        template = cfg.TEMPLATE or self.cfg.DATASET.PROMPT_TEMPLATE
        print(f"CLIP-LoRA prompts: {template!r}")
        tokens = encoder.tokenize([template.format(clean_name(c)) for c in self.classnames])
        self.model = LoRACLIP(self.clip_model, lora, tokens, self.logit_scale).to(self.device)
        self.setup_optimization("lora", self.model.lora)
