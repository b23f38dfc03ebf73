"""CLIP-Adapter's residual bottleneck adapter, shared by CLIP-Adapter and CFSG-CLIP.

Gao et al., "CLIP-Adapter: Better Vision-Language Models with Feature Adapters":
two bias-free linear layers with ReLUs (width -> width/reduction -> width), blended
with the frozen feature as ratio * adapter(f) + (1 - ratio) * f.
"""
import torch.nn as nn


class ResidualAdapter(nn.Module):
    def __init__(self, width, reduction=4, ratio=0.2):
        super().__init__()
        hidden = max(1, width // reduction)
        self.ratio = ratio
        self.fc = nn.Sequential(
            nn.Linear(width, hidden, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, width, bias=False),
            nn.ReLU(inplace=True),
        )

    def forward(self, features):
        adapted = self.fc(features.to(self.fc[0].weight.dtype))
        return self.ratio * adapted + (1 - self.ratio) * features
