import csv
import io
import json
import math

from benchmark.leaderboard import to_csv, to_json, to_markdown, write_leaderboard
from benchmark.runner import RunResult, summarize_runs


def runs(regime, accs):
    return [RunResult(regime, seed, [1, 2], [{"accuracy": acc - 5, "client_mean_accuracy": acc - 6},
                                             {"accuracy": acc, "client_mean_accuracy": acc - 1}], 1.0,
                      {"regime": regime, "seed": seed, "rounds": 2, "lr": 0.1, "batch_size": 32, "local_epochs": 5})
            for seed, acc in enumerate(accs)]


def test_summary_is_mean_and_sample_std_over_seeds():
    s = summarize_runs(runs("mtfl", [90.0, 92.0, 94.0]))
    assert s.mean["accuracy"] == 92.0 and math.isclose(s.std["accuracy"], 2.0)
    assert s.mean["client_mean_accuracy"] == 91.0
    assert s.config["seeds"] == [0, 1, 2] and "seed" not in s.config
    assert s.curve("accuracy") == ([1, 2], [87.0, 92.0], [2.0, 2.0])


def test_outputs_rank_by_accuracy_and_agree(tmp_path):
    summaries = [summarize_runs(runs("separate", [80.0, 82.0])), summarize_runs(runs("mtfl", [90.0, 91.0]))]
    md = to_markdown("har", summaries, {"split": "blocked"})
    assert md.index("| mtfl |") < md.index("| separate |")
    assert "90.50 ± 0.71" in md
    board = json.loads(to_json("har", summaries, {}))
    assert [r["regime"] for r in board["rows"]] == ["mtfl", "separate"]
    assert board["rows"][0]["per_seed"][1]["accuracy"] == 91.0
    rows = list(csv.DictReader(io.StringIO(to_csv(summaries))))
    assert rows[1]["regime"] == "separate" and float(rows[1]["accuracy"]) == 81.0
    paths = write_leaderboard(tmp_path, "har", summaries, {})
    assert sorted(p.name for p in (tmp_path / "har").iterdir()) == sorted(p.name for p in paths.values())
