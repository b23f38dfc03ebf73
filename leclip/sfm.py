"""CFSG-CLIP's semantic filtering module (SFM): pool the patches that show a class.

For each image and its class m (docs/METHODS.md, CFSG-CLIP):
- s_i = cos(z_i, t^m) over the patch features z_i; keep the top-k patches K;
- w_i = softmax over i in K of cos(z_i, z~) with the image's global feature z~
  ("visual" weighting), or w_i = 1/k ("textual": the text picks, nothing reweights);
- pooled local feature z = sum_{i in K} w_i z_i (patch features as given, not normalised).
The selection is not differentiable; the pooled feature is, through z_i and the weights.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

WEIGHTINGS = ("visual", "textual")


class SemanticFilter(nn.Module):
    def __init__(self, top_k=10, weighting="visual"):
        super().__init__()
        if weighting not in WEIGHTINGS:
            raise ValueError(f"SFM weighting {weighting!r}: use one of {WEIGHTINGS}")
        if int(top_k) != top_k or top_k < 1:
            raise ValueError(f"SFM top_k={top_k!r}: use a positive integer")
        self.top_k = int(top_k)
        self.weighting = weighting

    def forward(self, patches, global_feature, class_text):
        """patches [B, N, D], global_feature [B, D], class_text [B, D] (t^m of each image).

        Returns (pooled [B, D], indices [B, k] of the kept patches, weights [B, k]).
        """
        num_patches = patches.shape[1]
        if self.top_k > num_patches:
            raise ValueError(f"SFM top_k={self.top_k} exceeds the {num_patches} patches of this backbone")
        unit_patches = F.normalize(patches, dim=-1)
        text_sim = torch.einsum("bnd,bd->bn", unit_patches, F.normalize(class_text, dim=-1).to(patches.dtype))
        indices = text_sim.topk(self.top_k, dim=-1).indices
        kept = patches.gather(1, indices.unsqueeze(-1).expand(-1, -1, patches.shape[-1]))
        if self.weighting == "visual":
            unit_kept = unit_patches.gather(1, indices.unsqueeze(-1).expand(-1, -1, patches.shape[-1]))
            visual_sim = torch.einsum("bkd,bd->bk", unit_kept, F.normalize(global_feature, dim=-1).to(patches.dtype))
            weights = visual_sim.softmax(dim=-1)
        else:
            weights = torch.full(indices.shape, 1.0 / self.top_k, dtype=patches.dtype, device=patches.device)
        pooled = torch.einsum("bk,bkd->bd", weights, kept)
        return pooled, indices, weights
