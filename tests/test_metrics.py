import math

import numpy as np
import pytest
import torch

from diffusion4d.metrics import motion_magnitude, ssim


def _ssim_by_hand(x: np.ndarray, y: np.ndarray, size=11, sigma=1.5, L=1.0) -> float:
    """Direct, loop-based SSIM of two single-channel images: a reference written from the paper's formula."""
    ax = np.arange(size) - (size - 1) / 2
    g = np.exp(-(ax**2) / (2 * sigma**2))
    w = np.outer(g, g)
    w /= w.sum()
    c1, c2 = (0.01 * L) ** 2, (0.03 * L) ** 2
    vals = []
    for r in range(x.shape[0] - size + 1):
        for c in range(x.shape[1] - size + 1):
            a, b = x[r : r + size, c : c + size], y[r : r + size, c : c + size]
            ma, mb = (w * a).sum(), (w * b).sum()
            va, vb = (w * (a - ma) ** 2).sum(), (w * (b - mb) ** 2).sum()
            cov = (w * (a - ma) * (b - mb)).sum()
            vals.append(((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    return float(np.mean(vals))


def test_ssim_matches_a_hand_written_reference():
    rng = np.random.default_rng(0)
    x = rng.random((20, 23))
    y = np.clip(x + 0.2 * rng.standard_normal(x.shape), 0, 1)
    ours = ssim(torch.tensor(x)[None, None], torch.tensor(y)[None, None])
    assert ours.shape == (1,)
    assert ours.item() == pytest.approx(_ssim_by_hand(x, y), abs=1e-6)


def test_ssim_identical_is_one_and_batched_per_image():
    x = torch.rand(3, 3, 32, 32)
    y = x.clone()
    y[1] = 1 - y[1]
    s = ssim(x, y)
    assert s.shape == (3,)
    assert s[0].item() == pytest.approx(1.0) and s[2].item() == pytest.approx(1.0)
    assert s[1].item() < 0.0  # an inverted image is anti-correlated
    with pytest.raises(ValueError, match="one shape"):
        ssim(x, y[:, :, :16])


def test_ssim_of_constant_regions_is_one_so_background_counts_as_similar():
    x = torch.ones(1, 1, 16, 16)
    assert ssim(x, x.clone()).item() == pytest.approx(1.0)


def test_motion_magnitude_is_the_mean_squared_difference_over_frames():
    static = torch.zeros(4, 3, 8, 8)
    dynamic = static.clone()
    dynamic[1] = 0.5  # one frame differs by 0.5 everywhere
    dynamic[3, :, :4] = 1.0  # half of another frame differs by 1
    # Per-frame means: 0, 0.25, 0, 0.5 → m = 0.75 / 4
    assert motion_magnitude(dynamic, static).item() == pytest.approx(0.75 / 4)
    batched = motion_magnitude(torch.stack([dynamic, static]), torch.stack([static, static]))
    assert batched.shape == (2,)
    assert batched[1].item() == 0.0
    # Resolution-independent: upsampling both orbits leaves m unchanged.
    up = lambda v: torch.repeat_interleave(torch.repeat_interleave(v, 2, -1), 2, -2)  # noqa: E731
    assert motion_magnitude(up(dynamic), up(static)).item() == pytest.approx(0.75 / 4)
    with pytest.raises(ValueError, match="one shape"):
        motion_magnitude(dynamic, static[:2])
    assert math.isfinite(motion_magnitude(torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 4)).item())

