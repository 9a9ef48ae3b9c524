"""Truncated, foreign and other-version face exports: ``load_faces`` gives one DatasetError line naming the
export, whichever file of it is broken (never an Arrow or JSON traceback, whether the damage shows at load time
or only when the columns are read), and the face suite's CLI turns it into one ``error:`` line, exit 2."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import make_face_export

from benchmark.cli import main
from benchmark.datasets.faces import load_faces
from fedmtl.errors import DatasetError


@pytest.fixture(scope="module")
def small_export(tmp_path_factory) -> Path:
    return make_face_export(tmp_path_factory.mktemp("small") / "export", n_train=6, n_test=3)


def _truncate(path: Path, keep: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _edit_json(path: Path, change: Callable[[dict], None]) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _to_parquet(root: Path) -> None:
    """Rewrite a save_to_disk export as Parquet shards (the Hub layout)."""
    import datasets

    dd = datasets.load_from_disk(str(root))
    shards = root.parent / "shards"
    (shards / "data").mkdir(parents=True)
    for split in ("train", "test"):
        dd[split].to_parquet(str(shards / "data" / f"{split}-00000-of-00001.parquet"))
    shutil.rmtree(root)
    shards.rename(root)


def _foreign(root: Path, kind: str) -> None:
    """Replace the export by another project's DatasetDict: right column names, an ``image`` column of
    another type (integers or lists of integers)."""
    import datasets

    shutil.rmtree(root)
    ints = datasets.Value("int64")
    image, values = (ints, [1, 2]) if kind == "ints" else (datasets.Sequence(ints), [[1], [2]])
    features = datasets.Features({"image": image, "sample_id": datasets.Value("string"),
                                  "gender": datasets.ClassLabel(names=["male", "female"])})
    splits = {split: datasets.Dataset.from_dict({"image": values, "sample_id": [f"{split}{i}" for i in
                                                  range(len(values))], "gender": [0, 1]}, features=features)
              for split in ("train", "test")}
    datasets.DatasetDict(splits).save_to_disk(str(root))


ARROW = "train/data-00000-of-00001.arrow"
DAMAGE: dict[str, Callable[[Path], None]] = {
    "arrow-truncated-half": lambda r: _truncate(r / ARROW, 0.5),
    "arrow-truncated-tail": lambda r: _truncate(r / ARROW, 0.97),
    "arrow-zero-bytes": lambda r: (r / ARROW).write_bytes(b""),
    "arrow-is-text": lambda r: (r / ARROW).write_text("not arrow\n"),
    "arrow-missing": lambda r: (r / ARROW).unlink(),
    "dataset-dict-json-garbage": lambda r: (r / "dataset_dict.json").write_text("{splits: [train"),
    "dataset-dict-json-other-shape": lambda r: (r / "dataset_dict.json").write_text('["train", "test"]'),
    "split-folder-missing": lambda r: shutil.rmtree(r / "test"),
    "state-json-garbage": lambda r: (r / "train" / "state.json").write_text("\x00\x01"),
    "state-json-names-another-file": lambda r: _edit_json(
        r / "train" / "state.json", lambda d: d.update(_data_files=[{"filename": "data-99999.arrow"}])),
    "info-json-future-feature": lambda r: _edit_json(
        r / "train" / "dataset_info.json",
        lambda d: d["features"].update(gender={"_type": "ClassLabel2099", "names": ["male", "female"]})),
    "info-json-garbage": lambda r: (r / "train" / "dataset_info.json").write_text("]"),
    "foreign-image-ints": lambda r: _foreign(r, "ints"),
    "foreign-image-lists": lambda r: _foreign(r, "lists"),
    "parquet-truncated": lambda r: (_to_parquet(r), _truncate(r / "data" / "train-00000-of-00001.parquet", 0.6)),
    "parquet-is-text": lambda r: (_to_parquet(r), (r / "data" / "test-00000-of-00001.parquet").write_text("x")),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_broken_export_is_one_line_naming_it(tmp_path, small_export, damage):
    root = tmp_path / "export"
    shutil.copytree(small_export, root)
    DAMAGE[damage](root)
    with pytest.raises(DatasetError) as err:
        load_faces(root)
    message = str(err.value)
    assert "\n" not in message and str(root) in message and len(message) < 500, message


def test_the_cli_prints_one_error_line_and_writes_nothing(tmp_path, small_export, capsys):
    root = tmp_path / "export"
    shutil.copytree(small_export, root)
    DAMAGE["arrow-truncated-half"](root)
    out = tmp_path / "results"
    capsys.readouterr()
    code = main(["--suite", "faces", "--quick", "--dataset", str(root), "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and "\n" not in err and str(root) in err, err
    assert not out.exists()
