"""Zero-shot CLIP: "a photo of a {}, a type of <domain>." (DATASET.PROMPT_TEMPLATE)."""
import torch.nn.functional as F

from leclip.backbone import class_text_features
from leclip.dassl import TRAINER_REGISTRY
from leclip.trainer_base import CLIPTrainer


@TRAINER_REGISTRY.register()
class LEZeroshotCLIP(CLIPTrainer):
    learns = False

    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        if cfg.OPTIM.MAX_EPOCH != 0 or cfg.TRAINER.SSL.MODE != "none":
            raise ValueError("LEZeroshotCLIP learns nothing: set OPTIM.MAX_EPOCH 0 and TRAINER.SSL.MODE none")

    def build_model(self):
        self.clip_model = self.load_clip().to(self.device)
        template = self.cfg.DATASET.PROMPT_TEMPLATE
        print(f"Zero-shot prompts: {template!r} over {len(self.classnames)} classes")
        self.text_features = class_text_features(self.clip_model, self.classnames, template, self.device)

    def forward_eval(self, images):
        image_features = F.normalize(self.clip_model.encode_image(images).float(), dim=-1)
        return {"logits": self.logit_scale_value() * image_features @ self.text_features.float().t()}
