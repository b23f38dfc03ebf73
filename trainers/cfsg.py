"""CFSG-CLIP: coarse- and fine-guidance branches on one frozen CLIP (docs/METHODS.md).

Coarse branch: CoOp prompts -> t_c; frozen image encoder (no_grad) -> global and patch
features, both through a residual adapter; the semantic filtering module (SFM,
`leclip.sfm`) pools the patches that show class m into z_c. Fine branch: own prompts
-> t_f; a learnable projection of z_c is injected as an extra token into the first D
blocks of the frozen image encoder (`DeepTokens`, replace or concat) and its own SFM
gives z_f. Each branch has a global and a local (SFM) head; each head gets a
supervised CE and a FixMatch term masked by the filter F. Inference: mean of the
heads' probabilities; ID score (TRAINER.CFSG.ID_SCORE) the training filter's score
(MCM) on the global heads, averaged over branches.

Class m of the SFM: the label for labeled images; else the argmax of the branch's global
prediction (for a strong view: on its weak view). Only prompts, adapter and injection
projection learn; they are the registered model "cfsg" (and its checkpoints). The
FixMatch step is the shared `leclip.ssl.FixMatchStep`, with one filter per branch.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from leclip.adapters import ResidualAdapter
from leclip.backbone import DeepTokens, ImageEncoder, PromptLearner, TextEncoder
from leclip.config import add_defaults
from leclip.dassl import TRAINER_REGISTRY
from leclip.sfm import WEIGHTINGS, SemanticFilter
from leclip.ssl import head_id_score
from leclip.trainer_base import CLIPTrainer

add_defaults(
    {
        "TRAINER.CFSG.N_CTX": 16,  # (ours) context tokens of each branch's prompts
        "TRAINER.CFSG.CTX_INIT": "",  # e.g. "a photo of a"; empty = random N(0, 0.02)
        # ablation switches; the fine branch exists when SFM_FINE or VSI is on
        "TRAINER.CFSG.ADAPTER": True,  # residual adapter on the coarse features
        "TRAINER.CFSG.SFM_COARSE": True,
        "TRAINER.CFSG.SFM_FINE": True,
        "TRAINER.CFSG.VSI": True,  # visual-semantic injection (needs SFM_COARSE)
        "TRAINER.CFSG.ADAPTER_RATIO": 0.2,  # (ours) CLIP-Adapter's blend ratio
        "TRAINER.CFSG.ADAPTER_REDUCTION": 4,  # (ours) CLIP-Adapter's bottleneck reduction
        "TRAINER.CFSG.TOP_K": 10,  # (ours) patches kept by the SFM; above N keeps all
        "TRAINER.CFSG.WEIGHTING": "visual",  # visual | textual (uniform weights)
        "TRAINER.CFSG.INJECT_MODE": "replace",  # replace | concat
        "TRAINER.CFSG.DEPTH": 9,  # (ours) blocks 1..D get the injected token; above T means all
        # (ours) class m of an unlabeled/test image: "branch" = argmax of the branch's own
        # global prediction, "coarse" = the coarse branch's for both
        "TRAINER.CFSG.SFM_CLASS": "branch",
        "TRAINER.CFSG.LAMBDA_C": 1.0,  # (ours) unlabeled weight of the coarse branch (x SSL.LAMBDA)
        "TRAINER.CFSG.LAMBDA_F": 1.0,  # (ours) unlabeled weight of the fine branch (x SSL.LAMBDA)
        # (ours) heads whose probabilities are averaged at inference (switched-off heads skipped)
        "TRAINER.CFSG.ENSEMBLE": ["coarse_global", "coarse_local", "fine_global", "fine_local"],
        # (ours) test-time ID score (open-set decision and AUROC): "filter" = the training
        # filter's score (TRAINER.SSL.SCORE, MCM by default) on each branch's global head,
        # averaged over branches; "ensemble_msp" = max of the ensemble's mean probability
        "TRAINER.CFSG.ID_SCORE": "filter",
    }
)

# head name -> key of its logits in a branch's output
HEADS = {"global": "logits", "local": "sfm_logits"}
SFM_CLASSES = ("branch", "coarse")
ID_SCORE_RULES = ("filter", "ensemble_msp")


class CFSGModel(nn.Module):
    """Frozen CLIP with CFSG-CLIP's two branches; `self.learnable` holds what trains."""

    def __init__(self, clip_model, classnames, cfg, logit_scale):
        super().__init__()
        self.image_encoder = ImageEncoder(clip_model)
        self.image_encoder.require_vit("CFSG-CLIP")
        self.text_encoder = TextEncoder(clip_model)
        self.logit_scale = logit_scale
        self.check(cfg)
        self.sfm_on = {"coarse": cfg.SFM_COARSE, "fine": cfg.SFM_FINE}
        self.branches = ("coarse", "fine") if (cfg.SFM_FINE or cfg.VSI) else ("coarse",)
        self.vsi = cfg.VSI
        self.inject_mode = cfg.INJECT_MODE
        self.depth = min(cfg.DEPTH, self.image_encoder.num_blocks)
        self.sfm_class = cfg.SFM_CLASS
        self.sfm = SemanticFilter(min(cfg.TOP_K, self.image_encoder.num_patches), cfg.WEIGHTING)
        self.ensemble = [
            (branch, HEADS[head])
            for branch, head in (name.split("_") for name in cfg.ENSEMBLE)
            if branch in self.branches and (head == "global" or self.sfm_on[branch])
        ]
        if not self.ensemble:
            raise ValueError(f"TRAINER.CFSG.ENSEMBLE={list(cfg.ENSEMBLE)} names no head this configuration has")

        dim = self.image_encoder.output_dim
        learnable = {}
        for branch in self.branches:
            learnable[f"{branch}_prompts"] = PromptLearner(
                clip_model, classnames, n_ctx=cfg.N_CTX, ctx_init=cfg.CTX_INIT
            )
        if cfg.ADAPTER:
            learnable["adapter"] = ResidualAdapter(dim, cfg.ADAPTER_REDUCTION, cfg.ADAPTER_RATIO)
        if cfg.VSI:
            learnable["inject"] = nn.Linear(dim, self.image_encoder.width)
        self.learnable = nn.ModuleDict(learnable)

    @staticmethod
    def check(cfg):
        choices = {
            "WEIGHTING": WEIGHTINGS,
            "INJECT_MODE": DeepTokens.MODES,
            "SFM_CLASS": SFM_CLASSES,
            "ID_SCORE": ID_SCORE_RULES,
        }
        for key, allowed in choices.items():
            if cfg[key] not in allowed:
                raise ValueError(f"TRAINER.CFSG.{key}={cfg[key]!r}: use one of {allowed}")
        known = [f"{b}_{h}" for b in ("coarse", "fine") for h in HEADS]
        unknown = [name for name in cfg.ENSEMBLE if name not in known]
        if unknown:
            raise ValueError(f"TRAINER.CFSG.ENSEMBLE has unknown heads {unknown}: use names from {known}")
        if cfg.VSI and not cfg.SFM_COARSE:
            raise ValueError(
                "TRAINER.CFSG.VSI injects the coarse SFM feature z_c: set TRAINER.CFSG.SFM_COARSE True or VSI False"
            )
        for key in ("TOP_K", "DEPTH"):
            if cfg[key] < 1:
                raise ValueError(f"TRAINER.CFSG.{key}={cfg[key]}: use a positive integer")

    def describe(self):
        parts = ["coarse: prompts" + (" + adapter" if "adapter" in self.learnable else "")]
        if "fine" in self.branches:
            parts.append("fine: prompts" + (f" + VSI {self.inject_mode} in blocks 1..{self.depth}" if self.vsi else ""))
        sfm = [b for b in self.branches if self.sfm_on[b]]
        if sfm:
            parts.append(f"SFM ({'/'.join(sfm)}): top-{self.sfm.top_k}, {self.sfm.weighting} weighting")
        heads = ", ".join(f"{b}_{'global' if k == 'logits' else 'local'}" for b, k in self.ensemble)
        return "CFSG-CLIP | " + " | ".join(parts) + f" | inference: mean of {heads}"

    def encode_classes(self):
        """Normalised class text features of each branch {branch: [K, D]}."""
        return {
            b: F.normalize(self.text_encoder(*self.learnable[f"{b}_prompts"]()), dim=-1) for b in self.branches
        }

    def forward(self, images, text, classes=None):
        """Outputs per branch (logits [B, K], local_logits [B, N, K] per patch, and with
        the SFM: sfm_logits [B, K], pooled [B, D], classes [B]) plus the ensemble's
        log-probabilities as `logits`. `text` is `encode_classes()`; `classes` maps a
        branch to the class m of each image for its SFM (None: its SFM_CLASS rule)."""
        classes = classes or {}
        with torch.no_grad():
            frozen_global, frozen_patches = self.image_encoder(images)
        global_c, patches_c = frozen_global, frozen_patches
        if "adapter" in self.learnable:
            global_c, patches_c = self.learnable["adapter"](global_c), self.learnable["adapter"](patches_c)
        out = {"coarse": self.branch("coarse", global_c, patches_c, text["coarse"], classes.get("coarse"))}
        if "fine" in self.branches:
            if self.vsi:
                token = self.learnable["inject"](out["coarse"]["pooled"]).unsqueeze(1)
                hook = DeepTokens({block: token for block in range(self.depth)}, self.inject_mode)
                global_f, patches_f = self.image_encoder(images, token_hook=hook)
            else:  # without injection the fine branch sees the frozen features
                global_f, patches_f = frozen_global, frozen_patches
            fine_class = classes.get("fine")
            if fine_class is None and self.sfm_class == "coarse":
                fine_class = out["coarse"]["logits"].argmax(dim=-1)
            out["fine"] = self.branch("fine", global_f, patches_f, text["fine"], fine_class)
        out["logits"] = self.ensemble_log_probs(out)
        return out

    def branch(self, name, global_feature, patches, text, classes=None):
        scale = self.logit_scale
        out = {
            "logits": scale * F.normalize(global_feature, dim=-1) @ text.t(),
            "local_logits": scale * F.normalize(patches, dim=-1) @ text.t(),
        }
        if self.sfm_on[name]:
            classes = out["logits"].argmax(dim=-1) if classes is None else classes
            pooled, _, _ = self.sfm(patches, global_feature, text[classes])
            out.update(sfm_logits=scale * F.normalize(pooled, dim=-1) @ text.t(), pooled=pooled, classes=classes)
        return out

    def ensemble_log_probs(self, out):
        """log of the mean of the ensemble heads' probabilities (stable: logsumexp)."""
        log_probs = torch.stack([out[b][key].float().log_softmax(dim=-1) for b, key in self.ensemble])
        return torch.logsumexp(log_probs, dim=0) - math.log(len(self.ensemble))


@TRAINER_REGISTRY.register()
class CFSG(CLIPTrainer):
    # the harness's method key of this trainer and its name in the tables
    methods = {"cfsg": "CFSG-CLIP"}
    table_row = 7  # its place in each task's table: baselines first, the papers' methods last
    def build_model(self):
        self.clip_model = self.load_clip()
        self.model = CFSGModel(self.clip_model, self.classnames, self.cfg.TRAINER.CFSG, self.logit_scale)
        self.model.to(self.device)
        print(self.model.describe())
        self.setup_optimization("cfsg", self.model.learnable)

    def heads(self, branch):
        return {h: k for h, k in HEADS.items() if h == "global" or self.model.sfm_on[branch]}

    def fixmatch_heads(self):
        return {b: self.heads(b) for b in self.model.branches}

    def output_groups(self, out):
        return {b: out[b] for b in self.model.branches}

    def unlabeled_weights(self):
        return {"coarse": self.cfg.TRAINER.CFSG.LAMBDA_C, "fine": self.cfg.TRAINER.CFSG.LAMBDA_F}

    def forward_labeled(self, images, labels, text):
        return self.model(images, text, {b: labels for b in self.model.branches})

    def forward_unlabeled(self, images, text, groups_weak):
        # the strong view pools the patches of the class that its weak view predicts
        classes = None if groups_weak is None else {b: group.get("classes") for b, group in groups_weak.items()}
        return self.model(images, text, classes)

    def supervised_losses(self, out, labels):
        return {
            f"loss_x_{b}": sum(F.cross_entropy(out[b][k].float(), labels) for k in self.heads(b).values())
            for b in self.model.branches
        }

    def predict(self, images, text):
        """(mean probability of the ensemble heads, ID score under TRAINER.CFSG.ID_SCORE)."""
        out = self.model(images, text)
        probs = out["logits"].exp()
        if self.cfg.TRAINER.CFSG.ID_SCORE == "ensemble_msp":
            return probs, probs.max(dim=-1).values
        score = self.cfg.TRAINER.SSL.SCORE
        per_branch = [head_id_score(score, out[b], self.logit_scale) for b in self.model.branches]
        return probs, torch.stack(per_branch).mean(dim=0)
