"""Every bad input a user can give torchmanager, in one place, through the public API (`import torchmanager`).

Each case is the code a user writes, the error it must end in, and the message, pinned with
`match=`: what is wrong and what would be right, then the value received. Every case runs next to
the checkpoint of a good run, which no failure may change (its bytes are compared after the case);
fits run with a `LastCheckpoint` on that file that saves after every step.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from torchmanager import Manager
from torchmanager.callbacks import (
    BestCheckpoint,
    Callback,
    EarlyStop,
    Experiment,
    LastCheckpoint,
    LrScheduler,
    MonitorError,
    MonitorType,
    TensorBoard,
)
from torchmanager.configs import ConfigsFormatError, YAMLConfigs
from torchmanager.data import Dataset
from torchmanager.losses import CrossEntropy, MultiLosses
from torchmanager.metrics import F1, ConfusionMatrix, SparseCategoricalAccuracy
from torchmanager_core.checkpoint import CheckpointError  # the error types live in core (installed with torchmanager)
from torchmanager_core.errors import LossError, MetricError, ModelError, NonFiniteLossError

GENERATOR = torch.Generator().manual_seed(0)
X = torch.randn(32, 4, generator=GENERATOR)
Y = torch.randint(0, 3, (32,), generator=GENERATOR)
DATA = [(X[i : i + 8], Y[i : i + 8]) for i in range(0, 32, 8)]
NAN_BATCH = (torch.full((8, 4), float("nan")), Y[:8])


class Net(torch.nn.Module):
    """A linear classifier of 4 features into 3 classes (importable, so its checkpoints hold its structure)."""

    def __init__(self, features: int = 4, classes: int = 3) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(features, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


class DictNet(Net):
    """`Net` whose output is a dict `{"out": logits}`, for `target` keys."""

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:  # type: ignore[override]
        return {"out": self.fc(x)}


class NoBatches:
    """An iterable of unknown length that yields nothing (a stream that turned out empty)."""

    def __iter__(self) -> Iterator[Any]:
        return iter([])


def items(n: int, batch_size: int = 8, **options: Any) -> Dataset[Any]:
    """The first `n` items of X, Y as a torchmanager `Dataset`."""
    return Dataset.from_tensor_slices((X[:n], Y[:n]), batch_size, **options)


def manager(model: torch.nn.Module | None = None, **kwargs: Any) -> Manager:
    model = Net() if model is None else model
    kwargs.setdefault("loss_fn", CrossEntropy())
    kwargs.setdefault("metrics", {"accuracy": SparseCategoricalAccuracy()})
    return Manager(model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), **kwargs)


def adam_manager() -> Manager:
    model = Net()
    return Manager(model, torch.optim.Adam(model.parameters()), loss_fn=CrossEntropy())


@dataclass
class Env:
    """What a case may use: a folder, and the checkpoint of a good run that no case may change."""

    tmp: Path
    ckpt: Path

    def fit(
        self, manager: Manager, data: Any, *, epochs: int | None = 1, every_step: bool = True, **kwargs: Any
    ) -> Any:
        """`manager.fit` with a `LastCheckpoint` on `self.ckpt` after the given callbacks, saving every step
        (`every_step=False`: at the epoch end only, for an error that can only be seen there)."""
        last = LastCheckpoint(manager, str(self.ckpt), save_every_n_steps=1 if every_step else None)
        callbacks = [*kwargs.pop("callbacks_list", []), last]
        if "iterations" in kwargs:
            epochs = None
        return manager.fit(data, epochs=epochs, callbacks_list=callbacks, **kwargs)


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The bytes of a checkpoint of one good epoch."""
    good = manager()
    good.fit(DATA, epochs=1)
    path = tmp_path_factory.mktemp("good") / "last.model"
    good.save_checkpoint(path)
    return path.read_bytes()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, good_checkpoint: bytes) -> Env:
    monkeypatch.chdir(tmp_path)  # configs and experiments write relative folders
    monkeypatch.delenv("RANK", raising=False)
    (tmp_path / "ckpt").mkdir()
    path = tmp_path / "ckpt" / "last.model"
    path.write_bytes(good_checkpoint)
    return Env(tmp_path, path)


Case = Callable[[Env], Any]


def case(
    call: Case, error: type[BaseException] | tuple[type[BaseException], ...], match: str, *, id: str, marks: Any = ()
) -> Any:
    return pytest.param(call, error, match, id=id, marks=marks)


# -- the cases: what a user writes, the error, the message ----------------------------------------

MANAGER = [
    case(
        lambda env: manager(metrics={"acc": SparseCategoricalAccuracy(), "val_acc": SparseCategoricalAccuracy()}),
        ValueError,
        r"Two values would be reported as `val_acc` in an epoch's summary: metric `acc` on validation and metric "
        r"`val_acc` on validation; rename one \(validation prefixes `val_` to every name\)\. "
        r"Received: losses \['loss'\], metrics \['acc', 'val_acc'\]",
        id="metric-acc-beside-val-acc",
    ),
    case(
        lambda env: manager(loss_fn={"val": CrossEntropy(), "x": CrossEntropy()}),
        ValueError,
        r"Two values would be reported as `val_loss` in an epoch's summary: loss `val` and the total loss on "
        r"validation; rename one",
        id="loss-part-named-val",
    ),
    case(
        lambda env: setattr(manager(), "metric_fns", {"f1": SparseCategoricalAccuracy(), "val_f1": F1()}),
        ValueError,
        r"Two values would be reported as `val_f1`",
        id="metric-fns-set-with-a-clash",
    ),
    case(
        lambda env: manager(loss_fn=CrossEntropy),
        TypeError,
        r"`loss_fn` is the class CrossEntropy, not an instance: write CrossEntropy\(\) \(with its arguments\)\. "
        r"Received: loss_fn=<class",
        id="loss-a-class",
    ),
    case(
        lambda env: manager(loss_fn={"ce": CrossEntropy()}, metrics={"accuracy": SparseCategoricalAccuracy}),
        TypeError,
        r"`metrics\['accuracy'\]` is the class SparseCategoricalAccuracy, not an instance: write "
        r"SparseCategoricalAccuracy\(\)",
        id="metric-a-class",
    ),
    case(
        lambda env: Manager(Net(), torch.optim.SGD),
        TypeError,
        r"`optimizer` must be a torch.optim.Optimizer, built over the model's parameters: "
        r"SGD\(model.parameters\(\), lr=...\), a dict of them by name \(several models, as a GAN's generator and "
        r"discriminator\), a function of the parameters returning one \(`lambda params: "
        r"torch.optim.AdamW\(params, lr=1e-3\)`\), or None",
        id="optimizer-a-class",
    ),
    case(
        lambda env: Manager(Net),
        TypeError,
        r"`model` must be a torch.nn.Module, not its class: build one, Net\(...\)",
        id="model-a-class",
    ),
    case(
        lambda env: Manager("model"),
        TypeError,
        r"`model` must be a torch.nn.Module. Received: model=str",
        id="model-not-a-module",
    ),
    case(
        lambda env: Manager(Net(), "adam"),
        TypeError,
        r"`optimizer` must be a torch.optim.Optimizer, a dict of them by name \(several models, as a GAN's generator "
        r"and discriminator\), a function of the parameters returning one \(`lambda params: "
        r"torch.optim.AdamW\(params, lr=1e-3\)`\), or None. Received: optimizer='adam'",
        id="optimizer-a-str",
    ),
    case(
        lambda env: manager(loss_fn="cross_entropy"),
        TypeError,
        r"`loss_fn` must be a loss .*such as torchmanager.losses.CrossEntropy\(\).* Received: loss_fn='cross_entropy'",
        id="loss-a-str",
    ),
    case(
        lambda env: manager(loss_fn={"ce": 1}),
        TypeError,
        r"`loss_fn` as a dict must map str names to callables .* Received: loss_fn\['ce'\]=1",
        id="loss-dict-of-non-callables",
    ),
    case(
        lambda env: manager(metrics=[SparseCategoricalAccuracy()]),
        TypeError,
        r"`metrics` must be a dict of names to metrics, e.g. \{'accuracy': .*\}. Received: metrics=\[",
        id="metrics-a-list",
    ),
    case(
        lambda env: manager(metrics={"loss": SparseCategoricalAccuracy()}),
        ValueError,
        r"`loss` names the total of `loss_fn` in a summary; give this metric another name\. Received: metrics key 'loss'",
        id="metric-named-loss",
    ),
    case(
        lambda env: manager(precision="fp8"),
        ValueError,
        r"`precision` must be one of .*'bf16'.*Received: precision='fp8'",
        id="precision-unknown",
    ),
    case(
        lambda env: manager(accumulate_grad_batches=0),
        ValueError,
        r"`accumulate_grad_batches` must be a positive int. Received: accumulate_grad_batches=0",
        id="accumulate-0",
    ),
    case(
        lambda env: manager(clip_grad_norm=-1.0),
        ValueError,
        r"`clip_grad_norm` must be a positive number or None. Received: clip_grad_norm=-1.0",
        id="clip-negative",
    ),
    case(
        lambda env: manager(compile="yes"),
        TypeError,
        r"`compile` must be a bool or a dict of torch.compile keyword arguments. Received: compile='yes'",
        id="compile-a-str",
    ),
]

FIT_ARGUMENTS = [
    case(
        lambda env: env.fit(manager(), DATA, accumulate_grad_batches=4),
        TypeError,
        r"`fit` got keyword arguments it does not take: accumulate_grad_batches. `accumulate_grad_batches` is an "
        r"option of the manager: \w*Manager\(model, optimizer, ..., accumulate_grad_batches=...\). "
        r"Received: accumulate_grad_batches=4",
        id="a-manager-option-given-to-fit",
    ),
    case(
        lambda env: env.fit(manager(), DATA, show_verbos=True),
        TypeError,
        r"`fit` got keyword arguments it does not take: show_verbos. Did you mean `show_verbose`\? Received: show_verbos=True",
        id="a-misspelt-fit-argument",
    ),
    *(
        case(
            lambda env, bad=bad: env.fit(manager(), DATA, epochs=bad),
            ValueError,
            rf"`epochs` must be a positive int. Received: epochs={bad!r}",
            id=f"epochs-{bad!r}",
        )
        for bad in (0, -1, 1.5, "3", True)
    ),
    case(
        lambda env: env.fit(manager(), DATA, epochs=None),
        ValueError,
        r"Give exactly one of `epochs` and `iterations`. Received: epochs=None, iterations=None",
        id="neither-epochs-nor-iterations",
    ),
    case(
        lambda env: manager().fit(DATA, epochs=2, iterations=3),
        ValueError,
        r"Give exactly one of `epochs` and `iterations`. Received: epochs=2, iterations=3",
        id="epochs-and-iterations",
    ),
    case(
        lambda env: env.fit(manager(), DATA, iterations=0),
        ValueError,
        r"`iterations` must be a positive int. Received: iterations=0",
        id="iterations-0",
    ),
    case(
        lambda env: env.fit(manager(), iter(DATA), iterations=3),
        ValueError,
        r"`iterations` needs a data set whose number of batches is known \(`len`\); give `epochs` instead",
        id="iterations-over-an-iterator",
    ),
    case(
        lambda env: env.fit(manager(), DATA, epochs=2, initial_epoch=5),
        ValueError,
        r"`initial_epoch` must be an int in \[0, 2\). Received: initial_epoch=5",
        id="initial-epoch-past-the-end",
    ),
    case(
        lambda env: env.fit(manager(), DATA, on_nonfinite_loss="ignore"),
        ValueError,
        r"`on_nonfinite_loss` must be 'raise' or 'stop'. Received: on_nonfinite_loss='ignore'",
        id="nonfinite-policy-unknown",
    ),
    case(
        lambda env: Manager(Net(), loss_fn=CrossEntropy()).fit(DATA, epochs=1),
        ValueError,
        r"`fit` needs an optimizer: pass one to Manager\(model, optimizer, ...\). Received: optimizer=None",
        id="no-optimizer",
    ),
    case(
        lambda env: env.fit(manager(loss_fn=None), DATA),
        ValueError,
        r"`fit` needs a `loss_fn` for the default training step: pass one to the manager .*, or override `train_step`",
        id="no-loss",
    ),
    case(
        lambda env: env.fit(Manager(Net(), torch.optim.SGD(Net().parameters(), lr=0.1), loss_fn=CrossEntropy()), DATA),
        ValueError,
        r"`optimizer`.*parameters.*model",
        id="optimizer-of-another-model",
    ),
    case(
        lambda env: env.fit(manager(Net().requires_grad_(False)), DATA),
        RuntimeError,
        r"The loss does not depend on any trainable parameter .*check that the model's parameters require grad",
        id="frozen-model",
    ),
]

DEVICES = [
    case(
        lambda env: env.fit(manager(), DATA, device="tpu"),
        ValueError,
        r"`device` must name a device such as 'cpu', 'cuda', 'cuda:1' or 'mps'. Received: device='tpu'",
        id="device-unknown",
    ),
    case(
        lambda env: env.fit(manager(), DATA, device=3.5),
        TypeError,
        r"`device` must be a torch.device, a device name or a CUDA index. Received: device=3.5",
        id="device-a-float",
    ),
    case(
        lambda env: env.fit(manager(), DATA, device="cpu", devices="cpu"),
        ValueError,
        r"Pass either `device` \(upstream name\) or `devices` \(README name\), not both",
        id="device-and-devices",
    ),
    case(
        lambda env: env.fit(manager(), DATA, devices=[]),
        ValueError,
        r"`devices` must not be an empty list. Received: devices=\[\]",
        id="devices-empty",
    ),
    case(
        lambda env: env.fit(manager(), DATA, device=f"cuda:{torch.cuda.device_count()}"),
        ValueError,
        r"`device` asks for cuda.* but \d+ CUDA device\(s\) are visible",
        id="device-cuda-missing",
    ),
    case(
        lambda env: env.fit(manager(), DATA, device="meta"),
        ValueError,
        r"`device`.*meta",
        id="device-meta",
    ),
    case(
        lambda env: env.fit(manager(Net().to("meta")), DATA, device="cpu"),
        ValueError,
        r"`model`.*meta",
        id="model-on-meta",
    ),
]

DATA_CASES = [
    case(
        lambda env: env.fit(manager(), (batch for batch in DATA), epochs=3),
        ValueError,
        r"`training_dataset` is an iterator \(a generator, `iter\(...\)`\), which can be read only once, and `fit` reads "
        r"it in each of the 3 epochs: give a list, .* Received: training_dataset=<generator",
        id="generator-for-3-epochs",
    ),
    case(
        lambda env: env.fit(manager(), DATA, epochs=2, val_dataset=iter(DATA)),
        ValueError,
        r"`val_dataset` is an iterator .* reads it in each of the 2 epochs: .* Received: val_dataset=<list_iterator",
        id="iterator-to-validate-on-for-2-epochs",
    ),
    case(
        lambda env: env.fit(manager(), DATA, val_dataset=NoBatches(), every_step=False),
        ValueError,
        r"The data set to validate on yielded no batches; give a non-empty data set. Received: val_dataset=<",
        id="validation-data-yielding-nothing",
    ),
    case(
        lambda env: env.fit(manager(), []),
        ValueError,
        r"`training_dataset` is empty \(0 batches\); give a non-empty data set. Received: training_dataset=\[\]",
        id="empty-list",
    ),
    case(
        lambda env: env.fit(manager(), items(0)),
        ValueError,
        r"`training_dataset` is empty \(0 batches\); give a non-empty data set",
        id="empty-dataset",
    ),
    case(
        lambda env: env.fit(manager(), iter([])),
        ValueError,
        r"`training_dataset` yielded no batches in epoch 1; give a non-empty data set \(and check `drop_last`",
        id="empty-iterator",
    ),
    case(
        lambda env: env.fit(manager(), items(4, batch_size=8, drop_last=True)),
        ValueError,
        r"drop_last",
        id="fewer-items-than-batch-size-with-drop-last",
    ),
    case(
        lambda env: env.fit(manager(), DATA, val_dataset=[]),
        ValueError,
        r"`val_dataset` is empty",
        id="empty-validation",
    ),
    case(
        lambda env: manager().test([]),
        ValueError,
        r"The data set to test on yielded no batches; give a non-empty data set. Received: dataset=\[\]",
        id="empty-test",
    ),
    case(
        lambda env: manager().predict([]),
        ValueError,
        r"no batches",
        id="empty-predict",
    ),
    case(
        lambda env: env.fit(manager(), [(X[:8],)]),
        TypeError,
        r"A batch must hold an input and a label: a pair `\(x, y\)` \(more items are left out\), or a dict whose "
        r"first two values are they; override `unpack_data` for other layouts. Received: batch of 1 items",
        id="batch-of-one",
    ),
    case(
        lambda env: env.fit(manager(), [X[:8]]),
        TypeError,
        r"A batch must hold an input and a label.* Received: batch of shape \(8, 4\)",
        id="batch-without-label",
    ),
    case(
        lambda env: env.fit(manager(), [(torch.randn(8, 5), Y[:8])]),
        ModelError,
        r"The model failed on an input: mat1 and mat2 shapes cannot be multiplied \(8x5 and 4x3\)\. Check that the "
        r"data's input fits the model \(its shape, dtype and device\)\. Received: input=shape \(8, 5\)$",
        id="input-of-the-wrong-width",
    ),
    case(
        lambda env: env.fit(manager(), [(X[:8], Y[:6])]),
        LossError,
        r"Loss `loss` failed on model output shape \(8, 3\) and label shape \(6,\).*Check that the model output and the label fit",
        id="label-batch-too-short",
    ),
    case(
        lambda env: env.fit(manager(), [(X[:8], torch.full((8,), 7))]),
        LossError,
        r"Loss `loss` failed on model output shape \(8, 3\) and label shape \(8,\): Target 7 is out of bounds\. Check "
        r"that the model output and the label fit this loss \(shapes, dtypes, `target` keys\)\. "
        r"Received: y=shape \(8, 3\), label=shape \(8,\)$",
        id="label-out-of-range",
    ),
    case(
        lambda env: env.fit(manager(metrics={}), [(X[:8], torch.rand(8))]),
        LossError,
        r"class indices must be an integer tensor.*Received: target dtype=torch.float32",
        id="label-float-indices",
    ),
    case(
        lambda env: manager(loss_fn=None).test([(X[:8], torch.rand(8, 7))]),
        MetricError,
        r"Metric `accuracy` failed on model output shape \(8, 3\) and label shape \(8, 7\).*use CategoricalAccuracy.*"
        r"\. Check that the model output and the label fit this metric\. Received: y=shape \(8, 3\), label=shape \(8, 7\)$",
        id="metric-on-one-hot-floats",
    ),
    case(
        lambda env: env.fit(manager(), [NAN_BATCH, *DATA], every_step=False),
        NonFiniteLossError,
        r"The training loss of epoch 1 is nan; lower the learning rate, clip gradients or check the data for NaN/inf",
        id="nan-loss",
    ),
    case(
        lambda env: env.fit(manager(), [NAN_BATCH, *DATA]),
        NonFiniteLossError,
        r"The training loss of epoch 1 is nan",
        id="nan-loss-with-step-checkpoints",
    ),
]

KEYS = [
    case(
        lambda env: env.fit(manager(DictNet(), loss_fn=CrossEntropy(target="logits")), DATA),
        LossError,
        r"CrossEntropy\(target='logits'\) found no such key in the model output. Expected one of \['out'\]: fix `target`",
        id="loss-target-unknown",
    ),
    case(
        lambda env: env.fit(
            manager(
                DictNet(), loss_fn=CrossEntropy(target="out"), metrics={"acc": SparseCategoricalAccuracy(target="y")}
            ),
            DATA,
        ),
        MetricError,
        r"SparseCategoricalAccuracy\(target='y'\) found no such key in the model output. Expected one of \['out'\]",
        id="metric-target-unknown",
    ),
    case(
        lambda env: env.fit(manager(DictNet()), DATA),
        LossError,
        r"Loss `loss` failed on model output dict \{'out': shape \(8, 3\)\}.*`target` keys",
        id="dict-output-without-target",
    ),
    case(
        lambda env: (
            m := manager(),
            env.fit(m, DATA, every_step=False, callbacks_list=[BestCheckpoint("acc", m, str(env.tmp / "best.model"))]),
        ),
        MonitorError,
        r"Monitor `acc` is not in the epoch summary; monitor one of `loss`, `accuracy`, `lr`. Received: monitor='acc'",
        id="best-checkpoint-monitor-unknown",
    ),
    case(
        lambda env: env.fit(
            manager(), DATA, every_step=False, callbacks_list=[EarlyStop("val_accuracy", MonitorType.MAX, 2)]
        ),
        MonitorError,
        r"Monitor `val_accuracy` is not in the epoch summary; monitor one of `loss`, `accuracy`",
        id="early-stop-monitor-unknown",
    ),
    case(
        lambda env: (
            m := manager(),
            env.fit(
                m,
                DATA,
                every_step=False,
                callbacks_list=[
                    LrScheduler(torch.optim.lr_scheduler.ReduceLROnPlateau(m.optimizer), monitor="val_los")
                ],
            ),
        ),
        MonitorError,
        r"Monitor `val_los` is not in the epoch summary; monitor one of `loss`, `accuracy`",
        id="plateau-monitor-unknown",
    ),
    case(
        lambda env: (
            m := manager(),
            env.fit(m, DATA, every_step=False, callbacks_list=[Experiment("run", m, ["acc"])]),
        ),
        MonitorError,
        r"Monitor `acc` is not in the epoch summary",
        id="experiment-monitor-unknown",
    ),
]

CALLBACKS = [
    case(
        lambda env: LastCheckpoint(Net(), str(env.tmp / "l.model"), optimizer=torch.optim.SGD(Net().parameters(), 0.1)),
        TypeError,
        r"LastCheckpoint saves the manager's checkpoint, which holds the model, the optimizer, the losses and the "
        r"metrics together: pass the manager, LastCheckpoint\(manager, ckpt_path, ...\), without upstream 1.5's "
        r"`optimizer=`. Received: optimizer=SGD",
        id="upstream-last-checkpoint-of-a-bare-model",
    ),
    case(
        lambda env: BestCheckpoint("accuracy", manager(), str(env.tmp / "b.model"), save_weights_only=True),
        TypeError,
        r"BestCheckpoint saves the manager's checkpoint, .* without upstream 1.5's `save_weights_only=`",
        id="upstream-best-checkpoint-options",
    ),
    case(
        lambda env: LastCheckpoint(manager(), str(env.tmp / "l.model"), freqq=2),
        TypeError,
        r"LastCheckpoint\(\) got an unexpected keyword argument 'freqq'",
        id="misspelt-checkpoint-option",
    ),
    case(
        lambda env: env.fit(manager(), DATA, callbacks_list=[print]),
        TypeError,
        r"Every callback must be an instance of .*Callback \(subclass it\). Received: callbacks_list\[0\]=<built-in function print>",
        id="callback-a-function",
    ),
    case(
        lambda env: (m := manager(), m.fit(DATA, epochs=1, callbacks_list=LastCheckpoint(m, str(env.ckpt)))),
        TypeError,
        r"`callbacks_list` must be a list of Callback objects",
        id="callbacks-not-a-list",
    ),
    case(
        lambda env: LastCheckpoint(manager(), str(env.ckpt), freq=0),
        ValueError,
        r"`freq` must be an int >= 1. Received: freq=0",
        id="freq-0",
    ),
    case(
        lambda env: LastCheckpoint(manager(), str(env.ckpt), save_every_n_steps=0),
        ValueError,
        r"`save_every_n_steps` must be an int >= 1. Received: save_every_n_steps=0",
        id="save-every-0-steps",
    ),
    case(
        lambda env: LastCheckpoint("manager", str(env.ckpt)),  # type: ignore[arg-type]
        TypeError,
        r"`manager` must be a torchmanager Manager \(an object with `save_checkpoint\(path\)`\), or None for the "
        r"manager whose `fit` runs the callback. Received: manager=str",
        id="checkpoint-without-manager",
    ),
    case(
        lambda env: BestCheckpoint("accuracy", manager(), str(env.tmp / "best.model"), monitor_type="max"),  # type: ignore[arg-type]
        TypeError,
        r"`monitor_type` must be `MonitorType.MIN`, `MonitorType.MAX` or None \(from the monitor.s name\). Received: monitor_type='max'",
        id="monitor-type-a-str",
    ),
    case(
        lambda env: EarlyStop("accuracy", MonitorType.MAX, 0),
        ValueError,
        r"`steps` must be an int >= 1 \(epochs without improvement\). Received: steps=0",
        id="early-stop-0-steps",
    ),
    case(
        lambda env: LrScheduler("step"),  # type: ignore[arg-type]
        TypeError,
        r"`scheduler` must be a torch.optim.lr_scheduler scheduler.*Received: scheduler=str",
        id="scheduler-a-str",
    ),
    case(
        lambda env: Experiment("", manager()),
        ValueError,
        r"`experiment` must be a non-empty name, such as 'test.exp'. Received: experiment=''",
        id="experiment-unnamed",
    ),
    case(
        lambda env: Experiment("run", manager(), "accuracy"),  # type: ignore[arg-type]
        TypeError,
        r"`monitors` must be a list of metric names or a dict of names to `MonitorType`.*Received: monitors='accuracy'",
        id="experiment-monitors-a-str",
    ),
    case(
        lambda env: TensorBoard(3),  # type: ignore[arg-type]
        TypeError,
        r"`log_dir`",
        id="tensorboard-log-dir-an-int",
    ),
]

PATHS = [
    case(
        lambda env: (
            (env.tmp / "a_file").write_text(""),
            LastCheckpoint(manager(), str(env.tmp / "a_file" / "last.model")),
        ),
        CheckpointError,
        r"`ckpt_path` must be in a folder that can be created and written, but `.*a_file` cannot.*choose another path",
        id="checkpoint-under-a-file",
    ),
    case(
        lambda env: LastCheckpoint(manager(), str(env.tmp)),
        CheckpointError,
        r"`ckpt_path` must be the path of a file, not of a folder",
        id="checkpoint-path-a-folder",
    ),
    case(
        lambda env: manager().save_checkpoint(env.tmp / "missing" / "last.model"),
        CheckpointError,
        r"its folder `.*missing` does not exist; create it first",
        id="save-into-a-missing-folder",
    ),
    case(
        lambda env: env.fit(manager(), DATA, resume_from=env.tmp / "nothing.model"),
        FileNotFoundError,
        r"Checkpoint file `.*nothing.model` does not exist; check the path",
        id="resume-from-a-missing-file",
    ),
    case(
        lambda env: env.fit(manager(), DATA, resume_from=env.tmp),
        CheckpointError,
        r"is a folder; give the path of a checkpoint file",
        id="resume-from-a-folder",
    ),
    case(
        lambda env: (
            torch.save({"weights": torch.zeros(2)}, env.tmp / "foreign.pt"),
            env.fit(manager(), DATA, resume_from=env.tmp / "foreign.pt"),
        ),
        CheckpointError,
        r"is not a torchmanager checkpoint: its dict has no `format` marker.*pass `trusted=True` for an upstream",
        id="resume-from-a-foreign-file",
    ),
    case(
        lambda env: (
            (env.tmp / "cut.model").write_bytes(env.ckpt.read_bytes()[:1000]),
            env.fit(manager(), DATA, resume_from=env.tmp / "cut.model"),
        ),
        CheckpointError,
        r"is truncated or corrupt .*restore it from a backup or save it again",
        id="resume-from-a-truncated-file",
    ),
]

OTHER_MODEL = [
    case(
        lambda env: env.fit(manager(Net(5, 2)), DATA, resume_from=env.ckpt),
        CheckpointError,
        r"holds the weights of a different model.*load it into the model architecture that saved it. Received: model=Net",
        id="resume-into-another-architecture",
    ),
    case(
        lambda env: manager(Net(5, 2)).load_checkpoint(env.ckpt),
        CheckpointError,
        r"different model.*size mismatch for fc.weight",
        id="message-names-the-mismatch",
    ),
    case(
        lambda env: env.fit(adam_manager(), DATA, epochs=2, resume_from=env.ckpt),
        CheckpointError,
        r"SGD.*Adam|Adam.*SGD",
        id="resume-with-another-optimizer-class",
    ),
    case(
        lambda env: env.fit(manager(metrics={"accuracy": ConfusionMatrix(3)}), DATA, epochs=2, resume_from=env.ckpt),
        CheckpointError,
        r"accuracy",
        id="resume-with-another-metric-under-the-name",
    ),
]


def bad_yaml(env: Env, text: str) -> Any:
    class Run(YAMLConfigs):
        epochs: int
        lr: float

        def show_settings(self) -> None:
            pass

    (env.tmp / "run.yaml").write_text(text)
    return Run.from_yaml(env.tmp / "run.yaml", show_summary=False)


CONFIGS = [
    case(
        lambda env: bad_yaml(env, "epochs: 3\nlr: 0.1\nlrr: 0.2\n"),
        ConfigsFormatError,
        r"Config key `lrr` in '.*run.yaml' is not a field of `Run`; the fields are .*epochs.*lr.* Received: lrr=0.2",
        id="config-key-unknown",
    ),
    case(
        lambda env: bad_yaml(env, "epochs: 3\nlr: fast\n"),
        ConfigsFormatError,
        r"Config key `lr` in '.*run.yaml' must be of type float. Received: lr='fast'",
        id="config-value-of-the-wrong-type",
    ),
    case(
        lambda env: bad_yaml(env, "lr: 0.1\n"),
        ConfigsFormatError,
        r"`Run` needs a value for `epochs`, which has no default",
        id="config-value-missing",
    ),
    case(
        lambda env: bad_yaml(env, "epochs: 3\nlr: 0.1\nexperiment: ../elsewhere\n"),
        ConfigsFormatError,
        r"`experiment` must be a name \(or a relative path without `..`\).*Received: experiment='../elsewhere'",
        id="config-experiment-outside",
    ),
    case(
        lambda env: bad_yaml(env, "- 3\n- 0.1\n"),
        ConfigsFormatError,
        r"must hold a mapping of field names to values. Received: list",
        id="config-not-a-mapping",
    ),
    case(
        lambda env: bad_yaml(env, "epochs: 3\nlr: 0.1\nx: !!python/object/apply:os.system ['touch pwned']\n"),
        ConfigsFormatError,
        r"uses a YAML tag that is not plain data.*`yaml.safe_load`, which never builds Python objects or runs code",
        id="config-yaml-with-code",
    ),
]

OPTIONS = [
    case(
        lambda env: items(4, batch_size=0),
        ValueError,
        r"`batch_size` must be a positive int. Received: batch_size=0",
        id="batch-size-0",
    ),
    case(
        lambda env: items(4, batch_size=1.5),
        TypeError,
        r"`batch_size` must be a positive int. Received: batch_size=1.5",
        id="batch-size-float",
    ),
    case(
        lambda env: Dataset.__init__(items(4), 8, num_workers=-1),
        ValueError,
        r"`num_workers` must be an int >= 0 or None. Received: num_workers=-1",
        id="num-workers-negative",
    ),
    case(
        lambda env: items(4, device="nope"),
        ValueError,
        r"`device` must name a torch device such as 'cpu' or 'cuda:0'. Received: device='nope'",
        id="dataset-device-unknown",
    ),
    case(
        lambda env: items(4, shuffle=True, sampler=[0, 1, 2]),
        ValueError,
        r"`shuffle` must be False when a `sampler` is given: the sampler decides the order",
        id="shuffle-and-sampler",
    ),
    case(
        lambda env: CrossEntropy(weight="x"),
        TypeError,
        r"`weight` must be a finite, non-negative float. Received: weight='x'",
        id="loss-weight-a-str",
    ),
    case(
        lambda env: CrossEntropy(target=3),
        TypeError,
        r"`target` must be a key \(str\) of the model's output dict, or None. Received: target=3",
        id="loss-target-an-int",
    ),
    case(
        lambda env: MultiLosses([1]),
        TypeError,
        r"Every element of `losses` must be a .*Loss \(wrap a plain function with `Loss\(fn\)`\). Received: losses\[0\]=1",
        id="multi-losses-of-non-losses",
    ),
    case(
        lambda env: ConfusionMatrix(0),
        ValueError,
        r"`num_classes` must be a positive int. Received: num_classes=0",
        id="confusion-0-classes",
    ),
]


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [*MANAGER, *FIT_ARGUMENTS, *DEVICES, *DATA_CASES, *KEYS, *CALLBACKS, *PATHS, *OTHER_MODEL, *CONFIGS, *OPTIONS],
)
def test_bad_input_fails_clearly_and_keeps_the_checkpoint(
    env: Env, call: Case, error: type[BaseException], match: str
) -> None:
    before = env.ckpt.read_bytes()
    with pytest.raises(error, match=match):
        call(env)
    assert env.ckpt.read_bytes() == before
    assert sorted(os.listdir(env.ckpt.parent)) == ["last.model"]  # no temporary file left either
    assert not (env.tmp / "pwned").exists()


# -- what the table cannot show ------------------------------------------------------------------


def test_a_refused_checkpoint_leaves_the_model_as_it_was(env: Env) -> None:
    torch.save(
        {"format": "torchmanager.checkpoint", "format_version": 1, "model": {"fc.weight": torch.zeros(3, 4)}},
        env.tmp / "partial.model",
    )
    model = Net()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"holds the weights of a different model"):
        manager(model).load_checkpoint(env.tmp / "partial.model")
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name


def test_stopping_on_nan_keeps_the_last_good_checkpoint(env: Env) -> None:
    before = env.ckpt.read_bytes()
    env.fit(manager(), [NAN_BATCH, *DATA], every_step=False, on_nonfinite_loss="stop")
    assert env.ckpt.read_bytes() == before


class Payload:
    """A pickle whose loading creates the file `target`: what a malicious checkpoint does."""

    def __init__(self, target: Path) -> None:
        self.target = str(target)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.target, "w"))


def write_evil(path: Path, marker: Path, *, legacy: bool = False) -> None:
    """A checkpoint of ours in every way but one: its model weights are a `Payload`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    evil = {"format": "torchmanager.checkpoint", "format_version": 1, "epoch": 1, "step": 0, "model": Payload(marker)}
    torch.save(evil, path, _use_new_zipfile_serialization=not legacy)


class Tamper(Callback):
    """Replaces the file at `path` with a crafted pickle when training ends, before the callbacks after it (someone else's write)."""

    def __init__(self, path: Path, marker: Path) -> None:
        self.path, self.marker = path, marker

    def on_train_end(self, model: torch.nn.Module) -> None:
        write_evil(self.path, self.marker)


def load_best_of_a_tampered_file(env: Env, marker: Path) -> Any:
    m = manager()
    best = env.tmp / "best.model"
    return m.fit(
        DATA, epochs=1, callbacks_list=[Tamper(best, marker), BestCheckpoint("accuracy", m, str(best), load_best=True)]
    )


def resume_an_experiment(env: Env, marker: Path) -> Any:
    write_evil(env.tmp / "experiments" / "run.exp" / "checkpoints" / "last.model", marker)
    m = manager()
    return m.fit(DATA, epochs=1, callbacks_list=[Experiment("run", m, resume=True)])


def evil_at(env: Env, marker: Path, *, legacy: bool = False) -> Path:
    write_evil(env.tmp / "evil.model", marker, legacy=legacy)
    return env.tmp / "evil.model"


SAFE_LOADING = {
    "fit-resume-from": lambda env, marker: env.fit(manager(), DATA, resume_from=evil_at(env, marker)),
    "load-checkpoint": lambda env, marker: manager().load_checkpoint(evil_at(env, marker)),
    "from-checkpoint": lambda env, marker: Manager.from_checkpoint(evil_at(env, marker), model=Net()),
    "legacy-torch-format": lambda env, marker: manager().load_checkpoint(evil_at(env, marker, legacy=True)),
    "experiment-resume": resume_an_experiment,
    "best-checkpoint-load-best": load_best_of_a_tampered_file,
}


@pytest.mark.parametrize("load", SAFE_LOADING.values(), ids=SAFE_LOADING.keys())
def test_a_crafted_pickle_is_refused_and_runs_nothing(env: Env, load: Callable[[Env, Path], Any]) -> None:
    marker = env.tmp / "pwned"
    before = env.ckpt.read_bytes()
    with pytest.raises(
        CheckpointError,
        match=r"contains Python objects, and loading them would run code from the file; it was refused. Pass `trusted=True`",
    ):
        load(env, marker)
    assert not marker.exists()
    assert env.ckpt.read_bytes() == before
