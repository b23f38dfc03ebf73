"""MaPLe: coupled text and vision deep prompts.

Khattak et al., "MaPLe: Multi-modal Prompt Learning" (CVPR 2023), as released
(github.com/muzairkhattak/multimodal-prompt-learning):
- text: N_CTX learnable context tokens after SOS. CTX_INIT initialises them only when
  N_CTX <= 4 (the release's literal rule): they take the embeddings of the first N_CTX
  tokens of "SOS <CTX_INIT> EOS pad..." and the remaining init words stay fixed text
  (with more tokens than words the init also takes the EOS / pad embeddings and the
  context overwrites the first class-name tokens, as released). With N_CTX > 4 CTX_INIT
  is not used (one printed line): random N(0, 0.02) context, prefix "X X ...";
- deep text prompts replace the context tokens at blocks 1..d_text-1;
- vision: a linear projection (text width -> vision width) of the context joins the image
  tokens after the positional embedding and before ln_pre (image hook index -1); the
  projections of the deep text prompts replace them at blocks 1..d_vision-1. The deep
  projections start as copies of one layer;
- each tower is prompted to its own depth, d = min(PROMPT_DEPTH, its blocks): with towers
  of different depths the deeper one keeps its prompts (one printed line when
  PROMPT_DEPTH exceeds a tower). Only the deep prompts and projections some tower uses
  are built (the release builds PROMPT_DEPTH - 1 of each);
- logits: the logit scale times the cosine; loss CE.
Differences, not behaviour: any text / vision widths (the release hard-codes ViT-B's 512
and 768), and fp32 prompt tokens (the release casts them to fp16 even in an fp32 model).
"""
import copy

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
        "TRAINER.MAPLE.CTX_INIT": "a photo of a",  # used only when N_CTX <= 4 (released rule)
        "TRAINER.MAPLE.PROMPT_DEPTH": 9,  # per tower: min(PROMPT_DEPTH, the tower's blocks)
    }
)

# the release initialises the context from CTX_INIT only for N_CTX up to this
MAX_INIT_CTX = 4


class MaPLeModel(nn.Module):
    def __init__(self, clip_model, classnames, n_ctx, ctx_init, depth, logit_scale):
        super().__init__()
        if depth < 1:
            raise ValueError(f"TRAINER.MAPLE.PROMPT_DEPTH={depth}: use at least 1 (1 = first-layer prompts only)")
        self.text_encoder = TextEncoder(clip_model)
        self.image_encoder = ImageEncoder(clip_model)
        self.image_encoder.require_vit("MaPLe")
        self.logit_scale = logit_scale
        blocks = {"text": self.text_encoder.num_blocks, "vision": self.image_encoder.num_blocks}
        self.depths = {tower: min(depth, n) for tower, n in blocks.items()}
        if depth > min(blocks.values()):
            shallower = " and ".join(f"{tower} ({n} blocks)" for tower, n in blocks.items() if depth > n)
            print(
                f"MaPLe: PROMPT_DEPTH {depth} exceeds the {shallower} tower of this CLIP; prompting text to "
                f"depth {self.depths['text']}, vision to depth {self.depths['vision']}"
            )
        if ctx_init and n_ctx > MAX_INIT_CTX:
            print(
                f"MaPLe: N_CTX {n_ctx} > {MAX_INIT_CTX}, so CTX_INIT {ctx_init!r} is not used (as released): "
                "random context"
            )
            ctx_init = ""
        self.prompt_learner = PromptLearner(clip_model, classnames, n_ctx=n_ctx, ctx_init=ctx_init, learn_init_prefix=True)
        text_width, vision_width = self.text_encoder.width, self.image_encoder.width
        self.deep_text = nn.ParameterList(
            [nn.Parameter(torch.empty(n_ctx, text_width).normal_(std=0.02)) for _ in range(max(self.depths.values()) - 1)]
        )
        self.shallow_proj = nn.Linear(text_width, vision_width)
        deep_proj = nn.Linear(text_width, vision_width)
        self.deep_proj = nn.ModuleList([copy.deepcopy(deep_proj) for _ in range(self.depths["vision"] - 1)])

    def hooks(self):
        """(text hook, vision hook) for the current prompts."""
        text = ReplaceAt({j + 1: self.deep_text[j] for j in range(self.depths["text"] - 1)}, start=1)
        vision = {-1: self.shallow_proj(self.prompt_learner.ctx)}  # before ln_pre
        vision.update({j + 1: proj(self.deep_text[j]) for j, proj in enumerate(self.deep_proj)})
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
    # the harness's method key of this trainer and its name in the tables
    methods = {"maple": "MaPLe"}
    table_row = 6  # its place in each task's table: baselines first, the papers' methods last
    def build_model(self):
        cfg = self.cfg.TRAINER.MAPLE
        self.clip_model = self.load_clip()
        self.model = MaPLeModel(
            self.clip_model, self.classnames, cfg.N_CTX, cfg.CTX_INIT, cfg.PROMPT_DEPTH, self.logit_scale
        )
        self.model.to(self.device)
        self.setup_optimization("multimodal_prompts", self.model.learnable())
