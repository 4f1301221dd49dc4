"""Sweeps: repetitions over seeds, failures reported by name, the summary over seeds, and the
same sweep on a real local Ray cluster (the ``ray`` marker)."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_session import epochs_without_time, tiny_args

from metaplast.cli import main
from metaplast.errors import ConfigError
from metaplast.host.sweep import parse_seeds


def sweep_args(data_dir: Path, out: Path, *extra: str) -> list[str]:
    args = tiny_args(data_dir, out, *extra)
    args[0] = "sweep"
    args.remove("--no-progress")
    args.remove("--seed")
    args.remove("3")
    return args


def runs_of(sweep: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(sweep.glob("*/metrics.json"))}


def test_seeds_parse() -> None:
    assert parse_seeds("0-3") == [0, 1, 2, 3]
    assert parse_seeds("0-2,7") == [0, 1, 2, 7]
    for bad in ("", "3-1", "a", "1,1", "-2"):
        with pytest.raises(ConfigError, match="--seeds"):
            parse_seeds(bad)


def test_a_sweep_over_seeds_and_its_summary(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sweep"
    args = sweep_args(data_dir, out, "--epochs", "1,1", "--jobs", "2", "--threads", "1")
    assert main([*args, "--vary", "mstar=0,3", "--seeds", "0-1"]) == 0
    assert sorted(runs_of(out)) == [f"mstar-{m}_seed-{s}" for m in (0, 3) for s in (0, 1)]
    lines = capsys.readouterr().out
    assert lines.count("sweep: ") == 4  # a line per finished session, as it finishes
    assert "Over the seeds" in (out / "sweep.md").read_text()
    assert (out / "sweep.png").is_file()  # mstar against accuracy, error bars over the seeds
    assert main(["summary", "--over-seeds", str(out), "--plot", str(tmp_path / "s.png")]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("| mstar | seeds | mnist final (%)")
    assert [row.split("|")[2].strip() for row in table[2:4]] == ["0,1", "0,1"]
    assert "±" in table[2]
    assert (tmp_path / "s.png").is_file()
    shutil.copytree(out / "mstar-0_seed-0", tmp_path / "again")  # the same session, elsewhere
    assert main(["summary", "--over-seeds", str(out), str(tmp_path / "again")]) == 0
    rows = capsys.readouterr().out.splitlines()[2:]
    assert [row.split("|")[2].strip() for row in rows] == ["0,1", "0,1"]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--vary", "bogus=1"], "unknown field"),
        (["--vary", "mstar="], "expected FIELD=V1"),
        ([], "at least one --vary"),
        (["--seeds", "0-1", "--vary", "seed=2"], "once"),
        (["--vary", "mstar=3", "--address", "localhost:1"], "--executor ray"),
    ],
)
def test_bad_sweeps_write_nothing(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list, message: str
) -> None:
    out = tmp_path / "sweep"
    assert main([*sweep_args(data_dir, out), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_a_failed_session_is_named_and_the_others_go_on(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sweep"
    args = sweep_args(data_dir, out, "--epochs", "1,1")
    # one point's run directory is taken by another run: that session cannot start
    (out / "mstar-0").mkdir(parents=True)
    (out / "mstar-0" / "config.json").write_text("{not json")
    assert main([*args, "--vary", "mstar=0,3"]) == 1
    err = capsys.readouterr().err
    assert "session mstar-0 failed" in err and "config.json" in err
    assert "mstar-3" in runs_of(out)
    rows = json.loads((out / "sweep.json").read_text())["results"]
    assert "error" in rows[0] and "final_test_acc" in rows[1]
    assert "Failed sessions" in (out / "sweep.md").read_text()


# a real Ray cluster ---------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_cluster() -> str:
    """A Ray head on loopback with two CPUs, for this module's tests; its address."""
    pytest.importorskip("ray", reason="the cluster extra (pip install 'metaplast[cluster]')")
    ray_cli = str(Path(sys.executable).with_name("ray"))
    port = _free_port()
    start = [ray_cli, "start", "--head", "--num-cpus", "2", "--port", str(port)]
    start += ["--node-ip-address", "127.0.0.1", "--include-dashboard", "false"]
    start += ["--disable-usage-stats"]
    # a loopback cluster of the tests' own, without token authentication: Ray would otherwise
    # turn it on whenever ~/.ray/auth_token exists, and refuse the in-process drivers that
    # imported Ray before the sweep could choose the mode (host/sweep_ray.py)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    subprocess.run(start, check=True, capture_output=True, timeout=120, env=env)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([ray_cli, "stop", "--force"], capture_output=True, timeout=120)


def _clock_ticks_now() -> float:
    return float(Path("/proc/uptime").read_text().split()[0]) * os.sysconf("SC_CLK_TCK")


def _ray_worker_running_a_session(since: float) -> int | None:
    """A Ray worker process started after ``since`` (clock ticks since boot) that is running
    a session (Ray titles it ``ray::run_job`` meanwhile)."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            started = int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19])
        except (OSError, ValueError, IndexError):
            continue
        if cmdline.startswith(b"ray::run_job") and started >= since:
            return int(pid)
    return None


@pytest.mark.ray
def test_ray_sweeps_end_like_local_ones_and_survive_a_killed_worker(
    ray_cluster: str, data_dir: Path, tmp_path: Path
) -> None:
    """The same grid on the local executor and on the cluster ends identically, even with a
    worker killed in the middle of a session (Ray retries the task, which resumes from the
    session's checkpoint); a rerun then trains only what is missing."""
    grid = ["--vary", "mstar=0,3", "--threads", "1", "--epochs", "4,2", "--train-limit", "3000"]
    local = tmp_path / "local"
    assert main([*sweep_args(data_dir, local), *grid]) == 0
    on_ray = tmp_path / "ray"
    args = [*sweep_args(data_dir, on_ray), *grid, "--executor", "ray", "--address", ray_cluster]
    since = _clock_ticks_now()
    sweep = subprocess.Popen([sys.executable, "-m", "metaplast.cli", *args], text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    killed = None
    deadline = time.monotonic() + 600
    while killed is None and time.monotonic() < deadline and sweep.poll() is None:
        started = [m for m in runs_of(on_ray).values() if 1 <= len(m["epochs"]) < 6]
        pid = _ray_worker_running_a_session(since)
        if started and pid is not None:
            os.kill(pid, signal.SIGKILL)
            killed = pid
        time.sleep(0.02)
    output, _ = sweep.communicate(timeout=300)
    assert killed is not None, f"no session was caught mid-run: {output}"
    assert sweep.returncode == 0, output
    expected, got = runs_of(local), runs_of(on_ray)
    assert sorted(got) == sorted(expected) == ["mstar-0", "mstar-3"]
    for name, metrics in expected.items():
        assert epochs_without_time(got[name]) == epochs_without_time(metrics), name
        assert got[name]["level_changes"] == metrics["level_changes"]
    # a rerun trains only what is missing: one run directory gone, the other untouched
    kept = on_ray / "mstar-3" / "checkpoint.pt"
    before = kept.stat().st_mtime_ns
    shutil.rmtree(on_ray / "mstar-0")
    assert main(args) == 0
    assert kept.stat().st_mtime_ns == before
    again = runs_of(on_ray)["mstar-0"]
    assert epochs_without_time(again) == epochs_without_time(expected["mstar-0"])


@pytest.mark.ray
def test_ray_reports_a_session_that_fails_on_its_worker(
    ray_cluster: str, data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A worker whose data set is damaged: that session fails by name, the sweep ends."""
    bad = tmp_path / "data"
    shutil.copytree(data_dir, bad)
    labels = bad / "fashion-mnist" / "t10k-labels-idx1-ubyte"
    for path in (labels, labels.with_suffix(".gz")):
        path.unlink(missing_ok=True)
    labels.write_bytes(b"\x00\x00\x08\x01" + b"\x00" * 100)
    out = tmp_path / "sweep"
    args = sweep_args(bad, out, "--epochs", "1,1", "--vary", "mstar=3")
    assert main([*args, "--executor", "ray", "--address", ray_cluster]) == 1
    err = capsys.readouterr().err
    assert "session mstar-3 failed" in err and "t10k-labels" in err


def test_ray_refuses_an_unreachable_cluster(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("ray", reason="the cluster extra (pip install 'metaplast[cluster]')")
    out = tmp_path / "sweep"
    args = [*sweep_args(data_dir, out), "--vary", "mstar=3", "--executor", "ray"]
    t0 = time.monotonic()
    assert main([*args, "--address", f"127.0.0.1:{_free_port()}"]) == 2
    assert "no Ray cluster answers" in capsys.readouterr().err
    assert time.monotonic() - t0 < 30 and not out.exists()


def test_ray_missing_says_which_extra_to_install(data_dir: Path, tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['ray'] = None\n"
        "from metaplast.cli import main\n"
        f"sys.exit(main({sweep_args(data_dir, tmp_path / 'sweep')!r} + "
        "['--vary', 'mstar=3', '--executor', 'ray']))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "pip install 'metaplast[cluster]'" in proc.stderr
    assert not (tmp_path / "sweep").exists()
