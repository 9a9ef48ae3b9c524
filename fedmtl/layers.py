"""The four layer types of the paper (section III) and a declarative way to tag any module's parameters.

A model is partitioned into pre-trained (frozen), common (shared by all clients), task-specific (shared inside
a task group) and personal (never leaves its client) parameters. The partition is given by parameter-name
prefixes so that any ``torch.nn.Module`` can be used without changing its code.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

import torch

from fedmtl.errors import LayerSpecError

__all__ = ["LayerType", "LayerSpec", "Partition", "partition"]


class LayerType(StrEnum):
    PRETRAINED = "pretrained"
    COMMON = "common"
    TASK = "task"
    PERSONAL = "personal"

    @classmethod
    def parse(cls, value: str | LayerType) -> LayerType:
        try:
            return cls(value)
        except ValueError:
            known = ", ".join(t.value for t in cls)
            raise LayerSpecError(f"layer type {value!r} is unknown (known: {known})") from None


def _matches(name: str, prefix: str) -> bool:
    """A prefix matches at a module boundary only: 'fc1' matches 'fc1.weight' but not 'fc10.weight'."""
    return name == prefix or name.startswith(prefix + ".")


@dataclass(frozen=True)
class LayerSpec:
    """Parameter-name prefix -> layer type, e.g. ``LayerSpec({"fc1": "common", "fc2": "personal"})``."""

    prefixes: Mapping[str, LayerType]

    def __init__(self, prefixes: Mapping[str, str | LayerType]) -> None:
        if not prefixes:
            raise LayerSpecError("layer spec is empty: give at least one prefix -> layer type")
        parsed = {str(p): LayerType.parse(t) for p, t in prefixes.items()}
        for a in parsed:
            for b in parsed:
                if a != b and _matches(b, a):
                    raise LayerSpecError(f"layer spec prefixes {a!r} and {b!r} overlap: a parameter gets two types")
        object.__setattr__(self, "prefixes", parsed)

    @classmethod
    def of(cls, **groups: Iterable[str] | str) -> LayerSpec:
        """Group form: ``LayerSpec.of(common=["fc1", "fc2"], personal="fc3")``."""
        mapping: dict[str, str] = {}
        for layer_type, names in groups.items():
            for name in [names] if isinstance(names, str) else names:
                if name in mapping:
                    raise LayerSpecError(f"layer spec names {name!r} twice ({mapping[name]} and {layer_type})")
                mapping[name] = layer_type
        return cls(mapping)

    def type_of(self, name: str) -> LayerType | None:
        for prefix, layer_type in self.prefixes.items():
            if _matches(name, prefix):
                return layer_type
        return None

    def describe(self) -> dict[str, str]:
        return {p: t.value for p, t in self.prefixes.items()}


@dataclass(frozen=True)
class Partition:
    """The validated result: every parameter name of a module with exactly one layer type."""

    types: dict[str, LayerType]

    def names(self, *layer_types: LayerType) -> list[str]:
        return [n for n, t in self.types.items() if t in layer_types]

    @property
    def trainable(self) -> list[str]:
        return [n for n, t in self.types.items() if t is not LayerType.PRETRAINED]

    def count(self, module: torch.nn.Module, layer_type: LayerType) -> int:
        params = dict(module.named_parameters())
        return sum(params[n].numel() for n in self.names(layer_type))


def partition(module: torch.nn.Module, spec: LayerSpec) -> Partition:
    """Tag every parameter of ``module`` and freeze the pre-trained ones.

    Raises ``LayerSpecError`` when a trainable parameter has no type or a prefix matches nothing, since a silently
    untyped parameter would either never be trained or leak across clients.
    """
    types: dict[str, LayerType] = {}
    untyped: list[str] = []
    for name, param in module.named_parameters():
        layer_type = spec.type_of(name)
        if layer_type is None:
            if param.requires_grad:
                untyped.append(name)
                continue
            layer_type = LayerType.PRETRAINED
        types[name] = layer_type
    if untyped:
        shown = ", ".join(untyped[:3]) + (f" and {len(untyped) - 3} more" if len(untyped) > 3 else "")
        raise LayerSpecError(f"layer spec leaves trainable parameter(s) {shown} without a layer type")
    unused = [p for p in spec.prefixes if not any(_matches(n, p) for n in types)]
    if unused:
        raise LayerSpecError(f"layer spec prefix {unused[0]!r} matches no parameter of {type(module).__name__}")
    for name, param in module.named_parameters():
        if types[name] is LayerType.PRETRAINED:
            param.requires_grad_(False)
    return Partition(types)
