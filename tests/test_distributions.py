"""The README's install lines work from a clone, in their order: its torch line installs PyTorch's CPU
build, its build line makes the six wheels, and its pip lines install all of it (then the Tour runs),
or one component alone, in a clean virtual environment, keeping the torch installed first.

A base venv (no system site packages) runs the README's torch line, with PyTorch's CPU index
replaced by a local copy holding the pinned torch and its requirements (this machine reaches no
index but PyPI); each install then goes into a copy of it, running the README's line as written
(its `pip` being the venv's), from a copy of the clone where the build line made `dist/` (with the
`hatch` the README's line before it installs, here the one on PATH). Each component gets the
README's one-component line with its own name in it: a missing dependency, a stray import of a
sibling package or an eager import of an optional extra fails here.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import venv
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.workspace import DISTRIBUTIONS, IMPORT_NAMES, ROOT

pytestmark = pytest.mark.slow


def readme_install_lines() -> list[str]:
    """The commands of the README's Install block, in order, without their comments."""
    section = (ROOT / "README.md").read_text().split("\n## Install\n", 1)[1]
    match = re.search(r"```bash\n(.*?)```", section, re.DOTALL)
    assert match, "the README's Install section has no bash block"
    return [line.split("#", 1)[0].strip() for line in match.group(1).splitlines() if line.split("#", 1)[0].strip()]


TORCH, HATCH, BUILD, EVERYTHING, ONE_COMPONENT = readme_install_lines()
PYTORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
PINNED_TORCH = "torch==2.13.0"  # the torch of this machine (and of hatch.toml)
EXAMPLE_COMPONENT = "torchmanager-losses"  # the component the README's one-component line installs


def install_line(dist: str) -> str:
    """The README's line that installs `dist`: all of it for the meta-package, else the one-component line."""
    return EVERYTHING if dist == "torchmanager" else ONE_COMPONENT.replace(EXAMPLE_COMPONENT, dist)


OPTIONAL = ("scipy", "yaml", "tensorboard", "mlflow")

# A one-line smoke call per component, run after importing it alone.
SMOKE = {
    "torchmanager-metrics": (
        "import torch; m = torchmanager_metrics.Metric(lambda a, b: (a == b).float().mean()); "
        "m(torch.tensor([1, 2]), torch.tensor([1, 3])); assert float(m.result) == 0.5"
    ),
    "torchmanager-losses": (
        "import torch; d = torchmanager_losses.Dice(); "
        "v = d(torch.randn(2, 3, 4, 4), torch.randint(0, 3, (2, 4, 4))); assert v.ndim == 0"
    ),
    "torchmanager-data": (
        "import torch\n"
        "class D(torchmanager_data.Dataset):\n"
        "    unbatched_len = 5\n"
        "    def __getitem__(self, i): return torch.tensor([i]), torch.tensor(i)\n"
        "assert D(2).batched_len == 3 and len(D(2)) == 5"
    ),
    "torchmanager-core": (
        "import torch; m = torch.nn.Linear(2, 2); "
        "r = torchmanager_core.Manager(m, torch.optim.SGD(m.parameters(), lr=0.1), loss_fn=torch.nn.CrossEntropyLoss())"
        ".test([(torch.randn(4, 2), torch.tensor([0, 1, 0, 1]))]); assert set(r) == {'loss'}"
    ),
    "torchmanager-callbacks": (
        "import torch, torchmanager_core; m = torch.nn.Linear(2, 2); "
        "mg = torchmanager_core.Manager(m, torch.optim.SGD(m.parameters(), lr=0.1), loss_fn=torch.nn.CrossEntropyLoss()); "
        "stop = torchmanager_callbacks.EarlyStop('loss', torchmanager_callbacks.MonitorType.MIN, steps=1); "
        "mg.fit([(torch.randn(4, 2), torch.tensor([0, 1, 0, 1]))], epochs=2, callbacks_list=[stop])"
    ),
    "torchmanager": (
        "torchmanager.losses.Dice; torchmanager.metrics.SparseCategoricalAccuracy; torchmanager.callbacks.Experiment; "
        "torchmanager.configs.Configs; torchmanager.data.Dataset; assert torchmanager.Manager is torchmanager_core.Manager"
    ),
}


def _run(*args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, cwd=cwd, env={**os.environ, **(env or {})}
    )
    assert done.returncode == 0, f"{' '.join(map(str, args))} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the clone's sources, where the README's build line has made `dist/`."""
    path = tmp_path_factory.mktemp("clone")
    shutil.copy(ROOT / "hatch.toml", path)
    ignored = shutil.ignore_patterns("__pycache__", "*.egg-info", "dist", "build", ".pytest_cache")
    shutil.copytree(ROOT / "packages", path / "packages", ignore=ignored)
    _run(*shlex.split(BUILD), cwd=path, env={"HATCH_DATA_DIR": str(path / ".hatch-data")})  # its build env too
    return path


@pytest.fixture(scope="module")
def wheels(clone: Path) -> Path:
    return clone / "dist"


@pytest.fixture(scope="module")
def torch_index(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A local copy of PyTorch's CPU index (PEP 503) with the pinned torch and its requirements alone."""
    folder = tmp_path_factory.mktemp("torch-index")
    _run(sys.executable, "-m", "pip", "download", "-q", "-d", folder / "files", PINNED_TORCH)
    for wheel in sorted((folder / "files").iterdir()):
        project = folder / "simple" / re.sub(r"[-_.]+", "-", wheel.name.split("-")[0]).lower()
        project.mkdir(parents=True, exist_ok=True)
        with (project / "index.html").open("a") as page:
            page.write(f'<a href="{wheel.as_uri()}">{wheel.name}</a><br>\n')
    return (folder / "simple").as_uri()


@pytest.fixture(scope="module")
def base_venv(tmp_path_factory: pytest.TempPathFactory, torch_index: str) -> Path:
    """A venv where the README's torch line ran, the only change its index (see the module's docstring)."""
    path = tmp_path_factory.mktemp("venvs") / "base"
    venv.create(path, with_pip=True, system_site_packages=False)
    pip, *args = shlex.split(TORCH.replace(PYTORCH_CPU_INDEX, torch_index))
    _run(path / "bin" / "python", "-m", pip, *args, "-q")
    return path


@pytest.fixture(scope="module")
def installed(clone: Path, base_venv: Path) -> Callable[[str], Path]:
    """The python of a venv where the README's line for `dist` ran (made once per distribution)."""
    made: dict[str, Path] = {}

    def python_with(dist: str) -> Path:
        if dist not in made:
            python = _fresh_venv(base_venv, dist)
            pip, *args = shlex.split(install_line(dist))
            assert pip == "pip"
            _run(python, "-m", "pip", *args, cwd=clone)
            made[dist] = python
        return made[dist]

    return python_with


def _fresh_venv(base: Path, name: str) -> Path:
    # a copy of the base venv: its python is a symlink, so the copy is a venv of its own
    path = base.parent / name
    shutil.copytree(base, path, symlinks=True)
    return path / "bin" / "python"


def test_every_distribution_has_a_wheel(wheels: Path) -> None:
    built = sorted(p.name.split("-")[0] for p in wheels.glob("*.whl"))
    assert built == sorted(name.replace("-", "_") for name in DISTRIBUTIONS)


def test_the_readme_install_lines_are_torch_first_then_the_build_all_of_it_and_one_component() -> None:
    # PyTorch's own CPU build before anything that requires torch (PyPI's default pulls GBs of CUDA)
    assert shlex.split(TORCH) == ["pip", "install", "torch", "--index-url", PYTORCH_CPU_INDEX]
    assert HATCH == "pip install hatch"
    assert BUILD == "hatch build -t wheel --all"
    assert shlex.split(EVERYTHING)[:4] == ["pip", "install", "--find-links", "dist"]
    # not upstream's 1.5 from PyPI; with TensorBoard, which the Tour's Experiment writes
    assert shlex.split(EVERYTHING)[4] == "torchmanager[tensorboard]>=2.0.0a0"
    assert shlex.split(ONE_COMPONENT) == ["pip", "install", "--find-links", "dist", EXAMPLE_COMPONENT]


@pytest.mark.parametrize("dist", DISTRIBUTIONS)
def test_installs_and_imports_alone(dist: str, wheels: Path, base_venv: Path, installed: Callable[[str], Path]) -> None:
    python = installed(dist)
    name = IMPORT_NAMES[dist]
    check = (
        f"import sys, {name}\n"
        + ("import torchmanager_core\n" if dist == "torchmanager" else "")
        + SMOKE[dist]
        + f"\nloaded = sorted(m for m in {OPTIONAL!r} if m in sys.modules)\n"
        + "assert not loaded, f'importing imported optional {loaded}'\n"
        + f"print({name}.__version__)"
    )
    version = _run(python, "-c", check, cwd=base_venv.parent).strip().splitlines()[-1]
    wheel = next(wheels.glob(f"{dist.replace('-', '_')}-*.whl"))
    assert wheel.name.split("-")[1] == version
    listed = _run(python, "-m", "pip", "list", "--format=freeze")
    ours = sorted(line.split("==")[0] for line in listed.splitlines() if line.startswith("torchmanager"))
    assert ours == sorted(_closure(dist)), f"{dist} pulled in {ours}"
    assert "torch==2.13.0+cpu" in listed.splitlines()  # the torch installed first was kept
    assert not [line for line in listed.splitlines() if line.startswith("nvidia")]  # no CUDA libraries pulled


def _closure(dist: str) -> set[str]:
    """The torchmanager distributions that `dist` needs, by the workspace's declared graph."""
    needs = {
        "torchmanager-metrics": [],
        "torchmanager-losses": ["torchmanager-metrics"],
        "torchmanager-data": [],
        "torchmanager-core": [],
        "torchmanager-callbacks": ["torchmanager-core"],
        "torchmanager": [d for d in DISTRIBUTIONS if d != "torchmanager"],
    }
    found = {dist}
    for dep in needs[dist]:
        found |= _closure(dep)
    return found


def test_the_tour_runs_where_the_readme_installed_all_of_it(installed: Callable[[str], Path], tmp_path: Path) -> None:
    """The README's Tour, as a user pastes it after the Install section, twice: the second run keeps the first."""
    tour = (ROOT / "README.md").read_text().split("\n## Tour\n", 1)[1]
    match = re.search(r"```python\n(.*?)```", tour, re.DOTALL)
    assert match, "the README's Tour has no python block"
    python = installed("torchmanager")
    for _ in range(2):
        _run(python, "-c", match.group(1), cwd=tmp_path)
    for run in ("tour.exp", "tour-2.exp"):
        checkpoints = tmp_path / "experiments" / run / "checkpoints"
        assert {"best-accuracy.model", "last.model"} <= {p.name for p in checkpoints.iterdir()}
    assert (tmp_path / "model.pth").is_file()
