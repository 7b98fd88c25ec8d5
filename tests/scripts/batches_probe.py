"""Launched by tests/test_run_log_wiring.py under torchrun (2 processes): trains the test's model on its data
for 2 epochs, printing only the console lines `fit` says (no progress bars)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: `tests` is a package there
from tests.test_run_log_wiring import make_data, make_manager

if __name__ == "__main__":
    make_manager().fit(make_data(), epochs=2, show_verbose=False)
    print(f"done {sys.argv[1]}")
