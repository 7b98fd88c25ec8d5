"""torchmanager-data: a PyTorch `Dataset` and its `DataLoader` in one, with sliding windows.

`Dataset` (subclass it: `unbatched_len` and `__getitem__`; or `Dataset.from_tensor_slices((x, y),
batch_size=...)` for tensors in memory), `PreprocessedDataset` (`load` and
`transforms`), `batched` (turn a plain torch dataset builder into a loader builder),
`distribute` (shard a dataset across processes), `SeededItems` (per-item random seeds for a plain
torch data set), `sliding_window` and its reverse.
"""

from torch.utils.data import DataLoader

from .__about__ import __version__
from .batching import batched
from .dataset import Dataset
from .distributed import distribute
from .errors import LoaderTimeoutError, TransformError
from .item_seeds import SeededItems
from .preprocessed import PreprocessedDataset
from .sliding import reversed_sliding_window, sliding_window

__all__ = [
    "DataLoader",
    "Dataset",
    "LoaderTimeoutError",
    "PreprocessedDataset",
    "SeededItems",
    "TransformError",
    "__version__",
    "batched",
    "distribute",
    "reversed_sliding_window",
    "sliding_window",
]
