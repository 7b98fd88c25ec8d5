"""What a checkpoint holds per process, under torchrun (2 CPU processes, DDP) and in one (issue 20 kinds 1 and 4,
issue 22 point 3).

One launch of `tests/scripts/ddp_rank_state.py` runs every torchrun case; each resumes, in the same processes,
a checkpoint its uninterrupted run wrote, into a new manager whose model has other weights and whose
processes' generators were left elsewhere, so everything must come from the checkpoint. The references are
the uninterrupted runs (bit for bit) and one plain-torch process over the same global batches. The cases
without the `slow` mark run in this process: the same kinds of state in one process, a model the user
compiled or wrapped, and saves inside an accumulation window.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from tests.scripts.ddp_rank_state import BATCH, SAMPLES, data
from tests.test_torchrun import SCRIPTS, torchrun
from torchmanager import Manager
from torchmanager.callbacks import Callback
from torchmanager_core import checkpoint
from torchmanager_core.errors import StopTraining
from torchmanager_core.strategy import unwrap


def same(expected: dict[str, torch.Tensor], actual: dict[str, torch.Tensor]) -> bool:
    return expected.keys() == actual.keys() and all(torch.equal(expected[name], actual[name]) for name in expected)


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    out = tmp_path_factory.mktemp("rank_state")
    done = torchrun(SCRIPTS / "ddp_rank_state.py", str(out), cwd=out, processes=2)
    assert done.returncode == 0, done.stderr[-5000:]
    return [torch.load(out / f"rank{rank}.pt", weights_only=False) for rank in (0, 1)]


@pytest.mark.slow
def test_mid_epoch_checkpoint_holds_every_processs_random_state_and_running_values(ranks: list[dict[str, Any]]) -> None:
    """Per-process seeds, dropout and an accuracy: resumed at update 3 (mid-epoch), each process goes on with its
    own generators and running sums (rank 0's given to both made the weights differ by 0.026): the weights and
    both epochs' loss and accuracy are the uninterrupted run's, bit for bit."""
    for record in ranks:
        case = record["seeds"]
        assert (case["saved"]["step"], case["saved"]["global_step"]) == (3, 3)
        mine, theirs = case["saved"]["ranks"]
        assert not torch.equal(mine["rng"]["generators"]["torch"], theirs["rng"]["generators"]["torch"])
        assert same(case["weights"], case["resumed"])
        assert case["resumed_history"] == case["history"]


@pytest.mark.slow
def test_checkpoint_asked_inside_an_accumulation_window_is_written_at_its_end(ranks: list[dict[str, Any]]) -> None:
    """Asked for after batch index 4, inside the window of batches 3..5: written after batch 5 (its update done),
    so the resumed run sums the same gradients (a file without them was off by up to 0.17)."""
    for record in ranks:
        case = record["window"]
        assert (case["saved"]["step"], case["saved"]["global_step"]) == (6, 2)
        assert case["saved"]["gradients"] == {}
        assert same(case["weights"], case["resumed"])


@pytest.mark.slow
def test_stop_inside_an_accumulation_window_saves_each_processs_gradients(ranks: list[dict[str, Any]]) -> None:
    """StopTraining with the same request after batch index 3 (effective after batch 4, under torchrun one batch later):
    the file is written where the run stopped, with
    each process's gradients of the open window (different under DDP's no_sync); resumed, the run ends at the
    uninterrupted run's weights, bit for bit."""
    grads = [record["stopped"]["saved"]["ranks"][rank]["gradients"] for rank, record in enumerate(ranks)]
    assert set(grads[0]) == {"0.weight", "0.bias", "3.weight", "3.bias"}
    assert not torch.equal(grads[0]["0.weight"], grads[1]["0.weight"])
    for record in ranks:
        assert record["stopped"]["saved"]["step"] == 5
        assert same(record["window"]["weights"], record["stopped"]["resumed"])


@pytest.mark.slow
def test_compiled_model_trains_compiled_under_ddp_with_no_sync_inside_windows(ranks: list[dict[str, Any]]) -> None:
    """`Manager(torch.compile(model, backend=counting))`, accumulation over 2 batches, 2 epochs of 8 batches a
    process: the compiled graph ran every training forward, DDP reduced once per update (8, not 16: `no_sync`
    held in the window's first batch), the checkpoint has the plain module's keys, and the weights equal one
    plain process over each update's 16 samples."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.Tanh(), torch.nn.Dropout(0.0), torch.nn.Linear(16, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.3)
    x, y = data()
    for epoch in range(2):
        order = torch.randperm(SAMPLES, generator=torch.Generator().manual_seed(epoch))  # DistributedSampler(seed=0)
        for update in range(SAMPLES // (4 * BATCH)):
            for half in range(2):
                ids = order[16 * update + 8 * half : 16 * update + 8 * half + 8]
                (F.cross_entropy(model(x[ids]), y[ids]) / 2).backward()
            optimizer.step()
            optimizer.zero_grad()
    for record in ranks:
        case = record["compiled"]
        assert case["calls"] == 16 and case["reductions"] == 8 and case["model_is_given"]
        assert case["keys"] == ["0.bias", "0.weight", "3.bias", "3.weight"]
        difference = max(
            float((case["weights"][name] - value).abs().max()) for name, value in model.state_dict().items()
        )
        assert difference < 1e-6


# ---------------------------------------------------------------- in this process


def counting_backend(calls: list[int]) -> Any:
    def backend(graph: torch.fx.GraphModule, inputs: Any) -> Any:
        def run(*args: Any) -> Any:
            calls[0] += 1
            return graph.forward(*args)

        return run

    return backend


def net(seed: int = 0, dropout: float = 0.0) -> torch.nn.Sequential:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(5, 16), torch.nn.Tanh(), torch.nn.Dropout(dropout), torch.nn.Linear(16, 3)
    )


def batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    x, y = data()
    return [(x[i : i + 8], y[i : i + 8]) for i in range(0, SAMPLES, 8)]


def test_user_compiled_model_trains_compiled_and_checkpoints_under_plain_keys(tmp_path: Path) -> None:
    """The compiled forward runs every training and validation batch (it ran 0 times), `manager.model` stays the
    user's compiled module, the checkpoint has the plain keys, and the weights equal the eager run's."""
    calls = [0]
    compiled = torch.compile(net(), backend=counting_backend(calls))
    manager = Manager(compiled, torch.optim.SGD(compiled.parameters(), lr=0.3), torch.nn.CrossEntropyLoss())
    manager.fit(batches(), epochs=2, val_dataset=batches()[:2], show_verbose=False)
    assert calls[0] == 2 * 8 + 2 * 2 and manager.model is compiled
    eager = net()
    manager_eager = Manager(eager, torch.optim.SGD(eager.parameters(), lr=0.3), torch.nn.CrossEntropyLoss())
    manager_eager.fit(batches(), epochs=2, val_dataset=batches()[:2], show_verbose=False)
    assert same(eager.state_dict(), net_state(compiled))
    manager.save_checkpoint(tmp_path / "compiled.model")
    saved = checkpoint.load(tmp_path / "compiled.model")
    assert same(saved["model"], eager.state_dict())


def test_compile_option_compiles_the_raw_model_before_the_strategy_wraps_it() -> None:
    """`compile={"backend": ...}` runs every training batch through the compiled graph, and gives the plain model back."""
    calls = [0]
    model = net()
    manager = Manager(
        model,
        torch.optim.SGD(model.parameters(), lr=0.3),
        torch.nn.CrossEntropyLoss(),
        compile={"backend": counting_backend(calls)},
    )
    manager.fit(batches(), epochs=1, show_verbose=False)
    assert calls[0] == 8 and manager.model is model


def net_state(compiled: torch.nn.Module) -> dict[str, torch.Tensor]:
    return compiled._orig_mod.state_dict()  # type: ignore[union-attr, operator, no-any-return]


@pytest.mark.parametrize("wrapper", ["compile", "dataparallel"])
def test_submodule_the_user_wrapped_saves_and_loads_under_the_plain_keys(tmp_path: Path, wrapper: str) -> None:
    """A submodule compiled (keys `0._orig_mod.weight`) or in DataParallel (`0.module.weight`): the checkpoint holds
    the plain module's keys, loads into the plain model, and a plain model's checkpoint loads into the wrapped."""
    wrapped = net()
    wrapped[0] = (
        torch.compile(wrapped[0], backend="eager") if wrapper == "compile" else torch.nn.DataParallel(wrapped[0])
    )
    assert any(("._orig_mod." in key or ".module." in key) for key in wrapped.state_dict())
    manager = Manager(wrapped, torch.optim.SGD(wrapped.parameters(), lr=0.3), torch.nn.CrossEntropyLoss())
    manager.fit(batches(), epochs=1, show_verbose=False)
    manager.save_checkpoint(tmp_path / "wrapped.model")
    plain = Manager.from_checkpoint(tmp_path / "wrapped.model", model=net(5), loss_fn=torch.nn.CrossEntropyLoss())
    assert sorted(plain.raw_model.state_dict()) == sorted(checkpoint.load(tmp_path / "wrapped.model")["model"])
    assert torch.equal(plain.raw_model[0].weight, unwrap(manager.raw_model[0]).weight)
    plain.save_checkpoint(tmp_path / "plain.model")
    again = net(7)
    again[0] = torch.compile(again[0], backend="eager") if wrapper == "compile" else torch.nn.DataParallel(again[0])
    back = Manager(again, torch.optim.SGD(again.parameters(), lr=0.3), torch.nn.CrossEntropyLoss())
    back.load_checkpoint(tmp_path / "plain.model")
    assert torch.equal(back.raw_model[3].weight, manager.raw_model[3].weight)


class SaveAfter(Callback):
    """Asks for a checkpoint after batch index `batch` of the first epoch (and stops there with `stop`)."""

    def __init__(self, path: Path, batch: int, stop: bool = False) -> None:
        super().__init__()
        self.path, self.batch, self.stop, self.done = str(path), batch, stop, False

    def on_batch_end(self, batch: int, summary: Any = None) -> None:
        if batch == self.batch and not self.done:
            self.done = True
            self.manager.save_checkpoint(self.path)
            if self.stop:
                raise StopTraining("stopped inside a window")


def window_manager(seed: int) -> Manager[Any]:
    model = net(seed, dropout=0.2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.9)
    return Manager(model, optimizer, torch.nn.CrossEntropyLoss(), accumulate_grad_batches=3)


@pytest.mark.parametrize("stop", [False, True], ids=["deferred", "stopped"])
def test_save_inside_an_accumulation_window_resumes_exactly_in_one_process(tmp_path: Path, stop: bool) -> None:
    """Windows of 3 batches, a save asked for after batch index 4: deferred to the window's end (step 6, no
    gradients), or, stopped there, written at step 5 with the window's gradients; either resumes bit-identically."""
    reference = window_manager(0)
    torch.manual_seed(11)  # the dropout draws of both runs
    reference.fit(batches(), epochs=2, show_verbose=False)
    run = window_manager(0)
    torch.manual_seed(11)
    run.fit(batches(), epochs=2, callbacks_list=[SaveAfter(tmp_path / "w.model", 4, stop)], show_verbose=False)
    saved = checkpoint.load(tmp_path / "w.model")
    assert saved["step"] == (5 if stop else 6)
    assert bool(saved["gradients"]) is stop
    resumed = window_manager(3)
    torch.manual_seed(99)  # generators elsewhere: the checkpoint must set them
    resumed.fit(batches(), epochs=2, resume_from=tmp_path / "w.model", show_verbose=False)
    assert same(reference.raw_model.state_dict(), resumed.raw_model.state_dict())


def test_optimizer_factory_is_called_with_the_models_parameters() -> None:
    """`optimizer=lambda params: SGD(params, ...)`: built at once for a model that is not to be sharded, and the
    run trains as with the optimizer given."""
    model = net()
    manager = Manager(model, lambda params: torch.optim.SGD(params, lr=0.3), torch.nn.CrossEntropyLoss())
    assert isinstance(manager.optimizer, torch.optim.SGD)
    manager.fit(batches(), epochs=1, show_verbose=False)
    given = net()
    Manager(given, torch.optim.SGD(given.parameters(), lr=0.3), torch.nn.CrossEntropyLoss()).fit(
        batches(), epochs=1, show_verbose=False
    )
    assert same(given.state_dict(), model.state_dict())
    with pytest.raises(TypeError, match=r"`optimizer` must be a torch.optim.Optimizer or a function of the model's "):
        Manager(net(), lambda params: "not an optimizer", torch.nn.CrossEntropyLoss())


def test_single_file_checkpoint_is_refused_into_a_run_that_will_shard(tmp_path: Path) -> None:
    """A single file's optimizer state (by parameter index, unsharded) cannot go into an optimizer FSDP2's shards will
    be built for: refused with the way forward, before anything is loaded."""
    model = net()
    Manager(model, torch.optim.Adam(model.parameters()), torch.nn.CrossEntropyLoss()).save_checkpoint(
        tmp_path / "a.model"
    )
    sharding = Manager(net(3), lambda params: torch.optim.Adam(params), torch.nn.CrossEntropyLoss(), strategy="fsdp")
    assert sharding.optimizer is None  # the factory waits for the shards
    with pytest.raises(checkpoint.CheckpointError, match=r"is a single-file checkpoint, and this manager's optimizer"):
        sharding.load_checkpoint(tmp_path / "a.model")
    assert not torch.equal(sharding.raw_model[0].weight, model[0].weight)
