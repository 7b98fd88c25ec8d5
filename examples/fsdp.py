"""A model sharded over every process with FSDP2 (README "Models larger than one device").

Run: `hatch run torchmanager-run --standalone --nproc_per_node=2 examples/fsdp.py` (2 CPU processes; on GPUs
one process per GPU). Run the same command again after a kill or a preemption: it goes on from
`experiments/fsdp.exp/checkpoints/last.model`. tests/test_fsdp_manager.py runs it.
"""

import torch
from torch.utils.data import DataLoader, TensorDataset

import torchmanager
from torchmanager.callbacks import Experiment, LastCheckpoint
from torchmanager_core.checkpoint.sharded import save_full_state_dict
from torchmanager_core.strategy.fsdp import FSDP2Strategy


class Block(torch.nn.Module):
    """A residual block: the unit FSDP2 gathers whole, one at a time."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.tanh(self.linear(x))


torch.manual_seed(0)
x = torch.randn(512, 16)
y = x[:, :4].argmax(1)
train = DataLoader(TensorDataset(x[:448], y[:448]), batch_size=16, shuffle=True)  # 16 per process and step
val = DataLoader(TensorDataset(x[448:], y[448:]), batch_size=16)

with torch.device("meta"):  # no memory yet: each process allocates and initialises its own shards
    model = torch.nn.Sequential(torch.nn.Linear(16, 64), *(Block(64) for _ in range(4)), torch.nn.Linear(64, 4))
manager = torchmanager.Manager(
    model,
    lambda params: torch.optim.AdamW(params, lr=3e-3),  # built over the shards
    torchmanager.losses.CrossEntropy(),
    metrics={"accuracy": torchmanager.metrics.SparseCategoricalAccuracy()},
    strategy=FSDP2Strategy(units=(Block,)),  # or strategy="fsdp": the root alone
    precision="bf16-mixed",
    accumulate_grad_batches=2,
)
experiment = Experiment("fsdp", manager)  # its last.model: a sharded checkpoint, each epoch
steps = LastCheckpoint(manager, experiment.last_ckpt_path, save_every_n_steps=10, background=True)
manager.fit(train, epochs=4, val_dataset=val, callbacks_list=[experiment, steps])
save_full_state_dict(manager.model, f"{experiment.experiment_dir}/model.pt")  # whole weights, for inference
