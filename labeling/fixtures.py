"""Tiny synthetic face images and a generation-style manifest, for tests, benchmarks and demos.

Drawn with Pillow: an oval face, two eyes, a nose that is centred (front-facing) or shifted (sideways) and a
mouth that is dark or white (teeth showing). Cheap, deterministic, and real PNG files in the generation
package's folder format (``<sample_id>.png`` plus ``manifest.jsonl``).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from PIL import Image, ImageDraw

__all__ = ["make_faces"]


def _face(rng: random.Random, size: int, front: bool, teeth: bool) -> Image.Image:
    bg = tuple(rng.randint(20, 90) for _ in range(3))
    img = Image.new("RGB", (size, size), bg)
    d = ImageDraw.Draw(img)
    s = size / 64
    skin = (rng.randint(170, 235), rng.randint(130, 190), rng.randint(100, 160))
    shift = 0 if front else rng.choice((-1, 1)) * rng.uniform(6, 9)
    d.ellipse([14 * s + shift / 2, 8 * s, 50 * s + shift / 2, 58 * s], fill=skin)
    for ex in (24, 40):
        d.ellipse([(ex - 3) * s + shift / 3, 24 * s, (ex + 3) * s + shift / 3, 29 * s], fill=(30, 30, 40))
    nx = 32 * s + shift
    d.polygon([(nx, 28 * s), (nx - 3 * s, 38 * s), (nx + 3 * s, 38 * s)], fill=tuple(c - 40 for c in skin))
    mouth = (245, 245, 240) if teeth else (110, 30, 40)
    d.rectangle([25 * s + shift / 2, 44 * s, 39 * s + shift / 2, 49 * s], fill=mouth)
    return img


def make_faces(out: str | Path, n: int = 20, *, size: int = 64, seed: int = 0,
               network: str = "test-faces") -> list[dict]:
    """Write ``n`` PNGs and ``manifest.jsonl`` to ``out``; returns the manifest records (with their truth)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    records = []
    for k in range(n):
        front, teeth = (k % 2 == 0), (k % 3 == 0)
        sample_id = f"seed{k:07d}"
        _face(rng, size, front, teeth).save(out / f"{sample_id}.png")
        records.append({"sample_id": sample_id, "file": f"{sample_id}.png", "seed": k, "network": network,
                        "network_sha256": "0" * 64, "psi": 1.0, "noise_mode": "const", "resolution": size,
                        "z": [0.0] * 4, "w": None, "licence": "CC0 test images drawn by labeling.fixtures",
                        "truth": {"pose": int(front), "teeth": int(teeth)}})
    (out / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return records


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    import struct
    import zlib

    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (8-bit grey) but whose data is a few bytes."""
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + _png_chunk(b"IEND", b""))


def _jpeg_claiming(jpeg: bytes, width: int, height: int) -> bytes:
    """A real JPEG whose frame header (SOF0) is rewritten to claim ``width`` x ``height``."""
    at = jpeg.index(b"\xff\xc0") + 5
    return jpeg[:at] + height.to_bytes(2, "big") + width.to_bytes(2, "big") + jpeg[at + 4:]


def make_odd_images(out: str | Path, *, seed: int = 0) -> dict[str, str]:
    """Write a folder of corrupt, odd and hostile image files (and a few good ones) for robustness tests.

    Returns ``{name: what it is}``. Every tool that reads image folders must either use a file or skip it with a
    one-line reason, and never hang, crash or serve anything but the image files. Includes truncated PNG/JPEG/WebP,
    empty files, 1x1 images, headers claiming 100000 x 100000 pixels, CMYK, 16-bit, palette with transparency,
    animated GIF/PNG/WebP, wrong extensions, non-images with image names, symlink loops and dangling links, a
    directory and a named pipe with image names, bad checksums, decompression bombs and unusable names.
    """
    import io
    import os
    import struct
    import zlib

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    face = _face(rng, 64, True, False)
    buf = io.BytesIO()
    face.save(buf, "PNG")
    png = buf.getvalue()
    buf = io.BytesIO()
    face.save(buf, "JPEG", quality=90)
    jpeg = buf.getvalue()
    buf = io.BytesIO()
    face.save(buf, "WEBP")
    webp = buf.getvalue()
    buf = io.BytesIO()
    face.save(buf, "GIF")
    gif = buf.getvalue()
    made: dict[str, str] = {}

    def write(name: str, data: bytes, what: str) -> None:
        (out / name).write_bytes(data)
        made[name] = what

    def save(name: str, img: Image.Image, what: str, **kwargs: object) -> None:
        img.save(out / name, **kwargs)
        made[name] = what

    # good files, so that every tool has something to use
    for k in range(3):
        save(f"good{k}.png", _face(rng, 64, k % 2 == 0, k == 1), "a good 64x64 face")
    save("good.jpg", face, "a good JPEG face", quality=90)
    save("good.webp", face, "a good WebP face")
    # empty and truncated
    for ext in ("png", "jpg", "jpeg", "webp"):
        write(f"empty.{ext}", b"", "zero bytes")
    write("signature_only.png", png[:8], "PNG signature, nothing else")
    write("cut_in_ihdr.png", png[:20], "PNG cut inside its header chunk")
    write("cut_half.png", png[: len(png) // 2], "PNG cut in half")
    write("cut_before_iend.png", png[:-12], "PNG without its last chunk")
    write("soi_only.jpg", jpeg[:2], "JPEG start marker only")
    write("cut_half.jpg", jpeg[: len(jpeg) // 2], "JPEG cut in half")
    write("cut_header.jpg", jpeg[:200], "JPEG cut inside its headers")
    write("cut_half.webp", webp[: len(webp) // 2], "WebP cut in half")
    # checksums and data
    bad_crc = bytearray(png)
    bad_crc[29] ^= 0xFF  # inside IHDR's CRC
    write("bad_crc.png", bytes(bad_crc), "PNG with a wrong header checksum")
    idat = png.index(b"IDAT")
    write("garbage_idat.png", png[: idat + 4] + bytes(rng.randrange(256) for _ in range(40)) + png[idat + 44:],
          "PNG whose image data is random bytes")
    write("garbage_after_header.jpg", jpeg[:400] + bytes(rng.randrange(256) for _ in range(2000)),
          "JPEG headers followed by random bytes")
    write("zero_size.png", _png_claiming(0, 0), "PNG header claiming 0 x 0")
    # huge claims and bombs
    write("claims_100000x100000.png", _png_claiming(100_000, 100_000), "PNG header claiming 100000 x 100000")
    write("claims_65000x65000.jpg", _jpeg_claiming(jpeg, 65_000, 65_000), "JPEG header claiming 65000 x 65000")
    ihdr = struct.pack(">IIBBBBB", 12_000, 12_000, 8, 0, 0, 0, 0)
    packer, row = zlib.compressobj(9), b"\0" * 12_001
    bomb = b"".join(packer.compress(row * 500) for _ in range(24)) + packer.flush()
    write("bomb_12000x12000.png", b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", bomb)
          + _png_chunk(b"IEND", b""), "a real 12000 x 12000 PNG of 144 MB pixels in ~140 kB (decompression bomb)")
    text_bomb = png[:33] + _png_chunk(b"zTXt", b"comment\0\0" + zlib.compress(b"A" * 8_000_000, 9)) + png[33:]
    write("text_bomb.png", text_bomb, "PNG with a compressed text chunk of 8 MB")
    # unusual but valid modes and sizes
    save("one_by_one.png", Image.new("RGB", (1, 1), (200, 150, 120)), "a 1x1 PNG")
    save("one_by_one.jpg", Image.new("RGB", (1, 1), (200, 150, 120)), "a 1x1 JPEG")
    save("one_by_one.webp", Image.new("RGB", (1, 1), (200, 150, 120)), "a 1x1 WebP")
    save("one_by_4000.png", Image.new("L", (1, 4000), 128), "a 1 x 4000 strip")
    save("cmyk.jpg", face.convert("CMYK"), "a CMYK JPEG", quality=90)
    save("grey16.png", Image.fromarray(__import__("numpy").full((64, 64), 40000, dtype="uint16")),
         "a 16-bit greyscale PNG")
    rgb16 = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 8, 16, 2, 0, 0, 0))
    rgb16 += _png_chunk(b"IDAT", zlib.compress(b"".join(b"\0" + bytes(range(48)) for _ in range(8))))
    write("rgb16.png", rgb16 + _png_chunk(b"IEND", b""), "a 16-bit-per-channel RGB PNG")
    palette = face.convert("P", palette=Image.ADAPTIVE, colors=16)
    palette.info["transparency"] = 0
    save("palette_alpha.png", palette, "a palette PNG with a transparent colour", transparency=0)
    save("grey_alpha.png", face.convert("LA"), "a grey + alpha PNG")
    save("rgba.png", face.convert("RGBA"), "an RGBA PNG")
    save("grey.jpg", face.convert("L"), "a greyscale JPEG")
    save("progressive.jpg", face, "a progressive JPEG", progressive=True)
    exif = Image.Exif()
    exif[0x0112] = 6
    save("exif_rotated.jpg", face, "a JPEG with an EXIF rotation", exif=exif)
    frames = [_face(rng, 64, k % 2 == 0, False) for k in range(3)]
    frames[0].save(out / "animated.png", save_all=True, append_images=frames[1:], duration=100)
    made["animated.png"] = "an animated PNG (3 frames)"
    frames[0].save(out / "animated.webp", save_all=True, append_images=frames[1:], duration=100)
    made["animated.webp"] = "an animated WebP (3 frames)"
    frames[0].save(out / "animated_gif.png", format="GIF", save_all=True, append_images=frames[1:], duration=100)
    made["animated_gif.png"] = "an animated GIF named .png"
    write("UPPER.PNG", png, "an upper-case extension")
    write("trailing_junk.png", png + b"junk" * 100, "a PNG followed by junk")
    # wrong extensions and non-images
    write("gif_as.png", gif, "a GIF named .png")
    write("jpeg_as.png", jpeg, "a JPEG named .png")
    write("png_as.jpg", png, "a PNG named .jpg")
    write("text_as.png", b"hello, I am not an image\n", "text named .png")
    write("html_as.jpg", b"<html><script>alert(1)</script></html>", "HTML named .jpg")
    write("pickle_as.png", b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00K\x01.", "a pickle named .png")
    write("zip_as.webp", b"PK\x03\x04" + b"\0" * 60, "a zip header named .webp")
    write("svg_as.png", b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
          "SVG with a script named .png")
    # names: unusable as item ids, duplicates
    write("a face.png", png, "a space in the name")
    write("visage-\u00e9.png", png, "a non-ASCII name")
    write(".hidden.png", png, "a hidden file")
    write("x" * 140 + ".png", png, "a 140-character name")
    write("twin.png", png, "the first of two files with one stem")
    write("twin.jpg", jpeg, "the second of two files with one stem (duplicate id)")
    # things that are not regular files
    for name, target, what in (("loop.png", "loop.png", "a symlink to itself"),
                               ("loop_a.png", "loop_b.png", "a symlink loop of two (a)"),
                               ("loop_b.png", "loop_a.png", "a symlink loop of two (b)"),
                               ("dangling.png", "missing.png", "a symlink to nothing")):
        os.symlink(target, out / name)
        made[name] = what
    for name in ("folder.png", "folder.jpg"):
        (out / name).mkdir()
        made[name] = "a directory named like an image"
    os.mkfifo(out / "pipe.png")
    made["pipe.png"] = "a named pipe (reading it would block)"
    return made
