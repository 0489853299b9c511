"""Make look-alikes of the original CAI files, run as a script in a process of its own.

`python cai_lookalike.py OUTDIR`: a whole pickled `torch.nn.DataParallel` around a
`blocks.model_vit_inception.ViT_Astro`, with submodules from `blocks.photoz` and timm 0.4.12's
module paths, built the way the original code builds it (a shared `conv2d_init`, a parameter
attribute typo, plain attributes such as `config` and `device`), holding the weights of a random
cosmicai model; plus inputs and the look-alike's own predictions (`expected.npz`).
The modules `blocks.*` exist only in this process: the tests read the files in another one.
"""

from __future__ import annotations

import sys
import types
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from timm.layers import Mlp as TimmMlp
from timm.layers import PatchEmbed as TimmPatchEmbed
from timm.layers.attention import Attention as TimmAttention
from timm.models.vision_transformer import Block
from torch import nn


def _register(cls: type, module: str) -> type:
    """Make `cls` importable (for pickle) as module.<name>, creating stand-in modules as needed."""
    parts = module.split(".")
    for i in range(1, len(parts) + 1):
        sys.modules.setdefault(".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
    cls.__module__ = module
    setattr(sys.modules[module], cls.__qualname__, cls)
    return cls


class PatchEmbed(TimmPatchEmbed):
    pass


class Mlp(TimmMlp):
    pass


class Attention(TimmAttention):
    pass


class ConvBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, **kwargs: object) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, **kwargs)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class InceptionBlock(nn.Module):
    def __init__(self, in_channels: int, width: int, is_custom: bool = False) -> None:
        super().__init__()
        self.is_custom = is_custom
        self.branch1 = ConvBlock(in_channels, width, kernel_size=1)
        self.branch2 = nn.Sequential(
            ConvBlock(in_channels, width, kernel_size=1, padding=0), ConvBlock(width, width, kernel_size=3, padding=1)
        )
        self.branch3 = nn.Sequential(ConvBlock(in_channels, width, kernel_size=1), ConvBlock(width, width, kernel_size=5, padding=2))
        self.branch4 = nn.Sequential(nn.MaxPool2d(kernel_size=3, padding=1, stride=1), ConvBlock(in_channels, width, kernel_size=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = (
            (self.branch1, self.branch2, self.branch4) if self.is_custom else (self.branch1, self.branch2, self.branch3, self.branch4)
        )
        return torch.cat([b(x) for b in branches], 1)


class Input_Mix_Model(nn.Module):  # noqa: N801 - the original class name
    def __init__(self) -> None:
        super().__init__()
        self.magnitude = True
        self.device = "cpu"
        self.config = [{"in_channel": c, "out_11": w} for c, w in ((32, 16), (64, 16), (64, 8), (32, 8), (32, 4))]
        self.conv2d_init = nn.Conv2d(5, 32, kernel_size=(1, 1), padding_mode="zeros")
        self.avgpool = nn.AvgPool2d(kernel_size=2, stride=2)
        layers = [nn.Linear(5, 1024)]
        for _ in range(4):
            layers += [nn.ReLU(), nn.Linear(1024, 1024)]
        self.magnitude_block = nn.Sequential(*layers)
        self.vis_inception = nn.Sequential(
            self.conv2d_init,
            self.avgpool,
            InceptionBlock(32, 16),
            InceptionBlock(64, 16),
            nn.AvgPool2d(kernel_size=2),
            InceptionBlock(64, 8),
            InceptionBlock(32, 8),
            nn.AvgPool2d(kernel_size=2),
            InceptionBlock(32, 4, is_custom=True),
            nn.Flatten(),
            nn.Linear(192, 1096),
            nn.ReLU(),
            nn.Linear(1096, 1096),
        )

    def forward(self, x: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return torch.cat((self.vis_inception(x[0]), self.magnitude_block(x[1].float())), axis=1)


class ViT_Astro(nn.Module):  # noqa: N801 - the original class name
    def __init__(self, embed_dim: int = 192) -> None:
        super().__init__()
        norm = partial(nn.LayerNorm, eps=1e-6)
        self.embed_dim = embed_dim
        self.fc_norm = norm(embed_dim)
        self.head = nn.Linear(embed_dim, embed_dim)
        self.inception_model = Input_Mix_Model()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 17, embed_dim))
        self.blocks = nn.Sequential(
            *[Block(embed_dim, 3, 4.0, qkv_bias=True, norm_layer=norm, mlp_layer=Mlp, attn_layer=Attention) for _ in range(12)]
        )
        self.patch_embed = PatchEmbed(img_size=32, patch_size=8, in_chans=5, embed_dim=embed_dim)
        for p in self.patch_embed.parameters():
            p.requres_grad = False  # the original's typo: an extra attribute on each parameter
        self.cls_token.requires_grad = False
        self.vit_block = nn.Sequential(nn.Linear(embed_dim, 1096), nn.ReLU(), nn.Linear(1096, 1096))
        self.concat_block = nn.Sequential(nn.Linear(3216, 1024), nn.ReLU(), nn.Linear(1024, 1))

    def forward(self, x: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        v = self.patch_embed(x[0])
        v = torch.cat((self.cls_token.expand(v.shape[0], -1, -1), v), dim=1) + self.pos_embed
        for blk in self.blocks:
            v = blk(v)
        v = self.vit_block(self.head(self.fc_norm(v[:, 1:, :].mean(dim=1))))
        return self.concat_block(torch.cat((v, self.inception_model(x)), axis=1))


def register_all() -> None:
    """Put every look-alike class under the module path the original file names."""
    _register(PatchEmbed, "timm.models.layers.patch_embed")
    _register(Mlp, "timm.models.layers.mlp")
    _register(Attention, "timm.models.vision_transformer")
    for cls in (ConvBlock, InceptionBlock, Input_Mix_Model):
        _register(cls, "blocks.photoz")
    _register(ViT_Astro, "blocks.model_vit_inception")


def write_model(outdir: Path) -> None:
    """model.pt and model_legacy.pt (whole DataParallel; zip and pre-1.6 formats), expected.npz (inputs, z)."""
    from cosmicai.model.astromae import build_model

    register_all()
    torch.manual_seed(0)
    source = build_model()
    with torch.no_grad():
        for m in source.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
    model = ViT_Astro().eval()
    model.load_state_dict(source.state_dict(), strict=True)
    g = torch.Generator().manual_seed(1)
    images, mags = torch.randn(16, 5, 32, 32, generator=g), torch.randn(16, 5, generator=g) + 20
    with torch.no_grad():
        z = model((images, mags)).squeeze(1)
    np.savez(outdir / "expected.npz", images=images.numpy(), magnitudes=mags.numpy(), z=z.numpy())
    torch.save(nn.DataParallel(model), outdir / "model.pt")
    torch.save(nn.DataParallel(model), outdir / "model_legacy.pt", _use_new_zipfile_serialization=False)


if __name__ == "__main__":
    write_model(Path(sys.argv[1]))
