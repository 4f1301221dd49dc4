"""Shared fixtures: the real data sets, and a tiny session config."""

from pathlib import Path

import pytest
import torch

from metaplast.host.datasets import ENV_VAR, default_cache_dir, resolve_data_dir

SHARED_DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


def find_datasets() -> Path | None:
    """Where the real MNIST and Fashion-MNIST files are, as the commands look for them
    ($METAPLAST_DATA, then the download cache), and the lab's shared folder beside the
    checkout."""
    for root in (resolve_data_dir(None), default_cache_dir(), SHARED_DATASETS):
        if root is not None and (root / "mnist").is_dir() and (root / "fashion-mnist").is_dir():
            return root
    return None


@pytest.fixture(autouse=True)
def _deterministic_threads() -> None:
    # float sums depend on the thread count; tests compare runs within one process
    torch.set_num_threads(1)


@pytest.fixture
def data_dir() -> Path:
    root = find_datasets()
    if root is None:
        pytest.skip(
            f"the real MNIST and Fashion-MNIST IDX files were not found: set ${ENV_VAR} to a "
            f"folder holding mnist/ and fashion-mnist/, or fetch them once into "
            f"{default_cache_dir()} (any metaplast train without --data-dir downloads them)"
        )
    return root


TINY = {
    "tasks": ("mnist", "fashion-mnist"),
    "epochs": (2, 1),
    "pretrain_epochs": 1,
    "hidden": (32,),
    "train_limit": 1000,
    "batch_size": 50,
}
