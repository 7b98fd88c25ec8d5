"""The README's commands are the ones the workspace really provides, and CI runs the test one."""

from __future__ import annotations

import re

import tomllib

from tests.workspace import ROOT


def _readme_commands() -> dict[str, str]:
    rows = re.findall(r"^\| (run [^|]+|measure [^|]+) \| `([^`]+)` \|$", (ROOT / "README.md").read_text(), re.MULTILINE)
    return {what.strip(): command for what, command in rows}


def test_ci_runs_the_readme_test_command() -> None:
    test_command = next(c for what, c in _readme_commands().items() if what.startswith("run every test"))
    ci = (ROOT / ".ci" / "run").read_text()
    for step in test_command.split(" && "):
        if step.startswith("pip install"):
            assert "pip install -q hatch" in ci
        else:
            assert re.search(rf"^{re.escape(step)}$", ci, re.MULTILINE), f"{step!r} is not a line of .ci/run"


def test_readme_scripts_exist_in_hatch_toml() -> None:
    scripts = tomllib.loads((ROOT / "hatch.toml").read_text())["envs"]["default"]["scripts"]
    commands = _readme_commands()
    assert len(commands) == 3, commands
    for command in commands.values():
        script = command.split("hatch run ")[1].split()[0]
        assert script in scripts, f"README runs `hatch run {script}`, which hatch.toml does not define"


def test_every_hatch_environment_installs_with_pip() -> None:
    envs = tomllib.loads((ROOT / "hatch.toml").read_text())["envs"]
    assert {name: env.get("installer") for name, env in envs.items()} == {name: "pip" for name in envs}
