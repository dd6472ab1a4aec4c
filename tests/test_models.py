"""models/: 4D-aware UNets, embeddings, presets, base-weight loading, condition encoders (CPU, tiny configs)."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import I2VGenXLUNet, UNet3DConditionModel
from safetensors.torch import load_file, save_file

from diffusion4d.models import (
    PRESETS,
    CameraEmbedding,
    Condition,
    Diffusion4DImageUNet,
    Diffusion4DTextUNet,
    MotionEmbedding,
    build_unet,
    first_view_image_latents,
    load_image_encoder,
    load_text_encoder,
    unet_from_base,
)
from tiny_models import make_tiny_image_encoder, make_tiny_text_encoder

B, C, T, H, W = 2, 4, 4, 8, 8
D = PRESETS["text"]["tiny"]["cross_attention_dim"]
BASE_CLASSES = {"text": UNet3DConditionModel, "image": I2VGenXLUNet}
MOTION_KEYS = [f"motion_embedder.linear_{i}.{p}" for i in (1, 2) for p in ("weight", "bias")]
CAMERA_KEYS = [f"camera_embedder.linear_{i}.{p}" for i in (1, 2) for p in ("weight", "bias")]


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _inputs(seed: int = 0, frames: int = T):
    g = _gen(seed)
    return torch.randn(B, C, frames, H, W, generator=g), torch.tensor([10, 700])


def _text_cond(seed: int = 1, motion=(0.05, 0.2), **extra) -> Condition:
    g = _gen(seed)
    return Condition(encoder_hidden_states=torch.randn(B, 5, D, generator=g), motion=torch.tensor(motion), **extra)


def _image_cond(seed: int = 2, frames: int = T, static: bool = False, **extra) -> Condition:
    g = _gen(seed)
    if static:  # V̄'s latents, concatenation only
        static = torch.randn(B, C, frames, H, W, generator=g)
        return Condition(image_latents=static, motion=torch.tensor([0.1, 0.3]), **extra)
    first = torch.randn(B, C, H, W, generator=g)
    return Condition(
        image_embeddings=torch.randn(B, D, generator=g),
        image_latents=first_view_image_latents(first, frames),
        motion=torch.tensor([0.1, 0.3]),
        **extra,
    )


def _cond(kind: str, **kw) -> Condition:
    return _text_cond(**kw) if kind == "text" else _image_cond(**kw)


def _tiny(kind: str, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return build_unet(kind, "tiny", **overrides).eval()


def _base_forward(base, kind: str, x, t, cond: Condition) -> torch.Tensor:
    """The diffusers parent's own forward on the same inputs."""
    if kind == "text":
        return base(x, t, encoder_hidden_states=cond.encoder_hidden_states).sample
    text = cond.encoder_hidden_states if cond.encoder_hidden_states is not None else torch.zeros(B, 0, D)
    return base(
        x, t, fps=torch.full((B,), 8), image_latents=cond.image_latents,
        image_embeddings=cond.image_embeddings, encoder_hidden_states=text,
    ).sample


@pytest.fixture(scope="module")
def tiny_bases(tmp_path_factory):
    """Tiny random base UNets saved as a UNet folder and as a pipeline folder (``unet/``), per kind."""
    out = {}
    for kind, cls in BASE_CLASSES.items():
        torch.manual_seed(123)
        base = cls(**PRESETS[kind]["tiny"]).eval()
        root = tmp_path_factory.mktemp(f"base_{kind}")
        base.save_pretrained(root / "unet_folder")
        base.save_pretrained(root / "pipeline" / "unet")
        (root / "pipeline" / "model_index.json").write_text(json.dumps({"_class_name": "TextToVideoSDPipeline"}))
        out[kind] = (base, root / "unet_folder", root / "pipeline")
    return out


# ---- shapes, determinism ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("frames", [4, 8])
def test_text_model_output_shape(frames):
    x, t = _inputs(frames=frames)
    with torch.no_grad():
        y = _tiny("text")(x, t, _text_cond())
    assert y.shape == x.shape and torch.isfinite(y).all()


def test_image_and_static_conditions_output_shape():
    model = _tiny("image")
    x, t = _inputs()
    with torch.no_grad():
        y_image = model(x, t, _image_cond())
        y_static = model(x, t, _image_cond(static=True))
        y_text = model(x, t, _image_cond(encoder_hidden_states=torch.randn(B, 3, D)))
    for y in (y_image, y_static, y_text):
        assert y.shape == x.shape and torch.isfinite(y).all()
    assert not torch.allclose(y_image, y_static)


def test_first_view_image_latents_layout():
    first = torch.randn(B, C, H, W)
    lat = first_view_image_latents(first, 5)
    assert lat.shape == (B, C, 5, H, W)
    assert torch.equal(lat[:, :, 0], first)
    assert torch.equal(lat[:, :, 4], torch.ones_like(first)) and torch.equal(lat[:, :, 2], torch.full_like(first, 0.5))


@pytest.mark.parametrize("kind", ["text", "image"])
def test_deterministic_and_batch_independent(kind):
    model = _tiny(kind)
    x, t = _inputs()
    cond = _cond(kind)
    with torch.no_grad():
        y1, y2 = model(x, t, cond), model(x, t, cond)
        single = model(x[1:], t[1:], Condition(**{k: v[1:] for k, v in cond.tensors().items()}))
    assert torch.equal(y1, y2)
    torch.testing.assert_close(single, y1[1:], rtol=1e-4, atol=1e-5)


def test_odd_latent_size_and_scalar_timestep():
    model = _tiny("text")
    x = torch.randn(B, C, T, 7, 9)
    with torch.no_grad():
        assert model(x, 500, _text_cond()).shape == x.shape


# ---- zero init: a base model wrapped with our layers is unchanged -------------------------------------------------


@pytest.mark.parametrize("kind", ["text", "image"])
def test_from_base_is_identical_to_base_until_motion_layer_trains(kind, tiny_bases):
    base, folder, _ = tiny_bases[kind]
    model, _ = unet_from_base(kind, folder)
    x, t = _inputs()
    cond = _cond(kind)
    with torch.no_grad():
        expected = _base_forward(base, kind, x, t, cond)
        for m in (0.0, 0.3, 50.0):
            y = model(x, t, Condition(**{**cond.tensors(), "motion": torch.full((B,), m)}))
            assert torch.equal(y, expected), f"m={m} changed the output of a fresh model"

        torch.nn.init.normal_(model.motion_embedder.linear_2.weight, std=0.5)
        y_small = model(x, t, Condition(**{**cond.tensors(), "motion": torch.full((B,), 0.01)}))
        y_large = model(x, t, Condition(**{**cond.tensors(), "motion": torch.full((B,), 0.5)}))
        assert (y_small - y_large).abs().max() > 1e-4
        # keep = 0 drops m entirely: the base output whatever m holds (even NaN)
        nan_m = torch.tensor([float("nan"), 0.9])
        dropped = Condition(**{**cond.tensors(), "motion": nan_m, "motion_keep": torch.zeros(B)})
        assert torch.equal(model(x, t, dropped), expected)


def test_new_layers_receive_gradients_from_the_start():
    # zero-init stops gradients into linear_1 at step 0, but not into the zero layer itself, so training starts
    model = _tiny("text", camera_embedding=True).train()
    x, t = _inputs()
    model(x, t, _text_cond(cameras=torch.eye(4).repeat(B, T, 1, 1))).square().mean().backward()
    assert model.motion_embedder.linear_2.weight.grad.abs().sum() > 0
    assert model.camera_embedder.linear_2.weight.grad.abs().sum() > 0


def test_motion_embedding_zero_init_and_keep():
    emb = MotionEmbedding(64)
    m = torch.tensor([0.0, 0.1, 2.0])
    assert torch.equal(emb(m), torch.zeros(3, 64))
    torch.nn.init.normal_(emb.linear_2.weight)
    out = emb(m, keep=torch.tensor([1.0, 0.0, 1.0]))
    assert torch.equal(out[1], torch.zeros(64)) and out[0].abs().sum() > 0 and not torch.allclose(out[0], out[2])


def test_camera_embedding_is_per_frame():
    emb = CameraEmbedding(32, 16)
    cams = torch.eye(4).repeat(1, 3, 1, 1)
    assert emb(cams).shape == (3, 32) and torch.equal(emb(cams), torch.zeros(3, 32))
    torch.nn.init.normal_(emb.linear_2.weight)
    moved = cams.clone()
    moved[0, 1, :3, 3] = torch.tensor([2.0, 0.0, 0.0])
    changed = (emb(cams) - emb(moved)).abs().sum(dim=1)
    assert changed[1] > 0 and changed[0] == 0 and changed[2] == 0


def test_camera_embedding_changes_outputs_only_once_trained():
    model = _tiny("text", camera_embedding=True)
    x, t = _inputs()
    cams_a = torch.eye(4).repeat(B, T, 1, 1)
    cams_b = cams_a.clone()
    cams_b[:, :, :3, 3] = torch.randn(B, T, 3)
    with torch.no_grad():
        assert torch.equal(model(x, t, _text_cond(cameras=cams_a)), model(x, t, _text_cond(cameras=cams_b)))
        torch.nn.init.normal_(model.camera_embedder.linear_2.weight, std=0.5)
        assert (model(x, t, _text_cond(cameras=cams_a)) - model(x, t, _text_cond(cameras=cams_b))).abs().max() > 1e-4


# ---- save / load -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["text", "image"])
def test_save_pretrained_round_trip(kind, tmp_path):
    model = _tiny(kind, camera_embedding=True, motion_scale=250.0)
    torch.nn.init.normal_(model.motion_embedder.linear_2.weight)  # make the new layers matter
    model.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").is_file()
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["motion_embedding"] is True and config["camera_embedding"] is True and config["motion_scale"] == 250.0
    if kind == "image":
        assert config["fps"] == 8
    loaded = type(model).from_pretrained(tmp_path).eval()
    x, t = _inputs()
    cond = _cond(kind, cameras=torch.eye(4).repeat(B, T, 1, 1))
    with torch.no_grad():
        assert torch.equal(model(x, t, cond), loaded(x, t, cond))


@pytest.mark.parametrize("kind", ["text", "image"])
@pytest.mark.parametrize("layout", ["unet_folder", "pipeline"])
def test_unet_from_base_reports_exactly_the_new_layers(kind, layout, tiny_bases, capsys):
    _, folder, pipeline = tiny_bases[kind]
    model, report = unet_from_base(kind, folder if layout == "unet_folder" else pipeline, camera_embedding=True)
    assert isinstance(model, Diffusion4DTextUNet if kind == "text" else Diffusion4DImageUNet)
    assert sorted(report.new_layers) == sorted(MOTION_KEYS + CAMERA_KEYS)
    assert report.unet_dir.name == ("unet" if layout == "pipeline" else "unet_folder")
    assert "motion_embedder.linear_2.weight" in capsys.readouterr().out
    assert model.config.camera_embedding is True and model.config.motion_embedding is True
    # the new layers got their real initialisation: zero output layer, non-zero hidden layer
    assert torch.equal(model.motion_embedder.linear_2.weight, torch.zeros_like(model.motion_embedder.linear_2.weight))
    assert model.motion_embedder.linear_1.weight.abs().sum() > 0


def test_unet_from_base_without_new_layers(tiny_bases):
    _, folder, _ = tiny_bases["text"]
    _, report = unet_from_base("text", folder, motion_embedding=False)
    assert report.new_layers == []


def _rewrite_weights(folder, dest, edit):
    dest.mkdir()
    (dest / "config.json").write_text((folder / "config.json").read_text())
    state = load_file(folder / "diffusion_pytorch_model.safetensors")
    edit(state)
    save_file(state, dest / "diffusion_pytorch_model.safetensors")


def test_unet_from_base_rejects_extra_and_missing_keys(tiny_bases, tmp_path):
    _, folder, _ = tiny_bases["text"]
    _rewrite_weights(folder, tmp_path / "extra", lambda s: s.__setitem__("surprise.weight", torch.zeros(3)))
    with pytest.raises(ValueError, match=r"unexpected in the base: surprise\.weight"):
        unet_from_base("text", tmp_path / "extra")
    _rewrite_weights(folder, tmp_path / "missing", lambda s: s.pop("conv_out.bias"))
    with pytest.raises(ValueError, match=r"missing from the base: conv_out\.bias"):
        unet_from_base("text", tmp_path / "missing")
    _rewrite_weights(folder, tmp_path / "shape", lambda s: s.__setitem__("conv_out.bias", torch.zeros(7)))
    with pytest.raises(ValueError, match=r"shape mismatch: conv_out\.bias"):
        unet_from_base("text", tmp_path / "shape")


def test_unet_from_base_rejects_wrong_kind_and_empty_dir(tiny_bases, tmp_path):
    _, image_folder, _ = tiny_bases["image"]
    with pytest.raises(ValueError, match="I2VGenXLUNet"):
        unet_from_base("text", image_folder)
    with pytest.raises(FileNotFoundError):
        unet_from_base("text", tmp_path)


# ---- input validation --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "motion, problem", [([float("nan"), 0.1], "NaN"), ([0.1, -0.5], "negative"), ([float("inf"), 0.1], "infinite")]
)
def test_bad_motion_raises(motion, problem):
    x, t = _inputs()
    with pytest.raises(ValueError, match=f"motion.*{problem}"):
        _tiny("text")(x, t, _text_cond(motion=motion))


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda x, t: (x[0], t, _text_cond()), r"sample must have shape"),
        (lambda x, t: (x, t, Condition(motion=torch.ones(B))), r"encoder_hidden_states .* required"),
        (lambda x, t: (x, t, Condition(encoder_hidden_states=torch.randn(B, 5, D + 1), motion=torch.ones(B))),
         r"encoder_hidden_states must have shape"),
        (lambda x, t: (x, t, _text_cond(image_latents=x)), r"does not use cond\.image_latents"),
        (lambda x, t: (x, t, Condition(encoder_hidden_states=torch.randn(B, 5, D))), r"cond\.motion .* required"),
        (lambda x, t: (x, t, _text_cond(motion=[0.1, 0.2, 0.3])), r"cond\.motion must have shape"),
        (lambda x, t: (x, t, _text_cond(cameras=torch.eye(4).repeat(B, T, 1, 1))), r"camera_embedding=False"),
        (lambda x, t: (x, torch.tensor([1, 2, 3]), _text_cond()), r"timestep must have shape"),
        (lambda x, t: (x, t, _text_cond(motion_keep=torch.tensor([0.0, 2.0]))), r"motion_keep must hold values"),
    ],
)
def test_text_model_input_errors(make, match):
    x, t = _inputs()
    model = _tiny("text")
    with pytest.raises(ValueError, match=match):
        model(*make(x, t))


def test_motion_may_be_absent_when_dropped_and_is_refused_by_a_model_without_it():
    x, t = _inputs()
    cond = Condition(encoder_hidden_states=torch.randn(B, 5, D), motion_keep=torch.zeros(B))
    with torch.no_grad():
        assert _tiny("text")(x, t, cond).shape == x.shape  # unconditional branch: no m needed
        no_motion = _tiny("text", motion_embedding=False)
        assert no_motion(x, t, _text_cond(motion_keep=torch.zeros(B))).shape == x.shape  # dropped m is fine
    with pytest.raises(ValueError, match="motion_embedding=False"):
        no_motion(x, t, _text_cond())


def test_image_model_input_errors():
    x, t = _inputs()
    model = _tiny("image")
    with pytest.raises(ValueError, match=r"image_latents .* required"):
        model(x, t, Condition(image_embeddings=torch.randn(B, D), motion=torch.ones(B)))
    with pytest.raises(ValueError, match=r"image_latents must have shape"):
        model(x, t, _image_cond(frames=T + 1))
    with pytest.raises(ValueError, match=r"image_embeddings must have shape"):
        model(x, t, Condition(**{**_image_cond().tensors(), "image_embeddings": torch.randn(B, 1, D)}))
    with pytest.raises(ValueError, match=r"cameras .* required"):
        _tiny("image", camera_embedding=True)(x, t, _image_cond())
    with pytest.raises(ValueError, match=r"in_channels=4"):
        build_unet("image", "tiny", in_channels=8)


# ---- presets -----------------------------------------------------------------------------------------------------


def _count(model) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("kind", ["text", "image"])
def test_tiny_preset_is_small(kind):
    assert _count(build_unet(kind, "tiny")) < 5_000_000


@pytest.mark.parametrize("kind, expected", [("text", 1.41e9), ("image", 1.42e9)])
def test_full_preset_matches_paper_base_models(kind, expected):
    with torch.device("meta"):
        model = build_unet(kind, "full", motion_embedding=False)
        with_motion = build_unet(kind, "full")
    assert abs(_count(model) - expected) / expected < 0.005
    assert _count(with_motion) - _count(model) < 3_000_000  # the motion MLP is a rounding error next to the base


def test_build_unet_rejects_unknown_names():
    with pytest.raises(ValueError, match="kind"):
        build_unet("audio", "tiny")
    with pytest.raises(ValueError, match="preset"):
        build_unet("text", "huge")


# ---- encoders ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def text_encoder_dir(tmp_path_factory):
    return make_tiny_text_encoder(tmp_path_factory.mktemp("text_encoder"), hidden_size=D, max_length=16)


@pytest.mark.parametrize("layout", ["pipeline", "flat"])
def test_text_encoder_round_trip_from_disk(layout, tmp_path):
    path = make_tiny_text_encoder(tmp_path, hidden_size=D, max_length=16, layout=layout)
    enc = load_text_encoder(path)
    states = enc(["a red cat running", "the dog"])
    assert states.shape == (2, 16, D) and torch.isfinite(states).all()
    assert torch.equal(states, load_text_encoder(path)(["a red cat running", "the dog"]))
    assert not torch.allclose(states[0], states[1])
    assert not states.requires_grad


def test_text_encoder_empty_prompt_and_truncation(text_encoder_dir):
    enc = load_text_encoder(text_encoder_dir)
    assert enc([""]).shape == (1, 16, D)
    with pytest.warns(UserWarning, match=r"prompt 1 is 22 tokens long .* 6 tokens dropped"):
        enc(["short", "abcdefghijklmnopqrst"])  # 20 characters (no merges) + start/end tokens
    with pytest.raises(TypeError):
        enc("not a list")


def test_text_encoder_states_feed_the_text_model(text_encoder_dir):
    states = load_text_encoder(text_encoder_dir)(["a cat", ""])
    x, t = _inputs()
    with torch.no_grad():
        assert _tiny("text")(x, t, Condition(encoder_hidden_states=states, motion=torch.ones(B))).shape == x.shape


def test_image_encoder_on_arbitrary_size(tmp_path):
    enc = load_image_encoder(make_tiny_image_encoder(tmp_path, projection_dim=D, image_size=32))
    images = torch.rand(2, 3, 45, 70) * 2 - 1
    emb = enc(images)
    assert emb.shape == (2, D) and torch.isfinite(emb).all()
    assert enc.preprocess(images).shape == (2, 3, 32, 32)
    assert torch.equal(emb, enc(images))
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        enc(images * 127.5 + 127.5)
    # its embedding is the image model's image_embeddings
    x, t = _inputs()
    with torch.no_grad():
        assert _tiny("image")(x, t, Condition(**{**_image_cond().tensors(), "image_embeddings": emb})).shape == x.shape


def test_image_encoder_flat_layout(tmp_path):
    enc = load_image_encoder(make_tiny_image_encoder(tmp_path, projection_dim=16, layout="flat"))
    assert enc(torch.zeros(1, 3, 32, 32)).shape == (1, 16)


