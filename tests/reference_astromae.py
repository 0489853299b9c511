"""An independent, purely functional AstroMAE forward written from the published layout (no timm, no cosmicai).

Used to check that the project's model, loading and inference reproduce the architecture.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _lin(sd: dict, key: str, x: torch.Tensor) -> torch.Tensor:
    return F.linear(x, sd[f"{key}.weight"], sd[f"{key}.bias"])


def _cb(sd: dict, key: str, x: torch.Tensor, pad: int) -> torch.Tensor:
    x = F.conv2d(x, sd[f"{key}.conv.weight"], sd[f"{key}.conv.bias"], padding=pad)
    bn = key + ".bn"
    x = F.batch_norm(x, sd[f"{bn}.running_mean"], sd[f"{bn}.running_var"], sd[f"{bn}.weight"], sd[f"{bn}.bias"], False, 0.0, 1e-5)
    return F.relu(x)


def _inception(sd: dict, key: str, x: torch.Tensor, three: bool = False) -> torch.Tensor:
    b1 = _cb(sd, f"{key}.branch1", x, 0)
    b2 = _cb(sd, f"{key}.branch2.1", _cb(sd, f"{key}.branch2.0", x, 0), 1)
    b3 = _cb(sd, f"{key}.branch3.1", _cb(sd, f"{key}.branch3.0", x, 0), 2)
    b4 = _cb(sd, f"{key}.branch4.1", F.max_pool2d(x, 3, 1, 1), 0)
    return torch.cat([b1, b2, b4] if three else [b1, b2, b3, b4], 1)


def reference_forward(sd: dict, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """z for images x (B,5,32,32) and magnitudes m (B,5) from a state_dict in the published layout."""
    b = x.shape[0]
    t = F.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=8).flatten(2).transpose(1, 2)
    t = torch.cat([sd["cls_token"].expand(b, -1, -1), t], 1) + sd["pos_embed"]
    for i in range(12):
        p = f"blocks.{i}"
        h = F.layer_norm(t, (192,), sd[f"{p}.norm1.weight"], sd[f"{p}.norm1.bias"], 1e-6)
        qkv = _lin(sd, f"{p}.attn.qkv", h).reshape(b, 17, 3, 3, 64).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        a = torch.softmax(q @ k.transpose(-2, -1) * 64**-0.5, dim=-1) @ v
        t = t + _lin(sd, f"{p}.attn.proj", a.transpose(1, 2).reshape(b, 17, 192))
        h = F.layer_norm(t, (192,), sd[f"{p}.norm2.weight"], sd[f"{p}.norm2.bias"], 1e-6)
        t = t + _lin(sd, f"{p}.mlp.fc2", F.gelu(_lin(sd, f"{p}.mlp.fc1", h)))
    v = F.layer_norm(t[:, 1:].mean(1), (192,), sd["fc_norm.weight"], sd["fc_norm.bias"], 1e-6)
    v = _lin(sd, "vit_block.2", F.relu(_lin(sd, "vit_block.0", _lin(sd, "head", v))))

    vi = "inception_model.vis_inception"
    c = F.avg_pool2d(F.conv2d(x, sd[f"{vi}.0.weight"], sd[f"{vi}.0.bias"]), 2)
    c = F.avg_pool2d(_inception(sd, f"{vi}.3", _inception(sd, f"{vi}.2", c)), 2)
    c = F.avg_pool2d(_inception(sd, f"{vi}.6", _inception(sd, f"{vi}.5", c)), 2)
    c = _inception(sd, f"{vi}.8", c, three=True).flatten(1)
    c = _lin(sd, f"{vi}.12", F.relu(_lin(sd, f"{vi}.10", c)))

    g = _lin(sd, "inception_model.magnitude_block.0", m)
    for j in (2, 4, 6, 8):
        g = _lin(sd, f"inception_model.magnitude_block.{j}", F.relu(g))
    out = _lin(sd, "concat_block.2", F.relu(_lin(sd, "concat_block.0", torch.cat([v, c, g], 1))))
    return out.squeeze(1)


def random_state_dict(reference_tsv: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors for every key of the published layout (positive variances), read from the TSV."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    for line in open(reference_tsv):
        if line.startswith("#") or line.startswith("key\t"):
            continue
        key, dtype, shape = line.rstrip("\n").split("\t")
        dims = tuple(int(s) for s in shape.strip("()").split(",") if s.strip())
        if dtype == "int64":
            sd[key] = torch.tensor(100, dtype=torch.int64).reshape(dims)
        elif key.endswith("running_var"):
            sd[key] = torch.rand(dims, generator=g) + 0.5
        else:
            fan_in = dims[1] * (dims[2] * dims[3] if len(dims) == 4 else 1) if len(dims) >= 2 else 50
            sd[key] = torch.randn(dims, generator=g) / fan_in**0.5
    # the original registers one conv twice: both keys hold the same tensor
    sd["inception_model.conv2d_init.weight"] = sd["inception_model.vis_inception.0.weight"]
    sd["inception_model.conv2d_init.bias"] = sd["inception_model.vis_inception.0.bias"]
    return sd
