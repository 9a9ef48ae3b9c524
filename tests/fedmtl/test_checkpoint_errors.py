"""Truncated, foreign and wrong-version checkpoints: each is one CheckpointError line naming the file, raised
when the run starts (never a traceback from inside torch or a KeyError halfway through resuming), and a pickle
in the file never runs."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import pytest
import torch

from fedmtl import CheckpointError, Federation, LayerSpec, Simulation, TrainConfig, mlp
from fedmtl.checkpoint import load_checkpoint

SPEC = LayerSpec.of(common="fc1", task="fc2", personal="fc3")
CONFIG = TrainConfig(rounds=1, local_epochs=1, batch_size=8, lr=0.05)


def _federation() -> Federation:
    from fedmtl import Client

    g = torch.Generator().manual_seed(0)
    clients = []
    for i in range(4):
        x, xt = torch.randn(20 + 5 * i, 10, generator=g), torch.randn(8, 10, generator=g)
        clients.append(Client(f"c{i}", f"t{i % 2}", x, x[:, :3].argmax(1), xt, xt[:, :3].argmax(1)))
    return Federation(clients)


def _simulation(directory: Path, config: TrainConfig = CONFIG) -> Simulation:
    return Simulation(mlp([10, 16, 8, 3], seed=1), SPEC, _federation(), config, checkpoint_dir=directory)


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory) -> bytes:
    directory = tmp_path_factory.mktemp("good")
    _simulation(directory).run(progress=False)
    return (directory / "checkpoint.pt").read_bytes()


def _saved(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _edited(data: bytes, **changes: object) -> bytes:
    state = torch.load(io.BytesIO(data), weights_only=True)
    for key, value in changes.items():
        if value is None:
            del state[key]
        else:
            state[key] = value
    return _saved(state)


class _Evil:
    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        return (open, (str(self.sentinel), "w"))


CASES = {
    "truncated-half": lambda good, tmp: good[: len(good) // 2],
    "truncated-tail": lambda good, tmp: good[:-7],
    "zero-bytes": lambda good, tmp: b"",
    "text": lambda good, tmp: b"not a checkpoint\n",
    "plain-pickle": lambda good, tmp: pickle.dumps({"format": 1}),
    "code-pickle": lambda good, tmp: _saved(_Evil(tmp / "pwned")),
    "a-list": lambda good, tmp: _saved([1, 2, 3]),
    "a-model-state-dict": lambda good, tmp: _saved(mlp([10, 16, 8, 3], seed=1).state_dict()),
    "format-1": lambda good, tmp: _edited(good, format=1),  # before streaming rounds
    "format-99": lambda good, tmp: _edited(good, format=99),
    "format-text": lambda good, tmp: _edited(good, format="2"),
    "no-format": lambda good, tmp: _edited(good, format=None),
    "no-personal": lambda good, tmp: _edited(good, personal=None),
    "no-history": lambda good, tmp: _edited(good, history=None),
    "round-text": lambda good, tmp: _edited(good, round="x"),
    "other-config": lambda good, tmp: good,  # resumed with another lr below
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_checkpoints_are_one_line_errors_naming_the_file(tmp_path, good_checkpoint, case):
    directory = tmp_path / "run"
    directory.mkdir()
    path = directory / "checkpoint.pt"
    path.write_bytes(CASES[case](good_checkpoint, tmp_path))
    config = CONFIG.replace(lr=0.07) if case == "other-config" else CONFIG
    with pytest.raises(CheckpointError) as err:
        _simulation(directory, config)
    message = str(err.value)
    assert "\n" not in message and str(path) in message, message
    assert len(message) < 400, message
    assert not (tmp_path / "pwned").exists()


def test_a_directory_in_place_of_the_file(tmp_path):
    (tmp_path / "checkpoint.pt").mkdir()
    with pytest.raises(CheckpointError) as err:
        _simulation(tmp_path)
    assert "\n" not in str(err.value) and "checkpoint.pt" in str(err.value)


def test_load_checkpoint_alone_refuses_what_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "x.pt"
    path.write_bytes(_saved([1, 2]))
    with pytest.raises(CheckpointError, match="not a fedmtl checkpoint"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "absent.pt")


def test_the_good_checkpoint_still_resumes(tmp_path, good_checkpoint):
    (tmp_path / "checkpoint.pt").write_bytes(good_checkpoint)
    sim = _simulation(tmp_path)
    assert sim.round_index == 1


@pytest.mark.parametrize("content", ["truncated", "foreign", "other-shape", "missing-layer"])
def test_a_bad_personal_state_file_on_a_node_is_one_line(tmp_path, content):
    from flwr.app import Context, RecordDict

    from fedmtl.flower import load_personal, save_personal

    initial = {"fc3.weight": torch.zeros(3, 8), "fc3.bias": torch.zeros(3)}
    context = Context(run_id=1, node_id=1, node_config={"state-dir": str(tmp_path)}, state=RecordDict(),
                      run_config={})
    save_personal(context, "c0", {n: t + 1 for n, t in initial.items()}, 1)
    path = tmp_path / "c0.pt"
    good = path.read_bytes()
    data = {"truncated": good[:-9], "foreign": _saved([1]),
            "other-shape": _saved({"fc3.weight": torch.zeros(2, 8), "fc3.bias": torch.zeros(3)}),
            "missing-layer": _saved({"fc3.weight": torch.zeros(3, 8)})}[content]
    path.write_bytes(data)
    fresh = Context(run_id=1, node_id=2, node_config={"state-dir": str(tmp_path)}, state=RecordDict(), run_config={})
    with pytest.raises(CheckpointError) as err:
        load_personal(fresh, "c0", initial)
    assert "\n" not in str(err.value) and str(path) in str(err.value)
