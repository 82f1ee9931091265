"""environment.yml (conda users) and lib/pyproject.toml (pip users) list the same packages."""

import re
import tomllib

import yaml

from conftest import ROOT


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ \[]", requirement.strip(), maxsplit=1)[0].lower()


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "lib" / "pyproject.toml").read_text())["project"]
    wanted = {r for r in project["dependencies"]}
    for extra in project["optional-dependencies"].values():
        wanted |= set(extra)
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_list = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    listed = {r for r in pip_list if not r.startswith("-e")}
    assert {_name(r): r for r in listed} == {_name(r): r for r in wanted}
    assert "-e ./lib" in pip_list


def test_product_packages_and_gpu_machine_bounds():
    deps = tomllib.loads((ROOT / "lib" / "pyproject.toml").read_text())["project"]
    names = {_name(r) for r in deps["dependencies"]} | {_name(r) for e in deps["optional-dependencies"].values() for r in e}
    assert {"torch", "torchvision", "jupyter-book", "matplotlib", "seaborn", "papermill"} <= names
    assert "jupyter-book>=1,<2" in deps["optional-dependencies"]["book"]
    # the GPU machine ships torch 2.11 / torchvision 0.26: the lower bounds must admit them
    bounds = {_name(r): r for r in deps["dependencies"]}
    assert bounds["torch"] == "torch>=2.2" and bounds["torchvision"] == "torchvision>=0.17"


def test_readme_gives_the_two_commands_and_ci_calls_make_test():
    readme = (ROOT / "README.md").read_text()
    assert "make book" in readme and "make test" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()
