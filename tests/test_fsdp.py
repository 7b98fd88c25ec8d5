"""FSDP2 under torchrun on the CPU (gloo): training, evaluation and sharded checkpoints equal one process's run.

Three launches: `fsdp_train.py` on 2 processes (training cases, evaluation, checkpoints), then
`fsdp_resume.py` on 1 and on 3 processes resuming its checkpoints, and `fsdp_kill.py`, killed during an
asynchronous save. The references are independent: one process with plain torch (no FSDP, no
torchmanager), over the same global batches; evaluation outputs of a plain model with the same weights;
checkpoints read back in this process. The tests without the `slow` mark run in this process alone.
"""

from __future__ import annotations

import contextlib
import errno
import fractions
import os
import pathlib
import pickle
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.distributed.checkpoint.filesystem import FileSystemWriter
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.distributed.checkpoint.state_dict_saver import save as dcp_save

from tests.run_records import assert_same_tensors
from tests.scripts.fsdp_common import GLOBAL_BATCH, SAMPLES, Net, data, epoch_order, share, train
from tests.test_torchrun import SCRIPTS, TIMEOUT, torchrun
from torchmanager_core.checkpoint import CheckpointError, CheckpointWriteError, load
from torchmanager_core.checkpoint.reshard import check_new_world, random_layers, rank_random_state
from torchmanager_core.checkpoint.sharded import (
    COMPLETE,
    ShardedCheckpointer,
    is_sharded_checkpoint,
    load_sharded,
    save_full_state_dict,
)
from torchmanager_core.strategy.base import Strategy
from torchmanager_core.strategy.fsdp import FSDP2Strategy
from torchmanager_core.strategy.lockstep import lockstep

CPU = torch.device("cpu")


def largest_difference(expected: Mapping[str, torch.Tensor], actual: Mapping[str, torch.Tensor]) -> float:
    assert expected.keys() == actual.keys()
    return max(float((expected[name].float() - actual[name].float()).abs().max()) for name in expected)


def whole(path: Path) -> dict[str, torch.Tensor]:
    """The whole state dict `save_full_state_dict` wrote (a single-file checkpoint's "model"), read without code."""
    return torch.load(path, weights_only=True)["model"]  # type: ignore[no-any-return]


def plain_model(weights: Mapping[str, torch.Tensor]) -> Net:
    model = Net()
    model.load_state_dict(weights)
    return model


# ---------------------------------------------------------------- training on 2 processes, against one


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One launch of fsdp_train.py on 2 processes: its folder and each rank's records."""
    out = tmp_path_factory.mktemp("fsdp")
    done = torchrun(SCRIPTS / "fsdp_train.py", str(out), cwd=out, processes=2)
    assert done.returncode == 0, done.stderr[-5000:]
    return {"out": out, "ranks": [torch.load(out / f"rank{rank}.pt", weights_only=False) for rank in (0, 1)]}


@pytest.mark.slow
def test_fp32_training_with_accumulation_and_clipping_equals_one_process(trained: dict[str, Any]) -> None:
    """3 epochs, updates over 2 batches, clipped at 0.5, Adam: one process takes each step's 12 samples at once.

    FSDP reduces the mean of each process's gradient (over its 6 samples, divided by the window):
    the gradient of the mean over the 12. The clipped norms, over every shard, are the whole model's.
    """
    torch.manual_seed(0)
    model = Net()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    norms: list[torch.Tensor] = []
    for epoch in range(3):
        norms += train(
            model, share(epoch, 0, 1, 0), optimizer, window=2,
            clip=lambda: torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5),
        )  # fmt: skip
    weights = whole(trained["out"] / "fp32.pt")
    assert largest_difference(model.state_dict(), weights) < 1e-6  # measured 6e-8
    for rank in trained["ranks"]:
        assert torch.allclose(rank["fp32_norms"], torch.stack(norms), rtol=1e-5, atol=0)
    assert max(norms) > 0.5  # clipping did act
    assert trained["ranks"][0]["fp32_units"] == ["", "blocks.0", "blocks.1"]


@pytest.mark.slow
def test_bf16_policy_with_accumulation_equals_one_process_within_bfloat16_rounding(trained: dict[str, Any]) -> None:
    """bf16-mixed: each forward uses the weights rounded to bfloat16 (inputs too), gradients are reduced in
    float32 into float32 weights. The one-process reference rounds its float32 weights the same way."""
    torch.manual_seed(1)
    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    start = {name: tensor.clone() for name, tensor in model.state_dict().items()}

    def forward(x: torch.Tensor) -> torch.Tensor:
        rounded = {name: parameter.to(torch.bfloat16) for name, parameter in model.named_parameters()}
        return torch.func.functional_call(model, rounded, (x.to(torch.bfloat16),))  # type: ignore[no-any-return]

    for epoch in range(2):
        train(forward, share(epoch, 0, 1, 0), optimizer, window=2)
    weights = whole(trained["out"] / "bf16.pt")
    assert largest_difference(model.state_dict(), weights) < 2e-3  # measured 5.4e-4
    assert largest_difference(start, model.state_dict()) > 0.1  # against weights that moved 0.21
    assert all(
        rank["bf16_output_dtype"] == "torch.float32" for rank in trained["ranks"]
    )  # the root gives float32, as autocast


@pytest.mark.slow
def test_model_on_meta_device_is_initialised_as_one_process_from_rank0s_random_state(trained: dict[str, Any]) -> None:
    """Rank 0 seeded 3, rank 1 seeded 4; one process seeded 3 would allocate the model whole and reset each
    submodule, children first. Rank 0's generator goes on from there; rank 1 keeps its own."""
    torch.manual_seed(3)
    with torch.device("meta"):
        model = Net(norm=True)
    model.to_empty(device="cpu")
    model.apply(lambda module: module.reset_parameters() if hasattr(module, "reset_parameters") else None)  # type: ignore[operator]
    after = torch.rand(3)
    assert_same_tensors(model.state_dict(), whole(trained["out"] / "meta.pt"), "meta")
    assert torch.equal(trained["ranks"][0]["meta_next_draw"], after)
    torch.manual_seed(4)
    assert torch.equal(trained["ranks"][1]["meta_next_draw"], torch.rand(3))


@pytest.mark.slow
def test_user_sharded_model_is_used_as_it_is_and_wrong_setups_are_refused(trained: dict[str, Any]) -> None:
    for rank in trained["ranks"]:
        assert rank["user_detected"] and rank["user_same_model"] and rank["user_same_optimizer"]
        expected = {
            "user_precision": r"ValueError: The model was sharded with `fully_shard` before it was given, so its mixed "
            r"precision is the `mp_policy` given to `fully_shard`; pass precision='32'.*Received: precision='bf16-mixed'",
            "user_partial": r"ValueError: Submodules of the model were sharded with `fully_shard` but not its root.*"
            r"Received: sharded submodules \['blocks.0'\]",
            "user_stale": r"ValueError: The optimizer holds state over the parameters sharding replaced.*Build the "
            r"optimizer after sharding, or give a factory.*Received: optimizer=Adam with 8 such parameter\(s\)",
            "user_foreign": r"ValueError: The optimizer holds parameters that are not the model's.*"
            r"Received: optimizer=SGD with 8 such parameter\(s\)",
            "user_typo": r"ValueError: The sharding policy names module classes the model does not contain \(Conv2d\).*"
            r"Received: units=\(Conv2d\)",
        }
        expected["user_half_meta"] = (
            r"ValueError: The model is partly on the meta device; .*Received: 2 of 8 parameters and buffers on meta"
        )
        for key, pattern in expected.items():
            assert re_match(pattern, rank[key]), (key, rank[key])


@pytest.mark.slow
def test_float16_steps_are_skipped_by_every_process_when_one_shard_overflows(trained: dict[str, Any]) -> None:
    """Each process sees only its shards' gradients; torch's GradScaler, unscaling DTensors, agrees over every
    process on skipping (a step taken by one process and skipped by another would tear the model apart)."""
    for rank in trained["ranks"]:
        assert rank["sixteen_False"] == (True, 1.0, "torch.float32")  # the root gives float32, as autocast
        assert rank["sixteen_True"] == (False, 0.5, "torch.float32")


def re_match(pattern: str, text: str) -> bool:
    import re

    return re.match(pattern, text, re.DOTALL) is not None


def assert_lockstep_pass(
    record: Mapping[str, Any],
    ranks: list[Mapping[str, Any]],
    weights: Mapping[str, torch.Tensor],
    name: str,
    batches: int,
    stand_ins: list[int],
) -> None:
    """The outputs of the batches in order equal a plain model's bit for bit; each sample counted once."""
    model = plain_model(weights)
    x, _ = data()
    with torch.no_grad():
        expected = [model(x[i : i + 4]) for i in range(0, 4 * batches, 4)]
    assert_same_tensors(expected, record[f"{name}_outputs"], name)
    assert record[f"{name}_counted"] == 4 * batches
    assert [rank[f"{name}_stand_ins"] for rank in ranks] == stand_ins


@pytest.mark.slow
def test_lockstep_evaluation_on_2_processes_equals_one_process(trained: dict[str, Any]) -> None:
    """5 batches dealt 3 and 2: rank 1 runs one stand-in forward; sized and unsized shares alike."""
    weights = whole(trained["out"] / "fp32.pt")
    for name in ("eval5", "eval5_unsized"):
        for record in trained["ranks"]:
            assert_lockstep_pass(record, trained["ranks"], weights, name, 5, [0, 1])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resume", "ddp"])
def test_checkpoint_by_2_processes_loads_in_one_plain_process(trained: dict[str, Any], name: str) -> None:
    """The shards of FSDP2 (or DDP's replicas) load into a plain model and Adam in this process, with no
    process group; the weights are those at the save, and training on from the saved position (the rest of
    epoch 0, then epoch 1, in steps of 12) ends where the uninterrupted 2-process run ended."""
    out = trained["out"]
    model = Net()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    tensors = dict(zip(("model", "optimizer"), get_state_dict(model, optimizer)))
    loaded = load_sharded(out / f"{name}.ckpt", tensors)
    set_state_dict(model, optimizer, model_state_dict=tensors["model"], optim_state_dict=tensors["optimizer"])
    assert_same_tensors(whole(out / f"{name}_at_save.pt"), model.state_dict(), name)
    assert loaded.run == {"epoch": 0, "position": 24, "global_step": 2, "history": [{"loss": 1.5}]}
    assert loaded.world_size == 2 and [int(own["rank"]) for own in loaded.ranks] == [0, 1]
    train(model, share(0, loaded.run["position"], 1, 0), optimizer)
    train(model, share(1, 0, 1, 0), optimizer)
    assert largest_difference(whole(out / f"{name}_end.pt"), model.state_dict()) < 1e-6


@pytest.mark.slow
def test_asynchronous_saves_every_10_steps_hold_each_save_steps_weights(trained: dict[str, Any]) -> None:
    """Training went on while each save was written: the complete checkpoint holds step 40's weights, not
    those after the 2 steps trained during its write; the versions before it are removed."""
    folder = trained["out"] / "async.ckpt"
    tensors = {"model": Net().state_dict()}
    loaded = load_sharded(folder, tensors)
    assert loaded.run == {"global_step": 40}
    assert_same_tensors(whole(trained["out"] / "async_at_40.pt"), tensors["model"], "async")
    complete, failed = sorted(name for name in os.listdir(folder) if name != COMPLETE)  # older ones removed
    assert load(folder / COMPLETE)["version"] == complete and complete.startswith("v000004-")
    assert failed.startswith("v000005-")  # the failed fifth save's part, removed by the next complete save
    for rank in trained["ranks"]:  # the fifth save failed on rank 1's disk: both ranks raised, none hung
        assert re_match(r"CheckpointWriteError: Cannot save sharded checkpoint `.*async.ckpt`: writing it failed "
                        r"\(OSError: \[Errno 28\] No space left on device\); the previous checkpoint", rank["async_failed"])  # fmt: skip


# ---------------------------------------------------------------- resumed on 1 and on 3 processes


@pytest.fixture(scope="module", params=[1, 3], ids=["1 process", "3 processes"])
def resumed(request: pytest.FixtureRequest, trained: dict[str, Any]) -> dict[str, Any]:
    world, out = request.param, trained["out"]
    done = torchrun(SCRIPTS / "fsdp_resume.py", str(out), cwd=out, processes=world)
    assert done.returncode == 0, done.stderr[-5000:]
    ranks = [torch.load(out / f"resumed{world}_rank{rank}.pt", weights_only=False) for rank in range(world)]
    return {"world": world, "out": out, "ranks": ranks}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resume", "ddp"])
def test_resume_on_another_number_of_processes_trains_each_remaining_sample_once(
    resumed: dict[str, Any], name: str
) -> None:
    """Saved by 2 processes (batches of 6) after 24 samples of epoch 0, resumed by M with batches of 12 / M:
    the weights load exactly, the rest of epoch 0 and all of epoch 1 are trained once each, and the run
    ends where the uninterrupted one did (the sums of other processes are added in another order)."""
    out, world, ranks = resumed["out"], resumed["world"], resumed["ranks"]
    at_save = whole(out / f"{name}_at_save.pt")
    assert_same_tensors(at_save, whole(out / f"resumed{world}_{name}_at_load.pt"), name)
    rest = sorted(i for rank in ranks for i in rank[f"{name}_trained"][0])
    assert rest == sorted(epoch_order(0)[2 * GLOBAL_BATCH :].tolist())  # each once: sorted lists, not sets
    assert sorted(i for rank in ranks for i in rank[f"{name}_trained"][1]) == list(range(SAMPLES))
    end = whole(out / f"{name}_end.pt")
    assert largest_difference(end, whole(out / f"resumed{world}_{name}_end.pt")) < 1e-6
    assert all(rank[f"{name}_saved_world"] == 2 and rank[f"{name}_run"]["position"] == 24 for rank in ranks)


@pytest.mark.slow
def test_lockstep_evaluation_on_1_and_3_processes_equals_one_process(resumed: dict[str, Any]) -> None:
    """On 3 processes 5 batches are dealt 2, 2, 1 and 2 batches 1, 1, 0: the process without a batch borrows
    one for its stand-in. No pass hangs; every output is the plain model's."""
    world, ranks = resumed["world"], resumed["ranks"]
    weights = whole(resumed["out"] / f"resumed{world}_resume_end.pt")
    stand_ins = [0] * world if world == 1 else [0, 0, 1]
    for record in ranks:
        assert_lockstep_pass(record, ranks, weights, "eval5", 5, stand_ins)
        assert_lockstep_pass(record, ranks, weights, "eval2", 2, stand_ins)
        assert_lockstep_pass(record, ranks, weights, "eval2_unsized", 2, stand_ins)


# ---------------------------------------------------------------- a kill during an asynchronous write


@pytest.mark.slow
@pytest.mark.parametrize("point", ["data", "commit"])
def test_kill_during_asynchronous_write_leaves_the_previous_checkpoint_loadable(tmp_path: Path, point: str) -> None:
    """SIGKILL once every process wrote its shards (no `.metadata` yet; 2 processes under torchrun), or once
    `.metadata` is written but `complete.pt` not (one process): the first checkpoint loads, whole; the next
    save removes the partial version."""
    script = str(SCRIPTS / "fsdp_kill.py")
    processes = 2 if point == "data" else 1
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TORCHMANAGER_DIST_TIMEOUT": "120"}
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"] if processes == 2 else []
    process = subprocess.Popen(
        [sys.executable, *launcher, script, str(tmp_path), point], cwd=tmp_path, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    markers = [tmp_path / f"stopped{rank}" for rank in range(processes)]
    try:
        deadline = time.monotonic() + TIMEOUT
        while not all(marker.exists() and marker.read_text() for marker in markers):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the writer ended or hung before the kill point:\n{process.communicate()[0][-5000:]}")
            time.sleep(0.1)
        for marker in markers:  # torchrun starts each worker in a session of its own
            os.kill(int(marker.read_text()), signal.SIGKILL)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
    folder = tmp_path / "ckpt"
    tensors = {"model": Net().state_dict()}
    loaded = load_sharded(folder, tensors)
    assert loaded.run == {"global_step": 1} and loaded.world_size == processes
    assert_same_tensors(whole(tmp_path / "first.pt"), tensors["model"], "first")
    partial = [name for name in os.listdir(folder) if name not in (COMPLETE, load(folder / COMPLETE)["version"])]
    assert len(partial) == 1 and (".metadata" in os.listdir(folder / partial[0])) == (point == "commit")
    ShardedCheckpointer().save(folder, tensors, run={"global_step": 3})
    assert partial[0] not in os.listdir(folder) and load_sharded(folder, {}).run == {"global_step": 3}


# ---------------------------------------------------------------- in this process


class Plain(Strategy):
    def setup(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        return model.to(device)


def test_fsdp_outside_torchrun_is_refused() -> None:
    with pytest.raises(
        RuntimeError, match=r"launch the script with `torchrun --nproc_per_node=N script.py` \(N=1 works\)"
    ):
        FSDP2Strategy().setup(Net(), CPU)


def test_precision_names_map_to_mixed_precision_policies() -> None:
    strategy = FSDP2Strategy()
    expected = {
        "32": (None, None), "32-true": (None, None), "bf16-mixed": (torch.bfloat16, torch.float32),
        "bf16": (torch.bfloat16, torch.float32), "bf16-true": (None, torch.float32),
        "16-mixed": (torch.float16, torch.float32), "16": (torch.float16, torch.float32),
    }  # fmt: skip
    for name, (param_dtype, reduce_dtype) in expected.items():
        policy = strategy.mixed_precision(name)
        assert (policy.param_dtype, policy.reduce_dtype) == (param_dtype, reduce_dtype), name
    assert FSDP2Strategy(precision="bf16").precision == "bf16-mixed"
    for wrong in ("fp8", "64", 16):
        with pytest.raises(ValueError, match=r"`precision` must be one of .* with FSDP2: .*Received: precision="):
            FSDP2Strategy(precision=wrong)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"Received: precision='fp8'"):
        strategy.precision = "fp8"


def test_sharding_policy_takes_classes_or_a_predicate() -> None:
    assert FSDP2Strategy(units=torch.nn.Linear).units == (torch.nn.Linear,)
    assert FSDP2Strategy(units=[torch.nn.Linear, torch.nn.Conv2d]).units == (torch.nn.Linear, torch.nn.Conv2d)
    predicate: Callable[[torch.nn.Module], bool] = lambda module: isinstance(module, torch.nn.Linear)  # noqa: E731
    assert FSDP2Strategy(units=predicate).units is predicate
    for wrong in ("Linear", [torch.nn.Linear, "Block"], 3):
        with pytest.raises(TypeError, match=r"`units` must be torch.nn.Module classes .* Received: units="):
            FSDP2Strategy(units=wrong)  # type: ignore[arg-type]


def test_optimizer_factory_must_build_an_optimizer() -> None:
    model = Net()
    optimizer = Plain().prepare_optimizer(model, lambda params: torch.optim.SGD(params, lr=0.1))
    assert [p for group in optimizer.param_groups for p in group["params"]] == list(model.parameters())
    with pytest.raises(
        TypeError, match=r"a function of the model's parameters returning one. Received: optimizer=list"
    ):
        Plain().prepare_optimizer(model, lambda params: list(params))  # type: ignore[arg-type,return-value]


def test_lockstep_in_one_process_yields_the_batches_and_runs_no_stand_in() -> None:
    calls: list[Any] = []
    assert list(lockstep([1, 2, 3], calls.append)) == [1, 2, 3] and calls == []


def saved_values() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    torch.manual_seed(0)
    model = Net()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    model(torch.ones(2, 6)).sum().backward()
    optimizer.step()
    tensors = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
    run = {"epoch": 2, "history": [{"loss": 0.5}], "callbacks": {"Best": {"best": torch.tensor(0.25)}}}
    return tensors, run, {"random": torch.get_rng_state()}


def fresh_tensors() -> dict[str, Any]:
    model = Net()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    model(torch.ones(2, 6)).sum().backward()
    optimizer.step()  # a state of the same layout, other values
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict()}


def test_single_process_checkpoint_round_trip_and_layout(tmp_path: Path) -> None:
    tensors, run, own = saved_values()
    folder = tmp_path / "last"
    ShardedCheckpointer().save(folder, tensors, run=run, rank=own)
    (version,) = [name for name in os.listdir(folder) if name != COMPLETE]
    assert sorted(os.listdir(folder / version)) == [".metadata", "__0_0.distcp", "rank0.pt", "run.pt"]
    assert load(folder / COMPLETE)["version"] == version and is_sharded_checkpoint(folder)
    template = fresh_tensors()
    loaded = load_sharded(folder, template)
    assert_same_tensors(tensors, template, "tensors")
    assert_same_tensors(run, loaded.run, "run")
    assert_same_tensors([own], loaded.ranks, "ranks")
    ShardedCheckpointer().save(folder, tensors, run={"epoch": 3})
    (second,) = [name for name in os.listdir(folder) if name != COMPLETE]
    assert second.startswith("v000002-") and load_sharded(folder, {}).run == {"epoch": 3}


def test_paths_that_hold_no_sharded_checkpoint_are_refused(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"Sharded checkpoint `.*missing` does not exist"):
        load_sharded(tmp_path / "missing", {})
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"holds no complete sharded checkpoint \(no `complete.pt`"):
        load_sharded(tmp_path / "empty", {})
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(CheckpointError, match=r"`.*file` is a file, and a sharded checkpoint is a folder"):
        ShardedCheckpointer().save(tmp_path / "file", {"w": torch.ones(1)})
    with pytest.raises(TypeError, match=r"Checkpoint payload values must be .* Received: run\['epoch'\]=Fraction"):
        ShardedCheckpointer().save(tmp_path / "bad", {"w": torch.ones(1)}, run={"epoch": fractions.Fraction(1, 3)})
    assert not is_sharded_checkpoint(tmp_path / "bad")


class Touch:
    """Unpickling it creates a file: the proof that loading ran code from a checkpoint."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> Any:
        return (pathlib.Path.touch, (self.path,))


def test_loading_runs_no_code_from_the_index_or_the_values(tmp_path: Path) -> None:
    """DCP (torch 2.13) unpickles `.metadata` and non-tensor values in full; ours refuses anything but DCP's
    metadata classes and plain values."""
    proof = tmp_path / "code_ran"
    values = tmp_path / "values"
    with pytest.raises(
        TypeError, match=r"`tensors\['extra'\]` is a Touch, which loading could only rebuild by running"
    ):
        ShardedCheckpointer().save(values, {"w": torch.ones(2), "extra": Touch(proof)})
    ShardedCheckpointer().save(values, {"w": torch.ones(2), "extra": 1})
    version = load(values / COMPLETE)["version"]
    shutil.rmtree(values / version)
    dcp_save({"w": torch.ones(2), "extra": Touch(proof)}, checkpoint_id=values / version, no_dist=True)  # by hand
    assert not proof.exists()
    with pytest.raises(
        CheckpointError, match=r"The value `extra` of a sharded checkpoint holds Python objects, .*refused"
    ):
        load_sharded(values, {"w": torch.zeros(2), "extra": None})
    index = tmp_path / "index"
    ShardedCheckpointer().save(index, {"w": torch.ones(2)})
    version = load(index / COMPLETE)["version"]
    (index / version / ".metadata").write_bytes(pickle.dumps(Touch(proof)))
    with pytest.raises(CheckpointError, match=r"names Python objects other than DCP's metadata .*it was refused"):
        load_sharded(index, {"w": torch.zeros(2)})
    assert not proof.exists()


def test_asynchronous_save_copies_the_tensors_before_it_returns(tmp_path: Path) -> None:
    weights = torch.arange(6.0)
    saver = ShardedCheckpointer(async_save=True)
    saver.save(tmp_path / "a", {"w": weights})
    weights.mul_(-1)  # training goes on
    saver.close()
    template = {"w": torch.zeros(6)}
    load_sharded(tmp_path / "a", template)
    assert torch.equal(template["w"], torch.arange(6.0))


def test_failed_asynchronous_write_raises_at_the_next_wait_once_and_keeps_the_previous(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    saver = ShardedCheckpointer(async_save=True)
    saver.save(tmp_path / "c", {"w": torch.ones(3)}, run={"step": 1})
    saver.wait()

    def full_disk(*args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(FileSystemWriter, "write_data", full_disk)
    saver.save(tmp_path / "c", {"w": torch.zeros(3)}, run={"step": 2})
    with pytest.raises(
        CheckpointWriteError, match=r"writing it failed .*No space left on device.*the previous checkpoint"
    ) as caught:
        saver.wait()
    assert caught.value.errno == errno.ENOSPC
    saver.wait()  # raised once
    saver.close()
    template = {"w": torch.zeros(3)}
    assert load_sharded(tmp_path / "c", template).run == {"step": 1} and torch.equal(template["w"], torch.ones(3))


def test_whole_state_dict_file_for_inference(tmp_path: Path) -> None:
    model = Net()
    save_full_state_dict(model, tmp_path / "model.pt")
    assert_same_tensors(model.state_dict(), whole(tmp_path / "model.pt"), "state")
    assert os.listdir(tmp_path) == ["model.pt"]
    with pytest.raises(
        CheckpointError, match=r"Cannot save checkpoint `.*model.pt`: its folder `.*missing` does not exist"
    ):
        save_full_state_dict(model, tmp_path / "missing" / "model.pt")


# ---------------------------------------------------------------- resuming on another number of processes


def states(*seeds: int) -> list[dict[str, Any]]:
    """`random.get_rng_state()`-like states: torch's generator from each seed, Python's differing anyway."""
    return [
        {"torch": torch.Generator().manual_seed(seed).get_state(), "python": index} for index, seed in enumerate(seeds)
    ]


def test_resume_on_as_many_processes_is_never_refused() -> None:
    check_new_world(2, 2, random_states=states(1, 2), samples_per_update=(12, 8), model=torch.nn.Dropout())


def test_resume_on_another_number_continues_when_nothing_belongs_to_one_process() -> None:
    alike, own = states(5, 5), states(5, 6)
    check_new_world(2, 3, random_states=alike, samples_per_update=(12, 12), model=Net())
    assert rank_random_state(alike, 2) is alike[0] and rank_random_state(own, 1) is own[1]
    assert rank_random_state(own, 2) is None


@pytest.mark.parametrize(
    ("saved", "now", "seeds", "model", "reason"),
    [
        (2, 3, (5, 5), None, r"each update would see 9 samples instead of 12 .*give each process a batch of 4 samples"),
        (2, 3, (5, 6), None, r"the 2 processes drew from torch random states of their own \(seeded per process\)"),
        (3, 2, (5, 5, 5), torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.1)),
         r"the model draws random numbers in training \(`1`\), and on 2 processes the draws fall on other samples"),
        (2, 1, (5, 5), torch.nn.TransformerEncoderLayer(4, 2, 8), r"draws random numbers in training \(`self_attn`, `dropout`, `dropout1`, \.\.\.\)"),
    ],
)  # fmt: skip
def test_resume_that_would_not_be_the_same_run_is_refused_unless_allowed(
    saved: int, now: int, seeds: tuple[int, ...], model: torch.nn.Module | None, reason: str
) -> None:
    samples = (12, 9) if "samples" in reason else (12, 12)
    arguments: dict[str, Any] = {"random_states": states(*seeds), "samples_per_update": samples, "model": model}
    with pytest.raises(ValueError, match=rf"A checkpoint written by {saved} processes cannot continue the same run on {now}: .*{reason}.*"
                       rf"pass `allow_divergence=True`.*Received: saved_world_size={saved}, world_size={now}"):  # fmt: skip
        check_new_world(saved, now, **arguments)
    check_new_world(saved, now, **arguments, allow_divergence=True)


def test_random_layers_are_those_drawing_in_training() -> None:
    model = torch.nn.Sequential(torch.nn.Dropout(0.0), torch.nn.Dropout2d(0.5), torch.nn.RReLU(), torch.nn.ReLU())
    assert random_layers(model) == ["1", "2"]
