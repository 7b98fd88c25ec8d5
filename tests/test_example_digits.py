"""The README's main job runs as a user runs it and reaches the promised accuracy."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.workspace import ROOT


def test_demo_reaches_095_test_accuracy() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "digits.py"), "--quiet"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    match = re.search(r"test accuracy (\d\.\d+)", done.stdout)
    assert match, done.stdout
    assert float(match.group(1)) > 0.95
