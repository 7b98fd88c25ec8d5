"""Each distribution builds a wheel that installs and imports alone in a clean virtual environment.

A base venv (no system site packages) gets the pinned CPU torch once; each component then goes
into a copy of it with only its declared dependencies, so a missing dependency, a stray import of
a sibling package or an eager import of an optional extra fails here.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from tests.workspace import DISTRIBUTIONS, IMPORT_NAMES, ROOT

pytestmark = pytest.mark.slow

OPTIONAL = ("scipy", "yaml", "tensorboard")

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


def _run(*args: str | Path, cwd: Path | None = None) -> str:
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=cwd)
    assert done.returncode == 0, f"{' '.join(map(str, args))} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheels")
    for dist in DISTRIBUTIONS:
        _run(
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            out,
            ROOT / "packages" / dist,
        )
    return out


@pytest.fixture(scope="module")
def base_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("venvs") / "base"
    venv.create(path, with_pip=True, system_site_packages=False)
    _run(path / "bin" / "python", "-m", "pip", "install", "-q", "torch==2.13.0")
    return path


def _fresh_venv(base: Path, name: str) -> Path:
    # a copy of the base venv: its python is a symlink, so the copy is a venv of its own
    path = base.parent / name
    shutil.copytree(base, path, symlinks=True)
    return path / "bin" / "python"


def test_every_distribution_has_a_wheel(wheels: Path) -> None:
    built = sorted(p.name.split("-")[0] for p in wheels.glob("*.whl"))
    assert built == sorted(name.replace("-", "_") for name in DISTRIBUTIONS)


@pytest.mark.parametrize("dist", DISTRIBUTIONS)
def test_installs_and_imports_alone(dist: str, wheels: Path, base_venv: Path) -> None:
    python = _fresh_venv(base_venv, dist)
    wheel = next(wheels.glob(f"{dist.replace('-', '_')}-*.whl"))
    _run(python, "-m", "pip", "install", "-q", "--find-links", wheels, wheel)
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
    assert wheel.name.split("-")[1] == version
    installed = _run(python, "-m", "pip", "list", "--format=freeze")
    ours = sorted(line.split("==")[0] for line in installed.splitlines() if line.startswith("torchmanager"))
    assert ours == sorted(_closure(dist)), f"{dist} pulled in {ours}"


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
