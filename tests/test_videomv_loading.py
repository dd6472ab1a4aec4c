"""VideoMV checkpoints → our UNets (models/videomv.py), on synthetic checkpoints in VideoMV's layout.

The checkpoints are made from our own tiny models by an inverse mapping written here independently of the loader:
one explicit rule per module kind, with VideoMV's flat block numbering (the stem, then per level its res blocks and
a downsampler; the decoder L+1 blocks per level with the upsampler after the last one's transformers), VideoMV's
module names (ResBlock ``in_layers``/``emb_layers``/``out_layers``/``skip_connection``/``temopral_conv``, width-1
Conv1d temporal projections, I2VGen-XL's fused ``to_qkv``) and its two value conventions (cameras in its world axes,
the doubled image-latent features). Learned from github.com/alibaba/VideoMV: tools/modules/unet/unet_t2v.py,
unet_i2vgen.py, util.py, tools/inferences/inference_*_entrance.py, utils/camera_utils.py.
"""

from __future__ import annotations

import json
import re

import pytest
import torch
from safetensors.torch import save_file

from diffusion4d import cameras
from diffusion4d.models.conditions import Condition
from diffusion4d.models.loading import unet_from_base
from diffusion4d.models.presets import build_unet
from diffusion4d.models.videomv import check_against, infer_layout, map_state, scheduler_config, unet_from_videomv

T = 4
RES = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1", "norm2": "out_layers.0",
       "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}


def _videomv_camera_rows() -> list[int]:
    """Which of our c2w rows each row of VideoMV's camera is, from the steps its inference applies to a look-at
    camera in +Y-up axes: the Blender axis change, then ``[:, 1, :] *= -1``, then swap rows 0 and 1."""
    m = torch.as_tensor(cameras.GLTF_TO_BLENDER, dtype=torch.float64).clone()
    m[1] *= -1
    m = m[[1, 0, 2, 3]]
    assert torch.equal(m.abs().sum(1), torch.ones(4)) and (m >= 0).all()  # a plain row permutation
    return [int(r.argmax()) for r in m]


def _block_maps(model) -> tuple[dict[tuple[int, int], int], dict[int, int], int, dict[int, bool]]:
    """VideoMV's flat index of encoder res block (level i, layer j), of level i's downsampler; L; and whether
    decoder level i (lowest resolution first) has attention."""
    cfg = model.config
    n, L = len(cfg.block_out_channels), cfg.layers_per_block
    attn = [t.startswith("CrossAttn") for t in cfg.down_block_types]
    enc = {(i, j): 1 + i * (L + 1) + j for i in range(n) for j in range(L)}
    down = {i: 1 + i * (L + 1) + L for i in range(n - 1)}
    return enc, down, L, {i: attn[n - 1 - i] for i in range(n)}


def to_videomv(model) -> dict[str, torch.Tensor]:
    """Our model's state dict in VideoMV's layout (test-side inverse of the loader)."""
    enc, down, L, up_attn = _block_maps(model)
    image = hasattr(model, "image_latents_proj_in")
    out: dict[str, torch.Tensor] = {}
    qkv: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        if key.startswith("motion_embedder."):
            continue  # ours alone
        m = re.fullmatch(r"(down|up)_blocks\.(\d+)\.(resnets|temp_convs|attentions|temp_attentions)\.(\d+)\.(.+)", key)
        if m:
            side, i, part, j, rest = m.group(1), int(m.group(2)), m.group(3), int(m.group(4)), m.group(5)
            block = f"input_blocks.{enc[(i, j)]}" if side == "down" else f"output_blocks.{i * (L + 1) + j}"
            if part == "resnets":
                name, leaf = rest.split(".", 1)
                out[f"{block}.0.{RES[name]}.{leaf}"] = value
            elif part == "temp_convs":
                out[f"{block}.0.temopral_conv.{rest}"] = value
            elif part == "attentions":
                out[f"{block}.1.{rest}"] = _spatial(rest, value)
            else:
                out[f"{block}.2.{rest}"] = _temporal(rest, value)
            continue
        m = re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key)
        if m:
            out[f"input_blocks.{down[int(m.group(1))]}.op.{m.group(2)}"] = value
            continue
        m = re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key)
        if m:
            i = int(m.group(1))
            out[f"output_blocks.{i * (L + 1) + L}.{3 if up_attn[i] else 1}.conv.{m.group(2)}"] = value
            continue
        m = re.fullmatch(r"mid_block\.(resnets|temp_convs)\.([01])\.(.+)", key)
        if m:
            block = "middle_block.0" if m.group(2) == "0" else "middle_block.3"
            if m.group(1) == "resnets":
                name, leaf = m.group(3).split(".", 1)
                out[f"{block}.{RES[name]}.{leaf}"] = value
            else:
                out[f"{block}.temopral_conv.{m.group(3)}"] = value
            continue
        if key.startswith("mid_block.attentions.0."):
            rest = key[len("mid_block.attentions.0."):]
            out[f"middle_block.1.{rest}"] = _spatial(rest, value)
            continue
        if key.startswith("mid_block.temp_attentions.0."):
            rest = key[len("mid_block.temp_attentions.0."):]
            out[f"middle_block.2.{rest}"] = _temporal(rest, value)
            continue
        if key.startswith("transformer_in."):
            rest = key[len("transformer_in."):]
            out[f"input_blocks.0.1.{rest}"] = _temporal(rest, value)
            continue
        m = re.fullmatch(r"image_latents_temporal_encoder\.attn1\.to_([qkv])\.weight", key)
        if m:
            qkv[m.group(1)] = value
            continue
        simple = {
            "conv_in.": "input_blocks.0.0.", "time_embedding.linear_1.": "time_embed.0.",
            "time_embedding.linear_2.": "time_embed.2.", "conv_norm_out.": "out.0.", "conv_out.": "out.2.",
            "camera_embedder.linear_1.": "camera_embedding.0.", "camera_embedder.linear_2.": "camera_embedding.2.",
            "fps_embedding.": "fps_embedding.", "context_embedding.": "context_embedding.",
            "image_latents_proj_in.": "local_image_concat.",
            "image_latents_context_embedding.": "local_image_embedding.",
            "image_latents_temporal_encoder.norm1.": "local_temporal_encoder.layers.0.0.norm.",
            "image_latents_temporal_encoder.attn1.to_out.0.": "local_temporal_encoder.layers.0.0.fn.to_out.0.",
            "image_latents_temporal_encoder.ff.net.0.proj.": "local_temporal_encoder.layers.0.1.net.0.0.",
            "image_latents_temporal_encoder.ff.net.2.": "local_temporal_encoder.layers.0.1.net.2.",
        }
        prefix = next(p for p in simple if key.startswith(p))
        target = simple[prefix] + key[len(prefix):]
        if key == "camera_embedder.linear_1.weight":
            rows = _videomv_camera_rows()
            value = value[:, [rows[r] * 4 + c for r in range(4) for c in range(4)]]
        if key == "conv_in.weight" and image:
            value = value.clone()
            value[:, model.config.in_channels:] /= 2
        out[target] = value
    if image:
        out["local_temporal_encoder.layers.0.0.fn.to_qkv.weight"] = torch.cat([qkv["q"], qkv["k"], qkv["v"]])
    return out


def _spatial(rest: str, value: torch.Tensor) -> torch.Tensor:
    """VideoMV's spatial transformers project with Linear layers."""
    if rest in ("proj_in.weight", "proj_out.weight"):
        return value.reshape(value.shape[0], value.shape[1])
    return value


def _temporal(rest: str, value: torch.Tensor) -> torch.Tensor:
    """VideoMV's temporal transformers project with width-1 Conv1d layers."""
    if rest in ("proj_in.weight", "proj_out.weight"):
        return value.reshape(value.shape[0], value.shape[1], 1)
    return value


def _tiny(kind: str, **kw):
    """A tiny model with random weights everywhere (the zero-initialised layers too) and VideoMV's 32 groups."""
    torch.manual_seed(0)
    model = build_unet(kind, "tiny", norm_num_groups=32, camera_embedding=True, motion_embedding=False, **kw)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    return model.eval()


def _inputs(kind: str, model, cameras_on: bool = True):
    torch.manual_seed(1)
    c = model.config
    x = torch.randn(2, c.in_channels, T, 8, 8)
    t = torch.tensor([10, 700])
    cams = torch.randn(2, T, 4, 4) if cameras_on else None
    text = torch.randn(2, 5, c.cross_attention_dim)
    if kind == "text":
        return x, t, Condition(encoder_hidden_states=text, cameras=cams)
    return x, t, Condition(image_latents=torch.randn_like(x), image_embeddings=torch.randn(2, c.cross_attention_dim),
                           encoder_hidden_states=text, cameras=cams)


def _save_pth(state: dict, path, step: int = 333000):
    torch.save({"state_dict": state, "step": step}, path)  # VideoMV's training script's wrapper
    return path


@pytest.mark.parametrize("kind", ["text", "image"])
@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_videomv_checkpoint_loads_exactly(kind, fmt, tmp_path):
    ours = _tiny(kind)
    state = to_videomv(ours)
    path = tmp_path / f"videomv.{fmt}"
    if fmt == "pth":
        _save_pth(state, path)
    else:
        save_file({k: v.contiguous() for k, v in state.items()}, path)
    model, report = unet_from_videomv(kind, path, motion_embedding=False)
    assert report.new_layers == [] and report.skipped == []
    assert model.config.camera_embedding and not model.config.motion_embedding
    expected = ours.state_dict()
    got = model.state_dict()
    assert got.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0, msg=key)
    with torch.no_grad():
        x, t, cond = _inputs(kind, ours)
        torch.testing.assert_close(model(x, t, cond), ours(x, t, cond), rtol=1e-5, atol=1e-5)
    if fmt == "pth":
        assert "step = 333000" in str(report)


def test_default_adds_our_motion_embedding_as_the_only_new_layer(tmp_path):
    path = _save_pth(to_videomv(_tiny("text")), tmp_path / "t2v.pth")
    model, report = unet_from_base("text", path)  # a file: read as VideoMV's release
    assert model.config.motion_embedding
    assert report.new_layers and all(k.startswith("motion_embedder.") for k in report.new_layers)
    assert torch.count_nonzero(model.motion_embedder.linear_2.weight) == 0  # zero output: computes VideoMV's ε


def test_camera_embedding_takes_our_cameras_and_gives_videomvs_features(tmp_path):
    """Our camera layer on our c2w == VideoMV's layer on the same camera in VideoMV's axes (its inference code's
    steps applied to our look-at camera)."""
    state = to_videomv(_tiny("text"))
    model, _ = unet_from_videomv("text", _save_pth(state, tmp_path / "t2v.pth"), motion_embedding=False)
    c2w = torch.as_tensor(cameras.orbit_camera_to_world(T, start_deg=30.0, elevation_deg=20.0), dtype=torch.float32)
    theirs = torch.as_tensor(cameras.GLTF_TO_BLENDER, dtype=torch.float32) @ c2w
    theirs[:, 1, :] *= -1
    theirs = theirs[:, [1, 0, 2, 3], :]
    w, b = state["camera_embedding.0.weight"], state["camera_embedding.0.bias"]
    with torch.no_grad():
        torch.testing.assert_close(model.camera_embedder.linear_1(c2w.reshape(T, 16)), theirs.reshape(T, 16) @ w.T + b)
    # in VideoMV's axes the orbit is z-up with azimuth measured from +X: (d·cos e·cos a, d·cos e·sin a, d·sin e)
    a, e = torch.deg2rad(torch.tensor(30.0)), torch.deg2rad(torch.tensor(20.0))
    expected = 2.0 * torch.stack([torch.cos(e) * torch.cos(a), torch.cos(e) * torch.sin(a), torch.sin(e)])
    torch.testing.assert_close(theirs[0, :3, 3], expected)


def test_image_latent_features_count_twice_as_in_videomv(tmp_path):
    state = to_videomv(_tiny("image"))
    model, _ = unet_from_videomv("image", _save_pth(state, tmp_path / "i2v.pth"), motion_embedding=False)
    x, features = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    conv = torch.nn.functional.conv2d
    w, b = state["input_blocks.0.0.weight"], state["input_blocks.0.0.bias"]
    with torch.no_grad():
        ours = model.conv_in(torch.cat([x, features], 1))
    torch.testing.assert_close(ours, conv(torch.cat([x, 2 * features], 1), w, b, padding=1))


def test_lgm_reconstructor_is_reported_not_loaded(tmp_path):
    state = to_videomv(_tiny("image"))
    state["lgm_big.unet.conv_in.weight"] = torch.randn(64, 9, 3, 3)
    state["lgm_big.unet.conv_in.bias"] = torch.randn(64)
    _, report = unet_from_videomv("image", _save_pth(state, tmp_path / "i2v.pth"), motion_embedding=False)
    assert report.skipped == ["2 tensors of lgm_big.* (not the denoiser)"]
    assert "not loaded: 2 tensors of lgm_big.*" in str(report)


def test_unmapped_keys_are_one_error_naming_them(tmp_path):
    state = to_videomv(_tiny("text"))
    state["fps_embedding.0.weight"] = torch.randn(128, 32)  # use_fps_condition: UNet3DConditionModel has no slot
    state["input_blocks.1.0.temopral_conv_2.conv1.0.weight"] = torch.randn(32)
    with pytest.raises(ValueError) as err:
        unet_from_videomv("text", _save_pth(state, tmp_path / "t2v.pth"))
    assert "2 VideoMV keys not mapped" in str(err.value)
    assert "fps_embedding.0.weight" in str(err.value) and "temopral_conv_2.conv1.0.weight" in str(err.value)


def test_missing_keys_are_an_error_naming_them(tmp_path):
    state = to_videomv(_tiny("text"))
    del state["middle_block.1.transformer_blocks.0.attn2.to_v.weight"]
    del state["camera_embedding.2.bias"]
    with pytest.raises(ValueError, match="2 missing from the checkpoint") as err:
        unet_from_videomv("text", _save_pth(state, tmp_path / "t2v.pth"))
    assert "mid_block.attentions.0.transformer_blocks.0.attn2.to_v.weight" in str(err.value)
    assert "camera_embedder.linear_2.bias" in str(err.value)


def test_shape_mismatch_is_an_error_naming_both_keys(tmp_path):
    state = to_videomv(_tiny("text"))
    state["time_embed.2.bias"] = torch.randn(7)
    with pytest.raises(ValueError, match=r"1 shape mismatch: time_embed\.2\.bias \[7\] vs "
                                         r"time_embedding\.linear_2\.bias \[128\]"):
        unet_from_videomv("text", _save_pth(state, tmp_path / "t2v.pth"))


def test_a_camera_embedding_the_model_is_built_without_is_not_dropped(tmp_path):
    path = _save_pth(to_videomv(_tiny("text")), tmp_path / "t2v.pth")
    with pytest.raises(ValueError, match=r"camera_embedding\.0\.weight \(→ camera_embedder\.linear_1\.weight, "
                                         r"which this model lacks\)"):
        unet_from_videomv("text", path, camera_embedding=False)


class Payload:  # a custom object: what weights_only refuses to unpickle
    pass


def test_a_pickle_with_objects_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": to_videomv(_tiny("text")), "step": 1, "extra": Payload()}, path)
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}: a pickle that holds anything but plain tensors: "
                                         r"refused"):
        unet_from_videomv("text", path)


def test_kind_and_format_are_checked(tmp_path):
    i2v = _save_pth(to_videomv(_tiny("image")), tmp_path / "i2v.pth")
    with pytest.raises(ValueError, match=r"image-to-3D \(I2VGen-XL\) model, not a text model"):
        unet_from_videomv("text", i2v)
    diffusers_like = tmp_path / "unet.safetensors"
    save_file({k: v.contiguous() for k, v in _tiny("text").state_dict().items()}, diffusers_like)
    with pytest.raises(ValueError, match="not a VideoMV checkpoint"):
        unet_from_base("text", diffusers_like)
    odd = tmp_path / "model.onnx"
    odd.write_bytes(b"\0")
    with pytest.raises(ValueError, match="unknown checkpoint type '.onnx'"):
        unet_from_base("text", odd)
    truncated = tmp_path / "cut.pth"
    truncated.write_bytes(i2v.read_bytes()[:2000])
    with pytest.raises(ValueError, match=re.escape(str(truncated))):
        unet_from_videomv("image", truncated)


def test_norm_groups_can_be_overridden(tmp_path):
    """VideoMV hard-codes 32 groups; the weights cannot tell, so a config may say otherwise (the tiny preset: 8)."""
    torch.manual_seed(0)
    ours = build_unet("text", "tiny", camera_embedding=True, motion_embedding=False).eval()
    path = _save_pth(to_videomv(ours), tmp_path / "t2v.pth")
    model, _ = unet_from_videomv("text", path, motion_embedding=False, norm_num_groups=8)
    with torch.no_grad():
        x, t, cond = _inputs("text", ours)
        torch.testing.assert_close(model(x, t, cond), ours(x, t, cond), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["text", "image"])
def test_full_size_layout_maps_completely(kind):
    """At the paper's size (ModelScope-T2V / I2VGen-XL: 4 levels of 2 res blocks, attention on the top 3, 1024-wide
    context), on the meta device: VideoMV's block numbering lands where its code puts it, and every key maps."""
    with torch.device("meta"):
        ours = build_unet(kind, "full", camera_embedding=True, motion_embedding=False)
    state = to_videomv(ours)
    for key in ("input_blocks.1.1.proj_in.weight", "input_blocks.3.op.weight", "input_blocks.6.op.weight",
                "input_blocks.9.op.weight", "input_blocks.11.0.temopral_conv.conv4.3.weight",
                "middle_block.3.temopral_conv.conv1.2.weight", "output_blocks.2.1.conv.weight",
                "output_blocks.5.3.conv.weight", "output_blocks.8.3.conv.weight", "output_blocks.11.2.proj_out.weight"):
        assert key in state, key
    assert not any(k.startswith(("input_blocks.10.1.", "output_blocks.0.1.", "input_blocks.12.")) for k in state)
    assert state["input_blocks.0.1.proj_in.weight"].shape == (512, 320, 1)  # 8 heads × 64 over 320 channels
    layout = infer_layout(state)
    assert layout.kind == kind and layout.block_out_channels == (320, 640, 1280, 1280)
    assert layout.attention == (True, True, True, False) and layout.layers_per_block == 2
    assert layout.attention_head_dim == 64 and layout.cross_attention_dim == 1024
    weights, new = check_against(ours.state_dict(), map_state(state, layout))
    assert new == [] and weights.keys() == ours.state_dict().keys()


def test_train_init_and_sampling_base_take_a_videomv_file(tmp_path):
    """`train --init VIDEOMV.pth` fine-tunes from it; `sample --base VIDEOMV.pth` uses it as ε̄ of Eq. 3."""
    from diffusion4d.diffusion.components import load_base_unet, load_or_build_unet

    ours = _tiny("image")
    path = _save_pth(to_videomv(ours), tmp_path / "i2v_00882000.pth")
    init = load_or_build_unet("image", "tiny", str(path))
    assert init.config.motion_embedding and init.config.camera_embedding
    base = load_base_unet("image", path)
    assert not base.config.motion_embedding and base.config.camera_embedding
    with torch.no_grad():
        x, t, cond = _inputs("image", ours)
        torch.testing.assert_close(base(x, t, cond), ours(x, t, cond), rtol=1e-5, atol=1e-5)


def test_a_run_trains_from_a_videomv_file_and_samples_with_it_as_the_3d_aware_base(tmp_path):
    """End to end: `train --init VIDEOMV.pth` then `sample --base VIDEOMV.pth` (tiny, CPU)."""
    from diffusion4d.diffusion.train import TrainConfig, train
    from diffusion4d.pipelines.orbit import OrbitPipeline
    from orbit_fixtures import rendered_orbits
    from tiny_models import make_tiny_image_encoder

    rendered_orbits(tmp_path, count=2, seed=3, frames=T, size=64)
    make_tiny_image_encoder(tmp_path / "image_encoder")
    path = _save_pth(to_videomv(_tiny("image")), tmp_path / "i2v.pth")
    config = TrainConfig(data=str(tmp_path / "orbits"), out=str(tmp_path / "run"), condition="image", stage="4d",
                         init=str(path), max_steps=1, batch_size=1, checkpoint_every=1000, log_every=1,
                         image_encoder=str(tmp_path / "image_encoder"))
    run = train(config, progress=False)
    saved = json.loads((run / "scheduler" / "scheduler_config.json").read_text())
    assert (saved["prediction_type"], saved["beta_schedule"], saved["rescale_betas_zero_snr"]) == (
        "v_prediction", "squaredcos_cap_v2", True)  # VideoMV's I2VGen-XL schedule travels with its weights
    pipe = OrbitPipeline.from_run(run, base=path)
    assert pipe.unet.config.camera_embedding and pipe.base_unet.config.camera_embedding
    frames = pipe(image=torch.zeros(3, 64, 64), steps=2, seed=0, progress=False)
    assert frames.shape == (T, 64, 64, 3)


def test_videomv_schedules_build_diffusers_schedulers():
    from diffusers import DDIMScheduler

    text, image = DDIMScheduler(**scheduler_config("text")), DDIMScheduler(**scheduler_config("image"))
    assert text.config.prediction_type == "epsilon" and text.alphas_cumprod[-1] > 0
    assert image.config.prediction_type == "v_prediction" and image.alphas_cumprod[-1] == 0  # zero terminal SNR
    text.set_timesteps(50)
    assert text.timesteps[0] == 981 and text.timesteps[-1] == 1  # VideoMV's DDIM: t = 1 + 20·i


def test_a_flag_that_contradicts_the_videomv_schedule_is_refused(tmp_path):
    from diffusion4d.diffusion.train import TrainConfig, run_schedule

    path = _save_pth(to_videomv(_tiny("image")), tmp_path / "i2v.pth")
    config = TrainConfig(data=str(tmp_path), out=str(tmp_path / "run"), condition="image", stage="4d",
                         init=str(path), prediction_type="epsilon")
    with pytest.raises(ValueError, match=r"i2v\.pth.*prediction_type is 'v_prediction' there, 'epsilon' given"):
        run_schedule(config, resume=False)
