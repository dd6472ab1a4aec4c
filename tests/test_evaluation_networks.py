"""LPIPS, Inception-I3D and CLIP of the evaluation: real key layouts, reference computations, safe loading."""

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from diffusion4d.evaluation.clip import ClipEmbedder, clip_f_o, clip_preprocess, clip_score
from diffusion4d.evaluation.fvd import fvd_result
from diffusion4d.evaluation.i3d import InceptionI3d, i3d_features, same_padding, video_to_i3d_input
from diffusion4d.evaluation.lpips import LPIPS
from diffusion4d.evaluation.pretrained import MissingWeights, load_state_dict_safely
from tiny_models import make_tiny_clip

# --- the released files' layouts, written out by hand (torchvision backbones, lpips v0.1 linear layers) -------

ALEX_CONVS = {0: (64, 3, 11), 3: (192, 64, 5), 6: (384, 192, 3), 8: (256, 384, 3), 10: (256, 256, 3)}
VGG_BLOCKS = [[0, 2], [5, 7], [10, 12, 14], [17, 19, 21], [24, 26, 28]]
VGG_WIDTHS = [64, 128, 256, 512, 512]


def vgg_convs():
    convs, c_in = {}, 3
    for block, width in zip(VGG_BLOCKS, VGG_WIDTHS):
        for index in block:
            convs[index] = (width, c_in, 3)
            c_in = width
    return convs


def random_files(tmp_path: Path, net: str, suffix: str, seed: int = 0) -> tuple[Path, Path]:
    g = torch.Generator().manual_seed(seed)
    convs = ALEX_CONVS if net == "alex" else vgg_convs()
    backbone = {"classifier.1.weight": torch.randn(4, 4, generator=g)}  # torchvision files hold the head too
    for index, (c_out, c_in, k) in convs.items():
        std = math.sqrt(2 / (c_in * k * k))  # He init: activations neither vanish nor explode through the layers
        backbone[f"features.{index}.weight"] = torch.randn(c_out, c_in, k, k, generator=g) * std
        backbone[f"features.{index}.bias"] = torch.randn(c_out, generator=g) * 0.01
    widths = [64, 192, 384, 256, 256] if net == "alex" else VGG_WIDTHS
    lins = {f"lin{l}.model.1.weight": torch.rand(1, c, 1, 1, generator=g) for l, c in enumerate(widths)}
    paths = tmp_path / f"lin_{net}{suffix}", tmp_path / f"backbone_{net}{suffix}"
    for state, path in zip((lins, backbone), paths):
        save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
    return paths


def reference_lpips(x, y, lins: dict, backbone: dict, net: str) -> torch.Tensor:
    """LPIPS from the paper, straight from the state dicts (no module of ours)."""
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)

    def conv(h, i, stride=1, padding=1):
        return F.relu(F.conv2d(h, backbone[f"features.{i}.weight"], backbone[f"features.{i}.bias"], stride, padding))

    def taps(img):
        h = (2 * img - 1 - shift) / scale
        if net == "alex":
            t1 = conv(h, 0, 4, 2)
            t2 = conv(F.max_pool2d(t1, 3, 2), 3, 1, 2)
            t3 = conv(F.max_pool2d(t2, 3, 2), 6)
            t4 = conv(t3, 8)
            return [t1, t2, t3, t4, conv(t4, 10)]
        out = []
        for b, block in enumerate(VGG_BLOCKS):
            h = F.max_pool2d(h, 2, 2) if b else h
            for i in block:
                h = conv(h, i)
            out.append(h)
        return out

    total = torch.zeros(x.shape[0])
    for l, (fx, fy) in enumerate(zip(taps(x), taps(y))):
        nx = fx / (fx.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        ny = fy / (fy.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        w = lins[f"lin{l}.model.1.weight"]
        total += ((nx - ny).pow(2) * w).sum(1).mean((1, 2))
    return total


def images(seed, shape=(2, 3, 32, 32)):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


# --- LPIPS ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("net,suffix", [("alex", ".safetensors"), ("alex", ".pth"), ("vgg", ".safetensors")])
def test_lpips_matches_hand_written_reference_on_released_key_layout(tmp_path, net, suffix):
    lin_path, backbone_path = random_files(tmp_path, net, suffix)
    model = LPIPS.from_files(lin_path, backbone_path, net=net)
    lins, backbone = load_state_dict_safely(lin_path), load_state_dict_safely(backbone_path)
    x, y = images(1), images(2)
    got = model(x, y)
    assert got.shape == (2,)
    torch.testing.assert_close(got, reference_lpips(x, y, lins, backbone, net), rtol=1e-4, atol=1e-6)


def test_lpips_is_zero_on_identical_images_symmetric_and_positive_otherwise(tmp_path):
    model = LPIPS.from_files(*random_files(tmp_path, "alex", ".safetensors"))
    x, y = images(3), images(4)
    assert model(x, x).tolist() == [0.0, 0.0]
    torch.testing.assert_close(model(x, y), model(y, x))
    assert (model(x, y) > 0).all()
    # a small change is closer than an unrelated image
    assert (model(x, (x + 0.02).clamp(0, 1)) < model(x, y)).all()


def test_lpips_is_a_differentiable_loss_with_frozen_parameters():
    model = LPIPS("alex")
    x = images(5, (1, 3, 32, 32)).requires_grad_(True)
    model(x, images(6, (1, 3, 32, 32))).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in model.parameters())
    model.train()  # inside a module in train mode it stays deterministic (no dropout)
    torch.testing.assert_close(model(x, x.detach() * 0.5), model(x, x.detach() * 0.5))


def test_lpips_missing_files_name_their_flags(tmp_path):
    lin_path, backbone_path = random_files(tmp_path, "alex", ".safetensors")
    with pytest.raises(MissingWeights, match="--lpips-weights"):
        LPIPS.from_files(None, backbone_path)
    with pytest.raises(MissingWeights, match="--lpips-backbone"):
        LPIPS.from_files(lin_path, tmp_path / "absent.pth")


def test_lpips_refuses_wrong_layouts_and_negative_weights(tmp_path):
    lin_path, backbone_path = random_files(tmp_path, "alex", ".safetensors")
    vgg_lin, vgg_backbone = random_files(tmp_path, "vgg", ".safetensors")
    with pytest.raises(ValueError, match=r"wrong shapes: lin1\.model\.1\.weight \(1, 128, 1, 1\)"):
        LPIPS.from_files(vgg_lin, backbone_path, net="alex")
    with pytest.raises(ValueError, match=r"missing keys: features\.3\.weight.*unexpected keys: features\.12\."):
        LPIPS.from_files(lin_path, vgg_backbone, net="alex")
    save_file({"lin0.model.1.weight": torch.rand(1, 64, 1, 1)}, str(tmp_path / "partial.safetensors"))
    with pytest.raises(ValueError, match=r"missing keys: lin1\.model\.1\.weight"):
        LPIPS.from_files(tmp_path / "partial.safetensors", backbone_path)
    save_file({f"lin{l}.model.1.weight": -torch.rand(1, c, 1, 1) for l, c in enumerate([64, 192, 384, 256, 256])},
              str(tmp_path / "negative.safetensors"))
    with pytest.raises(ValueError, match="non-negative"):
        LPIPS.from_files(tmp_path / "negative.safetensors", backbone_path)
    save_file({"classifier.1.weight": torch.zeros(2)}, str(tmp_path / "head_only.safetensors"))
    with pytest.raises(ValueError, match="no 'features"):
        LPIPS.from_files(lin_path, tmp_path / "head_only.safetensors")


class _RunsCode:
    """Unpickling this calls Path.touch(marker): a stand-in for a checkpoint that executes code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_weights_pickle_that_would_run_code_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "code_ran"
    evil = tmp_path / "evil.pth"
    torch.save({"lin0.model.1.weight": _RunsCode(marker)}, evil)
    _, backbone_path = random_files(tmp_path, "alex", ".safetensors")
    with pytest.raises(ValueError, match="refused"):
        LPIPS.from_files(evil, backbone_path)
    with pytest.raises(ValueError, match="refused"):
        InceptionI3d.from_file(evil)
    assert not marker.exists()


# --- Inception-I3D --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def i3d_file(tmp_path_factory):
    torch.manual_seed(0)
    model = InceptionI3d()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so a load that skipped them would show
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("i3d") / "i3d.safetensors"
    save_file(model.state_dict(), str(path))
    return path, model


def test_i3d_names_follow_the_pytorch_i3d_layout():
    keys = InceptionI3d().state_dict()
    for key, shape in {
        "Conv3d_1a_7x7.conv3d.weight": (64, 3, 7, 7, 7),
        "Conv3d_1a_7x7.bn.running_var": (64,),
        "Conv3d_2c_3x3.conv3d.weight": (192, 64, 3, 3, 3),
        "Mixed_3b.b0.conv3d.weight": (64, 192, 1, 1, 1),
        "Mixed_3b.b1b.conv3d.weight": (128, 96, 3, 3, 3),
        "Mixed_4b.b3b.conv3d.weight": (64, 480, 1, 1, 1),
        "Mixed_5c.b2b.bn.bias": (128,),
        "logits.conv3d.weight": (400, 1024, 1, 1, 1),
        "logits.conv3d.bias": (400,),
    }.items():
        assert tuple(keys[key].shape) == shape, key
    assert not any(k.startswith(("MaxPool", "logits.bn")) for k in keys)


def test_i3d_round_trip_gives_the_same_400d_logits(i3d_file):
    path, original = i3d_file
    loaded = InceptionI3d.from_file(path)
    video = torch.rand(2, 3, 4, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    out = loaded(video)
    assert out.shape == (2, 400)
    torch.testing.assert_close(out, original(video))
    loaded.train()  # stays in eval mode: BatchNorm keeps the loaded statistics
    assert not any(m.training for m in loaded.modules())


def test_i3d_strict_loading_lists_missing_and_unexpected_keys(i3d_file, tmp_path):
    path, original = i3d_file
    state = {k: v for k, v in original.state_dict().items() if not k.endswith("num_batches_tracked")}
    save_file(state, str(tmp_path / "old.safetensors"))  # older files lack the BatchNorm counters: accepted
    InceptionI3d.from_file(tmp_path / "old.safetensors")
    del state["Mixed_4c.b1b.conv3d.weight"]
    state["Mixed_9z.conv3d.weight"] = torch.zeros(1)
    save_file(state, str(tmp_path / "broken.safetensors"))
    with pytest.raises(ValueError, match=r"missing keys: Mixed_4c\.b1b\.conv3d\.weight.*unexpected keys: Mixed_9z"):
        InceptionI3d.from_file(tmp_path / "broken.safetensors")
    with pytest.raises(MissingWeights, match="--i3d-weights"):
        InceptionI3d.from_file(None)


def test_i3d_same_padding_is_tensorflows():
    # 7 wide, kernel 3, stride 2: 7 % 2 = 1 → total 2 (1, 1); 8 wide: total 1, the extra pixel at the back
    assert same_padding((7, 8, 4), (3, 3, 1), (2, 2, 1)) == (0, 0, 0, 1, 1, 1)


def test_i3d_input_scaling_and_fvd_of_features(i3d_file):
    _, model = i3d_file
    white = torch.ones(4, 3, 20, 30)
    x = video_to_i3d_input(white, size=16)
    assert x.shape == (1, 3, 4, 16, 16) and torch.allclose(x, torch.ones_like(x))
    assert torch.allclose(video_to_i3d_input(torch.zeros(4, 3, 8, 8), 16), -torch.ones(1, 3, 4, 16, 16))
    g = torch.Generator().manual_seed(1)
    videos = [torch.rand(2, 3, 24, 24, generator=g) for _ in range(2)]
    feats = i3d_features(model, videos, size=16)
    assert feats.shape == (2, 400) and feats.dtype == torch.float64
    # batched or alone, and next to a video of another length: the same features
    torch.testing.assert_close(i3d_features(model, videos[1:], size=16), feats[1:], rtol=1e-4, atol=1e-5)
    mixed = i3d_features(model, [videos[0], torch.rand(3, 3, 24, 24, generator=g)], size=16)
    torch.testing.assert_close(mixed[:1], feats[:1], rtol=1e-4, atol=1e-5)
    assert fvd_result(feats, feats).value == pytest.approx(0.0, abs=1e-6)
    other = i3d_features(model, [v.flip(-1) * 0.5 for v in videos], size=16)
    assert fvd_result(feats, other).value > 0


# --- CLIP -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return make_tiny_clip(tmp_path_factory.mktemp("clip") / "clip")


def test_clip_loads_offline_and_scores_are_in_range_and_symmetric(clip_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    clip = ClipEmbedder.from_dir(clip_dir)
    text = clip.text(["a red fox running", "the bird"])
    ims = clip.images(images(7, (2, 3, 40, 56)))
    assert text.shape == (2, 32) and ims.shape == (2, 32)
    scores = clip_score(text, ims)
    assert ((scores >= -1) & (scores <= 1)).all()
    torch.testing.assert_close(scores, clip_score(ims, text))
    assert clip_score(ims[0], ims[:1]).item() == pytest.approx(1.0, abs=1e-6)
    # same image, embedded alone or in a batch: the same embedding
    torch.testing.assert_close(clip.images(images(7, (2, 3, 40, 56))[1:]), ims[1:], rtol=1e-4, atol=1e-5)


def test_clip_missing_or_broken_folder(tmp_path):
    with pytest.raises(MissingWeights, match="--clip"):
        ClipEmbedder.from_dir(None)
    with pytest.raises(MissingWeights, match="no config.json"):
        ClipEmbedder.from_dir(tmp_path)


def test_clip_preprocess_resizes_short_side_crops_centre_and_normalises():
    x = torch.ones(1, 3, 32, 64)
    x[..., :16] = 0.0  # the left quarter: outside the centre crop
    out = clip_preprocess(x, 32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.5))
    assert out.shape == (1, 3, 32, 32)
    torch.testing.assert_close(out[0, :, 16, 16], torch.tensor([2.0, 2.0, 1.0]))
    assert clip_preprocess(torch.rand(2, 3, 50, 40), 32).shape == (2, 3, 32, 32)


def test_clip_statistics_come_from_preprocessor_config(clip_dir, tmp_path):
    import json
    import shutil

    copy = Path(shutil.copytree(clip_dir, tmp_path / "clip"))
    pre = json.loads((copy / "preprocessor_config.json").read_text())
    pre.update(image_mean=[0.5, 0.5, 0.5], image_std=[0.2, 0.2, 0.2])
    (copy / "preprocessor_config.json").write_text(json.dumps(pre))
    assert ClipEmbedder.from_dir(copy).std == (0.2, 0.2, 0.2)
    (copy / "preprocessor_config.json").unlink()
    assert ClipEmbedder.from_dir(copy).mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))


def test_clip_f_averages_front_views_and_clip_o_all_views():
    ref = torch.tensor([1.0, 0.0])
    targets = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    f, o = clip_f_o(ref, targets, front=[0])
    assert f == pytest.approx(1.0) and o == pytest.approx((1 + 0 + math.sqrt(0.5)) / 3)
    with pytest.raises(ValueError):
        clip_f_o(ref, targets, front=[])
