"""A checkpoint writer for tests/test_kill_during_write.py, to be SIGKILLed at random moments.

`python checkpoint_writer.py PATH START` saves checkpoints to PATH in a loop with
`torchmanager_core.checkpoint.save`: `payload(START)`, `payload(START + 1)`, ... (4 MB each, so a
write takes a while), printing `saved <counter>` after each, until it is killed.
`python checkpoint_writer.py --serve` runs it in children of a fork server (see fork_server.py).
"""

from __future__ import annotations

import sys
from typing import Any

import torch

from torchmanager_core import checkpoint

SIZE = 1 << 20  # float32 elements: 4 MB


def payload(counter: int) -> dict[str, Any]:
    """The checkpoint number `counter`: every part of it can be checked against the counter."""
    return {
        "counter": counter,
        "data": torch.arange(SIZE, dtype=torch.float32) + counter,  # exact: below 2**24
        "note": f"checkpoint {counter}",
        "nested": {"counter": torch.tensor(counter), "list": [counter, -counter]},
    }


def main(argv: list[str]) -> None:
    """Save `payload(START)`, `payload(START + 1)`, ... to PATH until killed."""
    path, start = argv[0], int(argv[1])
    counter = start
    while True:
        checkpoint.save(payload(counter), path)
        print(f"saved {counter}", flush=True)
        counter += 1


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        from fork_server import serve  # beside this script

        serve(main)
    else:
        main(sys.argv[1:])
