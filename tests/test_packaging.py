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


def _requirements(project: dict, extra: str | None = None) -> dict:
    from packaging.requirements import Requirement

    listed = project["dependencies"] if extra is None else project["optional-dependencies"][extra]
    return {_name(r): Requirement(r) for r in listed}


def test_the_bounds_admit_the_gpu_machine_and_only_jupyter_book_1():
    project = tomllib.loads((ROOT / "lib" / "pyproject.toml").read_text())["project"]
    deps, book = _requirements(project), _requirements(project, "book")
    assert {"torch", "torchvision", "matplotlib", "seaborn", "papermill"} <= set(deps)
    # the GPU machine ships torch 2.11 / torchvision 0.26, the CPU machine this book was written on 2.2 / 0.17
    for name, versions in (("torch", ("2.2.0", "2.11.0")), ("torchvision", ("0.17.0", "0.26.0"))):
        assert all(deps[name].specifier.contains(v) for v in versions), (name, versions)
    # the site is a Jupyter Book 1.x site (2.x is another tool, built on MyST-JS)
    assert book["jupyter-book"].specifier.contains("1.0.4.post1") and not book["jupyter-book"].specifier.contains("2.0.0")


def test_ci_runs_the_test_command_the_readme_gives():
    """The README's test command (its *Two commands* block) is a line of .ci/run, and make knows it."""
    import subprocess

    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Two commands", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [line.split("#", 1)[0].strip() for line in block.splitlines() if line.strip()]
    assert "make test" in commands and "make book" in commands
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert "make test" in ci
    for command in commands:  # each is a target make can plan (-n: nothing runs)
        assert subprocess.run(["make", "-n", *command.split()[1:]], cwd=ROOT, capture_output=True).returncode == 0


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
    from packaging.version import Version

    assert Version(next(iter(pins["jupyter-book"].specifier)).version).major == 1  # a Jupyter Book 1.x site
    assert Version(next(iter(pins["pybtex"].specifier)).version) >= Version("0.25")
    assert _violations(CONSTRAINTS) == []


def test_make_installs_with_the_constraints_and_python_bounds_agree():
    import shlex
    import subprocess

    from packaging.specifiers import SpecifierSet

    # what `make` would run to create .venv (-n: print only; -W: as if pyproject.toml had changed)
    plan = subprocess.run(["make", "-n", "-W", "lib/pyproject.toml", ".venv/.installed"], cwd=ROOT,
                          capture_output=True, text=True, check=True).stdout
    installs = [shlex.split(line) for line in plan.splitlines() if "pip install" in line and "-e" in line]
    assert len(installs) == 1, plan
    args = installs[0]
    assert (ROOT / args[args.index("-c") + 1]).resolve() == CONSTRAINTS.resolve()
    assert args[args.index("-e") + 1] == "lib[book,test]"
    # pip users (requires-python) and conda users (environment.yml) get the same Python versions
    project = tomllib.loads((ROOT / "lib" / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda_python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python"))
    pip_spec, conda_spec = SpecifierSet(project["requires-python"]), SpecifierSet(conda_python.removeprefix("python"))
    versions = [f"3.{minor}.{patch}" for minor in range(6, 17) for patch in (0, 5)]
    assert [v for v in versions if v in pip_spec] == [v for v in versions if v in conda_spec]
    assert "3.10.0" in pip_spec  # the oldest Python the README promises
