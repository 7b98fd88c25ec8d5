"""Numeric precision of a run: full float32, or autocast to bfloat16/float16 (with a grad scaler).

Who owns what: this module turns the `precision=` option into an autocast dtype and says whether
gradients need scaling; the managers enter autocast around `forward` and own the scaler.
"""

from __future__ import annotations

import torch

__all__ = ["PRECISIONS", "autocast_dtype", "check_precision", "needs_grad_scaler"]

PRECISIONS = {
    "32": None,
    "32-true": None,
    "bf16": torch.bfloat16,
    "bf16-mixed": torch.bfloat16,
    "16": torch.float16,
    "16-mixed": torch.float16,
}
"""Accepted `precision` values (Lightning's spellings too) and the autocast dtype of each."""


def check_precision(precision: object) -> str:
    """`precision` as a string key of `PRECISIONS`; ints 32 and 16 are accepted."""
    key = str(precision) if isinstance(precision, (str, int)) and not isinstance(precision, bool) else None
    if key not in PRECISIONS:
        raise ValueError(
            f"`precision` must be one of {sorted(PRECISIONS)}: '32' (float32), 'bf16' (bfloat16 autocast) or '16-mixed' "
            f"(float16 autocast with gradient scaling). Received: precision={precision!r}"
        )
    return key


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The dtype `forward` autocasts to, or None for float32."""
    return PRECISIONS[precision]


def needs_grad_scaler(precision: str) -> bool:
    """Whether float16 gradients must be scaled to avoid underflow."""
    return PRECISIONS[precision] is torch.float16
