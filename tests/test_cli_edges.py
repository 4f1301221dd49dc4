"""What a new user hits at the edges of the command line: one clear error and exit 2, nothing
overwritten, readable run files, progress that suits a log file."""

import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_session import tiny_args

from metaplast.cli import main
from metaplast.host.progress import progress

ONE_EPOCH = ["--tasks", "mnist", "--epochs", "1", "--pretrain-epochs", "0", "--hidden", "16"]


def test_help_answers_at_once() -> None:
    """The command line imports its work only when a command runs."""
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", "import sys, metaplast.cli; print(sorted(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert time.perf_counter() - t0 < 30  # generous: a loaded CI machine
    loaded = out.stdout
    for heavy in ("'torch'", "'amaranth'", "'serial'", "'numpy'"):
        assert heavy not in loaded, heavy


def test_train_out_that_is_a_file_or_unwritable(
    tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("keep me")
    args = [*tiny_args(data_dir, a_file), *ONE_EPOCH]
    assert main(args) == 2
    assert "error" in capsys.readouterr().err and a_file.read_text() == "keep me"
    assert main(["gateware", "--out", str(a_file / "sub" / "unit.v")]) == 2
    assert "error" in capsys.readouterr().err


def test_a_missing_port_is_one_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["link-faults", "--port", "/dev/metaplast-no-such-port"]) == 2
    assert "no-such-port" in capsys.readouterr().err


def test_threads_must_be_positive() -> None:
    with pytest.raises(SystemExit) as exc:
        main(["train", "--threads", "0", "--out", "never"])
    assert exc.value.code == 2 and not Path("never").exists()


def test_resume_without_a_checkpoint_is_refused(
    tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    args = [*tiny_args(data_dir, out), *ONE_EPOCH]
    assert main(args) == 0
    (out / "checkpoint.pt").unlink()
    metrics = (out / "metrics.json").read_text()
    capsys.readouterr()
    assert main([*args, "--resume"]) == 2
    assert "nothing to resume" in capsys.readouterr().err
    assert (out / "metrics.json").read_text() == metrics


def test_run_files_are_readable_like_the_plots(tmp_path: Path, data_dir: Path) -> None:
    out = tmp_path / "run"
    assert main([*tiny_args(data_dir, out), *ONE_EPOCH]) == 0
    plot = stat.S_IMODE((out / "accuracy.png").stat().st_mode)
    for name in ("config.json", "metrics.json", "checkpoint.pt", "level_changes.npz"):
        assert stat.S_IMODE((out / name).stat().st_mode) == plot, name


def test_a_transfer_is_never_overwritten(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    quick = ["transfer", "--epochs", "5", "--ha-epochs", "2", "--transfers", "20", "--no-progress"]
    assert main([*quick, "--out", str(out)]) == 0
    before = (out / "transfer.json").read_bytes()
    assert main([*quick, "--seed", "3", "--out", str(out)]) == 2
    assert "already holds a transfer" in capsys.readouterr().err
    assert (out / "transfer.json").read_bytes() == before


def test_progress_in_a_file_is_a_few_lines(capsys: pytest.CaptureFixture[str]) -> None:
    """Not a terminal (pytest captures stderr): a line per tenth of the work and one at the
    end, no carriage returns."""
    assert list(progress(range(1000), desc="work", unit="step")) == list(range(1000))
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert "\r" not in err and len(lines) == 10
    assert lines[0].startswith("work: 100/1,000 steps") and lines[-1].startswith("work: 1,000/")
    assert list(progress(range(5), desc="quiet", unit="step", enabled=False)) == list(range(5))
    assert capsys.readouterr().err == ""


def test_a_heartbeat_speaks_only_after_silence(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An epoch's progress in a log: nothing for quick work, a line per ``heartbeat`` seconds
    of slow work (a clock that advances 20 s per item) and one at its end."""
    assert list(progress(range(50), desc="fast", unit="batch", heartbeat=30.0)) == list(range(50))
    assert capsys.readouterr().err == ""
    ticks = iter(range(0, 10_000, 20))
    monkeypatch.setattr("metaplast.host.progress.time.perf_counter", lambda: next(ticks))
    assert len(list(progress(range(6), desc="slow", unit="batch", heartbeat=30.0))) == 6
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "slow: 2/6 batches, 40.0 s",
        "slow: 4/6 batches, 80.0 s",
        "slow: 6/6 batches, 120.0 s",
        "slow: 6/6 batches, 140.0 s",
    ]
