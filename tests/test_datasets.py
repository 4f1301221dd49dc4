"""Tests for metaplast.host.datasets: real files, corrupt inputs and a local download mirror."""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import struct
import threading
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from metaplast.host import datasets
from metaplast.host.datasets import DatasetError, load, read_idx, resolve_data_dir

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
ORIGINAL_MIRRORS = dict(datasets.DEFAULT_MIRRORS)

needs_shared = pytest.mark.skipif(
    not all((SHARED / task).is_dir() for task in datasets.TASKS),
    reason=f"real MNIST/Fashion-MNIST files not found in {SHARED}",
)

IMG = 0x00000803
LBL = 0x00000801
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test may see the user's settings, write to the real home or reach the internet."""
    monkeypatch.delenv(datasets.ENV_VAR, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "*")
    monkeypatch.setattr(datasets, "DEFAULT_MIRRORS", {task: () for task in datasets.TASKS})


# ---------------------------------------------------------------- synthetic IDX helpers


def idx_bytes(magic: int, dims: tuple[int, ...], payload: bytes) -> bytes:
    return struct.pack(f">I{len(dims)}I", magic, *dims) + payload


def images_payload(n: int) -> bytes:
    return np.random.default_rng(0).integers(0, 256, size=(n, 28, 28), dtype=np.uint8).tobytes()


def labels_payload(n: int) -> bytes:
    return bytes(i % 10 for i in range(n))


def write(path: Path, content: bytes, *, gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        content = gzip.compress(content, mtime=0)
    path.write_bytes(content)
    return path


def write_test_split(
    root: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    images: bytes | None = None,
    labels: bytes | None = None,
) -> tuple[Path, Path]:
    """Write a small synthetic mnist test split and make the hash table accept it as written."""
    images = idx_bytes(IMG, (3, 28, 28), images_payload(3)) if images is None else images
    labels = idx_bytes(LBL, (3,), labels_payload(3)) if labels is None else labels
    img = write(root / "mnist" / TEST_IMAGES, images)
    lbl = write(root / "mnist" / TEST_LABELS, labels)
    for name, content in ((TEST_IMAGES, images), (TEST_LABELS, labels)):
        sha = hashlib.sha256(content).hexdigest()
        monkeypatch.setitem(datasets.SHA256SUMS, f"mnist/{name}", sha)
    return img, lbl


# ---------------------------------------------------------------- real data


@needs_shared
@pytest.mark.parametrize(
    ("task", "split", "count", "first_labels"),
    [
        ("mnist", "train", 60000, [5, 0, 4]),
        ("mnist", "test", 10000, [7, 2, 1]),
        ("fashion-mnist", "train", 60000, [9, 0, 0]),
        ("fashion-mnist", "test", 10000, [9, 2, 1]),
    ],
)
def test_real_data_loads(task: str, split: str, count: int, first_labels: list[int]) -> None:
    images, labels = load(task, split, SHARED, download=False)
    assert images.shape == (count, 28, 28)
    assert labels.shape == (count,)
    assert images.dtype == np.uint8
    assert labels.dtype == np.uint8
    assert labels[:3].tolist() == first_labels
    assert set(np.unique(labels).tolist()) == set(range(10))
    assert images.max() == 255
    assert images.min() == 0


@needs_shared
def test_returned_arrays_are_private_copies() -> None:
    images, labels = load("mnist", "test", SHARED, download=False)
    images[:] = 0
    labels[:] = 0
    images2, labels2 = load("mnist", "test", SHARED, download=False)
    assert images2.any()
    assert labels2[0] == 7


@needs_shared
def test_env_var_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(datasets.ENV_VAR, str(SHARED))
    _, labels = load("mnist", "test", download=False)
    assert labels.shape == (10000,)


def test_resolve_data_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert resolve_data_dir(None) is None
    monkeypatch.setenv(datasets.ENV_VAR, "")
    assert resolve_data_dir(None) is None
    monkeypatch.setenv(datasets.ENV_VAR, str(tmp_path / "env"))
    assert resolve_data_dir(None) == tmp_path / "env"
    assert resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_data_dir(str(tmp_path / "arg")) == tmp_path / "arg"


@needs_shared
def test_raw_uncompressed_files_are_accepted(tmp_path: Path) -> None:
    for name in (TEST_IMAGES, TEST_LABELS):
        raw = gzip.decompress((SHARED / "mnist" / f"{name}.gz").read_bytes())
        write(tmp_path / "mnist" / name, raw)
    images, labels = load("mnist", "test", tmp_path, download=False)
    ref_images, ref_labels = load("mnist", "test", SHARED, download=False)
    np.testing.assert_array_equal(images, ref_images)
    np.testing.assert_array_equal(labels, ref_labels)


@needs_shared
def test_read_idx_parses_one_real_file() -> None:
    labels = read_idx(SHARED / "fashion-mnist" / "train-labels-idx1-ubyte.gz")
    assert labels.shape == (60000,)
    assert labels.flags.writeable


def test_unknown_task_and_split_list_valid_names(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="unknown task 'cifar10'.*mnist, fashion-mnist"):
        load("cifar10", "train", tmp_path)
    with pytest.raises(DatasetError, match="unknown split 'val'.*train, test"):
        load("mnist", "val", tmp_path)


def test_default_mirrors_are_the_documented_ones() -> None:
    assert ORIGINAL_MIRRORS["mnist"] == (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    )
    assert ORIGINAL_MIRRORS["fashion-mnist"] == (
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    )


# ---------------------------------------------------------------- corrupt inputs


def test_synthetic_split_loads_when_trusted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_test_split(tmp_path, monkeypatch)
    images, labels = load("mnist", "test", tmp_path, download=False)
    assert images.shape == (3, 28, 28)
    assert labels.tolist() == [0, 1, 2]


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize(
    ("content", "message"),
    [
        (idx_bytes(IMG, (3, 28, 28), images_payload(3)[:-1]), "truncated IDX payload"),
        (idx_bytes(IMG, (3, 28, 28), images_payload(3) + b"\0\0"), "2 trailing bytes"),
        (idx_bytes(0x00000804, (3, 28, 28, 1), images_payload(3)), "bad IDX magic 0x00000804"),
        (idx_bytes(LBL, (3,), labels_payload(3)), "bad IDX magic 0x00000801"),
        (idx_bytes(IMG, (3, 28, 27), bytes(3 * 28 * 27)), "27, expected 28x28"),
        (struct.pack(">I", IMG) + b"\0\0\0\3", "truncated IDX header"),
        (b"\0\0", "too short"),
    ],
    ids=["truncated", "trailing", "magic", "labels-as-images", "shape", "header", "empty"],
)
def test_corrupt_images_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: bytes, message: str, gz: bool
) -> None:
    img, _ = write_test_split(tmp_path, monkeypatch)
    img.unlink()
    bad = write(img, content, gz=gz)
    with pytest.raises(DatasetError, match=message) as info:
        load("mnist", "test", tmp_path, download=False)
    assert str(bad) in str(info.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (idx_bytes(LBL, (3,), b"\1\2"), "truncated IDX payload"),
        (idx_bytes(LBL, (3,), b"\1\2\3\4"), "1 trailing bytes"),
        (idx_bytes(LBL, (3,), b"\1\12\3"), "label 10 out of range"),
        (idx_bytes(0x00000901, (3,), b"\1\2\3"), "bad IDX magic 0x00000901"),
    ],
    ids=["truncated", "trailing", "range", "dtype"],
)
def test_corrupt_labels_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: bytes, message: str
) -> None:
    _, lbl = write_test_split(tmp_path, monkeypatch, labels=content)
    with pytest.raises(DatasetError, match=message) as info:
        load("mnist", "test", tmp_path, download=False)
    assert str(lbl) in str(info.value)


@pytest.mark.parametrize(
    "damage",
    [
        lambda gz: gz[: len(gz) // 2],
        lambda gz: gz[:-4] + bytes(b ^ 0xFF for b in gz[-4:]),
        lambda gz: gz[:10] + b"\xff" * 20 + gz[30:],
        lambda gz: b"\x1f\x8b" + b"not gzip at all",
    ],
    ids=["cut-short", "bad-trailer", "bad-deflate", "bad-header"],
)
def test_corrupt_gzip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage) -> None:
    img, _ = write_test_split(tmp_path, monkeypatch)
    good = gzip.compress(img.read_bytes(), mtime=0)
    img.unlink()
    bad = img.with_name(img.name + ".gz")
    bad.write_bytes(damage(good))
    with pytest.raises(DatasetError, match="corrupt gzip data") as info:
        load("mnist", "test", tmp_path, download=False)
    assert str(bad) in str(info.value)
    with pytest.raises(DatasetError, match="corrupt gzip data"):
        read_idx(bad)


def test_read_idx_rejects_the_same_damage(tmp_path: Path) -> None:
    path = write(tmp_path / "x-idx1-ubyte", idx_bytes(LBL, (4,), b"\1\2\3"))
    with pytest.raises(DatasetError, match="truncated IDX payload"):
        read_idx(path)
    path = write(tmp_path / "y-idx1-ubyte", idx_bytes(0x0C000801, (3,), b"\1\2\3"))
    with pytest.raises(DatasetError, match="bad IDX magic 0x0c000801"):
        read_idx(path)
    path = write(tmp_path / "z-idx2-ubyte", idx_bytes(0x00000802, (2, 3), bytes(6)), gz=True)
    assert read_idx(path).shape == (2, 3)
    with pytest.raises(DatasetError, match="expected 0x00000803"):
        read_idx(path, expected_magic=IMG)


def test_image_label_count_mismatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_test_split(tmp_path, monkeypatch, labels=idx_bytes(LBL, (2,), b"\1\2"))
    with pytest.raises(DatasetError, match="3 images but .* 2 labels") as info:
        load("mnist", "test", tmp_path, download=False)
    assert TEST_IMAGES in str(info.value)
    assert TEST_LABELS in str(info.value)


def test_checksum_mismatch_with_structure_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    img, _ = write_test_split(tmp_path, monkeypatch)
    original = img.read_bytes()
    tampered = bytearray(original)
    tampered[-1] ^= 0x01
    img.write_bytes(bytes(tampered))
    expected = hashlib.sha256(original).hexdigest()
    actual = hashlib.sha256(bytes(tampered)).hexdigest()
    with pytest.raises(DatasetError, match="SHA-256 mismatch") as info:
        load("mnist", "test", tmp_path, download=False)
    message = str(info.value)
    assert str(img) in message
    assert expected in message
    assert actual in message


@needs_shared
def test_checksum_mismatch_on_a_relabelled_real_file(tmp_path: Path) -> None:
    (tmp_path / "mnist").mkdir()
    shutil.copy(SHARED / "mnist" / f"{TEST_IMAGES}.gz", tmp_path / "mnist")
    labels = bytearray(gzip.decompress((SHARED / "mnist" / f"{TEST_LABELS}.gz").read_bytes()))
    labels[8] = 3 if labels[8] != 3 else 4  # first label byte, still a valid class
    write(tmp_path / "mnist" / TEST_LABELS, bytes(labels))
    with pytest.raises(DatasetError, match=f"SHA-256 mismatch for mnist/{TEST_LABELS}"):
        load("mnist", "test", tmp_path, download=False)


def test_replaced_file_is_not_served_from_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, lbl = write_test_split(tmp_path, monkeypatch)
    assert load("mnist", "test", tmp_path, download=False)[1].tolist() == [0, 1, 2]
    replacement = tmp_path / "new-labels"
    replacement.write_bytes(idx_bytes(LBL, (3,), b"\1\1\1"))
    os.replace(replacement, lbl)
    with pytest.raises(DatasetError, match="SHA-256 mismatch"):
        load("mnist", "test", tmp_path, download=False)


# ---------------------------------------------------------------- downloads


@dataclass
class Mirror:
    root: Path
    url: str
    requests: list[str] = field(default_factory=list)


@pytest.fixture
def mirror(request: pytest.FixtureRequest, tmp_path: Path) -> Mirror:
    """A plain HTTP server on 127.0.0.1 serving ``tmp_path/www``; ``mnist/`` holds real files."""
    www = tmp_path / "www"
    www.mkdir()
    if SHARED.is_dir():
        (www / "mnist").symlink_to(SHARED / "mnist", target_is_directory=True)
    requests: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, directory=str(www), **kwargs)

        def do_GET(self) -> None:
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()

    def stop() -> None:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)

    request.addfinalizer(stop)
    return Mirror(www, f"http://127.0.0.1:{httpd.server_address[1]}", requests)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@needs_shared
def test_download_good_files(tmp_path: Path, mirror: Mirror) -> None:
    data = tmp_path / "data"
    images, labels = load("mnist", "test", data, mirrors={"mnist": [f"{mirror.url}/mnist/"]})
    assert images.shape == (10000, 28, 28)
    assert labels[:3].tolist() == [7, 2, 1]
    assert leftovers(data / "mnist") == [f"{TEST_IMAGES}.gz", f"{TEST_LABELS}.gz"]
    for name in (TEST_IMAGES, TEST_LABELS):
        assert (data / "mnist" / f"{name}.gz").read_bytes() == (
            SHARED / "mnist" / f"{name}.gz"
        ).read_bytes()
    # Present now: a second load is offline.
    mirror.requests.clear()
    load("mnist", "test", data, download=False)
    assert mirror.requests == []


@needs_shared
def test_download_fetches_only_missing_file(tmp_path: Path, mirror: Mirror) -> None:
    data = tmp_path / "data"
    (data / "mnist").mkdir(parents=True)
    shutil.copy(SHARED / "mnist" / f"{TEST_IMAGES}.gz", data / "mnist")
    load("mnist", "test", data, mirrors={"mnist": [f"{mirror.url}/mnist"]})
    assert mirror.requests == [f"/mnist/{TEST_LABELS}.gz"]


@pytest.mark.parametrize(
    "served",
    [
        gzip.compress(idx_bytes(IMG, (1, 28, 28), bytes(784)), mtime=0),
        b"<html>not found</html>",
        b"",
    ],
    ids=["wrong-content", "not-gzip", "empty"],
)
def test_download_corrupt_file_is_rejected_and_removed(
    tmp_path: Path, mirror: Mirror, served: bytes
) -> None:
    (mirror.root / "bad").mkdir()
    for name in (TEST_IMAGES, TEST_LABELS):
        (mirror.root / "bad" / f"{name}.gz").write_bytes(served)
    data = tmp_path / "data"
    with pytest.raises(DatasetError, match="--data-dir DIR or set METAPLAST_DATA") as info:
        load("mnist", "test", data, mirrors={"mnist": [f"{mirror.url}/bad/"]})
    assert "SHA-256 mismatch" in str(info.value) or "corrupt gzip" in str(info.value)
    assert leftovers(data / "mnist") == []


@needs_shared
def test_download_falls_back_to_second_mirror(tmp_path: Path, mirror: Mirror) -> None:
    data = tmp_path / "data"
    mirrors = {"mnist": [f"{mirror.url}/nowhere/", f"{mirror.url}/mnist/"]}
    _, labels = load("mnist", "test", data, mirrors=mirrors)
    assert labels.shape == (10000,)
    assert f"/nowhere/{TEST_IMAGES}.gz" in mirror.requests
    assert f"/mnist/{TEST_IMAGES}.gz" in mirror.requests
    assert leftovers(data / "mnist") == [f"{TEST_IMAGES}.gz", f"{TEST_LABELS}.gz"]


def test_missing_everywhere_names_both_ways(tmp_path: Path, mirror: Mirror) -> None:
    data = tmp_path / "data"
    urls = [f"{mirror.url}/nowhere/", f"{mirror.url}/gone/"]
    with pytest.raises(DatasetError) as info:
        load("fashion-mnist", "train", data, mirrors={"fashion-mnist": urls})
    message = str(info.value)
    assert "--data-dir DIR" in message
    assert "METAPLAST_DATA" in message
    assert "fashion-mnist/train-images-idx3-ubyte" in message
    assert "fashion-mnist/train-labels-idx1-ubyte" in message
    for url in urls:
        assert url in message
    assert "last error" in message
    assert "404" in message
    assert leftovers(data / "fashion-mnist") == []


def test_download_disabled_makes_no_request(tmp_path: Path, mirror: Mirror) -> None:
    with pytest.raises(DatasetError, match="downloading disabled") as info:
        load("mnist", "test", tmp_path, download=False, mirrors={"mnist": [mirror.url]})
    assert "--data-dir DIR" in str(info.value)
    assert mirror.url in str(info.value)
    assert mirror.requests == []


def test_no_mirrors_configured_still_explains(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="METAPLAST_DATA.*none configured"):
        load("mnist", "train", tmp_path)


@needs_shared
def test_without_data_dir_downloads_into_home_cache(tmp_path: Path, mirror: Mirror) -> None:
    load("mnist", "test", mirrors={"mnist": [f"{mirror.url}/mnist/"]})
    cache = tmp_path / "home" / ".cache" / "metaplast" / "datasets" / "mnist"
    assert leftovers(cache) == [f"{TEST_IMAGES}.gz", f"{TEST_LABELS}.gz"]
