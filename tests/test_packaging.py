"""The project's set-up files agree with each other."""

import re
import tomllib

import yaml

from fcnlib.runtime import REPO_ROOT


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_names_the_same_dependencies_as_pyproject():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    declared = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        declared += extra
    conda = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    pip_lists = [d["pip"] for d in conda["dependencies"] if isinstance(d, dict)]
    assert len(pip_lists) == 1, "environment.yml must have one pip: section"
    from_conda = [r for r in pip_lists[0] if not r.startswith("-e")]
    assert sorted(map(str.strip, from_conda)) == sorted(declared)
    assert "-e ." in pip_lists[0], "environment.yml must install the project itself"
    assert {"python>=3.11", "pip"} <= {d for d in conda["dependencies"] if isinstance(d, str)}


def test_ci_runs_the_readme_test_command():
    readme = (REPO_ROOT / "README.md").read_text()
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert "make test" in readme
    setup = ("#", "set ", "cd ", "export ")
    commands = [line for line in ci.splitlines() if line and not line.startswith(setup)]
    assert commands == ["make test"]
