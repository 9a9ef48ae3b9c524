"""Image generation rates on CPU, float32 (issue 3): StyleGAN2 at 256 px and the DCGAN default.

Random weights (the speed does not depend on their values, and no download is needed): StyleGAN2 in the
``paper256`` shape of stylegan2-ada (z = w = 512, 8 mapping layers, channel_base 16384, channel_max 512,
conv_clamp 256, const noise); DCGAN in the shape of ``digiface-dcgan``. Baselines, in the same process:
StyleGAN2 against :func:`generation.stylegan2_reference.reference_generate` (the literal per-sample
transcription that modulates the weights of every layer for every image), DCGAN against one image per call.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from benchmarks.timing import matmul_flops
from generation.dcgan import DCGANGenerator
from generation.networks import Network
from generation.sampling import render
from generation.stylegan2 import StyleGAN2Config, StyleGAN2Generator
from generation.stylegan2_reference import reference_generate

__all__ = ["run", "stylegan2_flops_per_image"]

PAPER256 = StyleGAN2Config(z_dim=512, w_dim=512, resolution=256, mapping_layers=8, channel_base=16384,
                           channel_max=512, conv_clamp=256.0)


def _best_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Fastest of ``repeats`` calls after one warm-up: on a shared machine the minimum is the code's speed,
    the median mostly the neighbours' load."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def stylegan2_flops_per_image(cfg: StyleGAN2Config) -> int:
    """Multiply-adds x 2 of the convolutions and dense layers actually executed (transposed convs at the input
    resolution), without the element-wise work."""
    macs = sum(a * b for a, b in zip(cfg.mapping_sizes()[:-1], cfg.mapping_sizes()[1:], strict=True))
    for res in cfg.block_resolutions:
        c_out = cfg.channels_for(res)
        if res > 4:
            c_in = cfg.channels_for(res // 2)
            macs += c_in * c_out * 9 * (res // 2) ** 2 + cfg.w_dim * c_in
        macs += c_out * c_out * 9 * res**2 + cfg.w_dim * c_out  # conv1 + its affine
        macs += c_out * cfg.img_channels * res**2 + cfg.w_dim * c_out  # toRGB + its affine
    return 2 * macs


def run(repeats: int = 4, batch: int = 1, big_batch: int = 8) -> dict[str, Any]:
    """Headline StyleGAN2 rate at ``batch`` (on CPU one image at a time is fastest: the activations of a
    256 px image already exceed the caches); ``big_batch`` is reported alongside."""
    threads = torch.get_num_threads()
    torch.manual_seed(0)
    sg = StyleGAN2Generator(PAPER256).eval()
    sg_net = Network("random-paper256", "stylegan2", sg, None, "", "")  # type: ignore[arg-type]
    rates = {}
    for b in (batch, big_batch):
        seeds = list(range(b))
        rates[b] = b / _best_seconds(lambda seeds=seeds: render(sg_net, seeds, psi=0.7), repeats)
    state = sg.state_dict()
    z = torch.randn(1, PAPER256.z_dim)
    torch.set_flush_denormal(True)  # as render() does, so the comparison is of the algorithms
    ref_s = _best_seconds(lambda: reference_generate(state, PAPER256, z, psi=0.7), repeats)
    torch.set_flush_denormal(False)
    sg_rate, ref_rate = rates[batch], 1 / ref_s

    dc = DCGANGenerator().eval()
    dc_net = Network("random-dcgan", "dcgan", dc, None, "", "")  # type: ignore[arg-type]
    dc_batch = 64
    dc_seeds = list(range(dc_batch))
    dc_s = _best_seconds(lambda: render(dc_net, dc_seeds), repeats)
    one_s = _best_seconds(lambda: [render(dc_net, [s]) for s in dc_seeds[:16]], repeats) / 16
    flops = stylegan2_flops_per_image(PAPER256)
    peak = matmul_flops(threads)
    return {
        "stylegan2_256_img_per_s": sg_rate,
        "stylegan2_256_vs_reference": sg_rate / ref_rate,
        "stylegan2_256_peak_fraction": sg_rate * flops / peak,
        "dcgan_img_per_s": dc_batch / dc_s,
        "dcgan_batch_vs_single": (dc_batch / dc_s) * one_s,
        "generation_detail": {
            "stylegan2": f"random weights, paper256 shape, fp32 CPU, psi 0.7, const noise, batch {batch}; "
                         "includes latents, mapping, synthesis and uint8 conversion (not PNG encoding)",
            f"stylegan2_256_img_per_s_batch{big_batch}": rates[big_batch],
            "stylegan2_reference_img_per_s": ref_rate,
            "stylegan2_gflop_per_image": flops / 1e9,
            "dcgan": f"random weights, digiface-dcgan shape (nz 100, ngf 64), fp32 CPU, batch {dc_batch} vs 1",
            "dcgan_single_img_per_s": 1 / one_s,
            "timing": f"best of {repeats} calls after a warm-up",
            "threads": threads,
            "matmul_gflops": peak / 1e9,
        },
    }
