"""SSIM in numpy against a direct (non-separable, loop) implementation of Wang et al. 2004."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lorascope.evals.ssim import common_size, ssim_arrays, ssim_files


def reference_ssim(x: np.ndarray, y: np.ndarray, win: int = 11, sigma: float = 1.5) -> float:
    ax = np.arange(win) - (win - 1) / 2
    g2 = np.exp(-(ax[:, None] ** 2 + ax[None, :] ** 2) / (2 * sigma**2))
    g2 /= g2.sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    vals = []
    for i in range(x.shape[0] - win + 1):
        for j in range(x.shape[1] - win + 1):
            a, b = x[i : i + win, j : j + win], y[i : i + win, j : j + win]
            ma, mb = (g2 * a).sum(), (g2 * b).sum()
            va, vb = (g2 * a * a).sum() - ma**2, (g2 * b * b).sum() - mb**2
            cov = (g2 * a * b).sum() - ma * mb
            vals.append(((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    return float(np.mean(vals))


def test_matches_the_direct_formula():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (24, 30)).astype(np.float64)
    y = np.clip(x + rng.normal(0, 25, x.shape), 0, 255)
    assert ssim_arrays(x, y) == pytest.approx(reference_ssim(x, y), rel=1e-9)


def test_identical_is_one_and_more_noise_is_lower():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (40, 40)).astype(np.float64)
    assert ssim_arrays(x, x) == pytest.approx(1.0)
    light = np.clip(x + rng.normal(0, 10, x.shape), 0, 255)
    heavy = np.clip(x + rng.normal(0, 60, x.shape), 0, 255)
    assert 1.0 > ssim_arrays(x, light) > ssim_arrays(x, heavy)
    with pytest.raises(ValueError, match="equal shapes"):
        ssim_arrays(x, x[:-1])


def test_files_are_compared_downscaled_in_grayscale(tmp_path):
    rng = np.random.default_rng(2)
    arr = rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "a.png")
    Image.fromarray(arr).resize((256, 256)).save(tmp_path / "b.png")  # same picture, other size
    Image.fromarray(255 - arr).save(tmp_path / "c.png")
    assert common_size((512, 512), (256, 256)) == (128, 128)
    assert ssim_files(tmp_path / "a.png", tmp_path / "a.png") == pytest.approx(1.0)
    assert ssim_files(tmp_path / "a.png", tmp_path / "b.png") > 0.9
    assert ssim_files(tmp_path / "a.png", tmp_path / "c.png") < 0.1


def test_weighted_ssim_is_the_map_where_the_weight_is():
    """An inpaint's kept region: the SSIM map's mean where the weight is 1 (windows at their
    centre); the picture repainted only under weight 0 scores 1 there; no weight at all is NaN."""
    import math

    from lorascope.evals.ssim import ssim_arrays

    rng = np.random.default_rng(5)
    x = rng.uniform(0, 255, (64, 64))
    y = x.copy()
    y[:, 40:] = rng.uniform(0, 255, (64, 24))  # repainted right part
    keep = np.zeros((64, 64))
    keep[:, :28] = 1.0  # kept left part, 12 px clear of the repaint (more than the 11 px window)
    assert ssim_arrays(x, y, keep) == pytest.approx(1.0)
    assert ssim_arrays(x, y) < 0.8
    assert math.isnan(ssim_arrays(x, y, np.zeros((64, 64))))
    with pytest.raises(ValueError, match="weight"):
        ssim_arrays(x, y, np.ones((8, 8)))
