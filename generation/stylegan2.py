"""A StyleGAN2 generator (mapping + skip-architecture synthesis) whose parameters have the names and meaning of
stylegan2-ada-pytorch's ``G_ema``, so its networks load here and give the same pixels.

Written from the published equations (Karras et al. 2020) and the behaviour listed in issue 3, not from
NVIDIA's code. Everything runs in float32: fp16 on CPU changes up to 2 uint8 levels on ~2% of pixels.
The fast path modulates activations instead of weights (one shared convolution per layer for the whole
batch); :mod:`generation.stylegan2_reference` is the literal per-sample transcription it is checked against.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "NOISE_MODES",
    "StyleGAN2Config",
    "StyleGAN2Generator",
    "fir_filter",
    "normalize_2nd_moment",
    "to_uint8",
    "upsample_2x",
]

NOISE_MODES = ("const", "random", "none")
LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)


@dataclass(frozen=True)
class StyleGAN2Config:
    """Shape and constants of a generator; :meth:`channels_for` gives the feature maps of each block.

    ``channels`` lists the feature maps per block resolution 4, 8, ..., ``resolution``; when empty they follow
    the reference rule ``min(channel_base // res, channel_max)``.
    """

    z_dim: int = 512
    w_dim: int = 512
    resolution: int = 256
    img_channels: int = 3
    mapping_layers: int = 8
    mapping_features: int | None = None
    mapping_lr_mul: float = 0.01
    channel_base: int = 32768
    channel_max: int = 512
    channels: tuple[int, ...] = field(default=())
    conv_clamp: float | None = 256.0
    use_noise: bool = True
    w_avg_beta: float | None = 0.995

    def __post_init__(self) -> None:
        if self.resolution < 4 or self.resolution & (self.resolution - 1):
            raise ValueError(f"resolution {self.resolution} is not a power of two >= 4")
        if self.mapping_layers == 0 and self.z_dim != self.w_dim:
            raise ValueError("a mapping network with no layers needs z_dim == w_dim")
        if self.channels and len(self.channels) != len(self.block_resolutions):
            raise ValueError(f"channels has {len(self.channels)} entries for {len(self.block_resolutions)} blocks")

    @property
    def block_resolutions(self) -> tuple[int, ...]:
        return tuple(2**i for i in range(2, int(math.log2(self.resolution)) + 1))

    @property
    def num_ws(self) -> int:
        """One w per conv layer plus one for the last toRGB: 2 log2(res) - 2."""
        return 2 * int(math.log2(self.resolution)) - 2

    def channels_for(self, res: int) -> int:
        if self.channels:
            return self.channels[self.block_resolutions.index(res)]
        return min(self.channel_base // res, self.channel_max)

    def mapping_sizes(self) -> list[int]:
        hidden = self.mapping_features if self.mapping_features is not None else self.w_dim
        return [self.z_dim] + [hidden] * (self.mapping_layers - 1) + [self.w_dim]


def normalize_2nd_moment(x: Tensor, eps: float = 1e-8) -> Tensor:
    """Scale each row to unit mean square (the mapping network's input normalisation)."""
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


def fir_filter(taps: Sequence[float] = (1, 3, 3, 1)) -> Tensor:
    """The separable low-pass filter as a normalised 2-D kernel (outer product / sum)."""
    f = torch.as_tensor(taps, dtype=torch.float32)
    f = torch.outer(f, f)
    return f / f.sum()


def _filter2d(x: Tensor, f: Tensor, pad: tuple[int, int, int, int], gain: float) -> Tensor:
    """Depthwise convolution with ``f * gain`` after zero padding (left, right, top, bottom)."""
    c = x.shape[1]
    kernel = (f * gain).flip([0, 1]).to(x.dtype)[None, None].expand(c, 1, *f.shape)
    if len(set(pad)) == 1:  # symmetric: let the convolution pad (saves a copy of x)
        return F.conv2d(x, kernel, padding=pad[0], groups=c)
    return F.conv2d(F.pad(x, pad), kernel, groups=c)


def upsample_2x(x: Tensor, f: Tensor) -> Tensor:
    """Zero-insertion 2x upsampling then the FIR filter at gain 4 (for the skip-connection image)."""
    n, c, h, w = x.shape
    up = x.new_zeros(n, c, h, 2, w, 2)
    up[:, :, :, 0, :, 0] = x
    up = up.reshape(n, c, 2 * h, 2 * w)
    fh = f.shape[0]
    lo, hi = (fh + 1) // 2, (fh - 2) // 2
    return _filter2d(up, f, (lo, hi, lo, hi), gain=4.0)


def to_uint8(img: Tensor) -> Tensor:
    """NCHW in [-1, 1] -> NHWC uint8 the way the reference ``generate.py`` converts (x*127.5+128, truncated)."""
    return (img.permute(0, 2, 3, 1) * 127.5 + 128).clamp(0, 255).to(torch.uint8)


def _modulated_conv(x: Tensor, weight: Tensor, styles: Tensor, dcoefs: Tensor | None, *, up: bool) -> Tensor:
    """conv(x, weight * styles[in] * dcoefs[out]) per sample; 3x3 with padding 1, or transposed stride 2.

    Two equal ways to compute it: scale the activations around one shared convolution, or scale the weights
    per sample (a grouped convolution). Whichever touches fewer numbers wins: weights at low resolution
    (many channels, few pixels) are bigger than the activations, at high resolution much smaller.
    """
    n, c_in, h, w = x.shape
    c_out, _, k, _ = weight.shape
    if weight.numel() > c_in * h * w:
        x = x * styles[:, :, None, None]
        x = F.conv_transpose2d(x, weight.transpose(0, 1), stride=2) if up else F.conv2d(x, weight, padding=k // 2)
        return x if dcoefs is None else x.mul_(dcoefs[:, :, None, None])
    wts = weight[None] * styles[:, None, :, None, None]  # [N, out, in, k, k]
    if dcoefs is not None:
        wts = wts * dcoefs[:, :, None, None, None]
    x = x.reshape(1, n * c_in, h, w)
    if up:
        wts = wts.transpose(1, 2).reshape(n * c_in, c_out, k, k)
        x = F.conv_transpose2d(x, wts, stride=2, groups=n)
    else:
        x = F.conv2d(x, wts.reshape(n * c_out, c_in, k, k), padding=k // 2, groups=n)
    return x.reshape(n, c_out, *x.shape[2:])


class FullyConnected(nn.Module):
    """Equalised-learning-rate dense layer: x @ (W * lr_mul / sqrt(in)).T + b * lr_mul, optional lrelu*sqrt(2)."""

    def __init__(self, in_features: int, out_features: int, *, lr_mul: float = 1.0, lrelu: bool = False,
                 bias_init: float = 0.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init)))
        self.weight_gain = lr_mul / math.sqrt(in_features)
        self.bias_gain = lr_mul
        self.lrelu = lrelu

    def forward(self, x: Tensor) -> Tensor:
        x = torch.addmm(self.bias * self.bias_gain, x, (self.weight * self.weight_gain).t())
        if self.lrelu:
            x = F.leaky_relu(x, LRELU_SLOPE) * LRELU_GAIN
        return x


class MappingNetwork(nn.Module):
    """z -> w: 2nd-moment normalisation then ``mapping_layers`` dense lrelu layers; ``w_avg`` for truncation."""

    def __init__(self, cfg: StyleGAN2Config) -> None:
        super().__init__()
        sizes = cfg.mapping_sizes()
        self.num_layers = cfg.mapping_layers
        for i in range(cfg.mapping_layers):
            setattr(self, f"fc{i}", FullyConnected(sizes[i], sizes[i + 1], lr_mul=cfg.mapping_lr_mul, lrelu=True))
        self.register_buffer("w_avg", torch.zeros(cfg.w_dim))

    def forward(self, z: Tensor, psi: float = 1.0, cutoff: int | None = None, num_ws: int = 1) -> Tensor:
        """[N, z_dim] -> [N, num_ws, w_dim], truncated towards ``w_avg`` (only the first ``cutoff`` ws if set)."""
        x = normalize_2nd_moment(z.float())
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)
        ws = x.unsqueeze(1).repeat(1, num_ws, 1)
        if psi != 1:
            stop = num_ws if cutoff is None else cutoff
            ws[:, :stop] = self.w_avg + psi * (ws[:, :stop] - self.w_avg)
        return ws


class SynthesisLayer(nn.Module):
    """3x3 modulated, demodulated convolution (optionally 2x up), noise, bias, lrelu*sqrt(2), clamp."""

    def __init__(self, in_ch: int, out_ch: int, w_dim: int, resolution: int, *, up: bool, use_noise: bool,
                 conv_clamp: float | None) -> None:
        super().__init__()
        self.affine = FullyConnected(w_dim, in_ch, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, 3, 3))
        self.up = up
        self.use_noise = use_noise
        self.conv_clamp = conv_clamp
        self.resolution = resolution
        if use_noise:
            self.register_buffer("noise_const", torch.randn(resolution, resolution))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros(out_ch))
        self.register_buffer("resample_filter", fir_filter())

    def forward(self, x: Tensor, w: Tensor, noise: Tensor | None) -> Tensor:
        styles = self.affine(w)  # [N, in]
        weight = self.weight
        # demodulation coefficient of each output channel: rsqrt(sum_(in,k) (w * s_in)^2 + 1e-8)
        dcoefs = (styles.square() @ weight.square().sum(dim=[2, 3]).t() + 1e-8).rsqrt()  # [N, out]
        x = _modulated_conv(x, weight, styles, dcoefs, up=self.up)
        if self.up:
            x = _filter2d(x, self.resample_filter, (1, 1, 1, 1), gain=4.0)
        # in place from here: x is a fresh conv output, and these passes over it dominate at high resolution
        if noise is not None:
            x.add_(noise * self.noise_strength)
        x.add_(self.bias[None, :, None, None])
        F.leaky_relu_(x, LRELU_SLOPE).mul_(LRELU_GAIN)
        if self.conv_clamp is not None:
            x.clamp_(-self.conv_clamp, self.conv_clamp)
        return x


class ToRGBLayer(nn.Module):
    """1x1 modulated (not demodulated) convolution to image channels, bias, clamp (no activation gain)."""

    def __init__(self, in_ch: int, img_channels: int, w_dim: int, *, conv_clamp: float | None) -> None:
        super().__init__()
        self.affine = FullyConnected(w_dim, in_ch, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(img_channels, in_ch, 1, 1))
        self.bias = nn.Parameter(torch.zeros(img_channels))
        self.weight_gain = 1 / math.sqrt(in_ch)
        self.conv_clamp = conv_clamp

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        styles = self.affine(w) * self.weight_gain
        x = _modulated_conv(x, self.weight, styles, None, up=False).add_(self.bias[None, :, None, None])
        if self.conv_clamp is not None:
            x.clamp_(-self.conv_clamp, self.conv_clamp)
        return x


class SynthesisBlock(nn.Module):
    """One resolution: (const | conv0 up) -> conv1 -> toRGB added to the upsampled image (skip architecture)."""

    def __init__(self, cfg: StyleGAN2Config, res: int) -> None:
        super().__init__()
        out_ch = cfg.channels_for(res)
        self.first = res == 4
        common = dict(use_noise=cfg.use_noise, conv_clamp=cfg.conv_clamp)
        if self.first:
            self.const = nn.Parameter(torch.randn(out_ch, 4, 4))
        else:
            self.conv0 = SynthesisLayer(cfg.channels_for(res // 2), out_ch, cfg.w_dim, res, up=True, **common)
        self.conv1 = SynthesisLayer(out_ch, out_ch, cfg.w_dim, res, up=False, **common)
        self.torgb = ToRGBLayer(out_ch, cfg.img_channels, cfg.w_dim, conv_clamp=cfg.conv_clamp)
        self.register_buffer("resample_filter", fir_filter())
        self.num_conv = 1 if self.first else 2

    def forward(self, x: Tensor | None, img: Tensor | None, ws: Tensor, noise: Sequence[Tensor | None]
                ) -> tuple[Tensor, Tensor]:
        """``ws`` holds this block's conv ws then its toRGB w (shared with the next block's conv0)."""
        if self.first:
            x = self.const.unsqueeze(0).repeat(ws.shape[0], 1, 1, 1)
            x = self.conv1(x, ws[:, 0], noise[0])
        else:
            assert x is not None
            x = self.conv0(x, ws[:, 0], noise[0])
            x = self.conv1(x, ws[:, 1], noise[1])
        y = self.torgb(x, ws[:, self.num_conv]).float()
        img = y if img is None else upsample_2x(img, self.resample_filter) + y
        return x, img


class SynthesisNetwork(nn.Module):
    def __init__(self, cfg: StyleGAN2Config) -> None:
        super().__init__()
        self.block_resolutions = cfg.block_resolutions
        for res in self.block_resolutions:
            setattr(self, f"b{res}", SynthesisBlock(cfg, res))

    def layers(self) -> list[SynthesisLayer]:
        """The noise-taking conv layers in forward order."""
        out = []
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            out += [block.conv1] if block.first else [block.conv0, block.conv1]
        return out

    def forward(self, ws: Tensor, noise: Sequence[Tensor | None]) -> Tensor:
        x = img = None
        w_idx = layer_idx = 0
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            n = block.num_conv
            x, img = block(x, img, ws[:, w_idx:w_idx + n + 1], noise[layer_idx:layer_idx + n])
            w_idx += n
            layer_idx += n
        assert img is not None
        return img


class StyleGAN2Generator(nn.Module):
    """z -> image in [-1, 1] (NCHW float32). Parameter names match stylegan2-ada-pytorch's ``G_ema``.

    Inference only (no autograd): the layers update their activations in place.
    """

    def __init__(self, cfg: StyleGAN2Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.z_dim, self.w_dim, self.resolution, self.num_ws = cfg.z_dim, cfg.w_dim, cfg.resolution, cfg.num_ws
        self.mapping = MappingNetwork(cfg)
        self.synthesis = SynthesisNetwork(cfg)

    @torch.no_grad()
    def map(self, z: Tensor, psi: float = 1.0, cutoff: int | None = None) -> Tensor:
        return self.mapping(z, psi=psi, cutoff=cutoff, num_ws=self.num_ws)

    def noise_inputs(self, mode: str, batch: int, generators: Sequence[torch.Generator] | None = None
                     ) -> list[Tensor | None]:
        """Per-layer noise: the stored ``noise_const`` maps, fresh Gaussian maps, or none.

        For ``random``, ``generators`` (one per sample, e.g. seeded by the sample's seed) make each image's
        noise independent of the batch it is drawn in.
        """
        if mode not in NOISE_MODES:
            raise ValueError(f"noise mode {mode!r} is not one of {', '.join(NOISE_MODES)}")
        layers = self.synthesis.layers()
        if mode == "none" or not self.cfg.use_noise:
            return [None] * len(layers)
        if mode == "const":
            return [layer.noise_const for layer in layers]
        dev = layers[0].weight.device
        out: list[Tensor | None] = []
        for layer in layers:
            r = layer.resolution
            if generators is None:
                out.append(torch.randn(batch, 1, r, r, device=dev))
            else:
                out.append(torch.stack([torch.randn(1, r, r, generator=g) for g in generators]).to(dev))
        return out

    @torch.no_grad()
    def synthesize(self, ws: Tensor, noise_mode: str = "const",
                   generators: Sequence[torch.Generator] | None = None) -> Tensor:
        return self.synthesis(ws.float(), self.noise_inputs(noise_mode, ws.shape[0], generators))

    @torch.no_grad()
    def forward(self, z: Tensor, psi: float = 1.0, noise_mode: str = "const", cutoff: int | None = None) -> Tensor:
        return self.synthesize(self.map(z, psi, cutoff), noise_mode)
