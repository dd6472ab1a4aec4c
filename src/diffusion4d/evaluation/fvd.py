"""Fréchet Video Distance (paper Sec. 4.2) from video features: the Fréchet distance of two Gaussian fits.

Choosing and running the feature network (I3D, `evaluation.i3d`) is the caller's job; this module is the formula,
computed exactly for rank-deficient covariances (fewer videos than feature dimensions), and what the result rests on.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "FVDResult",
    "SingularCovarianceWarning",
    "effective_rank",
    "feature_statistics",
    "frechet_distance",
    "fvd_from_features",
    "fvd_result",
    "trace_sqrt_product",
]


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of a feature set.

    Args:
        features: [N, D] (tensor or array), one row per video/image; N >= 2.
    Returns:
        (mu [D], sigma [D, D]) in float64; sigma is the unbiased sample covariance (N − 1), as in FID/FVD code.
    """
    f = features.detach().cpu().double().numpy() if torch.is_tensor(features) else np.asarray(features, np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"feature_statistics needs features [N, D] with N >= 2, got shape {f.shape}")
    return f.mean(axis=0), np.atleast_2d(np.cov(f, rowvar=False))


def _psd_eigh(sigma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues [D] and eigenvectors [D, D] of a symmetric PSD matrix, with its null space set to exactly 0.

    Eigenvalues up to numpy's rank tolerance (max·D·ε, as `effective_rank`) are rounding noise of a zero: kept,
    their square roots (~1e-8 of the scale each) would add up to a visible error over hundreds of them.
    """
    values, vectors = np.linalg.eigh((sigma + sigma.T) / 2)
    tol = max(values.max(initial=0.0), 0.0) * len(values) * np.finfo(np.float64).eps
    return np.where(values > tol, values, 0.0), vectors


def psd_sqrt(sigma: np.ndarray) -> np.ndarray:
    """Symmetric square root [D, D] of a symmetric PSD matrix [D, D], from its eigen-decomposition."""
    values, vectors = _psd_eigh(sigma)
    return (vectors * np.sqrt(values)) @ vectors.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """Tr((Σ1Σ2)^{1/2}) for PSD Σ1, Σ2 [D, D], singular ones included.

    Σ1Σ2 is similar to the PSD matrix Σ1^{1/2} Σ2 Σ1^{1/2}, so the trace is the sum of the square roots of that
    matrix's eigenvalues: what TF-GAN's ``trace_sqrt_product`` computes (the function the reference FVD code of
    Unterthiner et al. calls). Unlike a general matrix square root of Σ1Σ2 (scipy's sqrtm, as pytorch-fid), it
    needs no εI: a rank-deficient covariance (fewer videos than feature dimensions) has zero eigenvalues, whose
    square roots are 0, and the result is exact rather than shifted by a regulariser.
    """
    root1 = psd_sqrt(sigma1)
    return float(np.sqrt(_psd_eigh(root1 @ sigma2 @ root1)[0]).sum())


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance of two Gaussians: ‖μ1 − μ2‖² + Tr(Σ1 + Σ2 − 2(Σ1Σ2)^{1/2}).

    Args:
        mu1, mu2: means [D]; sigma1, sigma2: covariances [D, D] (symmetric PSD; singular ones are fine, see
            `trace_sqrt_product`).
    Returns:
        The distance (float, >= 0).
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(
            f"frechet_distance needs mu [D] and sigma [D, D] of one D, got {mu1.shape}, {sigma1.shape}, "
            f"{mu2.shape}, {sigma2.shape}"
        )
    diff = mu1 - mu2
    d = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt_product(sigma1, sigma2)
    return max(float(d), 0.0)  # the true value is >= 0; rounding can leave -1e-12 for identical sets


def effective_rank(sigma: np.ndarray) -> int:
    """Numerical rank of a covariance [D, D] (eigenvalues above numpy's default tolerance, max·D·ε)."""
    return int(np.linalg.matrix_rank(sigma, hermitian=True))


class SingularCovarianceWarning(UserWarning):
    """An FVD whose covariances are rank-deficient: fewer videos than feature dimensions."""


@dataclass(frozen=True)
class FVDResult:
    """An FVD and what it rests on: the videos on each side, the feature dimension and the covariances' ranks.

    With N videos a sample covariance has rank at most N − 1, so below D + 1 videos (401 for I3D logits) the
    Gaussian fit is rank-deficient. The distance is still exact for those two fits (no εI, see
    `trace_sqrt_product`), but it is a noisy, biased estimate: compare FVDs only over equal numbers of videos.
    """

    value: float
    items: tuple[int, int]  # (generated, reference) videos
    dim: int
    ranks: tuple[int, int]  # (generated, reference) covariance ranks, each <= min(items − 1, dim)

    @property
    def singular(self) -> bool:
        return min(self.ranks) < self.dim

    def describe(self) -> str:
        """One line for a report: how many videos, the feature dimension, the ranks and what they mean."""
        (n, m), (r1, r2) = self.items, self.ranks
        line = f"FVD over {n} generated and {m} reference videos, {self.dim}-d features, covariance ranks {r1} and {r2}"
        if self.singular:
            line += (f" (< {self.dim}: rank-deficient, computed exactly without regularisation; a small-sample "
                     f"estimate, comparable only with FVDs over the same number of videos)")
        return line


def fvd_result(gen_feats, ref_feats) -> FVDResult:
    """FVD of generated vs reference video features [N, D] and [M, D], with the counts and ranks it rests on.

    Raises ValueError for fewer than 2 videos on a side (a covariance needs 2) or features of different D.
    """
    shapes = [tuple(f.shape) if hasattr(f, "shape") else np.shape(f) for f in (gen_feats, ref_feats)]
    if any(len(s) != 2 for s in shapes) or shapes[0][1] != shapes[1][1]:
        raise ValueError(f"FVD needs features [N, D] and [M, D] of one D, got {shapes[0]} and {shapes[1]}")
    if min(shapes[0][0], shapes[1][0]) < 2:
        raise ValueError(f"FVD needs at least 2 videos on each side (a covariance needs 2), got "
                         f"{shapes[0][0]} generated and {shapes[1][0]} reference")
    (mu1, sigma1), (mu2, sigma2) = feature_statistics(gen_feats), feature_statistics(ref_feats)
    return FVDResult(frechet_distance(mu1, sigma1, mu2, sigma2), (shapes[0][0], shapes[1][0]), shapes[0][1],
                     (effective_rank(sigma1), effective_rank(sigma2)))


def fvd_from_features(gen_feats, ref_feats) -> float:
    """FVD given video features of generated and reference (ground-truth) orbits.

    Args:
        gen_feats: [N, D]; ref_feats: [M, D] — one row per video, from the same feature network (I3D in
            Unterthiner et al. 2019), N, M >= 2. Choosing and running that network is the caller's job.
    Returns:
        The Fréchet distance of the two Gaussian fits. Warns (`SingularCovarianceWarning`, with the counts and
        ranks) when a covariance is rank-deficient; `fvd_result` gives those numbers instead of a warning.
    """
    result = fvd_result(gen_feats, ref_feats)
    if result.singular:
        warnings.warn(result.describe(), SingularCovarianceWarning, stacklevel=2)
    return result.value
