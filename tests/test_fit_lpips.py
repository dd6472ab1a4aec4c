"""LPIPS in the fit (issue 22, item 5): `reconstruct` / `generate --lpips-weights PATH --lpips-backbone PATH` fit with
the paper's L1 + LPIPS + depth smoothness (Sec. 3.4). Fake LPIPS files in the released layouts, tiny fits, CPU."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from diffusion4d.cli import build_parser
from diffusion4d.cli import main as cli_main
from diffusion4d.evaluation.lpips import LPIPS
from diffusion4d.reconstruction.densify import DensifyConfig
from diffusion4d.reconstruction.fit import FitConfig, fit
from diffusion4d.reconstruction.losses import l1, perceptual_from_files, photometric, ssim
from test_evaluation_networks import random_files

TINY = FitConfig(coarse_iters=6, fine_iters=4, size=32, backend="torch", num_points=64, checkpoint_every=0,
                 densify=DensifyConfig(start=2, stop=3, every=2, max_gaussians=128),
                 field={"num_points": 16, "width": 16})


@pytest.fixture(scope="module")
def lpips_files(tmp_path_factory):
    """(linear layers, AlexNet backbone): random weights in the lpips release's and torchvision's layouts (.pth)."""
    return random_files(tmp_path_factory.mktemp("lpips"), "alex", ".pth")


@pytest.fixture(scope="module")
def orbit(tmp_path_factory):
    """One procedural asset rendered at 32², 4 views: its orbit and static orbit."""
    from diffusion4d.assets.procedural import write_procedural_dataset
    from diffusion4d.data.render_job import RenderSettings, run_render_job

    root = tmp_path_factory.mktemp("orbit")
    assets = write_procedural_dataset(root / "assets", count=2, seed=0, progress=False)[1:]
    run_render_job(assets, root / "orbits", RenderSettings(size=32, frames=4), workers=1, progress=False)
    return root / "orbits" / assets[0].stem


def _images(seed: int):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(2, 3, 32, 32, generator=g), torch.rand(2, 3, 32, 32, generator=g)


def test_with_a_perceptual_net_the_image_term_is_l1_plus_weighted_lpips(lpips_files):
    pred, target = _images(0)
    lpips = perceptual_from_files(*lpips_files)
    distance = lpips(pred, target).mean()
    assert distance > 0
    for weight in (0.1, 0.5):
        torch.testing.assert_close(photometric(pred, target, 0.2, lpips, weight), l1(pred, target) + weight * distance)
    assert photometric(pred, target, 0.2, lpips, 0.5) > photometric(pred, target, 0.2, lpips, 0.1)
    # without one (or at weight 0) the fit's default is unchanged: 3DGS's L1 + D-SSIM mix
    default = 0.8 * l1(pred, target) + 0.2 * (1 - ssim(pred, target)).mean()
    torch.testing.assert_close(photometric(pred, target, 0.2), default)
    torch.testing.assert_close(photometric(pred, target, 0.2, lpips, 0.0), default)
    # differentiable in the rendered images: the fit's gradient reaches the Gaussians through LPIPS
    pred.requires_grad_(True)
    photometric(pred, target, 0.2, lpips, 0.5).backward()
    assert pred.grad.abs().sum() > 0


class Payload:
    """An object a pickle would have to construct (code runs): what a weights file must never make us do."""


class Recorder:
    """A perceptual callable that notes the image batches it was given (then measures them with LPIPS)."""

    def __init__(self, lpips):
        self.lpips, self.shapes, self.ranges = lpips, [], []

    def __call__(self, pred, target):
        self.shapes.append((tuple(pred.shape), tuple(target.shape)))
        self.ranges.append((float(pred.detach().min()), float(pred.detach().max())))
        return self.lpips(pred, target)


def test_the_fit_uses_the_perceptual_net_in_both_stages_and_it_changes_the_result(orbit, tmp_path, lpips_files):
    recorder = Recorder(perceptual_from_files(*lpips_files))
    quiet = dict(progress=False, log=lambda *_: None)
    with_lpips = fit(orbit, tmp_path / "lpips", "scgs", TINY, perceptual=recorder, **quiet)
    assert len(recorder.shapes) == TINY.coarse_iters + TINY.fine_iters  # every step
    assert all(p == t and p[1:] == (3, 32, 32) for p, t in recorder.shapes)
    assert all(0.0 <= lo and hi <= 1.0 for lo, hi in recorder.ranges)
    without = fit(orbit, tmp_path / "plain", "scgs", TINY, **quiet)
    assert not torch.equal(with_lpips.canonical.means, without.canonical.means)
    weight0 = fit(orbit, tmp_path / "w0", "scgs", dataclasses.replace(TINY, lpips_weight=0.0),
                  perceptual=recorder.lpips, **quiet)
    torch.testing.assert_close(weight0.canonical.means, without.canonical.means, rtol=0, atol=0)


def test_the_lpips_files_load_safely_and_bad_ones_are_named(lpips_files, tmp_path):
    lin, backbone = lpips_files
    assert perceptual_from_files(None, None) is None  # the fit's default: no LPIPS
    assert isinstance(perceptual_from_files(lin, backbone, "alex"), LPIPS)
    with pytest.raises(ValueError, match="--lpips-backbone is missing"):
        perceptual_from_files(lin, None)
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'nope.pth'}: no such file \\(--lpips-weights\\)"):
        perceptual_from_files(tmp_path / "nope.pth", backbone)
    with pytest.raises(ValueError, match=f"{backbone}: not an LPIPS-alex linear-layer"):
        perceptual_from_files(backbone, lin)  # swapped
    with pytest.raises(ValueError, match="not a torchvision vgg backbone"):
        perceptual_from_files(*random_files(tmp_path, "vgg", ".pth")[:1], backbone, "vgg")
    pickled = tmp_path / "code.pth"
    torch.save({"lin0.model.1.weight": Payload()}, pickled)
    with pytest.raises(ValueError, match=f"{pickled}: refused"):  # never unpickled: weights_only=True
        perceptual_from_files(pickled, backbone)


@pytest.mark.parametrize("command", ["reconstruct", "generate"])
def test_cli_fit_commands_take_the_lpips_files(command):
    prompt = ["ORBIT"] if command == "reconstruct" else ["--prompt", "a top"]
    args = build_parser().parse_args([command, *prompt, "--out", "OUT", "--lpips-weights", "lin.pth",
                                      "--lpips-backbone", "vgg16.pth", "--lpips-net", "vgg"])
    assert (args.lpips_weights, args.lpips_backbone, args.lpips_net) == ("lin.pth", "vgg16.pth", "vgg")
    plain = build_parser().parse_args([command, *prompt, "--out", "OUT"])
    assert (plain.lpips_weights, plain.lpips_backbone, plain.lpips_net) == (None, None, "alex")


def test_cli_reconstruct_with_a_missing_or_bad_lpips_file_fails_before_fitting(orbit, lpips_files, tmp_path, capsys):
    lin, backbone = lpips_files
    out = tmp_path / "asset"
    missing = tmp_path / "alexnet.pth"
    assert cli_main(["-q", "reconstruct", str(orbit), "--out", str(out), "--device", "cpu", "--lpips-weights",
                     str(lin), "--lpips-backbone", str(missing)]) == 2
    assert f"{missing}: no such file (--lpips-backbone)" in capsys.readouterr().err
    assert cli_main(["-q", "reconstruct", str(orbit), "--out", str(out), "--device", "cpu", "--lpips-weights",
                     str(backbone), "--lpips-backbone", str(backbone)]) == 2
    assert f"{backbone}: not an LPIPS-alex linear-layer" in capsys.readouterr().err
    assert not out.exists()  # nothing fitted, nothing written
