"""Write generators in the stylegan2-ada-pytorch pickle format, for tests only.

The real format pickles each network module as a call of ``torch_utils.persistence._reconstruct_persistent_obj``
with ``meta = dict(type='class', version=6, module_src=..., class_name=..., state=module.__dict__)``, and
``_init_kwargs`` as ``dnnlib.util.EasyDict``. :func:`standin_modules` builds stand-in ``torch_utils.persistence``
and ``dnnlib.util`` modules so that pickle can name those globals; tests register them in ``sys.modules`` only
for the duration of the test (``monkeypatch.setitem``). ``module_src`` is whatever the test passes: the tests
put code there that would create a sentinel file if a loader ever executed it.
"""

from __future__ import annotations

import math
import pickle
import types
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from generation.stylegan2 import (
    FullyConnected,
    MappingNetwork,
    StyleGAN2Generator,
    SynthesisBlock,
    SynthesisLayer,
    SynthesisNetwork,
    ToRGBLayer,
)

CLASS_NAMES = {
    StyleGAN2Generator: "Generator", MappingNetwork: "MappingNetwork", FullyConnected: "FullyConnectedLayer",
    SynthesisNetwork: "SynthesisNetwork", SynthesisBlock: "SynthesisBlock", SynthesisLayer: "SynthesisLayer",
    ToRGBLayer: "ToRGBLayer",
}


def standin_modules() -> dict[str, types.ModuleType]:
    """Fresh ``torch_utils``, ``torch_utils.persistence``, ``dnnlib``, ``dnnlib.util`` stand-in modules."""
    persistence = types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta: Any) -> Any:  # never called by the loader under test
        raise AssertionError("stand-in persistence called: something unpickled the file the unsafe way")

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj

    util = types.ModuleType("dnnlib.util")

    class EasyDict(dict):
        pass

    EasyDict.__module__ = "dnnlib.util"
    EasyDict.__qualname__ = "EasyDict"
    util.EasyDict = EasyDict
    torch_utils, dnnlib = types.ModuleType("torch_utils"), types.ModuleType("dnnlib")
    torch_utils.persistence, dnnlib.util = persistence, util
    return {"torch_utils": torch_utils, "torch_utils.persistence": persistence, "dnnlib": dnnlib,
            "dnnlib.util": util}


class Persistent:
    """Pickles as the persistence call with the given class name and state."""

    def __init__(self, mods: dict[str, types.ModuleType], class_name: str, state: dict[str, Any],
                 module_src: str) -> None:
        self.fn = mods["torch_utils.persistence"]._reconstruct_persistent_obj
        self.meta = dict(type="class", version=6, module_src=module_src, class_name=class_name, state=state)

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.fn, (self.meta,))


def _attrs(module: nn.Module) -> dict[str, Any]:
    """The plain attributes the reference classes carry, as far as they matter to a loader."""
    if isinstance(module, FullyConnected):
        return dict(in_features=module.weight.shape[1], out_features=module.weight.shape[0],
                    activation="lrelu" if module.lrelu else "linear", weight_gain=module.weight_gain,
                    bias_gain=module.bias_gain)
    if isinstance(module, SynthesisLayer):
        return dict(in_channels=module.weight.shape[1], out_channels=module.weight.shape[0], w_dim=None,
                    resolution=module.resolution, up=2 if module.up else 1, use_noise=module.use_noise,
                    activation="lrelu", conv_clamp=module.conv_clamp, padding=1, act_gain=math.sqrt(2),
                    channels_last=False)
    if isinstance(module, ToRGBLayer):
        return dict(conv_clamp=module.conv_clamp, weight_gain=module.weight_gain, channels_last=False)
    if isinstance(module, SynthesisBlock):
        return dict(architecture="skip", use_fp16=False, channels_last=False, num_conv=module.num_conv,
                    num_torgb=1, is_last=False)
    if isinstance(module, MappingNetwork):
        return dict(num_layers=module.num_layers, w_avg_beta=0.995)
    return {}


def to_records(module: nn.Module, mods: dict[str, types.ModuleType], module_src: str,
               init_kwargs: dict[str, Any] | None = None) -> Persistent:
    """The persistent-object tree of ``module`` with ``nn.Module.__dict__``-like states."""
    easy = mods["dnnlib.util"].EasyDict
    state: dict[str, Any] = {
        "training": False,
        "_parameters": OrderedDict((k, nn.Parameter(v.detach().clone(), requires_grad=True))
                                   for k, v in module._parameters.items()),
        "_buffers": OrderedDict((k, v.detach().clone()) for k, v in module._buffers.items()),
        "_non_persistent_buffers_set": set(),
        "_backward_hooks": OrderedDict(), "_forward_hooks": OrderedDict(), "_forward_pre_hooks": OrderedDict(),
        "_state_dict_hooks": OrderedDict(), "_load_state_dict_pre_hooks": OrderedDict(),
        "_modules": OrderedDict((k, to_records(v, mods, module_src)) for k, v in module._modules.items()),
        "_init_args": (), "_init_kwargs": easy(init_kwargs or {}),
        **_attrs(module),
    }
    return Persistent(mods, CLASS_NAMES[type(module)], state, module_src)


def write_ada_pickle(gen: StyleGAN2Generator, path: Path, mods: dict[str, types.ModuleType], *,
                     module_src: str = "# networks.py\n", protocol: int = 4, with_g_ema: bool = True) -> None:
    """A file laid out like a stylegan2-ada-pytorch snapshot: G, D, G_ema, training_set_kwargs, augment_pipe."""
    cfg = gen.cfg
    easy = mods["dnnlib.util"].EasyDict
    kwargs = easy(z_dim=cfg.z_dim, c_dim=0, w_dim=cfg.w_dim, img_resolution=cfg.resolution,
                  img_channels=cfg.img_channels,
                  mapping_kwargs=easy(num_layers=cfg.mapping_layers),
                  synthesis_kwargs=easy(channel_base=cfg.channel_base, channel_max=cfg.channel_max,
                                        num_fp16_res=4, conv_clamp=cfg.conv_clamp))
    g_ema = to_records(gen, mods, module_src, kwargs)
    g_ema.meta["state"].update(z_dim=cfg.z_dim, c_dim=0, w_dim=cfg.w_dim, img_resolution=cfg.resolution,
                               img_channels=cfg.img_channels, num_ws=cfg.num_ws)
    disc_state = {"_parameters": OrderedDict(b0=nn.Parameter(torch.randn(4, 3))), "_buffers": OrderedDict(),
                  "_modules": OrderedDict(), "_init_kwargs": easy(c_dim=0, img_resolution=cfg.resolution),
                  "architecture": "resnet"}
    aug_state = {"_parameters": OrderedDict(), "_buffers": OrderedDict(p=torch.zeros([])),
                 "_modules": OrderedDict(), "_init_kwargs": easy(xflip=1, rotate90=1), "xflip": 1.0}
    top: dict[str, Any] = {
        "G": g_ema, "D": Persistent(mods, "Discriminator", disc_state, module_src),
        "training_set_kwargs": easy(class_name="training.dataset.ImageFolderDataset", path="ffhq.zip",
                                    use_labels=False, max_size=70000, xflip=True, resolution=cfg.resolution),
        "augment_pipe": Persistent(mods, "AugmentPipe", aug_state, module_src),
    }
    if with_g_ema:
        top["G_ema"] = g_ema
    path.write_bytes(pickle.dumps(top, protocol=protocol))


def random_stylegan2(cfg: Any, seed: int = 0) -> StyleGAN2Generator:
    """A generator with every parameter random (biases and noise strengths too, so none can be ignored)."""
    torch.manual_seed(seed)
    gen = StyleGAN2Generator(cfg).eval()
    with torch.no_grad():
        for name, p in gen.named_parameters():
            if name.endswith("bias") or name.endswith("noise_strength"):
                p.normal_(0, 0.3)
        gen.mapping.w_avg.normal_()
    return gen
