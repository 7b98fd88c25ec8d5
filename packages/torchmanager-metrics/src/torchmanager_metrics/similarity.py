"""Image and vector similarity metrics: PSNR, SSIM, MS-SSIM, cosine similarity, MAE and MSE.

Who owns what: the module-level functions are the pure math (one value per sample, or the
batch mean for MAE/MSE), computed in float32 or wider whatever the images' dtype, and may be
used with gradients; the classes call them and stream the per-sample mean through the `Metric`
base state, so `result` is the mean over all samples.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from .attributes import assignable, is_assigned
from .metric import Metric, at_least_float32

__all__ = [
    "MAE",
    "MSE",
    "MS_SSIM",
    "PSNR",
    "SSIM",
    "CosineSimilarity",
    "cosine_similarity",
    "gaussian_window",
    "mae",
    "ms_ssim",
    "mse",
    "psnr",
    "ssim",
]

DenormalizeFn = Callable[[torch.Tensor], torch.Tensor]

K1, K2 = 0.01, 0.03
"""The stabilising constants of Wang et al. (2004): C1 = (K1 L)^2, C2 = (K2 L)^2."""

DEFAULT_MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
"""The five scale weights of Wang, Simoncelli and Bovik (2003)."""


def _check_same_shape(input: torch.Tensor, target: torch.Tensor, *, min_dim: int = 1) -> None:
    if not isinstance(input, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise TypeError(
            f"`input` and `target` must be tensors. Received: input={type(input).__name__}, target={type(target).__name__}"
        )
    if input.shape != target.shape:
        raise ValueError(
            "`input` and `target` must have the same shape. "
            f"Received: input.shape={tuple(input.shape)}, target.shape={tuple(target.shape)}"
        )
    if input.dim() < min_dim:
        raise ValueError(
            f"`input` must have at least {min_dim} dims, the first being the batch. Received: input.shape={tuple(input.shape)}"
        )


def _check_positive(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"`{name}` must be a positive number. Received: {name}={value!r}")


def _float(x: torch.Tensor) -> torch.Tensor:
    """`x` as float32 or wider: integers and bfloat16/float16 are computed in float32."""
    return at_least_float32(x) if x.is_floating_point() else x.float()


def _per_sample_mean(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1).mean(dim=1)


def mae(input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The mean absolute error over all elements (as `torch.nn.functional.l1_loss`)."""
    _check_same_shape(input, target)
    return (_float(input) - _float(target)).abs().mean()


def mse(input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The mean squared error over all elements (as `torch.nn.functional.mse_loss`)."""
    _check_same_shape(input, target)
    return (_float(input) - _float(target)).square().mean()


def cosine_similarity(input: torch.Tensor, target: torch.Tensor, *, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """The cosine similarity along `dim`, averaged over the other non-batch dims: shape `(N,)`."""
    _check_same_shape(input, target, min_dim=2)
    similarity = F.cosine_similarity(_float(input), _float(target), dim=dim, eps=eps)
    return similarity.reshape(input.shape[0], -1).mean(dim=1)


def psnr(input: torch.Tensor, target: torch.Tensor, *, max_value: float | None = 1.0) -> torch.Tensor:
    """The peak signal-to-noise ratio of each image, in dB: shape `(N,)`.

    Args:
        input: Images `(N, ...)`.
        target: Reference images of the same shape.
        max_value: The peak value; `None` takes each input image's maximum.
    Returns:
        `10 log10(max_value^2 / mse)` per image (`inf` where an image equals its target).
    """
    _check_same_shape(input, target, min_dim=2)
    input, target = _float(input), _float(target)
    per_image_mse = _per_sample_mean((input - target).square())
    if max_value is None:
        peak = input.reshape(input.shape[0], -1).amax(dim=1)
    else:
        _check_positive("max_value", max_value)
        peak = torch.full_like(per_image_mse, max_value)
    return 10 * torch.log10(peak.square() / per_image_mse)


def _check_window(window_size: int, sigma: float) -> None:
    if isinstance(window_size, bool) or not isinstance(window_size, int) or window_size < 1:
        raise ValueError(f"`window_size` must be a positive int. Received: window_size={window_size!r}")
    _check_positive("sigma", sigma)


def gaussian_window(window_size: int, sigma: float, *, device: torch.device | str | None = None) -> torch.Tensor:
    """A normalised 1-D gaussian of `window_size` taps centred on `window_size // 2`.

    Built on `device` directly, so no host-to-device copy happens per batch.
    """
    _check_window(window_size, sigma)
    x = torch.arange(window_size, dtype=torch.float32, device=device) - window_size // 2
    g = torch.exp(-x.square() / (2 * sigma**2))
    return g / g.sum()


def _check_images(input: torch.Tensor, target: torch.Tensor, min_size: int) -> None:
    _check_same_shape(input, target, min_dim=4)
    if input.dim() != 4:
        raise ValueError(f"`input` must be images of shape (N, C, H, W). Received: input.shape={tuple(input.shape)}")
    if min(input.shape[-2:]) < min_size:
        raise ValueError(
            f"Images must be at least {min_size} pixels high and wide for this window and number of scales. "
            f"Received: input.shape={tuple(input.shape)}"
        )


def _ssim_and_cs(
    input: torch.Tensor, target: torch.Tensor, window: torch.Tensor, pixel_range: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean SSIM and mean contrast-structure term per image and channel: two `(N, C)` tensors.

    `window` is a 1-D gaussian (its outer product is the 2-D window), or a 2-D window `(k, k)` or
    `(C, 1, k, k)` (one per channel).

    Local statistics use the gaussian window without padding ("valid", as Wang et al.'s
    reference code), so image borders do not mix in zeros.
    """
    channels = input.shape[1]
    if window.dim() == 1:  # the separable gaussian
        window = torch.outer(window, window)
    kernel = window.to(input.device, input.dtype).reshape(-1, 1, *window.shape[-2:]).expand(channels, 1, -1, -1)

    def filt(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, kernel, groups=channels)

    mu_x, mu_y = filt(input), filt(target)
    var_x = filt(input * input) - mu_x.square()
    var_y = filt(target * target) - mu_y.square()
    cov_xy = filt(input * target) - mu_x * mu_y
    c1, c2 = (K1 * pixel_range) ** 2, (K2 * pixel_range) ** 2
    cs_map = (2 * cov_xy + c2) / (var_x + var_y + c2)
    luminance = (2 * mu_x * mu_y + c1) / (mu_x.square() + mu_y.square() + c1)
    return (luminance * cs_map).mean(dim=(-2, -1)), cs_map.mean(dim=(-2, -1))


def ssim(
    input: torch.Tensor,
    target: torch.Tensor,
    *,
    sigma: float = 1.5,
    window_size: int = 11,
    pixel_range: float = 255.0,
    window: torch.Tensor | None = None,
) -> torch.Tensor:
    """The structural similarity (Wang et al., 2004) of each image, averaged over channels: `(N,)`.

    Args:
        input: Images `(N, C, H, W)`, with `H, W >= window_size`.
        target: Reference images of the same shape.
        sigma: Standard deviation of the gaussian window.
        window_size: Taps of the gaussian window.
        pixel_range: The dynamic range `L` of pixel values (255 for 8-bit images, 1 for [0, 1]).
        window: Optional 2-D window, `(k, k)` or `(C, 1, k, k)`, used instead of the gaussian
            (`sigma` and `window_size` are then unused).
    """
    _check_positive("pixel_range", pixel_range)
    if window is None:
        _check_window(window_size, sigma)
        window = gaussian_window(window_size, sigma, device=input.device)
    else:
        window = _check_custom_window(window, input)
    _check_images(input, target, window.shape[-1])
    value, _ = _ssim_and_cs(_float(input), _float(target), window, pixel_range)
    return value.mean(dim=1)


def _check_custom_window(window: object, input: torch.Tensor) -> torch.Tensor:
    channels = input.shape[1] if isinstance(input, torch.Tensor) and input.dim() > 1 else None
    if (
        not isinstance(window, torch.Tensor)
        or window.dim() not in (2, 4)
        or window.shape[-1] != window.shape[-2]
        or (window.dim() == 4 and (window.shape[1] != 1 or window.shape[0] not in (1, channels)))
    ):
        raise ValueError(
            f"`window` must be a square 2-D window, of shape (k, k) or ({channels}, 1, k, k) for these images. "
            f"Received: window of shape {tuple(window.shape) if isinstance(window, torch.Tensor) else type(window).__name__}"
        )
    return window.detach()


def ms_ssim(
    input: torch.Tensor,
    target: torch.Tensor,
    *,
    sigma: float = 1.5,
    window_size: int = 11,
    pixel_range: float = 255.0,
    weights: Sequence[float] = DEFAULT_MS_SSIM_WEIGHTS,
    window: torch.Tensor | None = None,
) -> torch.Tensor:
    """The multi-scale SSIM (Wang, Simoncelli and Bovik, 2003) of each image: `(N,)`.

    Per channel: `ssim_M ** w_M * prod_{j<M} cs_j ** w_j`, halving the images with a 2x2 average
    between scales; negative terms are clamped to 0 (as pytorch-msssim) so fractional powers
    stay real. Then averaged over channels. The smallest scale must still fit the window.
    `window` is an optional 2-D window used instead of the gaussian (as in `ssim`).
    """
    weights = _check_weights(weights)
    _check_positive("pixel_range", pixel_range)
    if window is None:
        _check_window(window_size, sigma)
        window = gaussian_window(window_size, sigma, device=input.device)
    else:
        window = _check_custom_window(window, input)
    _check_images(input, target, window.shape[-1] * 2 ** (len(weights) - 1))
    x, y = _float(input), _float(target)
    value = torch.ones(x.shape[:2], dtype=x.dtype, device=x.device)
    for scale, weight in enumerate(weights):
        full, cs = _ssim_and_cs(x, y, window, pixel_range)
        term = full if scale == len(weights) - 1 else cs
        value = value * term.clamp(min=0) ** weight
        x, y = F.avg_pool2d(x, kernel_size=2), F.avg_pool2d(y, kernel_size=2)
    return value.mean(dim=1)


def _check_weights(weights: object) -> tuple[float, ...]:
    if isinstance(weights, torch.Tensor) or not isinstance(weights, Sequence) or len(weights) == 0:
        raise ValueError(f"`weights` must be a non-empty sequence of floats. Received: weights={weights!r}")
    return tuple(float(w) for w in weights)


class _ImageMetric(Metric):
    """Shared by the image metrics: optional denormalisation, then a per-image value averaged."""

    def __init__(self, *, denormalize_fn: DenormalizeFn | None = None, target: str | None = None) -> None:
        super().__init__(target=target)
        if denormalize_fn is not None and not callable(denormalize_fn):
            raise TypeError(f"`denormalize_fn` must be callable or None. Received: denormalize_fn={denormalize_fn!r}")
        self.denormalize_fn = denormalize_fn

    @torch.no_grad()
    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The batch mean of the per-image values, after `denormalize_fn`."""
        if self.denormalize_fn is not None:
            input, target = self.denormalize_fn(input), self.denormalize_fn(target)
        return self.per_image(input, target).mean()

    def per_image(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """One value per image, `(N,)`: what subclasses define."""
        raise NotImplementedError


class PSNR(_ImageMetric):
    """Peak signal-to-noise ratio in dB, averaged over images.

    Args:
        denormalize_fn: Optional function applied to input and target first.
        max_value: The peak pixel value; `None` takes each input image's maximum.
        target: Optional key of dict outputs and labels.
    """

    def __init__(
        self, *, denormalize_fn: DenormalizeFn | None = None, max_value: float | None = 1, target: str | None = None
    ) -> None:
        super().__init__(denormalize_fn=denormalize_fn, target=target)
        if max_value is not None:
            _check_positive("max_value", max_value)
        self.max_value = max_value

    def per_image(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return psnr(input, target, max_value=self.max_value)


class SSIM(_ImageMetric):
    """Structural similarity with a gaussian window, averaged over images.

    Args:
        channels: The number of image channels `C` the inputs must have.
        sigma: Standard deviation of the gaussian window.
        window_size: Taps of the gaussian window (images must be at least this large).
        denormalize_fn: Optional function applied to input and target first.
        pixel_range: The dynamic range `L` of pixel values.
        target: Optional key of dict outputs and labels.
    """

    def __init__(
        self,
        channels: int,
        /,
        sigma: float = 1.5,
        window_size: int = 11,
        *,
        denormalize_fn: DenormalizeFn | None = None,
        pixel_range: float = 255,
        target: str | None = None,
    ) -> None:
        super().__init__(denormalize_fn=denormalize_fn, target=target)
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise ValueError(f"`channels` must be a positive int. Received: channels={channels!r}")
        _check_window(window_size, sigma)
        _check_positive("pixel_range", pixel_range)
        self.channels, self.sigma, self.window_size, self.pixel_range = channels, sigma, window_size, pixel_range

    @assignable
    def window(self) -> torch.Tensor:
        """The 2-D gaussian window, one per channel: `(C, 1, window_size, window_size)`.

        A subclass may assign its own window, `(C, 1, k, k)` or `(k, k)` (a tensor or a
        parameter, as upstream 1.5's SSIM assigned it): SSIM is then computed with that window.
        """
        g = gaussian_window(self.window_size, self.sigma)
        return torch.outer(g, g).expand(self.channels, 1, -1, -1)

    def _check_channels(self, input: torch.Tensor) -> None:
        if input.dim() >= 2 and input.shape[1] != self.channels:
            raise ValueError(
                f"{type(self).__name__}({self.channels}) expects images of shape (N, {self.channels}, H, W). "
                f"Received: input.shape={tuple(input.shape)}"
            )

    def per_image(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self._check_channels(input)
        window = self.window if is_assigned(self, "window") else None
        return ssim(
            input, target, sigma=self.sigma, window_size=self.window_size, pixel_range=self.pixel_range, window=window
        )

    def extra_repr(self) -> str:
        return f"{self.channels}, sigma={self.sigma}, window_size={self.window_size}, pixel_range={self.pixel_range}"


class MS_SSIM(SSIM):  # upstream name
    """Multi-scale structural similarity, averaged over images (see `ms_ssim`).

    Args:
        channels, sigma, window_size, denormalize_fn, pixel_range, target: as `SSIM`.
        weights: One weight per scale; images must be `window_size * 2 ** (len(weights) - 1)`
            pixels or larger.
    """

    def __init__(
        self,
        channels: int,
        /,
        sigma: float = 1.5,
        window_size: int = 11,
        *,
        denormalize_fn: DenormalizeFn | None = None,
        pixel_range: float = 255,
        target: str | None = None,
        weights: Sequence[float] = DEFAULT_MS_SSIM_WEIGHTS,
    ) -> None:
        super().__init__(
            channels, sigma, window_size, denormalize_fn=denormalize_fn, pixel_range=pixel_range, target=target
        )
        self.weights = list(_check_weights(weights))

    @property
    def scales(self) -> int:
        """The number of scales, one per weight."""
        return len(self.weights)

    def per_image(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self._check_channels(input)
        return ms_ssim(
            input,
            target,
            sigma=self.sigma,
            window_size=self.window_size,
            pixel_range=self.pixel_range,
            weights=self.weights,
            window=self.window if is_assigned(self, "window") else None,
        )


class CosineSimilarity(Metric):
    """Cosine similarity along `dim` (features, dim 1 by default), averaged over samples."""

    def __init__(self, *, dim: int = 1, eps: float = 1e-8, target: str | None = None) -> None:
        super().__init__(target=target)
        self.dim, self.eps = dim, eps

    @torch.no_grad()
    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return cosine_similarity(input, target, dim=self.dim, eps=self.eps).mean()


class _ElementwiseMean(Metric):
    """A mean over every element of a batch: each batch weighs by its elements, so the epoch value is the mean
    over all the data's elements whatever the batches' shapes (a subclass replacing `forward` by its samples)."""

    def __init__(self, *, target: str | None = None) -> None:
        super().__init__(target=target)
        self._plain = type(self).forward in _ELEMENTWISE  # decided when made

    def denominator(self, input: Any, target: Any) -> int | torch.Tensor:
        return input.numel() if self._plain and isinstance(input, torch.Tensor) else super().denominator(input, target)


class MAE(_ElementwiseMean):
    """Mean absolute error over all elements."""

    @torch.no_grad()
    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return mae(input, target)


class MSE(_ElementwiseMean):
    """Mean squared error over all elements."""

    @torch.no_grad()
    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return mse(input, target)


_ELEMENTWISE = (MAE.forward, MSE.forward)
"""The `forward`s whose value averages elements: a subclass replacing them is averaged over samples."""
