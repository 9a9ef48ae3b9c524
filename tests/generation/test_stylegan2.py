"""The fast StyleGAN2 generator against the literal per-sample transcription, and its sampling invariants."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ada_writer import random_stylegan2

from generation.networks import Network
from generation.sampling import latents, render
from generation.stylegan2 import StyleGAN2Config, fir_filter, to_uint8, upsample_2x
from generation.stylegan2_reference import reference_generate

CONFIGS = {
    "32px-map2": StyleGAN2Config(z_dim=32, w_dim=32, resolution=32, mapping_layers=2, channel_base=512,
                                 channel_max=32),
    "64px-map8-wide": StyleGAN2Config(z_dim=24, w_dim=40, resolution=64, mapping_layers=8, mapping_features=56,
                                      channel_base=1024, channel_max=48, conv_clamp=None),
    "16px-nomap": StyleGAN2Config(z_dim=16, w_dim=16, resolution=16, mapping_layers=0, channel_base=256,
                                  channel_max=16, conv_clamp=0.5),
}


def _net(gen) -> Network:
    return Network("test", "stylegan2", gen, None, "0" * 64, "test")


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("psi,noise", [(1.0, "const"), (0.6, "none")])
def test_fast_generator_matches_literal_transcription(name: str, psi: float, noise: str) -> None:
    cfg = CONFIGS[name]
    gen = random_stylegan2(cfg, seed=1)
    z = torch.from_numpy(latents([3, 7, 11], cfg.z_dim))
    with torch.no_grad():
        fast = gen(z, psi=psi, noise_mode=noise)
    slow = reference_generate(gen.state_dict(), cfg, z, psi=psi, noise_mode=noise)
    assert fast.shape == (3, 3, cfg.resolution, cfg.resolution)
    assert fast.abs().mean() > 0.05  # not a blank image
    assert (fast - slow).abs().max().item() < 1e-3 * max(1.0, slow.abs().max().item())
    diff = (to_uint8(fast).int() - to_uint8(slow).int()).abs()
    assert diff.max().item() <= 1


def test_clamp_and_noise_change_pixels() -> None:
    cfg = CONFIGS["32px-map2"]
    gen = random_stylegan2(cfg)
    z = torch.from_numpy(latents([0], cfg.z_dim))
    with torch.no_grad():
        const, none = gen(z, noise_mode="const"), gen(z, noise_mode="none")
        clamped = random_stylegan2(StyleGAN2Config(**{**cfg.__dict__, "conv_clamp": 0.1}))(z)
    assert (const - none).abs().max() > 1e-3
    assert clamped.abs().max() <= 0.1 * 4 + 1e-6  # toRGB outputs of 4 blocks, each clamped at 0.1


def test_truncation_psi_zero_gives_the_average_face() -> None:
    gen = random_stylegan2(CONFIGS["32px-map2"])
    pixels, _, w = render(_net(gen), [1, 2, 3], psi=0.0)
    assert np.array_equal(pixels[0], pixels[1]) and np.array_equal(pixels[1], pixels[2])
    assert np.allclose(w, gen.mapping.w_avg.numpy()[None], atol=1e-6)


@pytest.mark.parametrize("noise", ["const", "random", "none"])
def test_sample_depends_only_on_its_seed(noise: str) -> None:
    gen = random_stylegan2(CONFIGS["32px-map2"])
    seeds = [5, 0, 9, 123456]
    together, z_all, w_all = render(_net(gen), seeds, psi=0.7, noise_mode=noise)
    for i, seed in enumerate(seeds):
        alone, z, w = render(_net(gen), [seed], psi=0.7, noise_mode=noise)
        assert np.array_equal(z[0], z_all[i])
        assert np.abs(alone[0].astype(int) - together[i].astype(int)).max() <= 1
    assert not np.array_equal(together[0], together[1])


def test_random_noise_is_reproducible_and_differs_from_const() -> None:
    gen = random_stylegan2(CONFIGS["32px-map2"])
    a, _, _ = render(_net(gen), [4], noise_mode="random")
    b, _, _ = render(_net(gen), [4], noise_mode="random")
    c, _, _ = render(_net(gen), [4], noise_mode="const")
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_latents_follow_numpy_randomstate() -> None:
    z = latents([0, 42], 512)
    assert np.array_equal(z[1], np.random.RandomState(42).randn(1, 512)[0])
    assert z.dtype == np.float64


def test_upsample_keeps_a_constant_image_constant_inside() -> None:
    img = torch.full((1, 2, 6, 6), 3.0)
    up = upsample_2x(img, fir_filter())
    assert up.shape == (1, 2, 12, 12)
    assert torch.allclose(up[:, :, 2:-2, 2:-2], torch.tensor(3.0))
    impulse = torch.zeros(1, 1, 4, 4)
    impulse[0, 0, 1, 1] = 1.0
    assert torch.isclose(upsample_2x(impulse, fir_filter()).sum(), torch.tensor(4.0))  # gain 4: mean preserved
