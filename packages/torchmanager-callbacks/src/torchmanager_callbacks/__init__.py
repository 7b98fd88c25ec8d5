"""torchmanager-callbacks: checkpoints, TensorBoard, MLflow, experiments, early stopping and LR schedules for torchmanager.

Every callback subclasses `torchmanager_core.callbacks.Callback` and is passed to
`manager.fit(..., callbacks_list=[...])`. tensorboard, mlflow, wandb and PyYAML are imported only by the callbacks
that need them, when they are created.
"""

from torchmanager_core.callbacks import Callback
from torchmanager_core.progress import ProgressBar, VerboseType

from .__about__ import __version__
from .checkpoint import BestCheckpoint, Checkpoint, LastCheckpoint
from .csv_logger import CSVLogger
from .dynamic import DynamicWeight, LambdaDynamicWeight
from .early_stop import EarlyStop
from .experiment import Experiment
from .frequency import Frequency, FrequencyCallback
from .functional import LambdaCallback, on_batch_end, on_batch_start, on_epoch_end, on_epoch_start
from .lr import LrScheduler
from .mlflow_logger import MLflowLogger
from .monitor import MonitorError, MonitorType
from .multi import MultiCallbacks
from .tensorboard import TensorBoard
from .wandb_logger import WandbLogger
from .weight_averaging import EMA

__all__ = [
    "BestCheckpoint",
    "CSVLogger",
    "Callback",
    "Checkpoint",
    "DynamicWeight",
    "EMA",
    "EarlyStop",
    "Experiment",
    "Frequency",
    "FrequencyCallback",
    "LambdaCallback",
    "LambdaDynamicWeight",
    "LastCheckpoint",
    "LrScheduler",
    "MLflowLogger",
    "MonitorError",
    "MonitorType",
    "MultiCallbacks",
    "ProgressBar",
    "TensorBoard",
    "VerboseType",
    "WandbLogger",
    "__version__",
    "on_batch_end",
    "on_batch_start",
    "on_epoch_end",
    "on_epoch_start",
]
