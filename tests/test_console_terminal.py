"""What a user sees in a real terminal: a training script runs in a pseudo-terminal of 0, 80 or 200
columns (its size set with TIOCSWINSZ and `COLUMNS`), and what it printed is read back through a
small terminal model (carriage returns overwrite, a line longer than the terminal wraps).

Each epoch's last line must hold every value of `manager.history` (the script writes it to a file:
the reference), in a readable format: 4 significant digits (the same number as Python's `.4g`
gives), `2.0000e-05` for a learning rate of 2e-5. With `logging.basicConfig(level=INFO)` every
line is printed once.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import struct
import subprocess
import sys
import termios
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

SCRIPT = """
import json, logging, sys, torch, torchmanager
{setup}
torch.manual_seed(0)
x = torch.randn(24, 4)
y = (x[:, 0] > 0).long()
data = [(x[i : i + 8], y[i : i + 8]) for i in range(0, 24, 8)]
model = torch.nn.Linear(4, 2)
metrics = {{
    "accuracy": torchmanager.metrics.SparseCategoricalAccuracy(),
    "top1": torchmanager.metrics.SparseCategoricalAccuracy(),
}}
manager = torchmanager.Manager(
    model, torch.optim.SGD(model.parameters(), lr=2e-5), loss_fn=torchmanager.losses.CrossEntropy(), metrics=metrics
)
manager.fit(data, epochs=2, val_dataset=data, show_verbose={verbose})
json.dump(manager.history, open(sys.argv[1], "w"))
"""

_CI = ("CI", "GITHUB_ACTIONS", "GITLAB_CI", "BUILDKITE", "JENKINS_URL", "TF_BUILD")


def in_terminal(code: str, columns: int, *args: str, rows: int = 24) -> str:
    """Run `python -c code args` with stdin, stdout and stderr on a new pseudo-terminal of `columns` and `rows`; its output."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in _CI} | {"COLUMNS": str(columns), "TERM": "xterm"}
    process = subprocess.Popen(
        [sys.executable, "-c", code, *args], stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True
    )
    os.close(slave)
    output = bytearray()
    try:
        while select.select([master], [], [], 300)[0]:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every process holding the terminal has closed it
                break
            if not chunk:
                break
            output += chunk
    finally:
        os.close(master)
        code_ = process.wait(timeout=60)
    text = output.decode()
    assert code_ == 0, text
    return text


def screen(text: str, columns: int) -> list[str]:
    """The lines a terminal of `columns` (0: unlimited) shows after `text`, each wrapped line joined whole."""
    rows: list[list[str]] = [[]]
    continued = [False]
    row = column = 0
    for part in re.split(r"(\x1b\[[0-9;]*[A-Za-z]|[\r\n])", text):
        if part == "\r":
            column = 0
        elif part == "\n":
            row, column = row + 1, 0
        elif part.startswith("\x1b["):
            if part.endswith("A"):
                row = max(row - int(part[2:-1] or 1), 0)
            continue
        else:
            for char in part:
                if columns and column == columns:  # the terminal wraps on to the next row
                    row, column = row + 1, 0
                    while len(rows) <= row:
                        rows.append([])
                        continued.append(False)
                    continued[row] = True
                while len(rows) <= row:
                    rows.append([])
                    continued.append(False)
                line = rows[row]
                line.extend(" " * (column + 1 - len(line)))
                line[column] = char
                column += 1
        while len(rows) <= row:
            rows.append([])
            continued.append(False)
    lines: list[str] = []
    for cells, is_continued in zip(rows, continued, strict=True):
        if is_continued and lines:
            lines[-1] += "".join(cells)
        else:
            lines.append("".join(cells))
    return [line.rstrip() for line in lines]


def shown_values(line: str) -> dict[str, str]:
    return dict(re.findall(r"([a-z_][a-z_0-9]*)=([^,\]\s]+)", line))


def check_values(shown: dict[str, str], reference: dict[str, Any]) -> None:
    assert set(shown) == set(reference), (shown, reference)
    for name, value in reference.items():
        if name == "lr":
            assert shown[name] == "2.0000e-05"
        else:  # 4 significant digits: the number `.4g` writes (this format keeps the trailing zeros)
            assert float(shown[name]) == float(f"{value:.4g}"), (name, shown[name], value)
            assert len(shown[name].replace("-", "").replace(".", "").lstrip("0")) >= 4 or value == 0


@pytest.mark.parametrize(
    ("columns", "rows"),
    [(0, 24), (80, 24), (200, 24), (0, 0)],  # 0 x 0: a pseudo-terminal nobody sized (`docker exec -t`, some CI runners)
)
def test_each_epoch_line_shows_every_value_whole_in_a_terminal_of_any_width(
    tmp_path: Path, columns: int, rows: int
) -> None:
    history_file = tmp_path / "history.json"
    text = in_terminal(SCRIPT.format(setup="", verbose=True), columns, str(history_file), rows=rows)
    history = json.loads(history_file.read_text())
    lines = screen(text, columns)
    for epoch, reference in enumerate(history, 1):
        final = [line for line in lines if line.startswith(f"Epoch {epoch}/2")]
        assert final, text
        assert "3/3 [" in final[-1]
        check_values(shown_values(final[-1]), reference)
        assert not [line for line in lines if line.startswith(f"Epoch {epoch}/2:")]  # the bar showed it: once
    if columns == 200:  # the whole line fits: no line of the screen is a wrapped one
        assert all(len(line) <= 200 for line in lines)
    if columns == 80:
        assert max(len(line) for line in lines) > 80  # a value was past column 80: it wrapped, not cut


@pytest.mark.parametrize("verbose", [False, True], ids=["summary-lines", "bars"])
def test_basic_config_prints_each_line_once(tmp_path: Path, verbose: bool) -> None:
    history_file = tmp_path / "history.json"
    setup = "logging.basicConfig(level=logging.INFO)"
    text = in_terminal(SCRIPT.format(setup=setup, verbose=verbose), 200, str(history_file))
    history = json.loads(history_file.read_text())
    lines = screen(text, 200)
    for epoch, reference in enumerate(history, 1):
        logged = [line for line in lines if f"Epoch {epoch}/2:" in line]
        if verbose:  # the bar's line is the one copy
            assert logged == [] and sum(line.startswith(f"Epoch {epoch}/2") for line in lines) == 1
        else:  # the root logger's handler prints it, in the format basicConfig set, and nothing else does
            assert len(logged) == 1 and logged[0].startswith(f"INFO:torchmanager:Epoch {epoch}/2: ")
            check_values(shown_values(logged[0].split(": ", 1)[1]), reference)
    model_lines = [line for line in lines if "Training Linear: 10 parameters" in line]
    assert len(model_lines) == 1
