"""MNIST and Fashion-MNIST from IDX files.

Results are only comparable across runs and machines if everyone trains on the same bytes, so
every file is checked against its published SHA-256 (of the uncompressed content, so raw and
``.gz`` copies verify alike), and downloads are verified before they are moved into place: a
half-written, truncated or tampered file must never pass for the real data set.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import logging
import math
import os
import shutil
import tempfile
import urllib.request
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

__all__ = [
    "DEFAULT_MIRRORS",
    "PermutedTask",
    "ENV_VAR",
    "SHA256SUMS",
    "SPLITS",
    "TASKS",
    "DatasetError",
    "default_cache_dir",
    "load",
    "read_idx",
    "resolve_data_dir",
]

TASKS: tuple[str, ...] = ("mnist", "fashion-mnist")
SPLITS: tuple[str, ...] = ("train", "test")


@dataclass(frozen=True)
class PermutedTask:
    """``pmnist-K``: MNIST with its pixels shuffled by the ``K``-th permutation drawn from a
    seed (the permuted-MNIST benchmark of continual learning). Every ``K``, 0 included, is a
    permutation, as in the metaplastic BNN reference code."""

    index: int

    PREFIX = "pmnist-"

    @classmethod
    def parse(cls, task: str) -> PermutedTask | None:
        """The permuted task a name stands for, or ``None`` for another name."""
        rest = task.removeprefix(cls.PREFIX)
        if rest == task or not rest.isdigit():
            return None
        return cls(int(rest))

    @staticmethod
    def sequence(count: int) -> tuple[str, ...]:
        """``pmnist-0 .. pmnist-(count-1)``."""
        if count < 1:
            raise ValueError(f"a permuted-MNIST sequence needs >= 1 task, got {count}")
        return tuple(f"{PermutedTask.PREFIX}{k}" for k in range(count))

    def permutation(self, seed: int, pixels: int = 784) -> np.ndarray:
        return np.random.default_rng([seed, self.index]).permutation(pixels)


ENV_VAR = "METAPLAST_DATA"
DOWNLOAD_TIMEOUT_S = 30.0

# (images, labels) canonical file names per split; both tasks use the same names.
_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

# SHA-256 of the *uncompressed* files, keyed "task/filename" as in SHA256SUMS.uncompressed.
SHA256SUMS: dict[str, str] = {
    "mnist/train-images-idx3-ubyte": (
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"
    ),
    "mnist/train-labels-idx1-ubyte": (
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"
    ),
    "mnist/t10k-images-idx3-ubyte": (
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"
    ),
    "mnist/t10k-labels-idx1-ubyte": (
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"
    ),
    "fashion-mnist/train-images-idx3-ubyte": (
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"
    ),
    "fashion-mnist/train-labels-idx1-ubyte": (
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"
    ),
    "fashion-mnist/t10k-images-idx3-ubyte": (
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"
    ),
    "fashion-mnist/t10k-labels-idx1-ubyte": (
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"
    ),
}

DEFAULT_MIRRORS: dict[str, tuple[str, ...]] = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
    "fashion-mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
}

_IMAGE_MAGIC = 0x00000803
_LABEL_MAGIC = 0x00000801
_UBYTE = 0x08
_NUM_CLASSES = 10
_SIDE = 28
_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20

_log = logging.getLogger(__name__)


class DatasetError(Exception):
    """Every data set problem, so callers (and the CLI) need exactly one ``except`` clause."""


def resolve_data_dir(data_dir: str | os.PathLike[str] | None) -> Path | None:
    """Return the data folder: an explicit argument beats ``METAPLAST_DATA`` so scripts stay
    overridable; ``None`` means "not configured" and lets the caller pick a download cache."""
    if data_dir is not None and os.fspath(data_dir) != "":
        return Path(data_dir).expanduser()
    env = os.environ.get(ENV_VAR, "")
    return Path(env).expanduser() if env else None


def default_cache_dir() -> Path:
    """Download target when no folder is configured; evaluated per call so ``HOME`` can move."""
    return Path.home() / ".cache" / "metaplast" / "datasets"


def read_idx(path: str | os.PathLike[str], *, expected_magic: int | None = None) -> np.ndarray:
    """Parse one unsigned-byte IDX file, raw or gzip-compressed, refusing anything malformed.

    ``expected_magic`` (e.g. ``0x803`` for images) pins the dimensionality; without it any
    unsigned-byte IDX file is accepted. No checksum is checked here: :func:`load` does that.
    """
    path = Path(path)
    return _parse_idx(_decode(path), path, expected_magic).copy()


def load(
    task: str,
    split: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    download: bool = True,
    mirrors: Mapping[str, Sequence[str]] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(images uint8 [N, 28, 28], labels uint8 [N])`` for a verified split.

    Files are looked up in ``DATA_DIR/<task>/`` (``data_dir``, else ``METAPLAST_DATA``, else the
    download cache). Missing files are downloaded when ``download`` is true; ``mirrors`` replaces
    :data:`DEFAULT_MIRRORS` wholesale (a task absent from it has no mirrors), so tests can never
    reach the internet by accident. The arrays are fresh copies the caller may modify.
    """
    if task not in TASKS:
        raise DatasetError(f"unknown task {task!r}; valid tasks: {', '.join(TASKS)}")
    if split not in _FILES:
        raise DatasetError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")

    root = resolve_data_dir(data_dir) or default_cache_dir()
    folder = root / task
    task_mirrors = list(DEFAULT_MIRRORS[task] if mirrors is None else mirrors.get(task, ()))
    image_name, label_name = _FILES[split]

    arrays = []
    for name, magic in ((image_name, _IMAGE_MAGIC), (label_name, _LABEL_MAGIC)):
        path = _find(folder, name) or _fetch(task, split, folder, name, download, task_mirrors)
        key = f"{task}/{name}"
        arrays.append(_load_verified(*_file_identity(path), key, SHA256SUMS[key], magic))
    images, labels = arrays

    if images.shape[0] != labels.shape[0]:
        raise DatasetError(
            f"{folder}: {image_name} holds {images.shape[0]} images but {label_name} holds "
            f"{labels.shape[0]} labels; the pair does not belong together"
        )
    return images.copy(), labels.copy()


def _find(folder: Path, name: str) -> Path | None:
    """Prefer the raw file (no decompression cost) over the ``.gz`` copy."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _file_identity(path: Path) -> tuple[Path, int, int, int]:
    """Cache key parts that change whenever the file is replaced or rewritten."""
    try:
        st = path.stat()
    except OSError as exc:
        raise DatasetError(f"cannot stat {path}: {exc}") from exc
    return path.resolve(), st.st_ino, st.st_size, st.st_mtime_ns


@lru_cache(maxsize=8)
def _load_verified(
    path: Path, inode: int, size: int, mtime_ns: int, key: str, expected_sha: str, magic: int
) -> np.ndarray:
    """Parse and verify one file once per process; the result is read-only, so it is shared
    safely and :func:`load` hands out copies. ``expected_sha`` is part of the key so a patched
    checksum table never hits a stale entry."""
    data = _decode(path)
    arr = _parse_idx(data, path, magic)
    if magic == _IMAGE_MAGIC and arr.shape[1:] != (_SIDE, _SIDE):
        raise DatasetError(
            f"{path}: images are {arr.shape[1]}x{arr.shape[2]}, expected {_SIDE}x{_SIDE}"
        )
    if magic == _LABEL_MAGIC and arr.size and int(arr.max()) >= _NUM_CLASSES:
        raise DatasetError(
            f"{path}: label {int(arr.max())} out of range, expected 0..{_NUM_CLASSES - 1}"
        )
    actual_sha = hashlib.sha256(data).hexdigest()
    if actual_sha != expected_sha:
        raise DatasetError(
            f"{path}: SHA-256 mismatch for {key} (uncompressed): expected {expected_sha}, "
            f"got {actual_sha}; the file is damaged or not the official release "
            f"(delete it to fetch a fresh copy)"
        )
    return arr


def _gunzip(raw: bytes) -> bytes:
    """Decompress, turning the several ways gzip reports damage into one message."""
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise DatasetError(f"corrupt gzip data ({exc})") from exc


def _decode(path: Path) -> bytes:
    """Return the uncompressed content; gzip is recognised by suffix or by its magic bytes
    (an IDX file always starts with two zero bytes, so the two cannot be confused)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc}") from exc
    if path.suffix == ".gz" or raw[:2] == _GZIP_MAGIC:
        try:
            return _gunzip(raw)
        except DatasetError as exc:
            raise DatasetError(f"{path}: {exc}") from exc
    return raw


def _parse_idx(data: bytes, path: Path, expected_magic: int | None) -> np.ndarray:
    """Read-only view of ``data`` after checking header and exact payload length."""
    if len(data) < 4:
        raise DatasetError(f"{path}: {len(data)} bytes is too short for an IDX header")
    magic = int.from_bytes(data[:4], "big")
    if expected_magic is not None and magic != expected_magic:
        raise DatasetError(f"{path}: bad IDX magic 0x{magic:08x}, expected 0x{expected_magic:08x}")
    ndim = magic & 0xFF
    if magic >> 16 != 0 or (magic >> 8) & 0xFF != _UBYTE or ndim == 0:
        raise DatasetError(
            f"{path}: bad IDX magic 0x{magic:08x}, expected 0x000008NN "
            f"(unsigned bytes, NN >= 1 dimensions)"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(
            f"{path}: truncated IDX header: {ndim} dimensions need {header} bytes, "
            f"file holds {len(data)}"
        )
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = math.prod(dims)
    actual = len(data) - header
    if actual < expected:
        raise DatasetError(
            f"{path}: truncated IDX payload: shape {dims} needs {expected} bytes, "
            f"file holds {actual}"
        )
    if actual > expected:
        raise DatasetError(
            f"{path}: {actual - expected} trailing bytes after the IDX payload of shape {dims}"
        )
    return np.frombuffer(data, dtype=np.uint8, count=expected, offset=header).reshape(dims)


def _fetch(
    task: str, split: str, folder: Path, name: str, download: bool, mirrors: list[str]
) -> Path:
    """Download ``name`` from the first mirror that serves a verified copy, or raise the one
    error that tells the user both ways out."""
    last_error = "downloading disabled" if not download else "no mirrors configured"
    if download and mirrors:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            last_error = f"cannot create {folder}: {exc}"
        else:
            for mirror in mirrors:
                url = f"{mirror.rstrip('/')}/{name}.gz"
                try:
                    return _download(url, folder / f"{name}.gz", SHA256SUMS[f"{task}/{name}"])
                except (OSError, ValueError, http.client.HTTPException, DatasetError) as exc:
                    last_error = f"{url}: {exc}"
                    _log.warning("download failed: %s", last_error)

    wanted = " and ".join(f"{task}/{n}[.gz]" for n in _FILES[split])
    sources = ", ".join(mirrors) if mirrors else "a mirror (none configured)"
    raise DatasetError(
        f"{task} {split} data not found: no {name} or {name}.gz in {folder}. "
        f"Pass --data-dir DIR or set {ENV_VAR} to a folder holding {wanted}, "
        f"or allow downloading from {sources} (last error: {last_error})"
    )


def _download(url: str, dest: Path, expected_sha: str) -> Path:
    """Fetch into a temporary file beside ``dest`` and rename only after the checksum passes,
    so concurrent readers never see a partial file and a bad download leaves nothing behind."""
    _log.info("downloading %s", url)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with (
            os.fdopen(fd, "wb") as out,
            urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response,
        ):
            shutil.copyfileobj(response, out, _CHUNK)
        actual_sha = hashlib.sha256(_gunzip(tmp.read_bytes())).hexdigest()
        if actual_sha != expected_sha:
            raise DatasetError(
                f"SHA-256 mismatch for {dest.name} (uncompressed): expected {expected_sha}, "
                f"got {actual_sha}"
            )
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest
