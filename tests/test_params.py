import pytest

from advbook import params
from advbook.params import ParameterError

PROFILES = {"quick": {"dataset": "mnist5k", "epochs": 3, "eps": 0.3, "grid": [0.1]},
            "full": {"dataset": "cifar10", "epochs": 30, "eps": 8 / 255, "grid": [0.1]},
            "tiny": {"dataset": "mnist5k", "epochs": 1, "eps": 0.3, "grid": [0.1]}}
SCHEMA = {"grid": params.ListOf(params.Number(float, 0, 1))}


def test_profile_defaults_fill_none():
    cfg = params.resolve({"profile": "quick", "epochs": None, "seed": 3}, PROFILES, SCHEMA)
    assert cfg.epochs == 3 and cfg.seed == 3 and cfg.dataset == "mnist5k" and cfg.profile == "quick"


def test_auto_profile_is_quick_without_cuda(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert params.resolve({"profile": "auto"}, PROFILES, SCHEMA).profile == "quick"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert params.resolve({"profile": "auto"}, PROFILES, SCHEMA).profile == "full"


@pytest.mark.parametrize("given, fragment", [
    ({"epochs": -3}, "'epochs'"),
    ({"epochs": 2.5}, "integer"),
    ({"dataset": "imagenet"}, "allowed values: 'mnist5k'"),
    ({"profile": "huge"}, "'quick'"),
    ({"device": "tpu"}, "'cuda'"),
    ({"eps": 3.0}, "out of range"),
    ({"eps": float("nan")}, "'eps'"),
    ({"grid": [0.1, 2.0]}, "grid[1]"),
    ({"grid": []}, "non-empty list"),
    ({"nonsense": 1}, "unknown parameter"),
])
def test_bad_values_name_the_parameter_and_what_is_allowed(given, fragment):
    with pytest.raises(ParameterError) as err:
        params.resolve({"profile": "quick", **given}, PROFILES, SCHEMA)
    assert fragment in str(err.value)


def test_missing_profile_in_chapter():
    with pytest.raises(ParameterError, match="not defined for this chapter"):
        params.resolve({"profile": "full"}, {"quick": {}}, {})


def test_describe_lists_every_parameter():
    described = params.describe(SCHEMA)
    assert set(described) >= {"profile", "device", "seed", "dataset", "epochs", "eps", "grid"}
