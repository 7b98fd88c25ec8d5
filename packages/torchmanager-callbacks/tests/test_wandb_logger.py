"""WandbLogger in W&B's offline mode, its run files read back: configs, per-epoch and per-step values against
the fit's own summaries, a resume rewound to the checkpoint (each step shown once, the uninterrupted run's
values), the missing package named with its extra."""

from __future__ import annotations

import glob
import json
import struct
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from cb_testkit import batches, blobs, make_manager

from torchmanager_callbacks import Frequency, LambdaCallback, LastCheckpoint, WandbLogger
from torchmanager_core.callbacks import Callback

pytest.importorskip("wandb")  # the extra `wandb`, in the workspace's environment

DATA = batches(*blobs(32), size=8)  # four updates an epoch
BLOCK, HEADER = 32768, 7  # W&B's run file: LevelDB-log blocks of records, after a 7-byte header


def records(path: str) -> Iterator[Any]:
    """The protobuf records of a W&B run file (`run-<id>.wandb`), whole records rebuilt from their pieces."""
    from wandb.proto import wandb_internal_pb2

    raw, position, pending = Path(path).read_bytes(), HEADER, b""
    assert raw[:4] == b":W&B"
    while position + HEADER <= len(raw):
        if BLOCK - position % BLOCK < HEADER:  # a block's tail too short for a header is padding
            position += BLOCK - position % BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", raw[position : position + HEADER])
        data, position = raw[position + HEADER : position + HEADER + length], position + HEADER + length
        if kind in (1, 4):  # a full record, or a record's last piece
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending + data)
            pending = b""
            yield record
        elif kind in (2, 3):  # its first or a middle piece
            pending += data


def read_runs(folder: Path) -> list[dict[str, Any]]:
    """Each start's run file: its id, config, where it was rewound to, and its history rows by step."""
    import wandb

    wandb.teardown()  # W&B's service writes the files on its own: it has written them all when it ends
    runs = []
    for path in sorted(glob.glob(str(folder / "wandb" / "offline-run-*" / "run-*.wandb"))):
        run: dict[str, Any] = {"rows": {}, "rewound_to": None}
        for record in records(path):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                run["id"] = record.run.run_id
                config = {item.key: json.loads(item.value_json) for item in record.run.config.update}
                run["config"] = {key: value for key, value in config.items() if key != "_wandb"}  # W&B's own
                if record.run.HasField("branch_point"):
                    run["rewound_to"] = int(record.run.branch_point.value)
            elif kind == "history":
                row = {
                    item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item
                }
                values = {key: value for key, value in row.items() if not key.startswith("_")}
                run["rows"].setdefault(int(row["_step"]), {}).update(values)
        runs.append(run)
    return runs


def shown(runs: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """The history W&B shows: each start's rows, a start rewound to step N replacing the rows after N."""
    rows: dict[int, dict[str, Any]] = {}
    for run in runs:
        if run["rewound_to"] is not None:
            rows = {step: row for step, row in rows.items() if step <= run["rewound_to"]}
        rows.update(run["rows"])
    return rows


def test_a_run_is_read_back_with_the_fits_values(tmp_path: Path) -> None:
    summaries: list[dict[str, float]] = []
    batch_losses: list[float] = []
    manager = make_manager(lr=0.5)
    logger = WandbLogger(
        "tests", configs={"lr": 0.5, "optim": {"name": "sgd"}}, folder=tmp_path, mode="offline", log_every_n_steps=2
    )
    watch = [
        LambdaCallback(post_fn=lambda e, s: summaries.append(dict(s))),
        LambdaCallback(post_fn=lambda b, s: batch_losses.append(float(s["loss"])), freq=Frequency.BATCH),
    ]
    manager.fit(DATA, epochs=2, val_dataset=DATA, callbacks_list=[logger, *watch])
    (run,) = read_runs(tmp_path)
    assert run["config"] == {"lr": 0.5, "optim": {"name": "sgd"}}
    rows = run["rows"]
    assert sorted(rows) == [2, 4, 6, 8]  # every second update
    for epoch, summary in enumerate(summaries):
        row = rows[4 * (epoch + 1)]  # the epoch's values at its last update
        assert row["epoch"] == epoch + 1
        assert {key: row[key] for key in summary} == pytest.approx(summary, rel=1e-6)
    for step, row in rows.items():
        assert row["step/loss"] == pytest.approx(batch_losses[step - 1], rel=1e-6)


class Interrupt(Callback):
    def on_batch_end(self, batch: int, summary: Mapping[str, Any] = {}) -> None:
        if self.manager.global_step == 9:
            raise RuntimeError("interrupted")


def test_a_resumed_run_is_rewound_to_its_checkpoint(tmp_path: Path) -> None:
    def logger(folder: Path) -> WandbLogger:
        return WandbLogger("tests", folder=folder, mode="offline", log_every_n_steps=1)

    reference = make_manager(lr=0.5)
    reference.fit(DATA, epochs=3, val_dataset=DATA, callbacks_list=[logger(tmp_path / "whole")])

    folder, path = tmp_path / "split", str(tmp_path / "last.model")
    first = make_manager(lr=0.5)
    saving = LastCheckpoint(first, path, freq=100, save_every_n_steps=5)
    with pytest.raises(RuntimeError, match="interrupted"):
        first.fit(DATA, epochs=3, val_dataset=DATA, callbacks_list=[logger(folder), saving, Interrupt()])
    resumed = make_manager(lr=0.5, seed=3)
    resumed.fit(DATA, epochs=3, val_dataset=DATA, callbacks_list=[logger(folder)], resume_from=path)

    runs = read_runs(folder)
    assert len(runs) == 2  # one run file a start (their folders are named by the second they started)
    (interrupted,) = [run for run in runs if run["rewound_to"] is None]
    (again,) = [run for run in runs if run["rewound_to"] is not None]
    assert again["id"] == interrupted["id"] and again["rewound_to"] == 5  # the checkpoint's step
    assert min(again["rows"]) == 6  # the resumed start logs the steps after it
    assert max(interrupted["rows"]) == 9  # the interrupted start had logged on to update 9
    (expected,) = read_runs(tmp_path / "whole")
    got = shown([interrupted, again])
    assert sorted(got) == sorted(expected["rows"]) == list(range(1, 13))
    for step, row in expected["rows"].items():
        assert got[step] == pytest.approx(row, rel=1e-6), step


def test_importing_the_package_does_not_import_wandb_and_a_missing_one_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    code = "import sys, torchmanager_callbacks; print('wandb' in sys.modules)"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
        == "False"
    )
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(
        ImportError,
        match=r'`WandbLogger` needs the wandb package, which is not installed; install it with `pip install "torchmanager-callbacks\[wandb\]"`',
    ):
        WandbLogger()
    with pytest.raises(
        ValueError, match=r"`mode` must be 'online', 'offline', 'disabled' or None. Received: mode='local'"
    ):
        monkeypatch.delitem(sys.modules, "wandb")
        WandbLogger(mode="local")
