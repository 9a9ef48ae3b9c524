"""Bad command lines and bad config files end the same way in every CLI: one ``error:`` line, exit 2, nothing
written. Run as real subprocesses (``python -m ...``) so that the exit status and stderr are what a user sees."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "FEDMTL_CACHE": str(cwd / "cache")}
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300, check=False)


def _assert_one_error_line(proc: subprocess.CompletedProcess, cwd: Path, *needles: str) -> None:
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert proc.stdout == "", proc.stdout
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert sorted(p.name for p in cwd.iterdir()) == [], "something was written"


@pytest.mark.parametrize("args, needles", [
    (["benchmark", "--seeds", "x"], ["--seeds", "'x'", "(see python -m benchmark run --help)"]),
    (["benchmark", "--bogus"], ["--bogus", "--help"]),
    (["benchmark", "run", "--split", "sideways"], ["--split", "sideways"]),
    (["generation", "generate", "--out", "o", "--num", "-3"], ["--num", "-3", "--help"]),
    (["generation"], ["command", "(see python -m generation --help)"]),
    (["labeling", "serve", "--db", "x.db", "--images", ".", "--port", "99999"], ["--port", "99999"]),
    (["labeling", "nonsense"], ["nonsense", "--help"]),
], ids=lambda v: " ".join(v) if isinstance(v, list) and v and v[0] in ("benchmark", "generation", "labeling")
    else None)
def test_a_bad_flag_is_one_line_exit_2_and_writes_nothing(tmp_path, args, needles):
    _assert_one_error_line(_run(args, tmp_path), tmp_path, *needles)


@pytest.mark.parametrize("toml, field", [
    ('aggregators = "fedavg"\n', "aggregators"),
    ('seed = "x"\n', "seed"),
    ("lr = -0.5\n", "lr"),
    ("rounds = 2.5\n", "rounds"),
    ('device = "gpu"\n', "device"),
])
def test_a_bad_config_file_is_one_line_exit_2_and_writes_nothing(tmp_path, toml, field):
    config = tmp_path.parent / f"{tmp_path.name}-bad.toml"  # outside the watched directory
    config.write_text(toml)
    proc = _run(["benchmark", "--config", str(config), "--out", "results", "--quick", "--no-progress"], tmp_path)
    _assert_one_error_line(proc, tmp_path, field, config.name)
