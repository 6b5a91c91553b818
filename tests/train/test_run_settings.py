"""TrainConfig and DetectConfig share one JSON round trip (pyg_vig.train.config.RunSettings)."""

import json

import pytest

from pyg_vig.train.config import ConfigError, TrainConfig


def _classes():
    out = [(TrainConfig, "setting", "no config.json in run folder")]
    try:
        from pyg_vig.detection.engine import DetectConfig
    except ImportError:  # the detection extra (torchvision) is missing
        return out
    return out + [(DetectConfig, "detection setting", "not a `pyg-vig detect train` run folder")]


@pytest.mark.parametrize("cls,kind,missing", _classes())
def test_round_trip_and_clear_errors(cls, kind, missing, tmp_path):
    cfg = cls()
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg.to_dict()))
    assert cls.load(path) == cfg
    with pytest.raises(ConfigError, match=missing):
        cls.load(tmp_path / "elsewhere" / "config.json")
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="unreadable run config"):
        cls.load(path)
    with pytest.raises(ConfigError, match=rf"x\.json: unknown {kind}\(s\) \['bogus'\]"):
        cls.from_dict(dict(cfg.to_dict(), bogus=1), "x.json")
