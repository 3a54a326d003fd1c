"""The project's set-up files agree with each other."""

import os
import re
import subprocess
import sys
import sysconfig
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


def test_a_wheel_installed_outside_the_repository_has_its_data(tmp_path):
    wheels, venv = tmp_path / "wheels", tmp_path / "fresh"
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels)]
    subprocess.run([*build, str(REPO_ROOT)], check=True, cwd=tmp_path)
    (wheel,) = wheels.glob("fcnlib-*.whl")
    venv_python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    install = [sys.executable, "-m", "pip", "--python", str(venv_python), "install", "-q"]
    subprocess.run([*install, "--no-deps", str(wheel)], check=True, cwd=tmp_path)
    # fcnlib's dependencies (torch, ...) from this environment, without its fcnlib: a .pth
    # line puts the folder on the path but does not run the editable install's own .pth.
    (site,) = venv.glob("lib/python*/site-packages")
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    check = (
        "import fcnlib, fcnlib.weights; t = fcnlib.class_table('camvid'); "
        "print(fcnlib.__file__, t.num_classes, len(fcnlib.weights.available()))"
    )
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    shown = subprocess.run(
        [venv_python, "-c", check], capture_output=True, text=True, cwd=tmp_path, env=env
    )
    assert shown.returncode == 0, shown.stderr
    where, classes, shipped = shown.stdout.split()
    assert where.startswith(str(site)) and classes == "11" and int(shipped) >= 3
    helped = subprocess.run(
        [venv / "bin" / "fcnlib", "--help"], capture_output=True, text=True, cwd=tmp_path, env=env
    )
    assert helped.returncode == 0 and "reproduce" in helped.stdout
