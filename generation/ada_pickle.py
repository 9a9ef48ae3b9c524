"""Read stylegan2-ada-pytorch network pickles without running anything they contain.

The reference loader unpickles with the full pickle machinery: every module in the file is rebuilt by
``torch_utils.persistence._reconstruct_persistent_obj(meta)``, which ``exec``s the Python source stored in
``meta['module_src']``. Whoever wrote the file therefore runs code on the reader's machine.

Here :class:`AdaUnpickler` resolves only an allow-list of globals. The persistence call becomes an inert
:class:`PersistentRecord` (class name + state dict; the source text is dropped unread); ``EasyDict`` becomes a
dict; tensors are rebuilt from storages that ``torch.load(..., weights_only=True)`` decodes. Any other global
(``os.system``, ``builtins.eval``, ``subprocess.Popen``...) is refused before it is imported. The generator is
then built from the records' recovered shapes, constants and tensors (:func:`stylegan2_from_pickle`).
"""

from __future__ import annotations

import io
import math
import os
import pickle
import re
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

import numpy as np
import torch
from torch import Tensor

from fedmtl.inert import AllowListUnpickler, InertStateError, InertType, inert_globals
from generation.errors import NetworkError
from generation.stylegan2 import StyleGAN2Config, StyleGAN2Generator

__all__ = ["ALLOWED_GLOBALS", "AdaUnpickler", "PersistentRecord", "load_ada_pickle", "stylegan2_from_pickle",
           "stylegan2_from_record"]


class _Refused(Exception):
    """Pickle content that the allow-listed stand-ins do not accept."""


@dataclass
class PersistentRecord:
    """What ``_reconstruct_persistent_obj(meta)`` would have rebuilt, kept as data: class name and ``__dict__``."""

    class_name: str
    state: dict[str, Any]

    @property
    def parameters(self) -> dict[str, Any]:
        return dict(self.state.get("_parameters") or {})

    @property
    def buffers(self) -> dict[str, Any]:
        return dict(self.state.get("_buffers") or {})

    @property
    def modules(self) -> dict[str, Any]:
        return dict(self.state.get("_modules") or {})


def _reconstruct_persistent_obj(meta: Any) -> PersistentRecord:
    if not isinstance(meta, dict) or meta.get("type") != "class":
        raise _Refused("a persistent object's metadata is not a dict of type 'class'")
    name, state = meta.get("class_name"), meta.get("state")
    if not isinstance(name, str) or not isinstance(state, dict):
        raise _Refused("a persistent object has no class name or no state dict")
    return PersistentRecord(name, dict(state))


class _EasyDict(dict, metaclass=InertType):
    """``dnnlib.util.EasyDict`` as a plain dict (pickled as NEWOBJ + SETITEMS + an empty BUILD)."""

    def __setstate__(self, state: Any) -> None:
        if state:
            raise _Refused("EasyDict carries instance state")


def _load_storage(data: Any) -> Any:
    if not isinstance(data, bytes):
        raise _Refused("a tensor storage is not bytes")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        storage = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if not isinstance(storage, torch.storage.TypedStorage | torch.UntypedStorage):
        raise _Refused(f"a tensor storage decodes to {type(storage).__name__}")
    return storage


def _ints(value: Any) -> bool:
    return isinstance(value, tuple) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any = False,
                    hooks: Any = None, metadata: Any = None) -> Tensor:
    if not isinstance(storage, torch.storage.TypedStorage):
        raise _Refused("a tensor is not built on a storage")
    if not isinstance(offset, int) or not _ints(size) or not _ints(stride) or len(size) != len(stride):
        raise _Refused("a tensor has a malformed offset, size or stride")
    if hooks:
        raise _Refused("a tensor carries backward hooks")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())
        except RuntimeError as exc:
            raise _Refused(f"a tensor does not fit its storage ({str(exc).splitlines()[0]})") from None


def _rebuild_parameter(data: Any, requires_grad: Any = False, hooks: Any = None) -> Tensor:
    if not isinstance(data, Tensor) or hooks:
        raise _Refused("a parameter is not a plain tensor")
    return data


_NUMERIC_DTYPES = frozenset({"b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8"})


def _np_dtype(spec: Any, align: Any = False, copy: Any = True) -> np.dtype:
    if not isinstance(spec, str) or spec not in _NUMERIC_DTYPES:
        raise _Refused(f"numpy dtype {spec!r} is not numeric")
    return np.dtype(spec)


def _np_scalar(dtype: Any, data: Any = None) -> Any:
    if not isinstance(dtype, np.dtype) or not isinstance(data, bytes) or len(data) != dtype.itemsize:
        raise _Refused("numpy scalar is malformed")
    return np.frombuffer(data, dtype=dtype)[0].item()


def _codecs_encode(text: Any, encoding: Any = "utf-8") -> bytes:
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _Refused("_codecs.encode used other than for latin-1 bytes")
    return text.encode("latin-1")


def _empty_bytes(*args: Any) -> bytes:
    if args:
        raise _Refused("bytes() called with arguments")
    return b""


# (module, name) as written in the file -> inert replacement. Protocol-2 files spell builtins "__builtin__".
# Functions are handed out wrapped (InertCallable), so BUILD on a looked-up global changes nothing; _EasyDict is
# InertType, and OrderedDict and set are immutable built-in types.
_STANDINS: dict[tuple[str, str], Callable[..., Any] | type] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("dnnlib.util", "EasyDict"): _EasyDict,
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): set,
    ("__builtin__", "set"): set,
    ("builtins", "bytes"): _empty_bytes,
    ("__builtin__", "bytes"): _empty_bytes,
    ("_codecs", "encode"): _codecs_encode,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage,
    ("numpy", "dtype"): _np_dtype,
    ("numpy.core.multiarray", "scalar"): _np_scalar,
    ("numpy._core.multiarray", "scalar"): _np_scalar,
}
_ALLOWED = inert_globals(_STANDINS)
ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(_ALLOWED)
"""The (module, name) globals a network pickle may name; each resolves to an inert stand-in."""


class AdaUnpickler(AllowListUnpickler):
    """Unpickler that maps allow-listed globals to inert stand-ins and refuses everything else."""

    allowed = _ALLOWED

    def refuse(self, what: str) -> NoReturn:
        raise NetworkError(f"{self.source}: refused: {what}")


def load_ada_pickle(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Unpickle a network file with :class:`AdaUnpickler`; every failure is one-line :class:`NetworkError`."""
    source = os.fspath(path)
    try:
        with open(source, "rb") as fh:
            obj = AdaUnpickler(fh, source).load()
    except NetworkError:
        raise
    except (_Refused, InertStateError) as exc:
        raise NetworkError(f"{source}: refused pickle content: {exc}") from None
    except FileNotFoundError:
        raise NetworkError(f"{source}: file not found") from None
    except IsADirectoryError:
        raise NetworkError(f"{source}: is a directory, not a network file") from None
    except EOFError:
        raise NetworkError(f"{source}: truncated: the pickle ends before its STOP opcode") from None
    except pickle.UnpicklingError as exc:
        if "truncated" in str(exc):
            raise NetworkError(f"{source}: truncated: the file ends in the middle of the pickle") from None
        raise NetworkError(f"{source}: not a network pickle ({exc.__class__.__name__}: {exc})") from None
    except UnicodeDecodeError as exc:
        raise NetworkError(f"{source}: not a network pickle ({exc.__class__.__name__}: {exc})") from None
    except (OSError, TypeError, ValueError, AttributeError, IndexError, KeyError, MemoryError, RecursionError,
            RuntimeError) as exc:
        raise NetworkError(f"{source}: malformed pickle ({exc.__class__.__name__}: {exc})") from None
    if not isinstance(obj, dict):
        raise NetworkError(f"{source}: not a stylegan2-ada network pickle (top level is {type(obj).__name__}, "
                           "expected a dict with G_ema)")
    return obj


def _flatten(record: PersistentRecord, prefix: str, out: dict[str, Tensor], source: str) -> None:
    for kind, items in (("parameter", record.parameters), ("buffer", record.buffers)):
        for name, value in items.items():
            if value is None:
                continue
            if not isinstance(value, Tensor):
                raise NetworkError(f"{source}: {kind} {prefix}{name} is not a tensor")
            out[prefix + name] = value
    for name, child in record.modules.items():
        if child is None:
            continue
        if not isinstance(child, PersistentRecord):
            raise NetworkError(f"{source}: submodule {prefix}{name} is not a persistent network object")
        _flatten(child, f"{prefix}{name}.", out, source)


def _child(record: PersistentRecord, name: str, source: str, where: str) -> PersistentRecord:
    child = record.modules.get(name)
    if not isinstance(child, PersistentRecord):
        raise NetworkError(f"{source}: {where} has no submodule {name!r}")
    return child


def _attr(record: PersistentRecord, name: str, source: str, where: str, default: Any = ...) -> Any:
    if name in record.state:
        return record.state[name]
    if default is not ...:
        return default
    raise NetworkError(f"{source}: {where} has no attribute {name!r}")


def _check(cond: bool, source: str, message: str) -> None:
    if not cond:
        raise NetworkError(f"{source}: unsupported network: {message}")


def _close(a: Any, b: float) -> bool:
    return isinstance(a, int | float) and math.isclose(float(a), b, rel_tol=1e-6)


def stylegan2_from_record(g: PersistentRecord, source: str) -> tuple[StyleGAN2Config, dict[str, Tensor]]:
    """Recover the configuration and the float32 state dict of a ``G_ema`` record, checking every constant
    that changes pixels against what :class:`~generation.stylegan2.StyleGAN2Generator` computes."""
    kwargs = g.state.get("_init_kwargs") if isinstance(g.state.get("_init_kwargs"), dict) else {}

    def top(name: str) -> Any:
        value = g.state.get(name, kwargs.get(name))
        if not isinstance(value, int) or isinstance(value, bool):
            raise NetworkError(f"{source}: G_ema has no integer {name}")
        return value

    z_dim, c_dim, w_dim = top("z_dim"), top("c_dim"), top("w_dim")
    resolution, img_channels = top("img_resolution"), top("img_channels")
    _check(c_dim == 0, source, f"conditional generator (c_dim={c_dim}); only unconditional networks are supported")
    _check(resolution >= 4 and resolution & (resolution - 1) == 0, source, f"resolution {resolution}")
    mapping = _child(g, "mapping", source, "G_ema")
    synthesis = _child(g, "synthesis", source, "G_ema")

    fcs = sorted((int(m.group(1)), name) for name in mapping.modules if (m := re.fullmatch(r"fc(\d+)", name)))
    _check([i for i, _ in fcs] == list(range(len(fcs))), source, "mapping layers are not fc0..fcN")
    _check("embed" not in mapping.modules or mapping.modules["embed"] is None, source, "conditional mapping")
    lr_mul = 0.01
    hidden = None
    for i, name in fcs:
        fc = _child(mapping, name, source, "mapping")
        weight = fc.parameters.get("weight")
        _check(isinstance(weight, Tensor) and weight.ndim == 2, source, f"mapping.{name} has no 2-D weight")
        lr_mul = _attr(fc, "bias_gain", source, f"mapping.{name}")
        _check(_attr(fc, "activation", source, f"mapping.{name}") == "lrelu", source, f"mapping.{name} activation")
        _check(_close(_attr(fc, "weight_gain", source, f"mapping.{name}"), lr_mul / math.sqrt(weight.shape[1])),
               source, f"mapping.{name} weight gain is not lr_mul/sqrt(in)")
        if i == 0 and len(fcs) > 1:
            hidden = weight.shape[0]
    _check(isinstance(lr_mul, int | float), source, "mapping learning-rate multiplier")

    channels, clamps = [], set()
    use_noise = True
    block_res = [2**i for i in range(2, int(math.log2(resolution)) + 1)]
    for res in block_res:
        block = _child(synthesis, f"b{res}", source, "synthesis")
        where = f"synthesis.b{res}"
        _check(_attr(block, "architecture", source, where, "skip") == "skip", source,
               f"{where} architecture {block.state.get('architecture')!r} (only 'skip' is supported)")
        layers = ["conv1"] if res == 4 else ["conv0", "conv1"]
        for name in layers:
            layer = _child(block, name, source, where)
            lw = f"{where}.{name}"
            weight = layer.parameters.get("weight")
            _check(isinstance(weight, Tensor) and weight.ndim == 4 and tuple(weight.shape[2:]) == (3, 3), source,
                   f"{lw} weight is not a 3x3 kernel")
            _check(_attr(layer, "activation", source, lw, "lrelu") == "lrelu", source, f"{lw} activation")
            _check(_close(_attr(layer, "act_gain", source, lw, math.sqrt(2)), math.sqrt(2)), source, f"{lw} gain")
            _check(_attr(layer, "up", source, lw, 2 if name == "conv0" else 1) == (2 if name == "conv0" else 1),
                   source, f"{lw} up-sampling factor")
            _check(_attr(layer, "padding", source, lw, 1) == 1, source, f"{lw} padding")
            flt = layer.buffers.get("resample_filter")
            _check(isinstance(flt, Tensor) and tuple(flt.shape) == (4, 4), source, f"{lw} resample filter is not 4x4")
            use_noise = bool(_attr(layer, "use_noise", source, lw, "noise_const" in layer.buffers))
            clamps.add(_attr(layer, "conv_clamp", source, lw, None))
        channels.append(int(_child(block, "conv1", source, where).parameters["weight"].shape[0]))
        torgb = _child(block, "torgb", source, where)
        tw = torgb.parameters.get("weight")
        _check(isinstance(tw, Tensor) and tw.ndim == 4 and tuple(tw.shape[2:]) == (1, 1), source,
               f"{where}.torgb weight is not 1x1")
        _check(_close(_attr(torgb, "weight_gain", source, f"{where}.torgb"), 1 / math.sqrt(tw.shape[1])), source,
               f"{where}.torgb weight gain is not 1/sqrt(in)")
        clamps.add(_attr(torgb, "conv_clamp", source, f"{where}.torgb", None))
    _check(len(clamps) == 1, source, f"layers use different conv_clamp values {sorted(map(str, clamps))}")
    clamp = clamps.pop()
    _check(clamp is None or isinstance(clamp, int | float), source, "conv_clamp")

    try:
        cfg = StyleGAN2Config(
            z_dim=z_dim, w_dim=w_dim, resolution=resolution, img_channels=img_channels, mapping_layers=len(fcs),
            mapping_features=hidden, mapping_lr_mul=float(lr_mul), channels=tuple(channels),
            conv_clamp=None if clamp is None else float(clamp), use_noise=use_noise,
            w_avg_beta=mapping.state.get("w_avg_beta"))
    except ValueError as exc:
        raise NetworkError(f"{source}: unsupported network: {exc}") from None
    if "num_ws" in g.state:
        _check(g.state["num_ws"] == cfg.num_ws, source, f"num_ws {g.state['num_ws']} != {cfg.num_ws}")
    state: dict[str, Tensor] = {}
    _flatten(g, "", state, source)
    return cfg, {k: v.float() for k, v in state.items()}


def _g_ema(obj: dict[str, Any], source: str) -> PersistentRecord:
    g = obj.get("G_ema")
    if g is None:
        keys = ", ".join(sorted(map(str, obj))) or "nothing"
        raise NetworkError(f"{source}: the pickle has no G_ema network (it holds {keys})")
    if not isinstance(g, PersistentRecord):
        raise NetworkError(f"{source}: G_ema is {type(g).__name__}, not a persistent network object")
    return g


def stylegan2_from_pickle(path: str | os.PathLike[str]) -> tuple[StyleGAN2Generator, dict[str, Any]]:
    """Load the ``G_ema`` of an ada pickle as a :class:`StyleGAN2Generator` (eval, float32) plus facts about the
    file (top-level keys, class names) for ``info``."""
    source = os.fspath(path)
    obj = load_ada_pickle(source)
    cfg, state = stylegan2_from_record(_g_ema(obj, source), source)
    gen = StyleGAN2Generator(cfg)
    missing, unexpected = set(gen.state_dict()) - set(state), set(state) - set(gen.state_dict())
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(sorted(missing)[:4])}")
        if unexpected:
            parts.append(f"unexpected {', '.join(sorted(unexpected)[:4])}")
        raise NetworkError(f"{source}: G_ema tensors do not match a StyleGAN2 generator ({'; '.join(parts)})")
    try:
        gen.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:300]
        raise NetworkError(f"{source}: G_ema tensor shapes do not match ({detail})") from None
    facts = {"pickle_keys": sorted(map(str, obj)),
             "networks": {k: v.class_name for k, v in obj.items() if isinstance(v, PersistentRecord)}}
    return gen.eval(), facts
