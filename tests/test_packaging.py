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


CONSTRAINTS = ROOT / "lib" / "constraints-book.txt"
TOOLCHAIN = ("jupyter-book", "sphinx", "sphinx-book-theme", "pydata-sphinx-theme", "myst-nb", "myst-parser",
             "sphinxcontrib-bibtex", "pybtex", "sphinx-exercise")


def _constraints(path):
    from packaging.requirements import Requirement

    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [Requirement(line) for line in lines if line]


def _violations(path):
    """Constraints of ``path`` that the installed environment does not satisfy (missing counts too)."""
    from importlib import metadata

    bad = []
    for req in _constraints(path):
        try:
            version = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            bad.append(f"{req} (not installed)")
            continue
        if not req.specifier.contains(version, prereleases=True):
            bad.append(f"{req} (installed {version})")
    return bad


def test_book_toolchain_is_pinned_and_the_pins_hold():
    pins = {r.name.lower(): r for r in _constraints(CONSTRAINTS)}
    assert set(TOOLCHAIN) <= set(pins), f"unpinned: {set(TOOLCHAIN) - set(pins)}"
    assert all(str(r.specifier).startswith("==") for r in pins.values())
    assert pins["jupyter-book"].specifier.contains("1.0.4.post1") and pins["sphinx"].specifier.contains("7.4.7")
    from packaging.version import Version

    assert Version(next(iter(pins["pybtex"].specifier)).version) >= Version("0.25")
    assert _violations(CONSTRAINTS) == []


def test_violated_pin_is_detected(tmp_path):
    bad = tmp_path / "constraints.txt"
    bad.write_text("# comment\njupyter-book==0.15.1\nsphinx>=7,<8\nno-such-package-xyz==1.0\n")
    found = _violations(bad)
    assert len(found) == 2 and "jupyter-book==0.15.1" in found[0] and "not installed" in found[1]


def test_make_installs_with_the_constraints_and_python_bounds_agree():
    makefile = (ROOT / "Makefile").read_text()
    assert "CONSTRAINTS := lib/constraints-book.txt" in makefile and '-c $(CONSTRAINTS) -e "lib[book,test]"' in makefile
    project = tomllib.loads((ROOT / "lib" / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda_python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python"))
    assert project["requires-python"] == ">=3.10,<3.14" and conda_python == "python>=3.10,<3.14"
