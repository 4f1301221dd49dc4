"""A session's configuration from its parts, its flat stored form, and errors that name fields."""

from __future__ import annotations

from pathlib import Path

import pytest

from metaplast.cli import main
from metaplast.cli.options import flag
from metaplast.contract import Contract
from metaplast.errors import ConfigError
from metaplast.host.config import DeviceSpec, SessionConfig

# the keys of config.json in the order every stored run has them: the flat form is a contract
STORED_KEYS = (
    "tasks epochs pretrain_epochs mstar hidden seed arithmetic lr batch_size activation "
    "init_std init_mean bn bn_stats inputs test_batch_size permutation_seed levels "
    "hidden_width guard_bits lut_entries meta_bits rounding train_limit crossbar "
    "hardware_aware device_file stuck_hrs stuck_lrs endurance read_noise periphery"
).split()


def test_a_config_holds_a_contract_and_a_device_spec() -> None:
    cfg = SessionConfig.of(hidden_width=24, rounding="nearest", crossbar="tio2-passive",
                           stuck_hrs=0.01, hidden=(32,))  # fmt: skip
    assert cfg.contract == Contract(hidden_width=24, rounding="nearest")
    assert cfg.device == DeviceSpec(crossbar="tio2-passive", stuck_hrs=0.01)
    assert cfg.device_model is not None and cfg.device_model.stuck.hrs_rate == 0.01
    assert SessionConfig(hidden=(32,), contract=cfg.contract, device=cfg.device) == cfg
    assert SessionConfig.of().device_model is None


def test_the_flat_form_keeps_every_stored_run_resuming() -> None:
    cfg = SessionConfig.of(levels=(-1.0, 0.0, 1.0), crossbar="tio2-passive", endurance=9)
    flat = cfg.to_dict()
    assert list(flat) == STORED_KEYS == list(SessionConfig.flat_keys())
    assert flat["levels"] == [-1.0, 0.0, 1.0] and flat["endurance"] == 9
    assert SessionConfig.from_dict(flat) == cfg
    # a run stored before the periphery existed had ideal converters
    assert SessionConfig.from_dict({k: v for k, v in flat.items() if k != "periphery"}) == cfg
    # a run stored before bn_stats existed tested with running statistics
    del flat["bn_stats"]
    assert SessionConfig.from_dict(flat).bn_stats == "running"


def test_errors_name_fields_and_the_command_line_names_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ConfigError, match="`pretrain_epochs` must be in 0..2") as err:
        SessionConfig.of(epochs=(1, 1), pretrain_epochs=5)
    assert err.value.naming(flag).startswith("--pretrain-epochs must be in 0..2")
    with pytest.raises(ConfigError, match="unknown configuration key"):
        SessionConfig.from_dict({"lr": 0.1, "nonsense": 1})
    with pytest.raises(ConfigError, match="`stuck_hrs` plus `stuck_lrs` must not exceed 1"):
        SessionConfig.of(crossbar="tio2-passive", stuck_hrs=0.6, stuck_lrs=0.6)
    with pytest.raises(ConfigError, match="`device_file`, `endurance`: the ideal crossbar"):
        DeviceSpec(device_file="x.json", endurance=3)
    with pytest.raises(ConfigError, match="`levels`"):
        SessionConfig.of(levels=(1.0,))
    out = tmp_path / "run"
    assert main(["train", "--epochs", "1,1", "--pretrain-epochs", "5", "--out", str(out)]) == 2
    err_text = capsys.readouterr().err
    assert "error: --pretrain-epochs must be in 0..2, got 5" in err_text and not out.exists()
    # a field whose flag is not its name: the command's own option is named
    assert main(["transfer", "--dataset", "moons", "--from", "x", "--out", str(out)]) == 2
    assert "--from RUN takes a session run" in capsys.readouterr().err
