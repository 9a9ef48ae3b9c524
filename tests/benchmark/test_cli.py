import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_quick_run_end_to_end_writes_the_leaderboard(tmp_path):
    out = tmp_path / "results"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "benchmark", "--quick", "--no-progress", "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    assert "| rank | regime |" in proc.stdout and "mtfl" in proc.stdout
    board = json.loads((out / "har" / "leaderboard.json").read_text())
    assert board["suite"] == "har"
    regimes = {row["regime"] for row in board["rows"]}
    assert {"centralized_joint", "separate", "mtfl", "fedavg"} <= regimes
    for row in board["rows"]:
        assert 0 <= row["accuracy"] <= 100 and row["seeds"] == 1 and row["std"] >= 0
        assert row["config"]["rounds"] == 3 and "lr" in row["config"] and row["config"]["seeds"] == [0]
    accs = [row["accuracy"] for row in board["rows"]]
    assert accs == sorted(accs, reverse=True)
    csv_lines = (out / "har" / "leaderboard.csv").read_text().splitlines()
    assert csv_lines[0].startswith("regime,accuracy,std") and len(csv_lines) == len(board["rows"]) + 1
    assert (out / "har" / "leaderboard.md").read_text().startswith("## Leaderboard: har")
    assert (out / "har" / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("args, message", [
    (["--regimes", "mtfl,fedmagic"], "regime 'fedmagic' is unknown"),
    (["--suite", "chess"], "suite 'chess' is unknown"),
    (["--aggregator", "fedmagic"], "fedmagic"),
    (["--uci-har", "/nonexistent/UCI HAR Dataset"], "UCI HAR path"),
    (["--regimes", "mtfl", "--layers", "common,common,personal"], "fc4.weight, fc4.bias without a layer type"),
    (["--regimes", "mtfl", "--layers", "common,common,personal,shared"], "layer type 'shared' is unknown"),
    (["--config", "/nonexistent/fed.toml"], "does not exist"),
    (["--engine", "flower", "--regimes", "mtfl,centralized_joint"], "'centralized_joint' pools all data"),
    (["--engine", "flower", "--regimes", "ditto"], "'ditto' needs ditto_lambda"),
])
def test_bad_input_is_one_line_nonzero_and_writes_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "results"
    code = main(["run", "--quick", "--no-progress", "--out", str(out), *args])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert not out.exists()


def test_uci_har_folder_that_is_not_one(tmp_path, capsys):
    fake = tmp_path / "UCI HAR Dataset"
    fake.mkdir()
    (fake / "README.txt").write_text("not the dataset")
    out = tmp_path / "results"
    code = main(["--quick", "--no-progress", "--uci-har", str(fake), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and str(fake) in err and "\n" not in err
    assert not out.exists()


def test_list_shows_regimes(capsys):
    assert main(["list"]) == 0
    text = capsys.readouterr().out
    assert "mtfl" in text and "fedrep" in text and "har" in text


def test_checkpointed_suite_resumes_from_its_checkpoints(tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    args = ["--quick", "--no-progress", "--regimes", "mtfl,separate", "--jobs", "1", "--checkpoints", str(ckpt)]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert sorted(p.name for p in ckpt.iterdir()) == ["mtfl-seed0", "separate-seed0"]
    stamp = (ckpt / "mtfl-seed0" / "checkpoint.pt").stat().st_mtime_ns
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    capsys.readouterr()
    # a finished run is read back, not retrained: same numbers, checkpoint untouched
    assert (ckpt / "mtfl-seed0" / "checkpoint.pt").stat().st_mtime_ns == stamp
    rows = [json.loads((tmp_path / d / "har" / "leaderboard.json").read_text())["rows"] for d in "ab"]
    assert [(r["regime"], r["accuracy"]) for r in rows[0]] == [(r["regime"], r["accuracy"]) for r in rows[1]]


def test_quick_run_on_an_original_uci_har_folder(tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("har_tests", ROOT / "tests/benchmark/datasets/test_har.py")
    har_tests = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(har_tests)
    folder = har_tests._write_uci(tmp_path, {"train": [1, 3], "test": [2]}, rows_per=24)
    out = tmp_path / "results"
    code = main(["--quick", "--no-progress", "--jobs", "1", "--regimes", "mtfl,separate", "--uci-har", str(folder),
                 "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    board = json.loads((out / "har" / "leaderboard.json").read_text())
    assert board["meta"]["features"] == 561 and board["meta"]["clients"] == 3
    assert {r["regime"] for r in board["rows"]} == {"mtfl", "separate"}


def test_shipped_example_config_runs(tmp_path, capsys):
    out = tmp_path / "results"
    code = main(["--quick", "--no-progress", "--jobs", "1", "--regimes", "fedavg", "--config",
                 str(ROOT / "configs" / "har-fedadam.toml"), "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    row = json.loads((out / "har" / "leaderboard.json").read_text())["rows"][0]
    assert row["config"]["aggregators"]["common"] == {"name": "fedadam", "lr": 0.003}
    assert row["config"]["rounds"] == 3  # --quick still caps the run


@pytest.mark.slow
def test_flower_engine_rows_equal_the_simulation_engine_rows(tmp_path, capsys):
    """`--engine flower` trains each run on Flower's simulation runtime (30 SuperNodes) with the exact
    TrainConfig of the in-process engine: the same seed gives the same accuracies, round by round."""
    common = ["--quick", "--no-progress", "--regimes", "mtfl,separate", "--rounds", "2"]
    assert main([*common, "--out", str(tmp_path / "sim")]) == 0
    assert main([*common, "--engine", "flower", "--out", str(tmp_path / "flower")]) == 0
    capsys.readouterr()
    sim = json.loads((tmp_path / "sim" / "har" / "leaderboard.json").read_text())
    flower = json.loads((tmp_path / "flower" / "har" / "leaderboard.json").read_text())
    assert flower["meta"]["engine"] == "flower" and sim["meta"]["engine"] == "simulation"
    assert [r["regime"] for r in flower["rows"]] == [r["regime"] for r in sim["rows"]]
    for got, want in zip(flower["rows"], sim["rows"], strict=True):
        assert got["accuracy"] == pytest.approx(want["accuracy"], abs=1e-9)
        assert got["per_seed"][0]["curve"] == pytest.approx(want["per_seed"][0]["curve"], abs=1e-9)
        assert len(got["per_seed"][0]["curve"]) == 2
        assert got["config"]["engine"] == "flower" and got["config"]["lr"] == want["config"]["lr"]
