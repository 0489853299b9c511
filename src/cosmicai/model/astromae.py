"""AstroMAE fine-tuned photometric-redshift regressor.

The ViT-Inception-magnitude model of AstroMAE (a ViT encoder pretrained as a masked autoencoder
on SDSS 5-band galaxy images), as run by CAI, "Scalable Cosmic AI Inference using Cloud
Serverless Computing" (Staylor et al. 2025). The module tree reproduces the published
checkpoint's state_dict exactly (388 keys, see tests/data/astromae_state_dict.tsv).
"""

from __future__ import annotations

from functools import partial

import torch
from timm.layers import PatchEmbed
from timm.models.vision_transformer import Block
from torch import nn

IMG_SIZE, PATCH_SIZE, IN_CHANS, EMBED_DIM, DEPTH, NUM_HEADS = 32, 8, 5, 192, 12, 3
FEATURE_DIM, MAG_DIM = 1096, 1024


class ConvBlock(nn.Module):
    """Conv2d -> BatchNorm2d -> ReLU."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, padding=kernel_size // 2)
        self.bn = nn.BatchNorm2d(out_chs)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class Inception(nn.Module):
    """GoogLeNet-style block: 1x1 | 1x1->3x3 | 1x1->5x5 | maxpool->1x1, concatenated on channels.

    The three-branch variant skips branch3 in the forward; its weights exist in the checkpoint.
    """

    def __init__(self, in_chs: int, width: int, num_branches: int = 4) -> None:
        super().__init__()
        self.num_branches = num_branches
        self.branch1 = ConvBlock(in_chs, width, 1)
        self.branch2 = nn.Sequential(ConvBlock(in_chs, width, 1), ConvBlock(width, width, 3))
        self.branch3 = nn.Sequential(ConvBlock(in_chs, width, 1), ConvBlock(width, width, 5))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), ConvBlock(in_chs, width, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = [self.branch1, self.branch2, self.branch3, self.branch4]
        if self.num_branches == 3:
            branches = [self.branch1, self.branch2, self.branch4]
        return torch.cat([b(x) for b in branches], dim=1)


class InceptionMagnitude(nn.Module):
    """The CNN image branch and the magnitude MLP."""

    def __init__(self) -> None:
        super().__init__()
        # One module registered twice, as in the original code: hence the duplicate state_dict keys.
        self.conv2d_init = nn.Conv2d(IN_CHANS, 32, 1)
        self.vis_inception = nn.Sequential(
            self.conv2d_init,
            nn.AvgPool2d(2),
            Inception(32, 16),
            Inception(64, 16),
            nn.AvgPool2d(2),
            Inception(64, 8),
            Inception(32, 8),
            nn.AvgPool2d(2),
            Inception(32, 4, num_branches=3),
            nn.Flatten(),
            nn.Linear(12 * 4 * 4, FEATURE_DIM),
            nn.ReLU(),
            nn.Linear(FEATURE_DIM, FEATURE_DIM),
        )
        layers: list[nn.Module] = [nn.Linear(IN_CHANS, MAG_DIM)]
        for _ in range(4):
            layers += [nn.ReLU(), nn.Linear(MAG_DIM, MAG_DIM)]
        self.magnitude_block = nn.Sequential(*layers)


class AstroMAERegressor(nn.Module):
    """ViT (MAE-pretrained) + Inception CNN + magnitude MLP -> redshift."""

    def __init__(self) -> None:
        super().__init__()
        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        self.patch_embed = PatchEmbed(img_size=IMG_SIZE, patch_size=PATCH_SIZE, in_chans=IN_CHANS, embed_dim=EMBED_DIM)
        num_patches = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, EMBED_DIM))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, EMBED_DIM))
        self.blocks = nn.Sequential(
            *[Block(EMBED_DIM, NUM_HEADS, mlp_ratio=4.0, qkv_bias=True, norm_layer=norm_layer) for _ in range(DEPTH)]
        )
        self.fc_norm = norm_layer(EMBED_DIM)
        self.head = nn.Linear(EMBED_DIM, EMBED_DIM)
        self.vit_block = nn.Sequential(nn.Linear(EMBED_DIM, FEATURE_DIM), nn.ReLU(), nn.Linear(FEATURE_DIM, FEATURE_DIM))
        self.inception_model = InceptionMagnitude()
        self.concat_block = nn.Sequential(nn.Linear(2 * FEATURE_DIM + MAG_DIM, 1024), nn.ReLU(), nn.Linear(1024, 1))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def forward_vit(self, x: torch.Tensor) -> torch.Tensor:
        """Patch tokens -> 12 blocks -> mean of patch tokens -> fc_norm -> head -> vit_block."""
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = self.blocks(x)
        x = self.fc_norm(x[:, 1:].mean(dim=1))
        return self.vit_block(self.head(x))

    def forward(self, images: torch.Tensor, magnitudes: torch.Tensor) -> torch.Tensor:
        """Predict z of shape (B,) from images (B, 5, 32, 32) and magnitudes (B, 5)."""
        vit = self.forward_vit(images)
        cnn = self.inception_model.vis_inception(images)
        mag = self.inception_model.magnitude_block(magnitudes)
        return self.concat_block(torch.cat([vit, cnn, mag], dim=1)).squeeze(1)


def build_model() -> AstroMAERegressor:
    """A randomly initialised AstroMAE regressor in eval mode."""
    return AstroMAERegressor().eval()
