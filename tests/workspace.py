"""Facts about the workspace that root tests and scripts share: where things are, what is what."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

DISTRIBUTIONS = (
    "torchmanager-metrics",
    "torchmanager-losses",
    "torchmanager-data",
    "torchmanager-core",
    "torchmanager-callbacks",
    "torchmanager",
)
IMPORT_NAMES = {dist: dist.replace("-", "_") for dist in DISTRIBUTIONS}

_VERSION = re.compile(r'^__version__ = "([^"]+)"$', re.MULTILINE)


def about_file(dist: str) -> Path:
    """The one file that holds a distribution's version."""
    return ROOT / "packages" / dist / "src" / IMPORT_NAMES[dist] / "__about__.py"


def read_version(dist: str) -> str:
    match = _VERSION.search(about_file(dist).read_text())
    if match is None:
        raise ValueError(f'No `__version__ = "..."` line in {about_file(dist)}')
    return match.group(1)
