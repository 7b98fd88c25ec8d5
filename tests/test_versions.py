"""All six distributions share one version, and every internal `==` pin names it."""

from __future__ import annotations

import subprocess
import sys

import tomllib
from packaging.requirements import Requirement

from tests.workspace import DISTRIBUTIONS, ROOT, read_version


def _requirements(dist: str) -> list[Requirement]:
    project = tomllib.loads((ROOT / "packages" / dist / "pyproject.toml").read_text())["project"]
    reqs = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        reqs += extra
    return [Requirement(r) for r in reqs]


def test_one_version_for_all() -> None:
    versions = {dist: read_version(dist) for dist in DISTRIBUTIONS}
    assert len(set(versions.values())) == 1, f"Distributions disagree on the version: {versions}"


def test_internal_pins_match_the_version() -> None:
    version = read_version("torchmanager")
    for dist in DISTRIBUTIONS:
        for req in _requirements(dist):
            if req.name.startswith("torchmanager") and req.name != dist:
                assert str(req.specifier) == f"=={version}", f"{dist} pins {req}, expected =={version}"


def test_meta_package_pins_every_component() -> None:
    pinned = {r.name for r in _requirements("torchmanager") if not r.extras}
    assert pinned == set(DISTRIBUTIONS) - {"torchmanager"}


def test_installed_metadata_agrees(tmp_path) -> None:
    # the editable installs report the version hatchling reads from __about__.py
    from importlib.metadata import version

    for dist in DISTRIBUTIONS:
        assert version(dist) == read_version(dist)


def test_bump_script_rewrites_every_place(tmp_path) -> None:
    import shutil

    copy = tmp_path / "repo"
    shutil.copytree(ROOT / "packages", copy / "packages", ignore=shutil.ignore_patterns("tests", "__pycache__"))
    shutil.copytree(ROOT / "scripts", copy / "scripts")
    shutil.copytree(ROOT / "tests", copy / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "scripts/bump_version.py", "9.8.7"], cwd=copy, check=True)
    check = "from tests.workspace import DISTRIBUTIONS, read_version; print({read_version(d) for d in DISTRIBUTIONS})"
    out = subprocess.run([sys.executable, "-c", check], cwd=copy, check=True, capture_output=True, text=True).stdout
    assert out.strip() == "{'9.8.7'}"
    meta = (copy / "packages" / "torchmanager" / "pyproject.toml").read_text()
    assert meta.count("==9.8.7") == 9 and "==2." not in meta.replace("==9.8.7", "")
