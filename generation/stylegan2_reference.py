"""A literal, one-sample-at-a-time transcription of the StyleGAN2 equations over a ``G_ema`` state dict.

Slow on purpose: it modulates and demodulates the *weights* of every layer for every sample (as the paper
writes it), upsamples the image by explicit zero insertion, and shares no code with
:mod:`generation.stylegan2`. Tests check the fast generator against it; ``benchmarks/generation_speed.py``
uses it as the baseline of its speed ratio.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from generation.stylegan2 import StyleGAN2Config

__all__ = ["reference_generate"]


def _dense(state: dict[str, Tensor], name: str, x: Tensor, lr_mul: float, act: bool) -> Tensor:
    weight, bias = state[f"{name}.weight"], state[f"{name}.bias"]
    y = x @ (weight * (lr_mul / math.sqrt(weight.shape[1]))).T + bias * lr_mul
    return torch.where(y >= 0, y, 0.2 * y) * math.sqrt(2) if act else y


def _fir(x: Tensor, f: Tensor, pad_lo: int, pad_hi: int, gain: float) -> Tensor:
    c = x.shape[0]
    x = F.pad(x[None], (pad_lo, pad_hi, pad_lo, pad_hi))
    return F.conv2d(x, (f * gain).flip([0, 1]).expand(c, 1, *f.shape), groups=c)[0]


def _modconv(state: dict[str, Tensor], name: str, x: Tensor, w: Tensor, *, up: bool, demodulate: bool,
             gain: float = 1.0) -> Tensor:
    """x: [C_in, H, W] of one sample, w: [w_dim]."""
    style = _dense(state, f"{name}.affine", w[None], 1.0, False)[0] * gain
    weight = state[f"{name}.weight"] * style[None, :, None, None]
    if demodulate:
        weight = weight * (weight.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8).rsqrt()
    if not up:
        return F.conv2d(x[None], weight, padding=weight.shape[-1] // 2)[0]
    y = F.conv_transpose2d(x[None], weight.transpose(0, 1), stride=2)[0]
    return _fir(y, state[f"{name}.resample_filter"], 1, 1, 4.0)


def _layer(state: dict[str, Tensor], name: str, x: Tensor, w: Tensor, up: bool, noise_mode: str,
           clamp: float | None) -> Tensor:
    x = _modconv(state, name, x, w, up=up, demodulate=True)
    if noise_mode == "const" and f"{name}.noise_const" in state:
        x = x + state[f"{name}.noise_const"] * state[f"{name}.noise_strength"]
    x = x + state[f"{name}.bias"][:, None, None]
    x = torch.where(x >= 0, x, 0.2 * x) * math.sqrt(2)
    return x if clamp is None else x.clamp(-clamp, clamp)


def _torgb(state: dict[str, Tensor], name: str, x: Tensor, w: Tensor, clamp: float | None) -> Tensor:
    x = _modconv(state, name, x, w, up=False, demodulate=False, gain=1 / math.sqrt(x.shape[0]))
    x = x + state[f"{name}.bias"][:, None, None]
    return x if clamp is None else x.clamp(-clamp, clamp)


def _upsample_image(img: Tensor, f: Tensor) -> Tensor:
    c, h, w = img.shape
    up = torch.zeros(c, 2 * h, 2 * w, dtype=img.dtype)
    up[:, ::2, ::2] = img
    return _fir(up, f, 2, 1, 4.0)


@torch.no_grad()
def reference_generate(state: dict[str, Tensor], cfg: StyleGAN2Config, z: Tensor, psi: float = 1.0,
                       noise_mode: str = "const") -> Tensor:
    """Images in [-1, 1] (NCHW) for latents ``z`` [N, z_dim], noise ``const`` or ``none``, one sample at a time."""
    if noise_mode not in ("const", "none"):
        raise ValueError("the reference transcription supports noise modes const and none")
    state = {k: v.float() for k, v in state.items()}
    num_ws = 2 * int(math.log2(cfg.resolution)) - 2
    images = []
    for zi in z.float():
        x = zi * (zi.square().mean() + 1e-8).rsqrt()
        for i in range(cfg.mapping_layers):
            x = _dense(state, f"mapping.fc{i}", x[None], cfg.mapping_lr_mul, True)[0]
        ws = [state["mapping.w_avg"] + psi * (x - state["mapping.w_avg"]) for _ in range(num_ws)]
        h = state["synthesis.b4.const"]
        h = _layer(state, "synthesis.b4.conv1", h, ws[0], False, noise_mode, cfg.conv_clamp)
        img = _torgb(state, "synthesis.b4.torgb", h, ws[1], cfg.conv_clamp)
        for k, res in enumerate(cfg.block_resolutions[1:]):
            b = f"synthesis.b{res}"
            h = _layer(state, f"{b}.conv0", h, ws[1 + 2 * k], True, noise_mode, cfg.conv_clamp)
            h = _layer(state, f"{b}.conv1", h, ws[2 + 2 * k], False, noise_mode, cfg.conv_clamp)
            img = _upsample_image(img, state[f"{b}.resample_filter"]) + _torgb(state, f"{b}.torgb", h,
                                                                               ws[3 + 2 * k], cfg.conv_clamp)
        images.append(img)
    return torch.stack(images)
