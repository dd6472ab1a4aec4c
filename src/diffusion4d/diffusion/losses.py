"""Training losses of Sec. 3.3: the latent diffusion loss L_ldm and the motion magnitude reconstruction loss L_mr.

Notation follows the paper: z0 the clean latent video, z̄0 the latent of the static orbit V̄, z_t the noised latent,
ẑ0 the clean latent implied by the denoiser's output, ᾱ_t = ``alphas_cumprod[t]`` (take it from a diffusers
scheduler: ``scheduler.alphas_cumprod``). Latents are in diffusers' video layout [B, C, T, h, w].

Everything is computed in float32 whatever the inputs' dtype (losses of bf16/fp16 activations stay exact enough).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from diffusion4d.metrics import motion_magnitude

PREDICTION_TYPES = ("epsilon", "v_prediction")


def _check_prediction_type(prediction_type: str) -> None:
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")


def _alpha_sigma(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor, like: torch.Tensor):
    """√ᾱ_t and √(1−ᾱ_t) per sample, shaped [B, 1, ..., 1] to broadcast against ``like``."""
    a = torch.as_tensor(alphas_cumprod).to(device=like.device, dtype=torch.float32)
    a = a[torch.as_tensor(timesteps, device=like.device).long()]
    a = a.reshape(-1, *([1] * (like.dim() - 1)))
    return a.sqrt(), (1 - a).sqrt()


def noised_latents(z0, noise, timesteps, alphas_cumprod) -> torch.Tensor:
    """Forward process q(z_t | z0): z_t = √ᾱ_t z0 + √(1−ᾱ_t) ε (``scheduler.add_noise``, in float32)."""
    sa, sb = _alpha_sigma(alphas_cumprod, timesteps, z0)
    return sa * z0.float() + sb * noise.float()


def predicted_x0(z_t, model_output, timesteps, alphas_cumprod, prediction_type: str = "epsilon") -> torch.Tensor:
    """ẑ0 implied by the model's output at each sample's timestep (the ẑ0 of Eq. 2).

    ε-prediction: ẑ0 = (z_t − √(1−ᾱ) ε̂) / √ᾱ;   v-prediction: ẑ0 = √ᾱ z_t − √(1−ᾱ) v̂.
    """
    _check_prediction_type(prediction_type)
    sa, sb = _alpha_sigma(alphas_cumprod, timesteps, z_t)
    z_t, out = z_t.float(), model_output.float()
    if prediction_type == "epsilon":
        return (z_t - sb * out) / sa
    return sa * z_t - sb * out


def diffusion_target(z0, noise, timesteps, alphas_cumprod, prediction_type: str = "epsilon") -> torch.Tensor:
    """What the denoiser regresses in L_ldm: ε (ε-prediction) or v = √ᾱ ε − √(1−ᾱ) z0 (v-prediction)."""
    _check_prediction_type(prediction_type)
    if prediction_type == "epsilon":
        return noise.float()
    sa, sb = _alpha_sigma(alphas_cumprod, timesteps, z0)
    return sa * noise.float() - sb * z0.float()


def latent_motion_magnitude(z: torch.Tensor, z_static: torch.Tensor) -> torch.Tensor:
    """m(z0) = (1/T)‖z0 − z̄0‖² of Eq. (2), per sample [B].

    Uses `metrics.motion_magnitude` (Eq. 1) so pixels and latents share one definition: the squared difference is
    averaged over each frame's elements (C·h·w) and then over the T frames. Inputs are [B, C, T, h, w].
    """
    return motion_magnitude(z.float().transpose(1, 2), z_static.float().transpose(1, 2))


def latent_diffusion_loss(model_output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L_ldm = ‖target − model_output‖² (Sec. 3.3), averaged over all elements."""
    return F.mse_loss(model_output.float(), target.float())


def motion_reconstruction_loss(z0, z0_hat, z0_static, weights: torch.Tensor | None = None) -> torch.Tensor:
    """L_mr = ‖m(z0) − m(ẑ0)‖² of Eq. (2), averaged over the batch (optionally weighted per sample [B])."""
    per_sample = (latent_motion_magnitude(z0, z0_static) - latent_motion_magnitude(z0_hat, z0_static)).pow(2)
    return per_sample.mean() if weights is None else (weights.to(per_sample) * per_sample).mean()


def motion_loss_weights(timesteps, alphas_cumprod) -> torch.Tensor:
    """Per-sample weights ᾱ_t² for L_mr — our choice; the paper gives none.

    With ε-prediction an error δ in ε̂ moves ẑ0 by δ·√(1−ᾱ)/√ᾱ, and m is quadratic in ẑ0, so the unweighted
    (m(z0) − m(ẑ0))² grows like 1/ᾱ² at high noise (×10⁴ near t = T with the scaled-linear schedule), swamping
    L_ldm and blowing up training. Weighting by ᾱ² puts every timestep on the scale of an error in ε̂.
    """
    t = torch.as_tensor(timesteps)
    # indexed where t lives: a device index into a host table (or back) would synchronise every training step
    a = torch.as_tensor(alphas_cumprod).to(device=t.device, dtype=torch.float32)[t.long()]
    return a**2


class Diffusion4DLoss(NamedTuple):
    loss: torch.Tensor  # L = L_ldm + ω·L_mr (backpropagate this)
    ldm: torch.Tensor  # L_ldm (for logging)
    mr: torch.Tensor  # L_mr (for logging)


def diffusion4d_loss(
    model_output: torch.Tensor,
    z0: torch.Tensor,
    z0_static: torch.Tensor,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    *,
    prediction_type: str = "epsilon",
    omega: float = 1.0,
) -> Diffusion4DLoss:
    """L = L_ldm + ω·L_mr (Sec. 3.3) from one training step's tensors.

    ``model_output`` is the denoiser's output on z_t = √ᾱ z0 + √(1−ᾱ) ε (`noised_latents`, or the scheduler's
    ``add_noise``); z_t is rebuilt here from (z0, noise, t). L_mr is weighted per sample by
    `motion_loss_weights`. The paper gives no value for ω. With ω == 0 the L_mr
    term is still computed (and logged) but carries no gradient weight.
    """
    target = diffusion_target(z0, noise, timesteps, alphas_cumprod, prediction_type)
    ldm = latent_diffusion_loss(model_output, target)
    z_t = noised_latents(z0, noise, timesteps, alphas_cumprod)
    z0_hat = predicted_x0(z_t, model_output, timesteps, alphas_cumprod, prediction_type)
    mr = motion_reconstruction_loss(z0, z0_hat, z0_static, motion_loss_weights(timesteps, alphas_cumprod))
    return Diffusion4DLoss(ldm + omega * mr, ldm, mr)
