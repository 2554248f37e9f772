"""SSIM (Wang et al. 2004) on a downscaled grayscale copy, numpy only.

Why pixels as well as CLIP: a CLIP embedding summarises what an image shows, so a weak or
random scorer can miss a change a person sees at once; SSIM compares structure directly.
Downscaling (longest side 128 px by default) keeps it cheap and makes it ignore encoder noise
and sub-pixel jitter, which are not what a regression check is after.

Parameters are the paper's: 11x11 Gaussian window, sigma 1.5, K1 = 0.01, K2 = 0.03,
dynamic range 255; the result is the mean SSIM over the valid (unpadded) window positions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image

WINDOW = 11
SIGMA = 1.5
K1, K2, DATA_RANGE = 0.01, 0.03, 255.0
DEFAULT_SIDE = 128


def _gaussian(size: int = WINDOW, sigma: float = SIGMA) -> np.ndarray:
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _filter(img: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable 'valid' convolution with the 1-D kernel `g` along both axes."""
    rows = sliding_window_view(img, g.size, axis=1) @ g
    return sliding_window_view(rows, g.size, axis=0) @ g


def gray_array(path_or_image: Path | str | Image.Image, size: tuple[int, int]) -> np.ndarray:
    """Grayscale float64 array of the image resized to `size` (w, h) with a box filter."""
    im = path_or_image if isinstance(path_or_image, Image.Image) else Image.open(path_or_image)
    with im:
        gray = im.convert("L")
        if gray.size != size:
            gray = gray.resize(size, Image.Resampling.BOX)
        return np.asarray(gray, dtype=np.float64)


def common_size(a: tuple[int, int], b: tuple[int, int], side: int = DEFAULT_SIDE) -> tuple[int, int]:
    """The size both images are compared at: the smaller of the two, longest side <= `side`,
    never below the SSIM window."""
    w, h = min(a[0], b[0]), min(a[1], b[1])
    scale = min(1.0, side / max(w, h))
    return max(WINDOW, round(w * scale)), max(WINDOW, round(h * scale))


def ssim_arrays(x: np.ndarray, y: np.ndarray, weight: np.ndarray | None = None) -> float:
    """Mean SSIM of two same-shape grayscale arrays (values 0..255); with `weight` (same shape,
    0..1) the weighted mean of the SSIM map, each window weighted at its centre (an inpaint's
    kept region: weight 1 outside the mask); NaN when the weights sum to 0."""
    if x.shape != y.shape:
        raise ValueError(f"SSIM needs equal shapes, got {x.shape} and {y.shape}")
    g = _gaussian(min(WINDOW, *x.shape) | 1)
    c1, c2 = (K1 * DATA_RANGE) ** 2, (K2 * DATA_RANGE) ** 2
    mu_x, mu_y = _filter(x, g), _filter(y, g)
    xx, yy, xy = _filter(x * x, g), _filter(y * y, g), _filter(x * y, g)
    var_x, var_y, cov = xx - mu_x**2, yy - mu_y**2, xy - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    smap = num / den
    if weight is None:
        return float(np.mean(smap))
    if weight.shape != x.shape:
        raise ValueError(f"SSIM weight needs the images' shape {x.shape}, got {weight.shape}")
    top, left = (x.shape[0] - smap.shape[0]) // 2, (x.shape[1] - smap.shape[1]) // 2
    w = weight[top:top + smap.shape[0], left:left + smap.shape[1]]
    total = float(w.sum())
    return float((smap * w).sum() / total) if total > 0 else float("nan")


def ssim_files(a: Path | str, b: Path | str, side: int = DEFAULT_SIDE, keep_mask: Path | str | None = None) -> float:
    """SSIM of two image files, compared at `common_size`; with `keep_mask` (an inpaint mask:
    white repaints) only where the mask is dark, i.e. what the inpaint was to leave alone."""
    with Image.open(a) as ia, Image.open(b) as ib:
        size = common_size(ia.size, ib.size, side)
    weight = None
    if keep_mask is not None:
        weight = (gray_array(keep_mask, size) < 128).astype(np.float64)
    return ssim_arrays(gray_array(a, size), gray_array(b, size), weight)
