"""The one runner every suite shares: kill-and-resume, diverged runs, per-round progress, suites as modules."""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from benchmark.cli import main
from benchmark.har import HarData
from benchmark.leaderboard import to_markdown
from benchmark.memory import parse_size
from benchmark.regimes import REGIMES
from benchmark.runner import SCORES_NAME, Task, execute, jobs_within, run_suite, run_task
from benchmark.suite import Workload
from fedmtl import TrainConfig

ROOT = Path(__file__).resolve().parents[2]
TASKS = ["gender", "age_group", "glasses", "pose", "teeth"]


def _toy_clients(n=3, dim=6, seed=0):
    from fedmtl import Client

    g = torch.Generator().manual_seed(seed)
    clients = []
    for i in range(n):
        x = torch.randn(40, dim, generator=g)
        y = (x[:, 0] > 0).long()
        clients.append(Client(f"c{i}", f"c{i}", x[:30], y[:30], x[30:], y[30:]))
    return tuple(clients)


def _toy_workload(**overrides):
    return Workload("toy", HarData(_toy_clients(), (6, 8, 2)),
                    TrainConfig(rounds=3, local_epochs=1, batch_size=8, lr=0.1, threads=1), overrides)


# ------------------------------------------------------------------------------------ kill -9 and resume
FACE_ARGS = ["--suite", "faces", "--clients", "10", "--hidden", "256,128,64", "--rounds", "20", "--seeds", "1",
             "--regimes", "centralized_separate,mtfl", "--threads", "1", "--no-progress"]


def _face_cmd(face_export, cache, out, *extra):
    return [sys.executable, "-m", "benchmark", *FACE_ARGS, "--dataset", str(face_export), "--cache-dir", str(cache),
            "--out", str(out), *extra]


def _env():
    return {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def _rows(out):
    board = json.loads((out / "faces" / "leaderboard.json").read_text())
    return {r["regime"]: (r["per_task"], r["mean"], r["per_seed"], {k: v for k, v in r["config"].items()})
            for r in board["rows"]}


@pytest.fixture(scope="module")
def uninterrupted(face_features, face_export, tmp_path_factory):
    """The reference: the same face suite run start to end in one go, without checkpoints."""
    _, _, cache = face_features
    out = tmp_path_factory.mktemp("reference")
    proc = subprocess.run(_face_cmd(face_export, cache, out), cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return _rows(out)


def _scored_rounds(path):
    try:
        return len(json.loads(path.read_text())["scores"])
    except (OSError, ValueError, KeyError):
        return 0


@pytest.mark.parametrize("victim", ["centralized_separate", "mtfl"])
def test_a_face_suite_killed_mid_round_resumes_to_identical_rows(face_features, face_export, tmp_path, victim,
                                                                  uninterrupted):
    """SIGKILL while ``victim`` is training (centralized_separate: five models in lockstep; mtfl: after the
    first regime has finished), then the same command again: the rows equal an uninterrupted run's."""
    _, _, cache = face_features
    ckpt, out = tmp_path / "ckpt", tmp_path / "out"
    cmd = _face_cmd(face_export, cache, out, "--checkpoints", str(ckpt))
    scores = ckpt / f"{victim}-seed0" / SCORES_NAME
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while _scored_rounds(scores) < 3:
            assert proc.poll() is None, "the suite ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    killed_at = _scored_rounds(scores)
    assert 3 <= killed_at < 20  # killed part-way: the rerun has rounds left to train
    assert not out.exists()  # nothing written before every run has finished
    resumed = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert _scored_rounds(scores) == 20
    rows = _rows(out)
    assert rows.keys() == uninterrupted.keys()
    for regime, (per_task, mean, per_seed, config) in rows.items():
        want = uninterrupted[regime]
        assert per_task == want[0] and mean == want[1], regime
        assert per_seed == want[2], regime  # every round's per-task accuracy, bit for bit
        assert config == want[3]


# ------------------------------------------------------------------------------------ diverged runs
def test_a_diverging_run_is_recorded_and_the_others_are_kept(tmp_path):
    workload = _toy_workload(separate={"lr": 1e30})
    regimes = [REGIMES["mtfl"], REGIMES["separate"]]
    summaries = run_suite(workload, regimes, [0, 1], progress=False, checkpoints=tmp_path)
    mtfl, separate = summaries
    assert mtfl.seeds == 2 and mtfl.diverged == [] and 0 <= mtfl.mean["accuracy"] <= 100
    assert separate.seeds == 0 and separate.diverged == [0, 1]
    assert all("diverged" in run.diverged for run in separate.runs)
    table = to_markdown("toy", summaries, {})
    assert table.index("| mtfl |") < table.index("| separate |")  # a row without a number ranks last
    assert "| 2 | separate | diverged | diverged | 0 | all |" in table
    # recorded in the checkpoint directory: a rerun reads the verdict back instead of training again
    marker = tmp_path / "separate-seed0" / SCORES_NAME
    assert json.loads(marker.read_text())["diverged"]
    stamp = marker.stat().st_mtime_ns
    again = run_suite(workload, regimes, [0, 1], progress=False, checkpoints=tmp_path)
    assert marker.stat().st_mtime_ns == stamp
    assert [(s.regime, s.mean, s.diverged) for s in again] == [(s.regime, s.mean, s.diverged) for s in summaries]


def test_a_checkpoint_directory_of_another_config_is_refused(tmp_path):
    from fedmtl import CheckpointError

    run_task(_toy_workload(), Task(REGIMES["mtfl"], 0), checkpoints=tmp_path)
    with pytest.raises(CheckpointError, match="different config"):
        run_task(_toy_workload(mtfl={"lr": 0.05}), Task(REGIMES["mtfl"], 0), checkpoints=tmp_path)


# ------------------------------------------------------------------------------------ progress and jobs
def test_progress_is_reported_every_round_with_regime_seed_and_accuracy(capsys):
    seen = []
    run = run_task(_toy_workload(), Task(REGIMES["mtfl"], 0), report=lambda r, score: seen.append((r, score)))
    assert [r for r, _ in seen] == [1, 2, 3]
    assert [s["accuracy"] for _, s in seen] == run.curve("accuracy")
    seen.clear()  # evaluated every 2 rounds and at the last: scored there, every round still reported
    sparse = Workload("toy", HarData(_toy_clients(), (6, 8, 2)),
                      TrainConfig(rounds=5, eval_every=2, local_epochs=1, batch_size=8, lr=0.1, threads=1))
    run = run_task(sparse, Task(REGIMES["mtfl"], 0), report=lambda r, score: seen.append((r, score)))
    assert run.rounds == [2, 4, 5] and [r for r, _ in seen] == [1, 2, 3, 4, 5]
    assert [s is None for _, s in seen] == [True, False, True, False, False]
    tasks = [Task(REGIMES["mtfl"], 0), Task(REGIMES["separate"], 1)]
    one = execute(_toy_workload(), tasks, jobs=1, progress=True)
    two = execute(_toy_workload(), tasks, jobs=2, progress=True)  # worker processes report through a queue
    err = capsys.readouterr().err
    assert err.count("6/6") >= 2 and "separate seed 1 round 3/3 accuracy" in err
    assert [r.scores for r in one] == [r.scores for r in two]  # results do not depend on --jobs


def test_memory_sizes_and_the_jobs_they_allow():
    assert parse_size("4G") == 4 * 2**30 and parse_size("512m") == 512 * 2**20 and parse_size("1.5GiB") == 3 * 2**29
    assert parse_size("1000") == 1000
    for bad in ("lots", "-1G", "0"):
        with pytest.raises(Exception, match="size|more than 0"):
            parse_size(bad)
    assert jobs_within(4, 2 * 2**30, 5 * 2**30) == 2
    assert jobs_within(4, 8 * 2**30, 5 * 2**30) == 1  # never fewer than one
    assert jobs_within(3, 2**20, None) == 3


# ------------------------------------------------------------------------------------ the command line
def test_help_lists_suites_and_regimes(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    text = capsys.readouterr().out
    assert exc.value.code == 0
    assert "har [default]" in text and "faces:" in text
    assert "fedavg_per_task*" in text and "lg_fedavg*" in text and "--split" in text and "--dataset" not in text
    with pytest.raises(SystemExit):
        main(["--suite", "faces", "--help"])
    text = capsys.readouterr().out
    assert "--dataset" in text and "--size" in text and "--split" not in text


@pytest.mark.parametrize("args, message", [
    (["--dataset", "x"], "--dataset is a flag of the faces suite, not of har (run it with --suite faces)"),
    (["--clients=10"], "--clients is a flag of the faces suite"),
    (["--suite", "faces", "--uci-har", "x"], "--uci-har is a flag of the har suite, not of faces"),
    (["--seeds", "0"], "argument --seeds: '0' must be >= 1"),
    (["--device", "gpu"], "argument --device: invalid choice: 'gpu'"),
    (["--memory-budget", "x"], "'x' is not a size like 4G"),
])
def test_a_flag_of_another_suite_is_an_error_not_ignored(tmp_path, capsys, args, message):
    out = tmp_path / "results"
    code = main(["--quick", "--no-progress", "--out", str(out), *args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and message in err and "\n" not in err
    assert not out.exists()


TOY_SUITE = '''
"""A third suite in one module: two toy subjects, the HAR leaderboard."""
import torch

from benchmark.har import HarData
from benchmark.leaderboard import har_files, to_markdown
from benchmark.regimes import REGIMES
from benchmark.suite import Workload
from benchmark.suite_base import SuiteBase
from fedmtl import Client, TrainConfig


class ToySuite(SuiteBase):
    name = "toy"
    summary = "two synthetic subjects"
    regimes = {n: REGIMES[n] for n in ("mtfl", "separate")}
    default_regimes = ("mtfl", "separate")
    default_train = TrainConfig(rounds=4, local_epochs=1, batch_size=8, lr=0.1, threads=1)

    def add_arguments(self, group):
        group.add_argument("--toy-noise", type=float, default=0.0)

    def workload(self, args, train, regimes, *, validation=False, progress=True):
        g = torch.Generator().manual_seed(0)
        clients = []
        for i in range(2):
            x = torch.randn(40, 5, generator=g)
            y = (x[:, i] + args.toy_noise * torch.randn(40, generator=g) > 0).long()
            clients.append(Client(f"s{i}", f"s{i}", x[:30], y[:30], x[30:], y[30:]))
        data = HarData(tuple(clients), (5, 8, 8, 2), {"data": "toy"})
        data.check(regimes)
        return Workload("toy", data, train)

    def leaderboard(self, summaries, meta):
        return to_markdown(self.name, summaries, meta), har_files(self.name, summaries, meta)


SUITE = ToySuite()
'''


def test_a_third_suite_is_one_module(tmp_path, monkeypatch, capsys):
    import benchmark.suites

    folder = tmp_path / "more_suites"
    folder.mkdir()
    (folder / "toy.py").write_text(textwrap.dedent(TOY_SUITE))
    monkeypatch.setattr(benchmark.suites, "__path__", [*benchmark.suites.__path__, str(folder)])
    monkeypatch.delitem(sys.modules, "benchmark.suites.toy", raising=False)
    out = tmp_path / "results"
    try:
        code = main(["--suite", "toy", "--toy-noise", "0.1", "--seeds", "2", "--jobs", "1", "--no-progress",
                     "--checkpoints", str(tmp_path / "ckpt"), "--out", str(out)])
        assert code == 0, capsys.readouterr().err
        board = json.loads((out / "toy" / "leaderboard.json").read_text())
        assert {r["regime"] for r in board["rows"]} == {"mtfl", "separate"}
        assert all(r["seeds"] == 2 and len(r["per_seed"][0]["curve"]) == 4 for r in board["rows"])
        assert main(["--toy-noise", "0.1"]) == 2  # the har suite has no such flag
        assert "--toy-noise is a flag of the toy suite" in capsys.readouterr().err
        assert main(["list"]) == 0 and "toy regimes" in capsys.readouterr().out
    finally:
        sys.modules.pop("benchmark.suites.toy", None)


# ------------------------------------------------------------------------------------ the dataset's notes
def test_the_dataset_card_notes_head_the_face_leaderboard(face_features, face_export, tmp_path, capsys):
    _, _, cache = face_features
    export = tmp_path / "export"
    shutil.copytree(face_export, export)
    note = "labels are machine-made (model:toy@1); measured accuracy 91% against 300 hand-labelled faces"
    (export / "README.md").write_text(f"---\nbenchmark_notes:\n- '{note}'\nlicense: cc0-1.0\n---\n# Faces\n")
    out = tmp_path / "results"
    code = main(["--suite", "faces", "--dataset", str(export), "--cache-dir", str(cache), "--quick", "--regimes",
                 "local", "--clients", "10", "--hidden", "16,8", "--no-progress", "--memory-budget", "3G",
                 "--device", "cpu", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    assert f"Note: {note}" in printed and f"Note: {note}" in (out / "faces" / "leaderboard.md").read_text()
    board = json.loads((out / "faces" / "leaderboard.json").read_text())
    assert board["meta"]["notes"] == [note] and board["meta"]["features_cached"] is True
    config = board["rows"][0]["config"]
    assert config["device"] == "cpu" and config["memory_budget"] == 3 * 2**30  # one job: the whole budget
    (export / "README.md").write_text("---\nbenchmark_notes: 3\n---\n")
    assert main(["--suite", "faces", "--dataset", str(export), "--cache-dir", str(cache), "--quick",
                 "--out", str(tmp_path / "r2")]) == 2
    err = capsys.readouterr().err.strip()
    assert "benchmark_notes must be a list of strings" in err and "\n" not in err
