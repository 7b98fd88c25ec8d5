"""Set one version on all six distributions: their `__about__.py` and every internal `==` pin.

Usage: hatch run bump 2.1.0
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.workspace import DISTRIBUTIONS, ROOT, about_file, read_version

_PIN = re.compile(r'("torchmanager(?:-[a-z]+)?(?:\[[a-z,]+\])?==)[^"]+(")')


def bump(new: str) -> None:
    """Write `new` everywhere the version lives."""
    if not re.fullmatch(r"\d+\.\d+\.\d+(?:(?:a|b|rc)\d+)?(?:\.dev\d+)?", new):
        raise SystemExit(f"`version` must look like 2.1.0, 2.1.0a1 or 2.1.0.dev0. Received: version={new!r}")
    for dist in DISTRIBUTIONS:
        about = about_file(dist)
        about.write_text(about.read_text().replace(f'"{read_version(dist)}"', f'"{new}"'))
        project = ROOT / "packages" / dist / "pyproject.toml"
        project.write_text(_PIN.sub(rf"\g<1>{new}\g<2>", project.read_text()))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    bump(sys.argv[1])
