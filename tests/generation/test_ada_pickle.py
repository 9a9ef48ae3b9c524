"""stylegan2-ada pickles: exact round trip through the safe loader, and refusal of unsafe or broken files."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ada_writer import Persistent, random_stylegan2, to_records, write_ada_pickle

from generation.ada_pickle import load_ada_pickle, stylegan2_from_pickle
from generation.cli import main
from generation.errors import NetworkError
from generation.sampling import latents
from generation.stylegan2 import StyleGAN2Config
from tests.conftest import build_on_global, module_state

CONFIGS = [
    StyleGAN2Config(z_dim=32, w_dim=32, resolution=32, mapping_layers=2, channel_base=512, channel_max=32),
    StyleGAN2Config(z_dim=24, w_dim=40, resolution=64, mapping_layers=8, mapping_features=56, channel_base=1024,
                    channel_max=48, conv_clamp=None),
    StyleGAN2Config(z_dim=16, w_dim=16, resolution=32, mapping_layers=0, channel_base=256, channel_max=16),
    StyleGAN2Config(z_dim=16, w_dim=16, resolution=32, mapping_layers=1, channel_base=256, channel_max=16,
                    mapping_lr_mul=0.1, use_noise=False),
]


def _payload(sentinel: Path) -> str:
    """Python source that, if anyone executed it, would create ``sentinel``."""
    return f"import pathlib\npathlib.Path({str(sentinel)!r}).write_text('executed')\n"


@pytest.mark.parametrize("protocol", [2, 3, 4])
@pytest.mark.parametrize("index", range(len(CONFIGS)))
def test_round_trip_gives_same_tensors_and_images(tmp_path, standins, protocol, index) -> None:
    cfg = CONFIGS[index]
    gen = random_stylegan2(cfg, seed=index)
    sentinel = tmp_path / "module_src_was_executed"
    path = tmp_path / "net.pkl"
    write_ada_pickle(gen, path, standins, module_src=_payload(sentinel), protocol=protocol)
    loaded, facts = stylegan2_from_pickle(path)
    assert not sentinel.exists()
    assert facts["pickle_keys"] == ["D", "G", "G_ema", "augment_pipe", "training_set_kwargs"]
    assert facts["networks"]["G_ema"] == "Generator"
    assert loaded.cfg.num_ws == cfg.num_ws and loaded.cfg.mapping_layers == cfg.mapping_layers
    assert loaded.cfg.conv_clamp == cfg.conv_clamp and loaded.cfg.use_noise == cfg.use_noise
    assert [loaded.cfg.channels_for(r) for r in cfg.block_resolutions] == \
        [cfg.channels_for(r) for r in cfg.block_resolutions]
    original, recovered = gen.state_dict(), loaded.state_dict()
    assert original.keys() == recovered.keys()
    for key in original:
        assert torch.equal(original[key], recovered[key]), key
    z = torch.from_numpy(latents([0, 1, 2], cfg.z_dim))
    with torch.no_grad():
        assert torch.equal(gen(z, psi=0.5), loaded(z, psi=0.5))


def test_info_reports_the_file(tmp_path, standins, capsys) -> None:
    cfg = CONFIGS[1]
    gen = random_stylegan2(cfg)
    path = tmp_path / "net.pkl"
    write_ada_pickle(gen, path, standins)
    assert main(["info", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "stylegan2" and info["resolution"] == 64
    assert (info["z_dim"], info["w_dim"], info["num_ws"], info["mapping_layers"]) == (24, 40, 10, 8)
    assert info["parameters"] == sum(p.numel() for p in gen.parameters())
    assert info["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert info["channels"] == {"4": 48, "8": 48, "16": 48, "32": 32, "64": 16}


class _Evil:
    """Its unpickling would create the sentinel through os.system."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        return (os.system, (f"touch {self.sentinel}",))


class _EvilExec:
    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        return (exec, (f"import os; open({str(self.sentinel)!r}, 'w').close()",))


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "generation", *args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=120)


def _bad_files(tmp_path: Path, standins: dict, sentinel: Path) -> dict[str, tuple[Path, str]]:
    good = tmp_path / "good.pkl"
    write_ada_pickle(random_stylegan2(CONFIGS[0]), good, standins)
    files = {}
    files["os.system"] = (tmp_path / "evil_system.pkl", "posix.system")
    files["os.system"][0].write_bytes(pickle.dumps({"G_ema": _Evil(sentinel)}, protocol=2))
    nested = {"G_ema": Persistent(standins, "Generator", {"_init_kwargs": _EvilExec(sentinel)}, "")}
    files["exec nested in a network"] = (tmp_path / "evil_exec.pkl", "builtins.exec")
    files["exec nested in a network"][0].write_bytes(pickle.dumps(nested, protocol=4))
    files["subprocess"] = (tmp_path / "evil_popen.pkl", "subprocess.Popen")
    files["subprocess"][0].write_bytes(b"\x80\x02csubprocess\nPopen\nX\x05\x00\x00\x00touch\x85R.")
    files["truncated"] = (tmp_path / "truncated.pkl", "truncated")
    files["truncated"][0].write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    files["not a pickle"] = (tmp_path / "notes.pkl", "not a network pickle")
    files["not a pickle"][0].write_text("these are not the weights you are looking for\n")
    files["no G_ema"] = (tmp_path / "no_gema.pkl", "no G_ema")
    write_ada_pickle(random_stylegan2(CONFIGS[0]), files["no G_ema"][0], standins, with_g_ema=False)
    files["empty"] = (tmp_path / "empty.pkl", "truncated")
    files["empty"][0].write_bytes(b"")
    return files


def test_bad_network_files_fail_cleanly_in_process(tmp_path, standins) -> None:
    sentinel = tmp_path / "sentinel"
    for label, (path, expected) in _bad_files(tmp_path, standins, sentinel).items():
        with pytest.raises(NetworkError) as err:
            stylegan2_from_pickle(path)
        message = str(err.value)
        assert "\n" not in message and str(path) in message and expected in message, (label, message)
        assert not sentinel.exists(), label


def test_bad_network_files_fail_cleanly_from_the_cli(tmp_path, standins, capsys) -> None:
    sentinel = tmp_path / "sentinel"
    for label, (path, expected) in _bad_files(tmp_path, standins, sentinel).items():
        out = tmp_path / f"out-{path.stem}"
        args = ["generate", "--network", str(path), "--out", str(out), "-n", "2", "--no-progress"]
        if path.stem.startswith("evil"):  # a real process: its exit status, and nothing ran in it
            proc = _run_cli(*args)
            code, err = proc.returncode, proc.stderr
        else:
            code, err = main(args), capsys.readouterr().err
        assert code == 2, (label, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], (label, err)
        assert not out.exists(), label
        assert not sentinel.exists(), label
        assert main(["info", str(path)]) == 2, label
        assert len(capsys.readouterr().err.strip().splitlines()) == 1, label
        assert not sentinel.exists(), label


def test_refused_global_is_never_imported(tmp_path) -> None:
    """A pickle naming a module nobody has imported: refusing it must not import it either."""
    path = tmp_path / "antigravity.pkl"
    path.write_bytes(b"\x80\x02cantigravity\nfly\nq\x00)Rq\x01.")
    code = ("import sys; from generation.ada_pickle import load_ada_pickle\n"
            f"try:\n    load_ada_pickle({str(path)!r})\nexcept Exception as e:\n    print(type(e).__name__)\n"
            "print('antigravity' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.split() == ["NetworkError", "False"], proc.stderr


def test_unsupported_architecture_is_named(tmp_path, standins) -> None:
    gen = random_stylegan2(CONFIGS[0])
    path = tmp_path / "resnet.pkl"  # one block claims the 'resnet' architecture
    rec = to_records(gen, standins, "")
    rec.meta["state"]["_modules"]["synthesis"].meta["state"]["_modules"]["b8"].meta["state"]["architecture"] = "resnet"
    rec.meta["state"].update(z_dim=32, c_dim=0, w_dim=32, img_resolution=32, img_channels=3)
    path.write_bytes(pickle.dumps({"G_ema": rec}))
    with pytest.raises(NetworkError, match=r"synthesis\.b8 architecture 'resnet'"):
        stylegan2_from_pickle(path)
    assert isinstance(load_ada_pickle(path), dict)


@pytest.mark.parametrize("state", [(None, {"__defaults__": ("latin1",)}), {"marker": 1, "__defaults__": (1,)},
                                   (None, {"__setstate__": None}), {"__call__": None}],
                         ids=["slotstate", "dictstate", "setstate-slot", "call-dict"])
def test_build_on_an_allowed_global_changes_nothing(tmp_path, state) -> None:
    from collections import OrderedDict

    from generation import ada_pickle

    before = module_state(ada_pickle)
    builtins_before = (dict(vars(OrderedDict)), dict(vars(set)))
    for module, name in sorted(ada_pickle.ALLOWED_GLOBALS):
        path = tmp_path / f"{module}.{name}.pkl"
        path.write_bytes(build_on_global(module, name, state))
        with pytest.raises(NetworkError) as err:
            load_ada_pickle(path)
        assert "\n" not in str(err.value) and path.name in str(err.value)
    assert module_state(ada_pickle) == before
    assert (dict(vars(OrderedDict)), dict(vars(set))) == builtins_before
