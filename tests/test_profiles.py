"""The table of profiles (advbook.profiles): one entry says everything a profile means for the whole book."""

import pytest

from advbook import evaluation, params, profiles, results
from advbook.book import chapter
from advbook.methods import dominant, invariance, logits, primer, self_gradient


def test_every_profile_defines_every_part_of_its_meaning():
    assert profiles.NAMES == ("auto", "tiny", "quick", "long", "full")
    for p in profiles.PROFILES.values():
        assert p.cell_timeout > 0 and p.purpose
        assert set(p.autoattack["components"]) <= set(evaluation.AUTOATTACK_COMPONENTS), p.name
        assert p.autoattack["n_iter"] >= 1 and p.recipes, p.name
        for dataset, recipe in p.recipes.items():
            assert dataset in params.DATASETS, (p.name, dataset)
            assert {"arch", "std_epochs", "at_epochs", "eps", "steps", "warmup"} <= set(recipe), (p.name, dataset)
    assert profiles.PROFILES["full"].autoattack == profiles.STANDARD_AUTOATTACK_BUDGET
    assert [p.name for p in profiles.PROFILES.values() if p.side] == ["long"]


def test_a_chapter_profile_never_falls_back_to_another_profiles_recipe():
    """Each chapter that trains reference models asks for a dataset its profile has a recipe for, in every
    profile it defines (and in the full-path test's tiny + CIFAR-shaped data)."""
    for module in (primer, logits, invariance, dominant):
        assert hasattr(module, "RECIPE_OVERRIDES"), module.__name__
        for name, defaults in module.PROFILES.items():
            dataset = defaults.get("dataset") or "mnist5k"
            assert dataset in profiles.PROFILES[name].recipes, (module.__name__, name, dataset)
        assert module.FULL_PATH_TEST.get("dataset", "cifar10") in profiles.PROFILES["tiny"].recipes


def test_recipe_refuses_a_dataset_the_profile_has_no_recipe_for_and_applies_overrides():
    quick = profiles.get("quick")
    with pytest.raises(params.ParameterError, match=r"'quick' has no reference recipe for dataset 'fashion'.*"
                                                    r"mnist5k.*train on 'fashion': full"):
        quick.recipe("fashion")
    base = quick.recipe("mnist5k")
    changed = quick.recipe("mnist5k", epochs=3, eps=0.2)
    assert changed["std_epochs"] == changed["at_epochs"] == 3 and changed["eps"] == 0.2
    assert quick.recipe("mnist5k") == base and base["at_epochs"] != 3  # a copy: the table is not changed
    budget = quick.autoattack_budget()
    budget["components"].append("fab-t")
    assert "fab-t" not in profiles.PROFILES["quick"].autoattack["components"]


def test_auto_is_resolved_once_and_unknown_names_are_refused(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert profiles.resolve("auto") == "quick" and profiles.get("auto").name == "quick"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert profiles.resolve("auto") == "full" and profiles.resolve("long") == "long"
    with pytest.raises(params.ParameterError, match="profile 'fast' is not known; allowed: 'auto', 'tiny'"):
        profiles.resolve("fast")
    with pytest.raises(params.ParameterError, match="profile"):
        params.resolve({"profile": "fast"}, primer.PROFILES, primer.SCHEMA)


def test_side_profiles_keep_their_results_beside_the_builds():
    assert results.results_filename("03_x", "long") == "03_x.long.json"
    assert results.results_filename("03_x", "quick") == "03_x.json" and results.results_filename("03_x", None) == "03_x.json"


def test_setup_refuses_a_dataset_without_recipe_only_for_chapters_that_train_reference_models():
    given = {"profile": "quick", "device": "cpu", "seed": 0, "dataset": "fashion"}
    with pytest.raises(params.ParameterError, match="no reference recipe for dataset 'fashion'"):
        chapter.setup(primer, given, show=False)
    ch = chapter.setup(self_gradient, given, show=False)  # trains its own models
    assert ch.cfg.dataset == "fashion" and "recipe" not in ch.cfg
    assert ch.cfg.autoattack == profiles.get("quick").autoattack_budget()
