"""LE-CLIP's own CLIP modules (Radford et al., 2021), independent of any `clip` package.

Forks of the `clip` package (MaPLe's, for one) change its model class's signature, so
LE-CLIP builds CLIP from these modules instead. Module names and parameter shapes are
OpenAI's, so OpenAI's checkpoints and ours load with `strict=True`; head counts are
arguments of each tower. Layout, as `encoders.py` and `lora.py` rely on: every
transformer is `transformer.resblocks[i]` with `.attn` (an `nn.MultiheadAttention`
called sequence-first as `attn(x, x, x, need_weights=False, attn_mask=mask)`, the mask
causal on the text side), `.ln_1`, `.mlp`, `.ln_2`. Everything runs in fp32; AMP casts
on CUDA where it is asked for.
"""
import math
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F


class LayerNorm(nn.LayerNorm):
    """Layer norm computed in fp32 whatever the input's dtype (as CLIP was trained)."""

    def forward(self, x):
        return super().forward(x.float()).to(x.dtype)


class QuickGELU(nn.Module):
    """CLIP's GELU approximation x * sigmoid(1.702 x): its weights were trained with it."""

    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


def causal_length(tokens):
    """How many leading positions of token ids [B, L] a causal text transformer needs:
    up to the last row's EOT (each row's largest id) + 1. A position only attends to the
    ones before it, so the positions after every EOT never reach a feature: dropping them
    changes no output (only the matrix shapes, i.e. float rounding, about 1e-6)."""
    return int(tokens.argmax(dim=-1).max()) + 1


def causal_mask(length, like):
    """Additive mask [L, L]: token i attends to tokens 0..i only."""
    return torch.full((length, length), float("-inf"), dtype=like.dtype, device=like.device).triu_(1)


class ResidualAttentionBlock(nn.Module):
    """Pre-norm block on sequence-first x [L, B, W]: x + attn(ln_1 x), then x + mlp(ln_2 x)."""

    def __init__(self, width, heads, causal=False):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_1 = LayerNorm(width)
        self.mlp = nn.Sequential(
            OrderedDict(c_fc=nn.Linear(width, 4 * width), gelu=QuickGELU(), c_proj=nn.Linear(4 * width, width))
        )
        self.ln_2 = LayerNorm(width)
        self.causal = causal

    def forward(self, x):
        h = self.ln_1(x)
        mask = causal_mask(x.shape[0], x) if self.causal else None
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=mask)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width, layers, heads, causal=False):
        super().__init__()
        self.width = width
        self.layers = layers
        self.resblocks = nn.Sequential(*[ResidualAttentionBlock(width, heads, causal) for _ in range(layers)])

    def forward(self, x):
        return self.resblocks(x)


class VisionTransformer(nn.Module):
    """Patches + class token -> transformer -> ln_post(class token) @ proj."""

    def __init__(self, input_resolution, patch_size, width, layers, heads, output_dim):
        super().__init__()
        self.input_resolution = input_resolution
        self.output_dim = output_dim
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        scale = width**-0.5
        grid = input_resolution // patch_size
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(grid * grid + 1, width))
        self.ln_pre = LayerNorm(width)
        self.transformer = Transformer(width, layers, heads)
        self.ln_post = LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim))

    def forward(self, images):
        x = self.conv1(images).flatten(2).transpose(1, 2)  # [B, N, W]
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = self.ln_pre(torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype))
        x = self.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
        return self.ln_post(x[:, 0]) @ self.proj


class Bottleneck(nn.Module):
    """ResNet bottleneck whose strided steps are average pools before 1x1/3x3 convs
    (anti-aliased), on the main path and the shortcut alike."""

    expansion = 4

    def __init__(self, inplanes, planes, stride=1):
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.downsample = None
        if stride > 1 or inplanes != out:
            # OpenAI's checkpoints name the shortcut's pool "-1", its conv "0", its norm "1"
            self.downsample = nn.Sequential(
                OrderedDict([("-1", nn.AvgPool2d(stride)), ("0", nn.Conv2d(inplanes, out, 1, bias=False)),
                             ("1", nn.BatchNorm2d(out))])
            )

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(self.avgpool(y)))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(y + shortcut)


class AttentionPool2d(nn.Module):
    """One query (the mean of the feature map) attends over the mean and every position."""

    def __init__(self, spatial_dim, embed_dim, heads, output_dim):
        super().__init__()
        positions = spatial_dim * spatial_dim + 1  # the mean, then every position
        self.positional_embedding = nn.Parameter(torch.randn(positions, embed_dim) / embed_dim**0.5)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.c_proj = nn.Linear(embed_dim, output_dim)
        self.num_heads = heads

    def forward(self, x):
        x = x.flatten(2).transpose(1, 2)  # [B, HW, C]
        x = torch.cat([x.mean(dim=1, keepdim=True), x], dim=1) + self.positional_embedding.to(x.dtype)
        batch, length, width = x.shape

        def split_heads(t):
            return t.view(batch, t.shape[1], self.num_heads, width // self.num_heads).transpose(1, 2)

        q, k, v = split_heads(self.q_proj(x[:, :1])), split_heads(self.k_proj(x)), split_heads(self.v_proj(x))
        pooled = F.scaled_dot_product_attention(q, k, v)  # [B, heads, 1, C / heads]
        return self.c_proj(pooled.transpose(1, 2).reshape(batch, width))


class ModifiedResNet(nn.Module):
    """CLIP's ResNet: a 3-conv stem with an average pool, anti-aliased bottlenecks, and
    attention pooling instead of global average pooling."""

    def __init__(self, layers, output_dim, heads, input_resolution, width):
        super().__init__()
        self.output_dim = output_dim
        self.input_resolution = input_resolution
        self.conv1 = nn.Conv2d(3, width // 2, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width // 2)
        self.conv2 = nn.Conv2d(width // 2, width // 2, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width // 2)
        self.conv3 = nn.Conv2d(width // 2, width, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.avgpool = nn.AvgPool2d(2)
        inplanes = width
        for index, (blocks, stride) in enumerate(zip(layers, (1, 2, 2, 2))):
            planes = width * 2**index
            stage = [Bottleneck(inplanes, planes, stride)]
            stage += [Bottleneck(planes * Bottleneck.expansion, planes) for _ in range(1, blocks)]
            setattr(self, f"layer{index + 1}", nn.Sequential(*stage))
            inplanes = planes * Bottleneck.expansion
        # the stem and three strided stages divide the resolution by 32
        self.attnpool = AttentionPool2d(input_resolution // 32, inplanes, heads, output_dim)

    @property
    def stages(self):
        return (self.layer1, self.layer2, self.layer3, self.layer4)

    def forward(self, images):
        x = F.relu(self.bn1(self.conv1(images)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = self.avgpool(F.relu(self.bn3(self.conv3(x))))
        for stage in self.stages:
            x = stage(x)
        return self.attnpool(x)


class CLIP(nn.Module):
    """Image tower (a ViT when `vision_layers` is an int, a ModifiedResNet when it is the
    four stage depths) and causal text transformer meeting in a joint space of `embed_dim`."""

    def __init__(
        self, embed_dim, image_resolution, vision_layers, vision_width, vision_patch_size, vision_heads,
        context_length, vocab_size, transformer_width, transformer_heads, transformer_layers,
    ):
        super().__init__()
        self.context_length = context_length
        self.vocab_size = vocab_size
        if isinstance(vision_layers, (tuple, list)):
            self.visual = ModifiedResNet(vision_layers, embed_dim, vision_heads, image_resolution, vision_width)
        else:
            self.visual = VisionTransformer(
                image_resolution, vision_patch_size, vision_width, vision_layers, vision_heads, embed_dim
            )
        self.transformer = Transformer(transformer_width, transformer_layers, transformer_heads, causal=True)
        self.token_embedding = nn.Embedding(vocab_size, transformer_width)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, transformer_width))
        self.ln_final = LayerNorm(transformer_width)
        self.text_projection = nn.Parameter(torch.empty(transformer_width, embed_dim))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))  # temperature 0.07
        self.initialize_parameters()

    def initialize_parameters(self):
        """CLIP's initialisation (the text tower's std shrinks with width and depth)."""
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        if isinstance(self.visual, ModifiedResNet):
            pool = self.visual.attnpool
            std = pool.c_proj.in_features**-0.5
            for linear in (pool.q_proj, pool.k_proj, pool.v_proj, pool.c_proj):
                nn.init.normal_(linear.weight, std=std)
            for stage in self.visual.stages:
                for block in stage:
                    nn.init.zeros_(block.bn3.weight)  # each residual branch starts as zero
        width, layers = self.transformer.width, self.transformer.layers
        proj_std = width**-0.5 * (2 * layers) ** -0.5
        for block in self.transformer.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=width**-0.5)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=(2 * width) ** -0.5)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
        nn.init.normal_(self.text_projection, std=width**-0.5)

    @property
    def dtype(self):
        return self.visual.conv1.weight.dtype

    def encode_image(self, images):
        return self.visual(images.to(self.dtype))

    def encode_text(self, tokens):
        """Token ids [B, L] -> features [B, D], read at each text's EOT (its largest id).
        Every position runs, as in the reference (one encode per evaluation: the prompt
        learners' `TextEncoder` is the path that drops the padding)."""
        x = self.token_embedding(tokens).to(self.dtype) + self.positional_embedding[: tokens.shape[-1]].to(self.dtype)
        x = self.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
        x = self.ln_final(x)
        return x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)] @ self.text_projection

    def forward(self, images, tokens):
        """(logits per image [B_i, B_t], logits per text [B_t, B_i]) at the learnt scale."""
        image_features = F.normalize(self.encode_image(images), dim=-1)
        text_features = F.normalize(self.encode_text(tokens), dim=-1)
        logits_per_image = self.logit_scale.exp() * image_features @ text_features.t()
        return logits_per_image, logits_per_image.t()
