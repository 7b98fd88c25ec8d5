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


def test_every_readme_installs_our_distributions_from_the_built_wheels() -> None:
    """They are not on PyPI (whose `torchmanager` is upstream's 1.5): each `pip install` of one takes `dist/`."""
    readmes = [ROOT / "README.md", *sorted((ROOT / "packages").glob("*/README.md"))]
    checked = 0
    for readme in readmes:
        text = readme.read_text()
        blocks = "\n".join(re.findall(r"```[a-z]*\n(.*?)```", text, re.DOTALL))
        commands = re.findall(r"pip install [^`#\n]+", blocks) + re.findall(r"`(pip install [^`]+)`", text)
        for command in commands:
            names = re.findall(r"""(?:^|[\s"'])(torchmanager(?:-[a-z]+)?)\b""", command)
            if not names or "torch " in command:
                continue
            checked += 1
            assert "--find-links dist" in command, f"{readme.relative_to(ROOT)}: {command!r}"
            if "torchmanager" in names:
                assert re.search(r'"torchmanager(\[[a-z,]+\])?>=2', command), f"{readme.relative_to(ROOT)}: {command!r}"
    assert checked >= 8
