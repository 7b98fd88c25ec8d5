"""Launched by `tests/test_launch.py` under `torchmanager-run --nproc_per_node=2` (as a script or with `-m`).

Usage: launch_probe.py probe OUT | bad-epochs | sigkill | until-signalled OUT

- probe: each rank writes `OUT/rank{RANK}.json` with what a script sees of how it was started
  (`sys.argv`, `__name__`, `sys.path[0]`, whether a module beside it imports), then exits cleanly.
- bad-epochs: every rank calls `fit(..., epochs=-1)`, which fails its argument check alike.
- sigkill: rank 1 ends by SIGKILL (no Python error to record) while rank 0 starts to train.
- until-signalled: each rank trains for ever with a `LastCheckpoint` of `OUT/last.model`, and
  writes `OUT/ready{RANK}` after each batch (the test signals the launcher once both exist).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import torch

import torchmanager


def make_manager() -> torchmanager.Manager:
    model = torch.nn.Linear(4, 2)
    return torchmanager.Manager(
        model, torch.optim.SGD(model.parameters(), lr=0.1), loss_fn=torchmanager.losses.CrossEntropy()
    )


def data() -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    return [(torch.randn(8, 4, generator=generator), torch.randint(0, 2, (8,), generator=generator)) for _ in range(4)]


def main(mode: str, *args: str) -> None:
    if mode == "probe":
        try:
            import fork_server  # noqa: F401  (beside this file)

            sibling = True
        except ImportError:
            sibling = False
        seen = {"argv": sys.argv, "name": __name__, "path0": sys.path[0], "sibling": sibling}
        (Path(args[0]) / f"rank{os.environ['RANK']}.json").write_text(json.dumps(seen))
    elif mode == "bad-epochs":
        make_manager().fit(data(), epochs=-1)
    elif mode == "until-signalled":
        out = Path(args[0])

        class Ready(torchmanager.callbacks.Callback):
            def on_batch_end(self, batch: int, summary: Any = None) -> None:
                (out / f"ready{os.environ['RANK']}").touch()

        manager = make_manager()
        checkpoint = torchmanager.callbacks.LastCheckpoint(manager, str(out / "last.model"))
        manager.fit(data(), epochs=10**9, callbacks_list=[Ready(), checkpoint], show_verbose=False)
    elif mode == "sigkill":
        if os.environ["RANK"] == "1":
            os.kill(os.getpid(), signal.SIGKILL)
        make_manager().fit(data(), epochs=100)


if __name__ == "__main__":
    main(*sys.argv[1:])
