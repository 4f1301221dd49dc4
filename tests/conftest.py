"""Shared fixtures: the real data sets beside the checkout, and a tiny session config."""

from pathlib import Path

import pytest
import torch

SHARED_DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


@pytest.fixture(autouse=True)
def _deterministic_threads() -> None:
    # float sums depend on the thread count; tests compare runs within one process
    torch.set_num_threads(1)


@pytest.fixture
def data_dir() -> Path:
    if not (SHARED_DATASETS / "mnist").is_dir():
        pytest.skip(f"real data sets not found at {SHARED_DATASETS}")
    return SHARED_DATASETS


TINY = {
    "tasks": ("mnist", "fashion-mnist"),
    "epochs": (2, 1),
    "pretrain_epochs": 1,
    "hidden": (32,),
    "train_limit": 1000,
    "batch_size": 50,
}
