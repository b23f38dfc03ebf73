"""CLIP-LoRA: low-rank adapters on q, k, v of every block of both encoders.

Zanella & Ben Ayed, "Low-Rank Few-Shot Adaptation of Vision-Language Models" (CVPRW
2024). r 2, alpha 1 (scale alpha / sqrt(r), as released), dropout 0.25 (leclip.lora);
text features are recomputed from the zero-shot prompt through the adapted text tower
at each step.
"""
import torch.nn.functional as F

from leclip.config import add_defaults
from leclip.dassl import TRAINER_REGISTRY
from leclip.backbone import TextEncoder, clean_name
from leclip.lora import apply_lora
from leclip.trainer_base import CLIPTrainer

add_defaults(
    {
        "TRAINER.CLIP_LORA.R": 2,
        "TRAINER.CLIP_LORA.ALPHA": 1.0,
        "TRAINER.CLIP_LORA.DROPOUT": 0.25,
        "TRAINER.CLIP_LORA.ENCODERS": ["vision", "text"],
        "TRAINER.CLIP_LORA.PARAMS": ["q", "k", "v"],
    }
)


@TRAINER_REGISTRY.register()
class LECLIPLoRA(CLIPTrainer):
    def build_model(self):
        cfg = self.cfg.TRAINER.CLIP_LORA
        self.clip_model = self.load_clip()
        self.lora = apply_lora(self.clip_model, cfg.ENCODERS, cfg.PARAMS, cfg.R, cfg.ALPHA, cfg.DROPOUT)
        self.clip_model.to(self.device)
        encoder = TextEncoder(self.clip_model)
        template = self.cfg.DATASET.PROMPT_TEMPLATE
        self.tokens = encoder.tokenize([template.format(clean_name(c)) for c in self.classnames]).to(self.device)
        self.setup_optimization("lora", self.lora)

    def forward_train(self, images):
        image = F.normalize(self.clip_model.encode_image(images).float(), dim=-1)
        text = F.normalize(self.clip_model.encode_text(self.tokens).float(), dim=-1)
        return {"logits": self.logit_scale_value() * image @ text.t()}
