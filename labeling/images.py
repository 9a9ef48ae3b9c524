"""The items to label: an image folder or a generation manifest, checked up front.

Each item's id is its file stem (``seed0000042`` for ``seed0000042.png``), validated so it can never name a
path outside the folder. Unreadable or corrupt images are not fatal: they are listed as skipped with their
name and the reason, and the rest are served.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image
from tqdm import tqdm

from labeling.errors import LabelingError
from labeling.store import validate_item_id

__all__ = ["Catalog", "ImageStage", "Item", "load_catalog", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
MAX_PIXELS = 40_000_000  # larger images are refused before decoding (a face never needs more; bombs do)
_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}
MANIFEST = "manifest.jsonl"


@dataclass(frozen=True)
class Item:
    """One image and the generation metadata known about it."""

    item_id: str
    path: Path
    seed: int = -1
    network: str = ""
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass
class Catalog:
    """Items in order, plus the files that were skipped and why."""

    root: Path
    items: dict[str, Item]
    skipped: list[tuple[str, str]]
    manifest: Path | None = None

    def ids(self) -> list[str]:
        return list(self.items)

    def path(self, item_id: str) -> Path:
        """The file of a known item; unknown or malformed ids are a LabelingError (never a filesystem lookup)."""
        item = self.items.get(validate_item_id(item_id))
        if item is None:
            raise LabelingError(f"unknown item id {item_id!r}")
        return item.path

    def served_path(self, item_id: str) -> Path:
        """The file of a known item, checked again now: still a regular image file inside the folder (a file
        swapped for a link out of the folder after start-up is refused, not followed)."""
        path = self.path(item_id)
        real = path.resolve()
        if not (real.is_relative_to(self.root) and real.is_file() and real.suffix.lower() in IMAGE_SUFFIXES):
            raise LabelingError(f"item {item_id!r}: {path.name} is no longer an image file in {self.root}")
        return real

    def licences(self) -> list[str]:
        return sorted({str(item.meta["licence"]) for item in self.items.values() if item.meta.get("licence")})

    def networks(self) -> list[str]:
        return sorted({item.network for item in self.items.values() if item.network})


class ImageStage:
    """Copies of catalog images in a folder of their own, for a UI framework that serves files from a folder.

    Handing Gradio the image folder itself (``allowed_paths``) would let anyone download every file in it (the
    label database, a users file); handing it a folder that only ever holds catalog images does not.
    """

    def __init__(self, catalog: Catalog, parent: str | Path | None = None) -> None:
        self.catalog = catalog
        if parent is not None:
            Path(parent).mkdir(parents=True, exist_ok=True)
        self.folder = Path(tempfile.mkdtemp(prefix="labeling-images-", dir=parent))

    def path(self, item_id: str) -> str:
        source = self.catalog.served_path(item_id)
        staged = self.folder / f"{item_id}{source.suffix.lower()}"
        if not staged.exists():
            tmp = staged.with_name(f".{staged.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            try:
                os.link(source, tmp)
            except OSError:  # another file system, or links not allowed: copy
                shutil.copyfile(source, tmp)
            os.replace(tmp, staged)
        return str(staged)

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _not_a_file(path: Path) -> str | None:
    """Why a directory entry with an image name is not a regular file (None when it is one)."""
    try:
        path.stat()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "a symbolic link loop"
        if path.is_symlink():
            return "a link to nothing"
        return "file missing" if exc.errno == errno.ENOENT else f"cannot read ({exc.strerror})"
    if path.is_dir():
        return "a directory"
    return None if path.is_file() else "not a regular file (a pipe, socket or device)"


def _check_image(path: Path) -> str | None:
    """None if the file is an image of the kind its name says that decodes fully, else the reason (one line)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
                if width * height > MAX_PIXELS:
                    return f"{width} x {height} pixels: larger than the {MAX_PIXELS:,} allowed"
                expected = _FORMATS.get(path.suffix.lower())
                if expected and img.format != expected:
                    return f"holds {img.format or 'unknown'} data, not the {expected} its name says"
                img.verify()
            with Image.open(path) as img:
                img.load()
    except Exception as exc:  # Pillow raises many types for bad files; every one means "skip this file"
        text = " ".join(str(exc).replace(str(path), path.name).split())
        return f"{type(exc).__name__}: {text}"[:200]
    return None


def _from_manifest(manifest: Path, root: Path) -> list[tuple[str, Path, dict[str, Any]]]:
    entries = []
    for lineno, line in enumerate(manifest.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise LabelingError(f"{manifest}:{lineno}: not JSON ({exc.msg})") from None
        if not isinstance(record, dict) or "sample_id" not in record or "file" not in record:
            raise LabelingError(f"{manifest}:{lineno}: each line needs 'sample_id' and 'file'")
        path = (root / str(record["file"])).resolve()
        if not path.is_relative_to(root):
            raise LabelingError(f"{manifest}:{lineno}: file {record['file']!r} is outside {root}")
        entries.append((str(record["sample_id"]), path, record))
    return entries


def load_catalog(source: str | Path, *, check: bool = True, progress: bool = True) -> Catalog:
    """Items from a folder of images (using its ``manifest.jsonl`` when there is one) or a manifest file."""
    source = Path(source)
    if source.is_file():
        manifest, root = source, source.parent.resolve()
    elif source.is_dir():
        root = source.resolve()
        manifest = root / MANIFEST if (root / MANIFEST).is_file() else None
    else:
        raise LabelingError(f"{source}: no such image folder or manifest")
    if manifest is not None:
        entries = _from_manifest(manifest, root)
    else:
        entries = [(p.stem, p, {}) for p in sorted(root.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
    items: dict[str, Item] = {}
    skipped: list[tuple[str, str]] = []
    for item_id, path, record in tqdm(entries, desc="checking images", unit="img", disable=not progress,
                                      leave=False):
        name = path.name
        try:
            validate_item_id(item_id)
        except LabelingError as exc:
            skipped.append((name, str(exc)))
            continue
        if item_id in items:
            skipped.append((name, f"duplicate item id {item_id!r}"))
            continue
        odd = _not_a_file(path)
        if odd is not None:
            skipped.append((name, odd))
            continue
        path = path.resolve()
        if not path.is_relative_to(root):  # a symlink out of the folder: images are served only from it
            skipped.append((name, f"links outside {root}"))
            continue
        reason = _check_image(path) if check else None
        if reason:
            skipped.append((name, reason))
            continue
        seed = record.get("seed", -1)
        items[item_id] = Item(item_id, path, int(seed) if isinstance(seed, int) else -1,
                              str(record.get("network", "") or ""), record)
    if not items:
        raise LabelingError(f"{source}: no readable images"
                            + (f" ({len(skipped)} skipped, e.g. {skipped[0][0]}: {skipped[0][1]})" if skipped else ""))
    return Catalog(root, items, skipped, manifest)
