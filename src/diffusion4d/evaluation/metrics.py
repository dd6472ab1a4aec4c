"""Metrics of paper Sec. 4.2: PSNR, Fréchet distance (the FVD formula), CLIP score, and safe weight loading.

Image metrics compare generated and ground-truth images of the same camera pose. SSIM is not redefined here:
use `diffusion4d.metrics.ssim` (re-exported below) so curation, training and evaluation agree on one SSIM.
Metrics that need pretrained networks (LPIPS, the FVD video network, CLIP) get their weights only from a path
the user gives; without it they are skipped with a `MissingWeights` message, never replaced by a made-up number.
"""

from __future__ import annotations

import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from diffusion4d.metrics import ssim

__all__ = [
    "FVDResult",
    "MissingWeights",
    "SingularCovarianceWarning",
    "clip_score",
    "effective_rank",
    "feature_statistics",
    "frechet_distance",
    "fvd_from_features",
    "fvd_result",
    "load_state_dict_safely",
    "load_strict",
    "psnr",
    "require_weights",
    "ssim",
    "trace_sqrt_product",
]


# --- pixel metrics --------------------------------------------------------------------------------------------


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB, per image: 10·log10(data_range² / MSE).

    Args:
        x, y: images [B, C, H, W] (or [C, H, W]) on the scale ``data_range`` (1.0 for [0, 1]).
    Returns:
        PSNR [B] (float64). Identical images have MSE 0 and PSNR +inf; it is reported as inf, not capped,
        so a caller averaging over a test set sees it instead of a silently chosen ceiling.
    """
    if x.shape != y.shape:
        raise ValueError(f"psnr needs images of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.dim() == 3:
        x, y = x[None], y[None]
    if x.dim() != 4:
        raise ValueError(f"psnr needs images [B, C, H, W] or [C, H, W], got {tuple(x.shape)}")
    mse = (x.double() - y.double()).pow(2).mean(dim=(1, 2, 3))
    # mse == 0 divides by zero on purpose: IEEE gives +inf, which is the right answer for identical images
    return 10.0 * torch.log10(data_range**2 / mse)


# --- Fréchet distance (FVD) -----------------------------------------------------------------------------------


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


# --- CLIP score -----------------------------------------------------------------------------------------------


def clip_score(reference_embeddings: torch.Tensor, image_embeddings: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of CLIP embeddings of the reference (prompt text or front image) and generated images.

    Args:
        reference_embeddings: [D] or [1, D] (one reference for all N images) or [N, D] (paired row by row).
        image_embeddings: [N, D].
    Returns:
        [N] in [−1, 1]; NOT scaled by 100 (unlike torchmetrics' CLIPScore). This matches the paper, whose
        Table 1 reports CLIP-F/CLIP-O as 0.78–0.91, i.e. raw cosine similarity. CLIP-F averages it over front
        views, CLIP-O over all orbit views.
    """
    ref, img = reference_embeddings, image_embeddings
    if ref.dim() == 1:
        ref = ref[None]
    if img.dim() != 2 or ref.dim() != 2 or ref.shape[1] != img.shape[1] or ref.shape[0] not in (1, img.shape[0]):
        raise ValueError(
            "clip_score needs reference [D], [1, D] or [N, D] and images [N, D], "
            f"got {tuple(reference_embeddings.shape)} and {tuple(image_embeddings.shape)}"
        )
    ref, img = F.normalize(ref.double(), dim=-1), F.normalize(img.double(), dim=-1)
    return (ref * img).sum(dim=-1).clamp(-1.0, 1.0)  # clamp: rounding can push |cos| a hair past 1


# --- pretrained weights ---------------------------------------------------------------------------------------


class MissingWeights(Exception):
    """A metric that needs pretrained weights was not given them; the metric is skipped, not faked.

    ``str(exc)`` reads e.g. "LPIPS skipped: provide --lpips-weights PATH (no path given)".
    """

    def __init__(self, metric: str, flag: str, reason: str):
        self.metric, self.flag, self.reason = metric, flag, reason
        super().__init__(f"{metric} skipped: provide {flag} PATH ({reason})")


def require_weights(metric: str, flag: str, path: str | Path | None) -> Path:
    """The weights file for ``metric``, or MissingWeights naming the command-line ``flag`` that supplies it.

    Example: ``require_weights("LPIPS", "--lpips-weights", args.lpips_weights)``; callers catch
    MissingWeights, record ``str(exc)`` as the note for that metric and report the value as None.
    """
    if path is None:
        raise MissingWeights(metric, flag, "no path given")
    path = Path(path)
    if not path.is_file():
        raise MissingWeights(metric, flag, f"{path} is not a file")
    return path


def load_state_dict_safely(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a state dict without executing pickle code.

    ``.safetensors`` goes through `safetensors.torch.load_file`; ``.pt``/``.pth``/``.bin`` through
    ``torch.load(..., map_location="cpu", weights_only=True)``, whose unpickler admits only tensors and plain
    containers. Any other suffix, and any pickle that needs other objects, raises ValueError: downloaded
    checkpoints are untrusted and an arbitrary pickle can run code when loaded.
    Returns the loaded mapping (CPU tensors; a .pt may hold nested plain containers).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors raises its own error types; callers should see one kind
            raise ValueError(f"{path}: refused, not a readable safetensors file ({exc})") from exc
    if suffix in (".pt", ".pth", ".bin"):
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, AttributeError, EOFError) as exc:
            raise ValueError(f"{path}: refused, it is not loadable with weights_only=True ({exc})") from exc
        if not isinstance(obj, dict):
            raise ValueError(f"{path}: refused, it holds a {type(obj).__name__}, not a state dict")
        return obj
    raise ValueError(f"{path}: refused, unknown weights format {suffix!r} (use .safetensors, .pt, .pth or .bin)")


def load_strict(
    module: torch.nn.Module, state: dict, source: str | Path, what: str, optional: tuple[str, ...] = ()
) -> None:
    """``module.load_state_dict(state)``, but every problem becomes one ValueError naming ``source``.

    ``what`` names the expected file in the message ("an LPIPS-alex linear-layer"). Missing keys, unexpected keys
    and shape mismatches are all listed (the first few of each), so a wrong file (an AlexNet file given for VGG,
    a checkpoint of another layout) is recognisable from the message.
    Keys ending in one of ``optional`` (e.g. BatchNorm's ``num_batches_tracked``, absent from older files)
    may be missing; the module keeps its own value for them.
    """
    own = module.state_dict()
    missing = [k for k in own if k not in state and not k.endswith(optional)]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(state[k].shape)} (expected {tuple(own[k].shape)})"
             for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    problems = []
    for kind, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", wrong)):
        if keys:
            more = f" … ({len(keys)} in all)" if len(keys) > 5 else ""
            problems.append(f"{kind}: {', '.join(keys[:5])}{more}")
    if problems:
        raise ValueError(f"{source}: not {what} state dict; " + "; ".join(problems))
    module.load_state_dict({k: state[k] for k in own if k in state}, strict=False)
