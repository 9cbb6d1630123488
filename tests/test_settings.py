"""Settings are checked once, before anything is written: types, ranges, the image size for the depth."""

import json
from dataclasses import asdict

import pytest

from crl_napari.settings import (
    MAX_SIZE,
    SETTING_HELP,
    TrainConfig,
    TrainingError,
    check_size,
    default_threads,
)


@pytest.mark.parametrize("bad, message", [
    ({"epochs": 2.5}, "epochs must be an integer, got 2.5"),
    ({"epochs": "10"}, "epochs must be an integer, got '10'"),
    ({"batch_size": True}, "batch_size must be an integer, got True"),
    ({"amp": 1}, "amp must be true or false, got 1"),
    ({"lr": float("nan")}, "lr must be a finite number, got nan"),
    ({"T": float("inf")}, "T must be a finite number"),
    ({"strategy": 3}, "strategy must be a string, got 3"),
    ({"epochs": 0}, "epochs must be >= 1, got 0"),
    ({"batch_size": 1}, "batch_size must be >= 2, got 1"),
    ({"lr": 0.0}, "lr must be > 0, got 0.0"),
    ({"T": -1.0}, "T must be > 0"),
    ({"width": 257}, "width must be in [1, 256], got 257"),
    ({"width": 0}, "width must be in [1, 256], got 0"),
    ({"depth": 7}, "depth must be in [1, 6], got 7"),
    ({"rotation": 181.0}, "rotation must be in [0, 180]"),
    ({"alpha": 1.5}, "alpha must be in [0, 1]"),
    ({"ramp": -0.1}, "ramp must be in [0, 1]"),
    ({"momentum": 2.0}, "momentum must be in [0, 1]"),
    ({"keep_ratio": 0.0}, "keep_ratio must be in (0, 1]"),
    ({"keep_ratio": 0.8, "drop_uncertain": 0.5}, "must not exceed 1"),
    ({"k": -1}, "k must be in [0, epochs = 100], got -1"),
    ({"k": 5, "epochs": 3, "strategy": "ss"}, "k must be in [0, epochs = 3], got 5"),
    ({"k": 10, "epochs": 10}, "crl would never reach stage 2: that is ss"),
    ({"threads": 0}, "threads must be in [1, 1024] or None"),
    ({"device": "tpu"}, "device must be auto, cpu, cuda, cuda:N or mps, got 'tpu'"),
    ({"seed": -1}, "seed must be in [0, 2147483647]"),
])
def test_every_bad_setting_is_named_in_one_line(bad, message):
    with pytest.raises(TrainingError) as info:
        TrainConfig(**bad)
    text = str(info.value)
    assert text.startswith("invalid training configuration: ") and message in text and "\n" not in text


def test_every_problem_is_named_at_once():
    with pytest.raises(TrainingError) as info:
        TrainConfig(width=10**6, depth=9, strategy="magic")
    assert all(name in str(info.value) for name in ("width", "depth", "strategy"))


def test_good_settings_pass_and_numpy_scalars_become_plain_values():
    np = pytest.importorskip("numpy")
    cfg = TrainConfig(strategy="crl", epochs=np.int64(10), k=np.int64(9), lr=np.float32(0.5), threads=2,
                      device="cuda:1")
    assert type(cfg.epochs) is int and type(cfg.k) is int and type(cfg.lr) is float
    json.dumps(asdict(cfg))  # a config.json can hold it
    assert TrainConfig(strategy="ss", k=10, epochs=10).stage2_epoch is None  # k is crl's; ss ignores it


def test_config_json_of_the_previous_release_loads():
    """config.json files written before `threads` existed have no such key: the default fills it."""
    old = asdict(TrainConfig(epochs=3))
    del old["threads"]
    cfg = TrainConfig.from_dict(old)
    assert cfg.threads is None and cfg.n_threads == default_threads()
    with pytest.raises(TrainingError, match="unknown training settings"):
        TrainConfig.from_dict({**old, "brand_new": 1})
    with pytest.raises(TrainingError, match="must be a mapping"):
        TrainConfig.from_dict([1, 2])


def test_default_threads_do_not_oversubscribe():
    assert 1 <= default_threads() <= 4
    assert TrainConfig(threads=3).n_threads == 3


def test_check_size_refuses_sizes_the_unet_cannot_take():
    cfg = TrainConfig(depth=4)
    check_size(cfg, 256)
    check_size(cfg, 16)
    with pytest.raises(TrainingError, match=r"image size 100 is not a multiple of 2\*\*depth = 16 \(depth 4\): "
                                            r"use e.g. 96 or 112"):
        check_size(cfg, 100)
    with pytest.raises(TrainingError, match=r"image size 8 is out of range for depth 4"):
        check_size(cfg, 8)
    with pytest.raises(TrainingError, match="out of range"):
        check_size(cfg, MAX_SIZE + 16)
    with pytest.raises(TrainingError, match="must be an integer"):
        check_size(cfg, 256.0)
    check_size(TrainConfig(depth=2), 100)  # 100 = 25 * 4


def test_every_setting_has_help():
    assert set(SETTING_HELP) == set(asdict(TrainConfig()))
