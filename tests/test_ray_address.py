"""`render --ray ADDRESS` with a bad address: a malformed one, or one where nothing listens, is an error naming the
address within seconds (issue 23), not minutes of ray.init retrying. No cluster is started: where the check is
meant to stop the job first, ray.init is replaced by a function that fails the test.
"""

import re
import socket

import pytest

from diffusion4d.cli import main as cli_main
from diffusion4d.data.render_job import RenderSettings, run_render_job

ray = pytest.importorskip("ray")

from diffusion4d.data.render_ray import RayAddressError, RayExecutor  # noqa: E402 — needs Ray

SMALL = RenderSettings(frames=8, size=32, samples=0)


def free_port() -> int:
    """A port nothing listens on: bound to find a free one, then closed."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def no_ray_init(monkeypatch):
    def init(*args, **kwargs):
        raise AssertionError("ray.init was called: the address check should have stopped the job first")

    monkeypatch.setattr(ray, "init", init)


@pytest.fixture
def asset(tmp_path):
    # Never loaded: the job stops before any asset is rendered.
    path = tmp_path / "asset.glb"
    path.write_bytes(b"glTF")
    return path


def refused(address: str) -> str:
    return re.escape(f"Ray address {address}: nothing accepts connections there (connection refused)")


@pytest.mark.parametrize("scheme", ["", "ray://"])
def test_nothing_listening_is_an_error_naming_the_address(tmp_path, asset, no_ray_init, scheme):
    address = f"{scheme}127.0.0.1:{free_port()}"
    with pytest.raises(RayAddressError, match=refused(address)):
        run_render_job([asset], tmp_path / "out", SMALL, progress=False, executor=RayExecutor(address=address))


def test_auto_is_checked_where_it_resolves(tmp_path, asset, no_ray_init, monkeypatch):
    address = f"127.0.0.1:{free_port()}"
    monkeypatch.setenv("RAY_ADDRESS", address)  # where ray.init(address="auto") would go
    with pytest.raises(RayAddressError, match=refused(f"auto (resolved to {address})")):
        run_render_job([asset], tmp_path / "out", SMALL, progress=False, executor=RayExecutor(address="auto"))


@pytest.mark.parametrize("address, problem", [
    ("10.0.0.1", "expected host:port"),
    (":6379", "expected host:port"),
    ("ray://10.0.0.1", "expected host:port"),
    ("10.0.0.1:", "the port '' is not a number"),
    ("10.0.0.1:head", "the port 'head' is not a number"),
    ("10.0.0.1:70000", "the port '70000' is not a number from 1 to 65535"),
    ("http://10.0.0.1:8265", "a web address"),
])
def test_a_malformed_address_is_a_value_error_naming_it(address, problem):
    with pytest.raises(ValueError, match=re.escape(f"Ray address {address}: {problem}")):
        RayExecutor(address=address)


def test_ray_init_failing_is_an_error_naming_the_address(tmp_path, asset, monkeypatch):
    def init(*args, **kwargs):
        raise ConnectionError("GCS said no\nand more")

    monkeypatch.setattr(ray, "init", init)
    with socket.socket() as listening:  # the TCP check passes: something accepts connections
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        address = f"127.0.0.1:{listening.getsockname()[1]}"
        with pytest.raises(RayAddressError, match=re.escape(
                f"Ray address {address}: Ray could not join a cluster there (ConnectionError: GCS said no)")):
            run_render_job([asset], tmp_path / "out", SMALL, progress=False, executor=RayExecutor(address=address))


def test_cli_prints_the_error_and_exits_2(tmp_path, asset, no_ray_init, capsys):
    address = f"127.0.0.1:{free_port()}"
    assert cli_main(["-q", "render", str(asset), "--out", str(tmp_path / "out"), "--ray", address]) == 2
    err = capsys.readouterr().err
    assert re.search(f"^error: {refused(address)}; start a cluster with `ray start --head`", err, re.M), err

    assert cli_main(["-q", "render", str(asset), "--out", str(tmp_path / "bad"), "--ray", "10.0.0.1"]) == 2
    assert "error: Ray address 10.0.0.1: expected host:port" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()  # a malformed address stops it before any work


def test_curate_with_a_bad_address_fails_as_render_does(tmp_path, no_ray_init, capsys):
    orbit = tmp_path / "orbits" / "asset"
    orbit.mkdir(parents=True)
    (orbit / "multi_frame0.png").write_bytes(b"")  # found as an orbit, never read: the job stops before any asset
    address = f"127.0.0.1:{free_port()}"
    assert cli_main(["-q", "curate", str(orbit.parent), "--ray", address]) == 2
    err = capsys.readouterr().err
    assert re.search(f"^error: {refused(address)}; start a cluster with `ray start --head`", err, re.M), err
    assert cli_main(["-q", "curate", str(orbit.parent), "--ray", "10.0.0.1"]) == 2
    assert "error: Ray address 10.0.0.1: expected host:port" in capsys.readouterr().err
    assert not (orbit.parent / "manifest.jsonl").exists()
