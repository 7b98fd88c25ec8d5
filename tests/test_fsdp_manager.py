"""`Manager(..., strategy=FSDP2)` under torchrun on the CPU (gloo), end to end, against one plain process (issue 24).

Launches (each torchrun start costs seconds, so every case of a kind shares one): `fsdp_manager.py train` on
2 processes, `fsdp_manager.py resume` on 1 and on 3 (they resume the checkpoint the 2 processes wrote), and
`fsdp_kill_manager.py` killed (SIGKILL) or preempted (SIGTERM) mid-epoch, then run again. The references are
independent: one process with plain torch (no FSDP, no torchmanager) over the same global batches, a plain
model loaded with the whole weights for evaluation, the sample ids each process loaded, and the
uninterrupted run for the kills.
"""

from __future__ import annotations

import collections
import re
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from tests.scripts.fsdp_common import Block, Net, data  # Block: the example's too
from tests.test_torchrun import SCRIPTS, torchrun
from tests.workspace import ROOT
from torchmanager_core import checkpoint
from torchmanager_core.checkpoint.sharded import load_sharded, read_plain

pytestmark = pytest.mark.slow
EPOCHS = 3


def whole(path: Path) -> dict[str, torch.Tensor]:
    """The whole weights `save_full_state_dict` wrote (read without running code)."""
    return torch.load(path, weights_only=True)["model"]  # type: ignore[no-any-return]


def largest_difference(expected: dict[str, torch.Tensor], actual: dict[str, torch.Tensor]) -> float:
    assert expected.keys() == actual.keys()
    return max(float((expected[name].float() - actual[name].float()).abs().max()) for name in expected)


def order(epoch: int) -> torch.Tensor:
    """The epoch's sample order: `DistributedSampler(seed=0)` draws `randperm(72)` from seed 0 + epoch."""
    return torch.randperm(72, generator=torch.Generator().manual_seed(epoch))


def one_process(forward: Any = None, clip: float | None = None) -> tuple[Net, list[float]]:
    """Plain torch: Adam (lr 0.01) over each update's 24 samples, taken as two batches of 12 each divided by 2 (the
    accumulation window), clipped to `clip`; the validation loss on samples 0..19 after each epoch."""
    torch.manual_seed(0)
    model = Net()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    x, y = data()
    validation = []
    for epoch in range(EPOCHS):
        for update in range(3):
            for half in range(2):
                ids = order(epoch)[24 * update + 12 * half : 24 * update + 12 * half + 12]
                logits = model(x[ids]) if forward is None else forward(model, x[ids])
                (F.cross_entropy(logits, y[ids]) / 2).backward()
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            optimizer.step()
            optimizer.zero_grad()
        with torch.no_grad():
            validation.append(F.cross_entropy(model(x[:20]), y[:20]).item())
    return model, validation


def bf16_forward(model: Net, x: torch.Tensor) -> torch.Tensor:
    """bf16-mixed as FSDP2's policy runs it: weights and input rounded to bfloat16, the output given back in float32."""
    rounded = {name: parameter.to(torch.bfloat16) for name, parameter in model.named_parameters()}
    return torch.func.functional_call(model, rounded, (x.to(torch.bfloat16),)).float()  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("fsdp_manager")
    done = torchrun(SCRIPTS / "fsdp_manager.py", str(out), "train", cwd=out, processes=2)
    assert done.returncode == 0, done.stderr[-5000:]
    ranks = [torch.load(out / f"train2_rank{rank}.pt", weights_only=False) for rank in (0, 1)]
    return {"out": out, "ranks": ranks}


def test_bf16_training_with_accumulation_equals_one_process_within_bfloat16_rounding(trained: dict[str, Any]) -> None:
    """3 epochs, units = Block, bf16-mixed mapped to FSDP2's policy, accumulation over 2 batches, Adam from a factory."""
    model, _ = one_process(bf16_forward)
    weights = whole(trained["out"] / "bf16.pt")
    difference = largest_difference(model.state_dict(), weights)
    assert difference < 2e-3  # measured 6.0e-4, with the weights moved 0.087 from their start (below)
    torch.manual_seed(0)
    assert largest_difference(Net().state_dict(), weights) > 0.05
    assert trained["ranks"][0]["bf16_units"] == ["", "blocks.0", "blocks.1"]


def test_asynchronous_sharded_saves_of_last_checkpoint_hold_the_last_updates_weights(trained: dict[str, Any]) -> None:
    """`LastCheckpoint(save_every_n_steps=1, background=True)`: the folder's complete version, read in one plain
    process, holds the end of the run (its last save came after the last update, and `fit` waited for it)."""
    tensors = {"model": Net().state_dict()}
    loaded = load_sharded(trained["out"] / "bf16.ckpt", tensors)
    assert loaded.world_size == 2 and loaded.run["global_step"] == 9 and loaded.run["epoch"] == EPOCHS
    assert largest_difference(whole(trained["out"] / "bf16.pt"), tensors["model"]) == 0.0
    versions = [path for path in (trained["out"] / "bf16.ckpt").iterdir() if path.is_dir()]
    assert versions == [Path(loaded.folder)]  # each complete save removed the one before
    after = {"model": Net().state_dict()}
    assert load_sharded(trained["out"] / "after.ckpt", after).run["global_step"] == 9  # saved after `fit`
    assert largest_difference(tensors["model"], after["model"]) == 0.0


def test_test_after_a_bf16_fit_runs_on_the_model_fit_sharded(trained: dict[str, Any]) -> None:
    """The model stays sharded after `fit`; a later `test` takes it as it is (with its bf16-mixed policy): the loss of
    a plain model with the whole weights, computed as the policy computes it, in bfloat16."""
    model = Net()
    model.load_state_dict(whole(trained["out"] / "bf16.pt"))
    x, y = data()
    with torch.no_grad():
        expected = F.cross_entropy(bf16_forward(model, x[:20]), y[:20]).item()
    for record in trained["ranks"]:
        assert record["bf16_test"]["loss"] == pytest.approx(expected, rel=1e-3)


def test_meta_model_trains_and_validates_like_one_process(trained: dict[str, Any]) -> None:
    """strategy="fsdp", a model built on the meta device, accumulation 2, clipping at 0.5, validation on 5 batches
    (shares of 3 and 2 batches) after each epoch."""
    model, validation = one_process(clip=0.5)
    assert largest_difference(model.state_dict(), whole(trained["out"] / "fp32.pt")) < 1e-6  # measured 6e-8
    for record in trained["ranks"]:
        assert [epoch["val_loss"] for epoch in record["fp32_history"]] == pytest.approx(validation, rel=1e-6)


@pytest.mark.parametrize("world", [2, 1, 3])
def test_test_and_predict_on_uneven_shares_equal_one_process(
    trained: dict[str, Any], resumed: dict[int, list[dict[str, Any]]], world: int
) -> None:
    """After training: `test` on 5 batches of 4 (shares 3+2; 5; 2+2+1) and on 2 (1+1; 2; 1+1+0, a process without
    a batch), `predict` on the 5, each process the values of all, against a plain model with the whole weights."""
    records = trained["ranks"] if world == 2 else resumed[world]
    name = "fp32.pt" if world == 2 else f"resumed{world}.pt"
    model = Net()
    model.load_state_dict(whole(trained["out"] / name))
    x, y = data()
    with torch.no_grad():
        five, two = F.cross_entropy(model(x[:20]), y[:20]).item(), F.cross_entropy(model(x[:8]), y[:8]).item()
        outputs = [model(x[i : i + 4]) for i in range(0, 20, 4)]
    for record in records:
        assert record["test5"]["loss"] == pytest.approx(five, rel=1e-6)
        assert record["test2"]["loss"] == pytest.approx(two, rel=1e-6)
        assert len(record["predict"]) == 5
        for expected, output in zip(outputs, record["predict"]):
            assert torch.allclose(output, expected, rtol=0, atol=1e-6)


@pytest.fixture(scope="module")
def resumed(trained: dict[str, Any]) -> dict[int, list[dict[str, Any]]]:
    """`two.ckpt`, written by 2 processes after update 2 of epoch 0, resumed by 1 and by 3."""
    out, records = trained["out"], {}
    for world in (1, 3):
        done = torchrun(SCRIPTS / "fsdp_manager.py", str(out), "resume", cwd=out, processes=world)
        assert done.returncode == 0, done.stderr[-5000:]
        records[world] = [torch.load(out / f"resume{world}_rank{rank}.pt", weights_only=False) for rank in range(world)]
    return records


@pytest.mark.parametrize("world", [1, 3])
def test_saved_by_2_resumed_by_1_and_3_trains_every_remaining_sample_once(
    trained: dict[str, Any], resumed: dict[int, list[dict[str, Any]]], world: int
) -> None:
    """The checkpoint holds the global position (48 samples of epoch 0's order): M processes with batches of 12 / M
    load the 24 samples left of epoch 0 and every sample of epochs 1 and 2, each once, and end at the
    uninterrupted run's weights within float tolerance (their sums are added in another order)."""
    run = read_plain(trained["out"] / "two.ckpt").run
    assert (run["epoch"], run["step"], run["global_step"], run["samples_done"], run["world_size"]) == (0, 4, 2, 48, 2)
    loaded = collections.Counter(index for record in resumed[world] for index in record["loaded"])
    expected = collections.Counter([*order(0)[48:].tolist(), *order(1).tolist(), *order(2).tolist()])
    assert loaded == expected
    assert largest_difference(whole(trained["out"] / "fp32.pt"), whole(trained["out"] / f"resumed{world}.pt")) < 1e-6
    uninterrupted = trained["ranks"][0]["fp32_history"]
    for record in resumed[world]:
        assert record["global_step"] == 9
        for epoch, summary in enumerate(record["history"]):  # epoch 0's training loss counts its first half too
            assert summary == pytest.approx(uninterrupted[epoch], rel=1e-6)


@pytest.mark.parametrize("world", [1, 3])
def test_resume_that_would_not_be_the_same_run_is_refused(resumed: dict[int, list[dict[str, Any]]], world: int) -> None:
    """Written by 2 processes seeded apart, with dropout: their draws have no counterpart on another number."""
    for record in resumed[world]:
        assert record["divergent"].startswith(
            f"A checkpoint written by 2 processes cannot continue the same run on {world}: the 2 processes drew from "
            "torch random states of their own"
        )
        assert "the model draws random numbers in training (`1`)" in record["divergent"]
        assert record["divergent"].endswith("Received: saved_world_size=2, world_size=" + str(world))


@pytest.mark.parametrize("mode", ["kill", "term"])
def test_killed_or_preempted_mid_epoch_then_run_again_is_bit_identical(trained: dict[str, Any], mode: str) -> None:
    """Dropout with per-process random streams; process 1 SIGKILLed after update 5 (the last checkpoint at update
    4), or every process sent SIGTERM after update 5 (the processes agree on it one batch later, in the
    background: saved at update 6): the same command again ends where the run that was never interrupted
    ends, bit for bit."""
    out = trained["out"]
    first = torchrun(SCRIPTS / "fsdp_kill_manager.py", str(out), mode, cwd=out, processes=2)
    assert first.returncode != 0
    if mode == "term":
        told = "SIGTERM received: training stopped after batch 6 of epoch 1 (optimizer update 6)"
        assert told in first.stdout + first.stderr
    again = torchrun(SCRIPTS / "fsdp_kill_manager.py", str(out), mode, cwd=out, processes=2)
    assert again.returncode == 0, again.stderr[-5000:]
    runs = (out / f"{mode}_runs.txt").read_text().splitlines()  # the update each run started at, its batches
    assert runs[-1] == ("4 8" if mode == "kill" else "6 6")  # from the last checkpoint: update 4, or 6 (SIGTERM)
    if mode == "term":
        assert runs == ["0 6", "6 6"]
    reference, resumed = whole(out / "none_final.pt"), whole(out / f"{mode}_final.pt")
    assert all(torch.equal(reference[name], resumed[name]) for name in reference)


def test_the_readme_example_trains_resumably_and_writes_whole_weights(tmp_path: Path) -> None:
    """`examples/fsdp.py` on 2 processes, as the README runs it: it learns (validation accuracy above 0.8 with the
    whole weights in a plain model), leaves a sharded `last.model`, and the README shows its code as it is."""
    example = ROOT / "examples" / "fsdp.py"
    done = torchrun(example, cwd=tmp_path, processes=2)
    assert done.returncode == 0, done.stderr[-5000:]
    folder = tmp_path / "experiments" / "fsdp.exp"
    assert checkpoint.is_sharded_folder(folder / "checkpoints" / "last.model")
    assert read_plain(folder / "checkpoints" / "last.model").run["epoch"] == 4
    torch.manual_seed(0)
    x = torch.randn(512, 16)
    plain = torch.nn.Sequential(torch.nn.Linear(16, 64), *(Block(64) for _ in range(4)), torch.nn.Linear(64, 4))
    plain.load_state_dict(whole(folder / "model.pt"))
    with torch.no_grad():
        accuracy = (plain(x[448:]).argmax(1) == x[448:, :4].argmax(1)).float().mean().item()
    assert accuracy > 0.8  # measured 0.95
    shown = re.search(r"`examples/fsdp.py`, which .*?\n```py\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL)
    assert shown is not None and shown.group(1) in example.read_text()
