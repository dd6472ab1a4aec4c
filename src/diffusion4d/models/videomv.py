"""VideoMV's released checkpoints as our UNets: the 3D-aware base ε̄ of Eq. 3, or the ``--init`` of a 4D run.

VideoMV (Zuo et al. 2024, github.com/alibaba/VideoMV) fine-tunes ModelScope-T2V (text → orbit) and I2VGen-XL
(image → orbit) on orbits of static objects and adds a per-frame camera embedding; Diffusion4D starts from these
(Sec. 4.1). Its training script saves ``torch.save({"state_dict": model.state_dict(), "step": int})`` of its own
ModelScope/VGen-style UNet (``UNetSD_T2VBase``, ``UNetSD_I2VGen``): the same network as diffusers'
``UNet3DConditionModel`` / ``I2VGenXLUNet`` under other names. This module maps such a state dict onto our
``Diffusion4DTextUNet`` / ``Diffusion4DImageUNet``, strictly: every checkpoint key is used or reported, the rest is
one error listing the unmapped, missing and mis-shaped keys; nothing is half loaded.

Layout (VideoMV → ours). Levels i = 0 … n−1 (resolution halves), L res blocks per level; VideoMV numbers its blocks
flat: ``input_blocks.0`` is the stem, then per level L blocks and (but at the last level) one downsampler;
``output_blocks`` holds L+1 blocks per level, lowest resolution first::

    time_embed.{0,2}                       time_embedding.linear_{1,2}
    camera_embedding.{0,2}                 camera_embedder.linear_{1,2}      (cameras: see below)
    input_blocks.0.{0,1}                   conv_in, transformer_in
    input_blocks.k.0       ResBlock        down_blocks.i.resnets.j  + down_blocks.i.temp_convs.j
    input_blocks.k.1       SpatialTransf.  down_blocks.i.attentions.j          (levels with attention only)
    input_blocks.k.2       TemporalTransf. down_blocks.i.temp_attentions.j
    input_blocks.k.op      Downsample      down_blocks.i.downsamplers.0.conv
    middle_block.{0,1,2,3}                 mid_block.{resnets.0 + temp_convs.0, attentions.0, temp_attentions.0,
                                           resnets.1 + temp_convs.1}
    output_blocks.k.{0,1,2}                up_blocks.i.{resnets.j + temp_convs.j, attentions.j, temp_attentions.j}
    output_blocks.k.{3|1}.conv  Upsample   up_blocks.i.upsamplers.0.conv       (last block of a level but the last)
    out.{0,2}                              conv_norm_out, conv_out
  I2VGen-XL only:
    fps_embedding.*, context_embedding.*   the same names
    local_image_concat.{0,2,4}             image_latents_proj_in.{0,2,4}
    local_temporal_encoder.layers.0.0      image_latents_temporal_encoder.{norm1, attn1}  (fused to_qkv → to_q/k/v)
    local_temporal_encoder.layers.0.1      image_latents_temporal_encoder.ff
    local_image_embedding.{0,3,5}          image_latents_context_embedding.{0,3,5}

A VideoMV ResBlock carries its temporal convolution inside (``temopral_conv``, VideoMV's spelling), diffusers keeps
it beside the resnet; inside a ResBlock ``in_layers.{0,2}`` → ``norm1``/``conv1``, ``emb_layers.1`` →
``time_emb_proj``, ``out_layers.{0,3}`` → ``norm2``/``conv2``, ``skip_connection`` → ``conv_shortcut``. The
transformers keep their inner names; VideoMV's temporal ``proj_in``/``proj_out`` are width-1 Conv1d, ours Linear
(the same numbers, reshaped).

Two value changes, both exact, so that our model computes what VideoMV's computes:
  * Cameras. VideoMV's embedding takes the flattened (row-major) 4×4 camera-to-world matrix, 16 values, like ours,
    but in its own world axes: its inference builds our look-at camera (OpenGL camera axes, +Y-up world, azimuth
    from +Z towards +X: ``cameras.look_at``) and then permutes the world axes (x, y, z) ↦ (z, x, y). We fold that
    permutation into the first linear layer's columns, so our ``camera_embedder`` takes cameras in the project's
    convention (``cameras.py``) and gives what VideoMV's gives on the same physical camera.
  * I2VGen-XL's image-latent features. VideoMV (as the I2VGen-XL code it builds on) adds them to the concatenated
    channels twice; diffusers adds them once. We double the matching input channels of ``conv_in``.

What the weights do not say, and is taken from VideoMV's released configs (override through ``**extras``):
GroupNorm has 32 groups everywhere; ``transformer_in`` has 8 heads, so ``attention_head_dim`` = its width / 8 (64:
VideoMV's ``head_dim``, which its other attentions also use); ``sample_size`` = 32 (256² renders).

Not loaded, and listed in the report: ``lgm_big.*``, the LGM Gaussian reconstructor VideoMV trains beside its
UNet for its 3D-aware denoising (``use_lgm_refine``); it is not part of the denoiser. Not expressible by our
diffusers-based UNets (so these checkpoints fail with the keys listed): a text model with ``use_fps_condition``
(UNet3DConditionModel has no fps embedding), more than one ``local_temporal_encoder`` layer, a model without
temporal attention, levels with different numbers of res blocks, a ``camera_dim`` other than 16. The per-rank
EMA files of a multi-GPU run (``ema_*_rank*.pth``) hold every world-size-th key each: refused as incomplete.

Inputs are not weights: ε̄ must see what VideoMV saw — Stable Diffusion's VAE latents (×0.18215), OpenCLIP ViT-H
text states (1024 wide), its noise schedule (``scheduler_config``) and, for the image model, I2VGen-XL's first-view
latent with per-frame masks (``unets.first_view_image_latents``, VideoMV's exact layout). VideoMV's own orbits
step 360°/24 and sit 2.0 (text) or 1.7 (image) from the origin; the camera embedding accepts any cameras.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from .loading import LoadReport, build_with_weights, format_problems, split_absent
from .presets import MODEL_CLASSES

#: file types of a VideoMV checkpoint: what ``torch.save`` wrote (read with weights_only=True), or safetensors
TORCH_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")
SAFETENSORS_SUFFIX = ".safetensors"
#: top-level modules of VideoMV's UNets that every checkpoint has (how a file is recognised as VideoMV's)
VIDEOMV_MARKERS = ("input_blocks.", "middle_block.", "output_blocks.")
#: sub-models VideoMV saves beside the denoiser: skipped and reported, never loaded into the UNet
NOT_DENOISER_PREFIXES = ("lgm_big.",)
#: VideoMV's world axes in terms of ours (glTF: +Y up, front +Z): (x, y, z) ↦ (z, x, y), on homogeneous rows
VIDEOMV_FROM_GLTF = torch.tensor(
    [[0, 0, 1, 0], [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1]], dtype=torch.float64
)
#: heads of ``transformer_in`` in both diffusers parents (hard-coded there) and in VideoMV's released configs
_TRANSFORMER_IN_HEADS = 8
_VIDEOMV_NORM_GROUPS = 32  # VideoMV builds every GroupNorm with 32 groups
_VIDEOMV_SAMPLE_SIZE = 32  # 256² renders through the ×8 VAE


@dataclass(frozen=True)
class VideoMVLayout:
    """The architecture a VideoMV state dict implies (read from its keys and shapes)."""

    kind: str  # "text" (ModelScope-T2V based) | "image" (I2VGen-XL based)
    in_channels: int
    out_channels: int
    block_out_channels: tuple[int, ...]
    layers_per_block: int
    attention: tuple[bool, ...]  # per level: spatial + temporal transformers after each res block
    cross_attention_dim: int
    attention_head_dim: int
    camera_embedding: bool

    def config(self) -> dict[str, Any]:
        """Constructor arguments of our UNet of ``kind`` with this architecture."""
        down = tuple("CrossAttnDownBlock3D" if a else "DownBlock3D" for a in self.attention)
        up = tuple("CrossAttnUpBlock3D" if a else "UpBlock3D" for a in reversed(self.attention))
        return dict(
            sample_size=_VIDEOMV_SAMPLE_SIZE, in_channels=self.in_channels, out_channels=self.out_channels,
            down_block_types=down, up_block_types=up, block_out_channels=self.block_out_channels,
            layers_per_block=self.layers_per_block, norm_num_groups=_VIDEOMV_NORM_GROUPS,
            cross_attention_dim=self.cross_attention_dim, attention_head_dim=self.attention_head_dim,
            camera_embedding=self.camera_embedding,
        )


# ---------------------------------------------------------------------------------------------------- reading


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``path`` → (state dict of plain tensors, metadata such as ``step``). Never unpickles an object: torch files
    are read with ``weights_only=True``, safetensors with safetensors; anything else is a ValueError naming the
    file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    if path.suffix == SAFETENSORS_SUFFIX:
        try:
            return load_file(path, device="cpu"), {}
        except (SafetensorError, OSError) as exc:
            raise ValueError(f"{path}: not a readable safetensors file ({exc})") from None
    if path.suffix not in TORCH_SUFFIXES:
        raise ValueError(f"{path}: unknown checkpoint type {path.suffix!r}; expected one of "
                         f"{', '.join((*TORCH_SUFFIXES, SAFETENSORS_SUFFIX))}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{path}: a pickle that holds anything but plain tensors: refused ({first})") from None
    except (RuntimeError, EOFError) as exc:  # a truncated or corrupt zip archive
        raise ValueError(f"{path}: not a readable torch checkpoint ({str(exc).splitlines()[0]})") from None
    return _unwrap(obj, path)


def _unwrap(obj: Any, path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A bare state dict, or VideoMV's ``{"state_dict": …, "step": …}`` wrapper (scalars beside it = metadata)."""
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: holds a {type(obj).__name__}, not a state dict")
    metadata: dict[str, Any] = {}
    state = obj
    if isinstance(obj.get("state_dict"), dict):
        state = obj["state_dict"]
        for key, value in obj.items():
            if key == "state_dict":
                continue
            if not isinstance(value, (bool, int, float, str)):
                raise ValueError(f"{path}: unexpected entry {key!r} ({type(value).__name__}) beside 'state_dict'; "
                                 "only scalar metadata such as 'step' may sit there")
            metadata[key] = value
    not_tensors = [str(k) for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise ValueError(f"{path}: entries that are not tensors: " + ", ".join(not_tensors[:10]))
    return state, metadata


def _has(state: dict[str, torch.Tensor], prefix: str) -> bool:
    return any(k.startswith(prefix) for k in state)


def is_videomv_state(state: dict[str, torch.Tensor]) -> bool:
    """Whether a state dict has VideoMV's (ModelScope/VGen) UNet layout."""
    return all(_has(state, marker) for marker in VIDEOMV_MARKERS)


# ---------------------------------------------------------------------------------------------------- layout


def _block_indices(state: dict[str, torch.Tensor], top: str) -> list[int]:
    return sorted({int(k.split(".")[1]) for k in state if k.startswith(top) and k.split(".")[1].isdigit()})


def _levels(state: dict[str, torch.Tensor]) -> list[list[int]]:
    """The flat indices of the encoder's res blocks, grouped by level (a downsampler closes a level)."""
    levels: list[list[int]] = [[]]
    for k in _block_indices(state, "input_blocks.")[1:]:
        if _has(state, f"input_blocks.{k}.op."):
            levels.append([])
        elif _has(state, f"input_blocks.{k}.0."):
            levels[-1].append(k)
        else:
            raise ValueError(f"input_blocks.{k} is neither a res block nor a downsampler in VideoMV's layout")
    return levels


def infer_layout(state: dict[str, torch.Tensor], source: str | Path = "<state dict>") -> VideoMVLayout:
    """The architecture of a VideoMV state dict, from its keys and shapes; ValueError naming ``source`` when a
    part our UNets cannot express shows already in the structure."""
    def need(key: str) -> torch.Tensor:
        if key not in state:
            raise ValueError(f"{source}: VideoMV checkpoint lacks {key}")
        return state[key]

    levels = _levels(state)
    counts = [len(level) for level in levels]
    if not counts[0] or len(set(counts)) != 1:
        raise ValueError(f"{source}: levels with {counts} res blocks; our UNets need the same number (≥ 1) per level")
    attention = tuple(_has(state, f"input_blocks.{level[0]}.1.") for level in levels)
    for level, attn in zip(levels, attention):
        for k in level:
            if _has(state, f"input_blocks.{k}.1.") != attn:
                raise ValueError(f"{source}: attention in some but not all res blocks of a level (input_blocks.{k})")
    kind = "image" if _has(state, "local_image_concat.") else "text"
    stem_in = need("input_blocks.0.0.weight").shape[1]
    concat = need("local_image_concat.4.weight").shape[0] if kind == "image" else 0
    inner_in = need("input_blocks.0.1.proj_in.weight").shape[0]
    if inner_in % _TRANSFORMER_IN_HEADS:
        raise ValueError(f"{source}: transformer_in is {inner_in} wide, not {_TRANSFORMER_IN_HEADS} heads of equal "
                         "width as our UNets have")
    camera = _has(state, "camera_embedding.")
    if camera and need("camera_embedding.0.weight").shape[1] != 16:
        raise ValueError(f"{source}: the camera embedding takes {state['camera_embedding.0.weight'].shape[1]} values "
                         "per frame; ours takes a flattened 4×4 camera-to-world matrix (16)")
    return VideoMVLayout(
        kind=kind,
        in_channels=stem_in - concat,
        out_channels=need("out.2.weight").shape[0],
        block_out_channels=tuple(need(f"input_blocks.{level[0]}.0.out_layers.3.weight").shape[0] for level in levels),
        layers_per_block=counts[0],
        attention=attention,
        cross_attention_dim=need("middle_block.1.transformer_blocks.0.attn2.to_k.weight").shape[1],
        attention_head_dim=inner_in // _TRANSFORMER_IN_HEADS,
        camera_embedding=camera,
    )


# ---------------------------------------------------------------------------------------------------- key map


def _resblock(src: str, resnet: str, temp_conv: str) -> dict[str, str]:
    """Prefixes of one VideoMV ResBlock → our resnet and the temporal conv diffusers keeps beside it."""
    return {
        f"{src}in_layers.0.": f"{resnet}norm1.", f"{src}in_layers.2.": f"{resnet}conv1.",
        f"{src}emb_layers.1.": f"{resnet}time_emb_proj.",
        f"{src}out_layers.0.": f"{resnet}norm2.", f"{src}out_layers.3.": f"{resnet}conv2.",
        f"{src}skip_connection.": f"{resnet}conv_shortcut.",
        f"{src}temopral_conv.": temp_conv,  # sic: VideoMV's attribute name; its conv1..conv4 match ours inside
    }


def _layer(src: str, dst: str, j: int, attention: bool) -> dict[str, str]:
    """One VideoMV block ``[ResBlock, SpatialTransformer, TemporalTransformer]`` → layer j of our block ``dst``."""
    pairs = _resblock(f"{src}0.", f"{dst}resnets.{j}.", f"{dst}temp_convs.{j}.")
    if attention:
        pairs[f"{src}1."] = f"{dst}attentions.{j}."
        pairs[f"{src}2."] = f"{dst}temp_attentions.{j}."
    return pairs


def prefix_map(layout: VideoMVLayout) -> dict[str, str]:
    """VideoMV module prefix → our module prefix, for every module of ``layout`` (see the module docstring)."""
    n, L = len(layout.block_out_channels), layout.layers_per_block
    pairs = {
        "time_embed.0.": "time_embedding.linear_1.", "time_embed.2.": "time_embedding.linear_2.",
        "camera_embedding.0.": "camera_embedder.linear_1.", "camera_embedding.2.": "camera_embedder.linear_2.",
        "input_blocks.0.0.": "conv_in.", "input_blocks.0.1.": "transformer_in.",
        "out.0.": "conv_norm_out.", "out.2.": "conv_out.",
    }
    k = 1
    for i in range(n):
        for j in range(L):
            pairs.update(_layer(f"input_blocks.{k}.", f"down_blocks.{i}.", j, layout.attention[i]))
            k += 1
        if i < n - 1:
            pairs[f"input_blocks.{k}.op."] = f"down_blocks.{i}.downsamplers.0.conv."
            k += 1

    pairs.update(_resblock("middle_block.0.", "mid_block.resnets.0.", "mid_block.temp_convs.0."))
    pairs["middle_block.1."] = "mid_block.attentions.0."
    pairs["middle_block.2."] = "mid_block.temp_attentions.0."
    pairs.update(_resblock("middle_block.3.", "mid_block.resnets.1.", "mid_block.temp_convs.1."))

    k = 0
    for i in range(n):  # decoder level i mirrors encoder level n-1-i (VideoMV tracks one scale through both)
        attention = layout.attention[n - 1 - i]
        for j in range(L + 1):
            pairs.update(_layer(f"output_blocks.{k}.", f"up_blocks.{i}.", j, attention))
            if j == L and i < n - 1:  # the upsampler follows the block's res block (and its two transformers)
                pairs[f"output_blocks.{k}.{3 if attention else 1}."] = f"up_blocks.{i}.upsamplers.0."
            k += 1

    if layout.kind == "image":
        enc = "local_temporal_encoder.layers.0."
        ours = "image_latents_temporal_encoder."
        pairs.update({
            "fps_embedding.0.": "fps_embedding.0.", "fps_embedding.2.": "fps_embedding.2.",
            "context_embedding.0.": "context_embedding.0.", "context_embedding.2.": "context_embedding.2.",
            **{f"local_image_concat.{m}.": f"image_latents_proj_in.{m}." for m in (0, 2, 4)},
            **{f"local_image_embedding.{m}.": f"image_latents_context_embedding.{m}." for m in (0, 3, 5)},
            f"{enc}0.norm.": f"{ours}norm1.",
            f"{enc}0.fn.to_qkv.": f"{ours}attn1.to_qkv.",  # one fused projection: split in `_convert`
            f"{enc}0.fn.to_out.0.": f"{ours}attn1.to_out.0.",
            f"{enc}1.net.0.0.": f"{ours}ff.net.0.proj.",
            f"{enc}1.net.2.": f"{ours}ff.net.2.",
        })
    return pairs


def _translate(key: str, pairs: dict[str, str]) -> str | None:
    """Our name of a VideoMV key by its longest mapped module prefix, or None."""
    parts = key.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        prefix = ".".join(parts[:cut]) + "."
        if prefix in pairs:
            return pairs[prefix] + ".".join(parts[cut:])
    return None


# ---------------------------------------------------------------------------------------------------- values


def fold_camera_axes(weight: torch.Tensor) -> torch.Tensor:
    """VideoMV's first camera layer [D, 16] (input: flattened c2w in its world axes) → ours [D, 16] (input: c2w in
    glTF axes). Its input is vec(A·C) = (A ⊗ I₄)·vec(C) for our camera C, A = VIDEOMV_FROM_GLTF, so the layer on
    our cameras is W·(A ⊗ I₄); A is a permutation, so this only reorders columns (exact)."""
    mixing = torch.kron(VIDEOMV_FROM_GLTF, torch.eye(4, dtype=torch.float64)).to(weight.device)
    return (weight.double() @ mixing).to(weight.dtype)


def _linear_shape(shape: torch.Size) -> tuple[int, ...] | None:
    """[out, in] of a Linear or of a width-1 convolution [out, in, 1, …]; None for a wider kernel."""
    return tuple(shape[:2]) if all(d == 1 for d in shape[2:]) else None


def _fit_projection(value: torch.Tensor, shape: torch.Size) -> torch.Tensor | None:
    """A width-1 Conv1d/Conv2d projection ↔ a Linear of the same numbers; None when they are not that."""
    if _linear_shape(value.shape) is not None and _linear_shape(value.shape) == _linear_shape(shape):
        return value.reshape(shape)
    return None


def _convert(ours: str, value: torch.Tensor, layout: VideoMVLayout) -> dict[str, torch.Tensor]:
    """The tensors of our model that VideoMV's ``value`` (already renamed to ``ours``) becomes."""
    if ours.endswith("attn1.to_qkv.weight"):
        q, k, v = value.chunk(3, dim=0)  # VideoMV splits the fused output as q, k, v (chunk on the last dim)
        stem = ours[: -len("to_qkv.weight")]
        return {f"{stem}to_q.weight": q, f"{stem}to_k.weight": k, f"{stem}to_v.weight": v}
    if ours == "camera_embedder.linear_1.weight":
        return {ours: fold_camera_axes(value)}
    if ours == "conv_in.weight" and layout.kind == "image":
        value = value.clone()
        value[:, layout.in_channels :] *= 2  # VideoMV adds the image-latent features twice, diffusers once
        return {ours: value}
    return {ours: value}


@dataclass
class MappedState:
    """A VideoMV state dict renamed to ours, and what did not map."""

    tensors: dict[str, torch.Tensor]  # our key → tensor
    source: dict[str, str]  # our key → the VideoMV key it came from
    unmapped: list[str]  # VideoMV keys with no place in our model
    skipped: list[str]  # VideoMV keys of sub-models that are not the denoiser (NOT_DENOISER_PREFIXES)


def map_state(state: dict[str, torch.Tensor], layout: VideoMVLayout) -> MappedState:
    """Rename (and convert) every key of a VideoMV state dict to ours; no checking against a model here."""
    pairs = prefix_map(layout)
    mapped = MappedState({}, {}, [], [])
    for key, value in state.items():
        if key.startswith(NOT_DENOISER_PREFIXES):
            mapped.skipped.append(key)
            continue
        ours = _translate(key, pairs)
        if ours is None:
            mapped.unmapped.append(key)
            continue
        for name, tensor in _convert(ours, value, layout).items():
            mapped.tensors[name] = tensor
            mapped.source[name] = key
    return mapped


def check_against(
    model_state: dict[str, torch.Tensor], mapped: MappedState
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(weights reshaped to the model, our new layers absent from the checkpoint); ValueError listing every
    unmapped, missing and mis-shaped key at once otherwise."""
    unmapped = list(mapped.unmapped)
    unmapped += [f"{mapped.source[k]} (→ {k}, which this model lacks)" for k in mapped.tensors if k not in model_state]
    new, missing = split_absent(model_state, mapped.tensors)
    weights, shapes = {}, []
    for key, value in mapped.tensors.items():
        if key not in model_state:
            continue
        target = model_state[key].shape
        fitted = value if value.shape == target else (
            _fit_projection(value, target) if key.endswith(("proj_in.weight", "proj_out.weight")) else None)
        if fitted is None:
            shapes.append(f"{mapped.source[key]} {list(value.shape)} vs {key} {list(target)}")
        else:
            weights[key] = fitted
    problems = format_problems((("VideoMV keys not mapped", unmapped), ("missing from the checkpoint", missing),
                                ("shape mismatch", shapes)))
    if problems:
        raise ValueError("the VideoMV checkpoint does not match the model:\n  " + "\n  ".join(problems))
    return weights, new


# ---------------------------------------------------------------------------------------------------- loading


def unet_from_videomv(kind: str, path: str | Path, **extras: Any):
    """A Diffusion4D UNet of ``kind`` ("text" | "image") holding a VideoMV checkpoint (``.pth``/``.pt``/``.ckpt``/
    ``.bin`` or ``.safetensors``) → ``(model, LoadReport)``.

    The architecture comes from the checkpoint (``infer_layout``); ``extras`` are our config arguments
    (``motion_embedding``, ``motion_scale``, ``fps``, …) and may override what the weights cannot tell
    (``norm_num_groups``, ``attention_head_dim``). ``motion_embedding=False`` gives the frozen ε̄ of Eq. 3 with
    every parameter from the checkpoint; the default (True) adds our zero-output motion embedding for fine-tuning.
    """
    if kind not in MODEL_CLASSES:
        raise ValueError(f"unknown model kind {kind!r}; expected one of {sorted(MODEL_CLASSES)}")
    path = Path(path)
    state, metadata = read_checkpoint(path)
    if not is_videomv_state(state):
        raise ValueError(f"{path}: not a VideoMV checkpoint (no {', '.join(VIDEOMV_MARKERS)} keys); a diffusers "
                         "base model is a folder with config.json")
    layout = infer_layout(state, path)
    if layout.kind != kind:
        held = {"text": "text-to-3D (ModelScope-T2V)", "image": "image-to-3D (I2VGen-XL)"}[layout.kind]
        raise ValueError(f"{path}: holds VideoMV's {held} model, not a {kind} model")
    cls = MODEL_CLASSES[kind]
    kwargs = {**layout.config(), **extras}

    with torch.device("meta"):
        skeleton = cls(**kwargs)
    mapped = map_state(state, layout)
    weights, new = check_against(skeleton.state_dict(), mapped)
    model = build_with_weights(cls, kwargs, weights, new)

    notes = [f"VideoMV {layout.kind} layout: levels {list(layout.block_out_channels)}, "
             f"{layout.layers_per_block} res blocks each, attention {list(layout.attention)}"]
    if layout.camera_embedding:
        notes.append("camera embedding folded from VideoMV's world axes to ours (glTF; cameras.py)")
    if kind == "image":
        notes.append("conv_in's image-latent channels doubled (VideoMV adds those features twice)")
    notes += [f"{key} = {value}" for key, value in metadata.items()]
    skipped = [f"{len(mapped.skipped)} tensors of {p}* (not the denoiser)"
               for p in NOT_DENOISER_PREFIXES if any(k.startswith(p) for k in mapped.skipped)]
    report = LoadReport(kind=kind, unet_dir=path, weight_files=[path], new_layers=new, skipped=skipped, notes=notes)
    print(report)
    return model, report


def scheduler_config(kind: str) -> dict[str, Any]:
    """The DDIMScheduler config of VideoMV's training (its ``configs/t2v_train.yaml``, ``i2vgen_xl_train.yaml``):
    ε-prediction on Stable Diffusion's scaled-linear betas (text); v-prediction on the cosine schedule rescaled to
    zero terminal SNR (image). Its DDIM samples t = 1 + i·(1000/steps), i.e. "leading" spacing with offset 1."""
    common = dict(num_train_timesteps=1000, timestep_spacing="leading", steps_offset=1, clip_sample=False,
                  set_alpha_to_one=False)
    if kind == "text":
        return dict(common, prediction_type="epsilon", beta_schedule="scaled_linear", beta_start=0.00085,
                    beta_end=0.012, rescale_betas_zero_snr=False)
    if kind == "image":
        return dict(common, prediction_type="v_prediction", beta_schedule="squaredcos_cap_v2",
                    rescale_betas_zero_snr=True)
    raise ValueError(f"unknown model kind {kind!r}; expected 'text' or 'image'")
