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


def test_declare_gives_profiles_schema_and_the_parameters_cell():
    from advbook.params import SAME, Choice, Number, Param, declare

    d = declare(dataset=Param("mnist5k", doc="the data", full="cifar10"),
                n_eval=Param(300, Number(int, 10, 10**5), "test images attacked", full=2000, tiny=40),
                mode=Param("a", Choice(("a", "b")), "a switch"))
    assert d.profiles["quick"] == {"dataset": "mnist5k", "n_eval": 300, "mode": "a"}
    assert d.profiles["long"] == d.profiles["quick"] and d.profiles["tiny"]["n_eval"] == 40
    assert d.profiles["full"] == {"dataset": "cifar10", "n_eval": 2000, "mode": "a"}
    assert set(d.schema) == {"n_eval", "mode"}  # dataset keeps COMMON's spec
    assert repr(SAME) == "SAME" and Param(1, Number(int, 0, 9)).value("full") == 1
    cell = d.cell().splitlines()
    assert cell[:2] == ['profile = "auto"  # auto | quick | long | full | tiny', 'device = "auto"  # auto | cpu | cuda']
    assert cell[2].startswith('precision = "fp32"  # ') and "attacks always run in fp32" in cell[2]
    assert cell[3].startswith("seed = 0  # ") and "data split is the same for every seed" in cell[3]
    assert cell[4:] == ["dataset = None  # the data", "n_eval = None  # test images attacked",
                        "mode = None  # a switch"]
    cfg = params.resolve({"profile": "full", "mode": "b"}, d.profiles, d.schema)
    assert cfg.n_eval == 2000 and cfg.mode == "b" and cfg.dataset == "cifar10"
    with pytest.raises(TypeError, match="needs `allowed`"):
        declare(steps=Param(3))
    with pytest.raises(TypeError, match="every chapter's parameters cell"):
        declare(seed=Param(0, Number(int, 0, 9)))
    with pytest.raises(TypeError, match="must be declared as a Param"):
        declare(steps=3)


def test_every_notebooks_parameters_cell_is_its_declaration():
    """Adding a parameter is one line in the methods module's ``declare(...)``; ``make strip`` writes the cell."""
    import json

    from advbook import methods, paths
    from advbook.book import notebooks_strip

    from conftest import ROOT

    for chapter in paths.Book(ROOT).available():
        module = methods.for_chapter(chapter)
        assert module.PROFILES == module.PARAMETERS.profiles and module.SCHEMA == module.PARAMETERS.schema, chapter
        nb = json.loads((ROOT / "notebooks" / f"{chapter}.ipynb").read_text())
        cell = next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))
        assert "".join(cell["source"]) == notebooks_strip.declared_cell(chapter), (
            f"{chapter}: the parameters cell differs from {module.__name__}.PARAMETERS; run `make strip`")
