"""The 4D-aware video UNets: diffusers' ModelScope-T2V and I2VGen-XL UNets plus motion (and camera) embeddings.

Both classes keep every submodule of their diffusers parent under the parent's name, so a base checkpoint loads
into them unchanged (see ``loading.py``) and only the new layers — ``motion_embedder``, ``camera_embedder`` — start
from scratch (at zero output). Their ``forward`` is ours: the parents have no slot for an extra embedding
(UNet3DConditionModel accepts ``class_labels`` but ignores them), so we re-run the parents' blocks with the time
embedding we build.

Call convention (see ``conditions.py``): ``model(sample [B, C, T, h, w], timestep [B], cond) -> [B, C, T, h, w]``.
"""

from __future__ import annotations

import torch
from diffusers import I2VGenXLUNet, UNet3DConditionModel
from diffusers.configuration_utils import register_to_config

from .checks import check_cameras, check_motion, check_sample, check_timestep, check_unit_flags, expect_shape
from .conditions import Condition
from .embeddings import CameraEmbedding, MotionEmbedding

#: state-dict prefixes of the layers Diffusion4D adds to a base UNet
NEW_LAYER_PREFIXES = ("motion_embedder.", "camera_embedder.")


def _to_frames(x: torch.Tensor) -> torch.Tensor:
    """[B, C, T, h, w] → [B·T, C, h, w], frames of one sample contiguous (the layout of the parents' blocks)."""
    b, c, t, h, w = x.shape
    return x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)


def _from_frames(x: torch.Tensor, batch: int) -> torch.Tensor:
    """[B·T, C, h, w] → [B, C, T, h, w]."""
    bt, c, h, w = x.shape
    return x.reshape(batch, bt // batch, c, h, w).permute(0, 2, 1, 3, 4)


class _Diffusion4DMixin:
    """What both UNets add to their parent: the extra embeddings, their checks, and the block traversal."""

    def _init_extra_embeddings(self, motion_embedding: bool, camera_embedding: bool, motion_scale: float) -> None:
        # The time embedding is 4 × the first block's width in both parents; ours are added to it.
        time_embed_dim = self.config.block_out_channels[0] * 4
        # Module names differ from the config flags on purpose: diffusers resolves a config key before a submodule
        # of the same name, so `self.motion_embedding` would return the bool.
        self.motion_embedder = MotionEmbedding(time_embed_dim, motion_scale=motion_scale) if motion_embedding else None
        self.camera_embedder = CameraEmbedding(time_embed_dim, time_embed_dim) if camera_embedding else None

    def add_camera_embedding(self) -> None:
        """Give a model built without it the camera embedding (zero output at first, so the model computes what it
        did before); a model that has one keeps it."""
        if self.camera_embedder is None:
            time_embed_dim = self.config.block_out_channels[0] * 4
            param = next(self.parameters())
            self.camera_embedder = CameraEmbedding(time_embed_dim, time_embed_dim).to(param.device, param.dtype)
            self.register_to_config(camera_embedding=True)

    def _time_embedding(self, timesteps: torch.Tensor) -> torch.Tensor:
        """timesteps [B] → [B, D_time]."""
        # time_proj returns float32 whatever the model's dtype: cast before the learned layers.
        return self.time_embedding(self.time_proj(timesteps).to(self.dtype))

    def _check_extras(self, cond: Condition, batch: int, frames: int) -> None:
        keep = cond.motion_keep
        if keep is not None:
            check_unit_flags("cond.motion_keep", keep, batch)
        if cond.motion is not None:
            check_motion(cond.motion, keep, batch)
        if self.motion_embedder is None:
            if cond.motion is not None and (keep is None or bool((keep != 0).any())):
                raise ValueError(
                    f"{type(self).__name__} was built with motion_embedding=False but cond.motion is set: m would be "
                    "ignored; leave it None or pass motion_keep=0"
                )
        elif cond.motion is None and (keep is None or bool((keep != 0).any())):
            raise ValueError(
                f"cond.motion (m [B]) is required by {type(self).__name__} (motion_embedding=True); "
                "to drop it (unconditional / 3D-aware branch) pass motion_keep=0"
            )
        if self.camera_embedder is None:
            if cond.cameras is not None:
                raise ValueError(
                    f"{type(self).__name__} was built with camera_embedding=False but cond.cameras is set; "
                    "leave it None"
                )
        else:
            if cond.cameras is None:
                raise ValueError(
                    f"cond.cameras [B, T, 4, 4] is required by {type(self).__name__} (camera_embedding=True)"
                )
            check_cameras(cond.cameras, batch, frames)

    def _add_extra_embeddings(self, emb: torch.Tensor, cond: Condition, frames: int) -> torch.Tensor:
        """emb [B, D] → [B·T, D]: motion added per sample, then camera per frame."""
        if self.motion_embedder is not None:
            keep = cond.motion_keep
            motion = cond.motion
            if motion is None:  # only reached when every keep is 0 (checked): the embedding is zero anyway
                motion = torch.zeros(emb.shape[0], device=emb.device)
            keep = keep.to(emb.device) if keep is not None else None
            emb = emb + self.motion_embedder(motion.to(emb.device), keep).to(emb.dtype)
        emb = emb.repeat_interleave(frames, dim=0)
        if self.camera_embedder is not None:
            emb = emb + self.camera_embedder(cond.cameras.to(emb.device)).to(emb.dtype)
        return emb

    def _run_blocks(self, x: torch.Tensor, emb: torch.Tensor, context: torch.Tensor, frames: int) -> torch.Tensor:
        """x [B·T, C_in, h, w], emb [B·T, D_time], context [B·T, L, D_ctx] → [B·T, C_out, h, w]."""
        # When h or w is not a multiple of the total downsampling, each upsampler must be told its output size.
        up_factor = 2**self.num_upsamplers
        pass_sizes = any(s % up_factor != 0 for s in x.shape[-2:])

        x = self.conv_in(x)
        x = self.transformer_in(x, num_frames=frames, return_dict=False)[0]

        skips = (x,)
        for block in self.down_blocks:
            if getattr(block, "has_cross_attention", False):
                x, res = block(hidden_states=x, temb=emb, encoder_hidden_states=context, num_frames=frames)
            else:
                x, res = block(hidden_states=x, temb=emb, num_frames=frames)
            skips += res

        x = self.mid_block(x, emb, encoder_hidden_states=context, num_frames=frames)

        for i, block in enumerate(self.up_blocks):
            n = len(block.resnets)
            res, skips = skips[-n:], skips[:-n]
            is_last = i == len(self.up_blocks) - 1
            kwargs = dict(
                hidden_states=x,
                temb=emb,
                res_hidden_states_tuple=res,
                upsample_size=skips[-1].shape[2:] if pass_sizes and not is_last else None,
                num_frames=frames,
            )
            if getattr(block, "has_cross_attention", False):
                kwargs["encoder_hidden_states"] = context
            x = block(**kwargs)

        if self.conv_norm_out is not None:
            x = self.conv_act(self.conv_norm_out(x))
        return self.conv_out(x)


class Diffusion4DTextUNet(_Diffusion4DMixin, UNet3DConditionModel):
    """Text-conditioned 4D-aware UNet: ModelScope-T2V (`UNet3DConditionModel`) + motion (+ camera) embedding.

    Uses ``cond.encoder_hidden_states`` [B, L, cross_attention_dim] (L ≥ 1; the unconditional text is the empty
    prompt's states), ``cond.motion`` / ``cond.motion_keep`` [B], and ``cond.cameras`` [B, T, 4, 4] when built with
    ``camera_embedding=True``. ``image_embeddings`` and ``image_latents`` must be None.

    Extra config (saved in config.json): ``motion_embedding``, ``camera_embedding``, ``motion_scale``; every other
    argument is `UNet3DConditionModel`'s.
    """

    @register_to_config
    def __init__(
        self,
        sample_size: int | None = None,
        in_channels: int = 4,
        out_channels: int = 4,
        down_block_types: tuple[str, ...] = (
            "CrossAttnDownBlock3D",
            "CrossAttnDownBlock3D",
            "CrossAttnDownBlock3D",
            "DownBlock3D",
        ),
        up_block_types: tuple[str, ...] = (
            "UpBlock3D",
            "CrossAttnUpBlock3D",
            "CrossAttnUpBlock3D",
            "CrossAttnUpBlock3D",
        ),
        block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280),
        layers_per_block: int = 2,
        downsample_padding: int = 1,
        mid_block_scale_factor: float = 1,
        act_fn: str = "silu",
        norm_num_groups: int | None = 32,
        norm_eps: float = 1e-5,
        cross_attention_dim: int = 1024,
        attention_head_dim: int | tuple[int] = 64,
        num_attention_heads: int | tuple[int] | None = None,
        time_cond_proj_dim: int | None = None,
        motion_embedding: bool = True,
        camera_embedding: bool = False,
        motion_scale: float = 1000.0,
    ):
        if time_cond_proj_dim is not None:
            # Our forward has no timestep_cond input (an LCM-distillation feature we do not use).
            raise ValueError("time_cond_proj_dim is not supported by Diffusion4DTextUNet")
        super().__init__(
            sample_size=sample_size,
            in_channels=in_channels,
            out_channels=out_channels,
            down_block_types=down_block_types,
            up_block_types=up_block_types,
            block_out_channels=block_out_channels,
            layers_per_block=layers_per_block,
            downsample_padding=downsample_padding,
            mid_block_scale_factor=mid_block_scale_factor,
            act_fn=act_fn,
            norm_num_groups=norm_num_groups,
            norm_eps=norm_eps,
            cross_attention_dim=cross_attention_dim,
            attention_head_dim=attention_head_dim,
            num_attention_heads=num_attention_heads,
            time_cond_proj_dim=time_cond_proj_dim,
        )
        self._init_extra_embeddings(motion_embedding, camera_embedding, motion_scale)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor | int | float, cond: Condition) -> torch.Tensor:
        """sample [B, C, T, h, w], timestep [B] (or scalar), cond → prediction [B, C, T, h, w]."""
        batch, frames = check_sample(sample, self.config.in_channels)
        timesteps = check_timestep(timestep, batch, sample.device)
        self._check_condition(cond, batch, frames)

        emb = self._add_extra_embeddings(self._time_embedding(timesteps), cond, frames)
        context = cond.encoder_hidden_states.to(sample.device, self.dtype).repeat_interleave(frames, dim=0)
        out = self._run_blocks(_to_frames(sample.to(self.dtype)), emb, context, frames)
        return _from_frames(out, batch)

    def _check_condition(self, cond: Condition, batch: int, frames: int) -> None:
        for name in ("image_embeddings", "image_latents"):
            if getattr(cond, name) is not None:
                raise ValueError(f"Diffusion4DTextUNet does not use cond.{name}; leave it None (use the image model)")
        if cond.encoder_hidden_states is None:
            raise ValueError(
                "cond.encoder_hidden_states [B, L, D] is required by Diffusion4DTextUNet "
                "(for the unconditional branch pass the empty prompt's states)"
            )
        expect_shape(
            "cond.encoder_hidden_states",
            cond.encoder_hidden_states,
            (batch, None, self.config.cross_attention_dim),
            "[B, L, cross_attention_dim]",
        )
        if cond.encoder_hidden_states.shape[1] == 0:
            raise ValueError("cond.encoder_hidden_states has no tokens (L = 0); encode the empty prompt instead")
        self._check_extras(cond, batch, frames)


class Diffusion4DImageUNet(_Diffusion4DMixin, I2VGenXLUNet):
    """Image- or static-3D-conditioned 4D-aware UNet: I2VGen-XL (`I2VGenXLUNet`) + motion (+ camera) embedding.

    Uses, through I2VGen-XL's own paths:
      * ``cond.image_latents`` [B, C, T, h, w] (required), concatenated on channels after I2VGen-XL's small conv +
        temporal encoder; its first frame also becomes 64 cross-attention tokens. For the image condition the
        caller fills it with the first view's latent then per-frame masks (``first_view_image_latents``); for the
        static-3D condition with the latents of the static orbit V̄.
      * ``cond.image_embeddings`` [B, cross_attention_dim]: the CLIP image embedding, projected to ``in_channels``
        cross-attention tokens. Optional: None means zeros, which is I2VGen-XL's unconditional image embedding and
        what the static-3D condition (concatenation only, Sec. 3.3) uses.
      * ``cond.encoder_hidden_states`` [B, L, cross_attention_dim]: optional text tokens (None = no text tokens).
      * ``cond.motion`` / ``motion_keep`` / ``cameras`` as in the text model.
    The fps micro-condition I2VGen-XL was trained with is the constant ``fps`` of the config.
    """

    @register_to_config
    def __init__(
        self,
        sample_size: int | None = None,
        in_channels: int = 4,
        out_channels: int = 4,
        down_block_types: tuple[str, ...] = (
            "CrossAttnDownBlock3D",
            "CrossAttnDownBlock3D",
            "CrossAttnDownBlock3D",
            "DownBlock3D",
        ),
        up_block_types: tuple[str, ...] = (
            "UpBlock3D",
            "CrossAttnUpBlock3D",
            "CrossAttnUpBlock3D",
            "CrossAttnUpBlock3D",
        ),
        block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280),
        layers_per_block: int = 2,
        norm_num_groups: int | None = 32,
        cross_attention_dim: int = 1024,
        attention_head_dim: int | tuple[int] = 64,
        num_attention_heads: int | tuple[int] | None = None,
        motion_embedding: bool = True,
        camera_embedding: bool = False,
        motion_scale: float = 1000.0,
        fps: int = 8,
    ):
        if in_channels != 4:
            # I2VGen-XL's image-latent convs take exactly 4 channels (hard-coded in diffusers).
            raise ValueError(
                f"Diffusion4DImageUNet needs in_channels=4 (I2VGen-XL's image-latent path); got {in_channels}"
            )
        super().__init__(
            sample_size=sample_size,
            in_channels=in_channels,
            out_channels=out_channels,
            down_block_types=down_block_types,
            up_block_types=up_block_types,
            block_out_channels=block_out_channels,
            layers_per_block=layers_per_block,
            norm_num_groups=norm_num_groups,
            cross_attention_dim=cross_attention_dim,
            attention_head_dim=attention_head_dim,
            num_attention_heads=num_attention_heads,
        )
        self._init_extra_embeddings(motion_embedding, camera_embedding, motion_scale)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor | int | float, cond: Condition) -> torch.Tensor:
        """sample [B, C, T, h, w], timestep [B] (or scalar), cond → prediction [B, C, T, h, w]."""
        batch, frames = check_sample(sample, self.config.in_channels)
        timesteps = check_timestep(timestep, batch, sample.device)
        self._check_condition(cond, sample)

        fps = torch.full((batch,), self.config.fps, device=sample.device)
        emb = self._time_embedding(timesteps) + self.fps_embedding(self.time_proj(fps).to(self.dtype))
        emb = self._add_extra_embeddings(emb, cond, frames)

        image_latents = cond.image_latents.to(sample.device, self.dtype)
        context = self._context(cond, image_latents, batch).repeat_interleave(frames, dim=0)
        x = torch.cat([sample.to(self.dtype), self._image_latent_features(image_latents)], dim=1)
        out = self._run_blocks(_to_frames(x), emb, context, frames)
        return _from_frames(out, batch)

    def _context(self, cond: Condition, image_latents: torch.Tensor, batch: int) -> torch.Tensor:
        """Cross-attention tokens [B, L_text + 64 + in_channels, D]: text, first latent frame, CLIP image embedding
        (I2VGen-XL's order)."""
        dim = self.config.cross_attention_dim
        device, dtype = image_latents.device, self.dtype
        if cond.encoder_hidden_states is None:
            text = torch.zeros(batch, 0, dim, device=device, dtype=dtype)
        else:
            text = cond.encoder_hidden_states.to(device, dtype)

        first = self.image_latents_context_embedding(image_latents[:, :, 0])  # [B, D, 8, 8]
        first = first.flatten(2).transpose(1, 2)  # [B, 64, D]

        if cond.image_embeddings is None:
            image_emb = torch.zeros(batch, dim, device=device, dtype=dtype)
        else:
            image_emb = cond.image_embeddings.to(device, dtype)
        image_tokens = self.context_embedding(image_emb).view(batch, self.config.in_channels, dim)
        return torch.cat([text, first, image_tokens], dim=1)

    def _image_latent_features(self, image_latents: torch.Tensor) -> torch.Tensor:
        """image_latents [B, C, T, h, w] → features [B, C, T, h, w] to concatenate with the sample: a per-frame conv
        stack then attention along time at each pixel."""
        b, c, t, h, w = image_latents.shape
        x = self.image_latents_proj_in(_to_frames(image_latents))  # [B·T, C, h, w]
        x = x.reshape(b, t, c, h, w).permute(0, 3, 4, 1, 2).reshape(b * h * w, t, c)
        x = self.image_latents_temporal_encoder(x)
        return x.reshape(b, h, w, t, c).permute(0, 4, 3, 1, 2)

    def _check_condition(self, cond: Condition, sample: torch.Tensor) -> None:
        batch, channels, frames = sample.shape[:3]
        dim = self.config.cross_attention_dim
        if cond.image_latents is None:
            raise ValueError(
                "cond.image_latents [B, C, T, h, w] is required by Diffusion4DImageUNet: the first view's latent "
                "(+ masks) for the image condition, the static orbit's latents for the static-3D condition"
            )
        expect_shape("cond.image_latents", cond.image_latents, tuple(sample.shape), "[B, C, T, h, w] like sample")
        if cond.image_embeddings is not None:
            expect_shape("cond.image_embeddings", cond.image_embeddings, (batch, dim), "[B, cross_attention_dim]")
        if cond.encoder_hidden_states is not None:
            expect_shape(
                "cond.encoder_hidden_states",
                cond.encoder_hidden_states,
                (batch, None, dim),
                "[B, L, cross_attention_dim]",
            )
        self._check_extras(cond, batch, frames)


def first_view_image_latents(first_latent: torch.Tensor, num_frames: int) -> torch.Tensor:
    """I2VGen-XL's image-condition layout: first_latent [B, C, h, w] → [B, C, T, h, w] holding the first view's
    latent at frame 0 and, at frame i ≥ 1, a constant mask of value i/(T−1) (the frame's position), exactly as the
    I2VGen-XL pipeline builds ``image_latents``, so a pretrained I2VGen-XL base sees what it was trained on."""
    expect_shape("first_latent", first_latent, (None, None, None, None), "[B, C, h, w]")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1; got {num_frames}")
    frames = [first_latent]
    for i in range(1, num_frames):
        frames.append(torch.full_like(first_latent, i / (num_frames - 1)))
    return torch.stack(frames, dim=2)
