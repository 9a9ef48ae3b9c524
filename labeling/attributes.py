"""The attribute set being labelled: names, value names and the keyboard key for each value.

The default is the paper's Table I (five binary attributes, value 0/1 as in the table). Other projects load
their own from TOML::

    [[attribute]]
    name = "smiling"
    values = ["no", "yes"]
    keys = ["1", "2"]        # optional: one key per value, default digits in order
    cant_tell_key = "q"      # optional: the key for the third answer, "can't tell" (default q, w, e, ...)

Every attribute has a third answer besides its values, "can't tell" (stored and exported as ``CANT_TELL`` = -1),
so ambiguous faces are not forced into yes or no.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from labeling.errors import LabelingError

__all__ = ["Attribute", "AttributeSet", "CANT_TELL", "CANT_TELL_NAME", "DEFAULT_ATTRIBUTES", "load_attributes"]

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
# Keys the app reserves for actions (Enter saves, Backspace/u undo, s skip, f flag).
RESERVED_KEYS = frozenset({"enter", "backspace", "u", "s", "f", "x"})
CANT_TELL = -1  # the stored and exported value of the third answer
CANT_TELL_NAME = "cant_tell"
_CANT_TELL_KEYS = "qwertyiopghjklzcvbnm"  # defaults in attribute order (u, s, f, x are actions)


@dataclass(frozen=True)
class Attribute:
    """One attribute: values are indices 0..len(values)-1; ``keys[i]`` selects value ``i``; ``cant_tell_key``
    selects the third answer, ``CANT_TELL``."""

    name: str
    values: tuple[str, ...]
    keys: tuple[str, ...]
    cant_tell_key: str = ""

    def label_of(self, value: int) -> str:
        """The value's name, or ``cant_tell`` for ``CANT_TELL``."""
        return CANT_TELL_NAME if value == CANT_TELL else self.values[value]

    def index(self, value: object) -> int:
        """A value index from an int index or a value name; anything else is a LabelingError."""
        if isinstance(value, bool):
            raise LabelingError(f"attribute {self.name!r}: value {value!r} is a bool, "
                                f"expected 0..{len(self.values) - 1}")
        if isinstance(value, int) and (0 <= value < len(self.values) or value == CANT_TELL):
            return value
        if isinstance(value, str) and value in self.values:
            return self.values.index(value)
        if value == CANT_TELL_NAME:
            return CANT_TELL
        raise LabelingError(f"attribute {self.name!r}: unknown value {value!r} (expected 0..{len(self.values) - 1}, "
                            f"one of {list(self.values)}, or {CANT_TELL} / {CANT_TELL_NAME!r} for can't tell)")


@dataclass(frozen=True)
class AttributeSet:
    """An ordered set of attributes with unique names and unique keys."""

    attributes: tuple[Attribute, ...]

    def __post_init__(self) -> None:
        if not self.attributes:
            raise LabelingError("attribute set is empty")
        names = [a.name for a in self.attributes]
        if len(set(names)) != len(names):
            raise LabelingError(f"attribute names repeat: {names}")
        keys = [k for a in self.attributes for k in (*a.keys, a.cant_tell_key) if k]
        if len(set(keys)) != len(keys):
            raise LabelingError(f"attribute keys repeat: {keys}")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.attributes)

    def __getitem__(self, name: str) -> Attribute:
        for attribute in self.attributes:
            if attribute.name == name:
                return attribute
        raise LabelingError(f"unknown attribute {name!r} (known: {', '.join(self.names)})")

    def __iter__(self):
        return iter(self.attributes)

    def __len__(self) -> int:
        return len(self.attributes)

    def validate(self, labels: dict[str, object]) -> dict[str, int]:
        """``{attribute: value}`` with names checked and values turned into indices."""
        if not isinstance(labels, dict) or not labels:
            raise LabelingError(f"labels must be a non-empty mapping of attribute to value, got {labels!r}")
        return {str(name): self[str(name)].index(value) for name, value in labels.items()}

    def describe(self) -> str:
        """A stable text form, stored in the database so a store is never reopened with another set."""
        return ";".join(f"{a.name}={','.join(a.values)}" for a in self.attributes)


def _attribute(name: str, values: list[str], keys: list[str] | None, default_keys: list[str],
               cant_tell_key: str) -> Attribute:
    if not _NAME.match(name):
        raise LabelingError(f"attribute name {name!r} must be lower-case letters, digits and _ (max 40)")
    if len(values) < 2 or len(set(values)) != len(values) or not all(isinstance(v, str) and v for v in values):
        raise LabelingError(f"attribute {name!r}: values must be two or more distinct non-empty names, got {values}")
    keys = keys if keys is not None else default_keys[: len(values)]
    if len(keys) != len(values):
        raise LabelingError(f"attribute {name!r}: {len(values)} values but {len(keys)} keys")
    for key in (*keys, cant_tell_key):
        if not isinstance(key, str) or len(key) != 1 or key.lower() in RESERVED_KEYS:
            raise LabelingError(f"attribute {name!r}: key {key!r} must be one character and not one of "
                                "u, s, f, x")
    return Attribute(name, tuple(values), tuple(keys), cant_tell_key)


DEFAULT_ATTRIBUTES = AttributeSet((
    Attribute("gender", ("male", "female"), ("1", "2"), "q"),
    Attribute("age_group", ("child", "adult"), ("3", "4"), "w"),
    Attribute("glasses", ("not_wearing", "wearing"), ("5", "6"), "e"),
    Attribute("pose", ("sideways", "front_facing"), ("7", "8"), "r"),
    Attribute("teeth", ("not_showing", "showing"), ("9", "0"), "t"),
))


def load_attributes(path: str | Path | None) -> AttributeSet:
    """The attribute set from a TOML file, or the default five when ``path`` is None."""
    if path is None:
        return DEFAULT_ATTRIBUTES
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise LabelingError(f"{path}: attribute config not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise LabelingError(f"{path}: not valid TOML ({exc})") from None
    entries = data.get("attribute")
    if not isinstance(entries, list) or not entries:
        raise LabelingError(f"{path}: expected one or more [[attribute]] tables")
    digits = list("1234567890")
    out, used = [], 0
    for entry in entries:
        unknown = set(entry) - {"name", "values", "keys", "cant_tell_key"}
        if unknown or "name" not in entry or "values" not in entry:
            raise LabelingError(f"{path}: each [[attribute]] needs name and values (optional keys); "
                                f"got {sorted(entry)}")
        default_keys = digits[used:] + [" "] * 10
        cant_tell_key = entry.get("cant_tell_key", _CANT_TELL_KEYS[len(out) % len(_CANT_TELL_KEYS)])
        attribute = _attribute(entry["name"], list(entry["values"]), entry.get("keys"), default_keys, cant_tell_key)
        used += len(attribute.values)
        out.append(attribute)
    return AttributeSet(tuple(out))
