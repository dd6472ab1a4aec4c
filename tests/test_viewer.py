"""The 4D Gaussian viewer: the embedded data round-trips, bad input is refused, and the page works in Chromium."""

from __future__ import annotations

import base64
import fcntl
import io
import json
import os
import re
import select
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffusion4d.cameras import fov_xy, orbit_camera_to_world, project
from diffusion4d.reconstruction import SH_C0, Gaussians, write_ply
from diffusion4d.reconstruction.rasterize import intrinsics_matrix, rasterize, viewmats_from_c2w
from diffusion4d.reconstruction.viewer import frame_from_gaussians, read_viewer, write_viewer, write_viewer_from_plys
from process_group import kill_group

NUM_TIMES, SIZE = 8, 256  # timestamps of the synthetic asset; canvas side in pixels


def blob_frames(num_times: int = NUM_TIMES, n: int = 300, seed: int = 0) -> list[dict]:
    """A ball of Gaussians sliding from x = −0.3 to +0.3 and turning from red to blue; N varies per frame.

    Its front half (z > 0, towards the default camera) is greener, so that a wrong depth order shows."""
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(num_times):
        s = i / (num_times - 1)
        k = n + 7 * i
        offsets = rng.normal(scale=0.06, size=(k, 3))
        frames.append({
            "means": offsets + [-0.3 + 0.6 * s, 0.0, 0.0],
            "quats": rng.normal(size=(k, 4)),
            "scales": rng.uniform(0.01, 0.04, size=(k, 3)),
            "opacities": rng.uniform(0.6, 1.0, size=k),
            "rgb": np.tile([1.0 - s, 0.1, s], (k, 1)) + 0.4 * (offsets[:, 2:] > 0) * [0, 1, 0]
            + rng.uniform(-0.05, 0.05, size=(k, 3)),
        })  # fmt: skip
    return frames


# ---------------------------------------------------------------------------------------------- the Python side


def test_embedded_data_decodes_within_quantisation_error(tmp_path):
    frames = blob_frames()
    times = np.linspace(0.0, 1.0, NUM_TIMES) ** 2
    path = write_viewer(tmp_path / "v.html", frames, times, title="blob </script> & co", camera={"elevation_deg": 10})
    decoded, got_times, meta = read_viewer(path)
    assert np.allclose(got_times, times) and meta["camera"]["elevation_deg"] == 10 and meta["fps"] == 8.0
    assert meta["title"] == "blob </script> & co" and "<title>blob &lt;/script&gt; &amp; co</title>" in path.read_text()
    assert len(decoded) == NUM_TIMES
    for f, d in zip(frames, decoded):
        n = len(f["means"])
        assert {k: v.shape for k, v in d.items()} == {k: np.shape(v) for k, v in f.items()}
        extent = np.ptp(f["means"], 0)
        assert np.all(np.abs(d["means"] - f["means"]) <= extent / 65535 * 0.5 + 1e-12)
        assert np.allclose(d["scales"], f["scales"], rtol=2**-11, atol=0)
        unit = f["quats"] / np.linalg.norm(f["quats"], axis=1, keepdims=True)
        unit *= np.sign(unit[:, :1])  # stored with w ≥ 0: the same rotation
        assert np.abs(d["quats"] - unit).max() <= 0.5 / 127 + 1e-9
        assert np.abs(d["rgb"] - np.clip(f["rgb"], 0, 1)).max() <= 0.5 / 255 + 1e-9
        assert np.abs(d["opacities"] - f["opacities"]).max() <= 0.5 / 255 + 1e-9
        assert n == len(d["means"])


def test_file_size_is_twenty_bytes_per_gaussian_in_base64(tmp_path):
    frames = blob_frames(num_times=2, n=5000)
    path = write_viewer(tmp_path / "v.html", frames)
    gaussians = sum(len(f["means"]) for f in frames)
    overhead = 40_000  # the template and JSON keys
    assert path.stat().st_size <= gaussians * 20 * 4 / 3 + overhead


def _with(frame: dict, **changes) -> list[dict]:
    return [{**frame, **changes}]


@pytest.mark.parametrize(
    "make_frames, message",
    [
        (lambda f: [], "no frames"),
        (lambda f: _with(f, means=f["means"][:, :2]), "means must have shape [N, 3]"),
        (lambda f: _with(f, opacities=f["opacities"][:-1]), "disagree on the number of Gaussians"),
        (lambda f: _with(f, rgb=np.where(np.arange(len(f["rgb"]))[:, None] == 3, np.nan, f["rgb"])), "rgb has 3 non"),
        (lambda f: _with(f, scales=np.full_like(f["scales"], np.inf)), "scales has"),
        (lambda f: _with(f, **{k: np.zeros((0,) + np.shape(v)[1:]) for k, v in f.items()}), "has no Gaussians"),
        (lambda f: _with(f, scales=-f["scales"]), "linear (non-negative)"),
        (lambda f: _with(f, opacities=f["opacities"] * 3), "opacities must lie in [0, 1]"),
        (lambda f: _with(f, quats=np.zeros_like(f["quats"])), "zero quaternions"),
        (lambda f: [{k: v for k, v in f.items() if k != "rgb"}], "missing arrays ['rgb']"),
    ],
)
def test_bad_frames_raise_clear_value_errors(tmp_path, make_frames, message):
    frame = blob_frames(num_times=2, n=10)[0]
    with pytest.raises(ValueError, match=r"v\.html.*" + re.escape(message)):
        write_viewer(tmp_path / "v.html", make_frames(frame))
    assert not (tmp_path / "v.html").exists()


def test_bad_times_and_camera_raise(tmp_path):
    frames = blob_frames(num_times=2, n=10)
    with pytest.raises(ValueError, match="times must be 2 finite numbers"):
        write_viewer(tmp_path / "v.html", frames, times=[0.0, float("nan")])
    with pytest.raises(ValueError, match="unknown camera keys"):
        write_viewer(tmp_path / "v.html", frames, camera={"zoom": 2})
    with pytest.raises(ValueError, match="distance > 0"):
        write_viewer(tmp_path / "v.html", frames, camera={"distance": 0})


def write_3dgs_ply(path: Path, frame: dict) -> None:
    """The standard 3DGS layout (x y z nx ny nz f_dc_* f_rest_* opacity scale_* rot_*), pre-activation values."""
    n = len(frame["means"])
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"] + [f"f_rest_{i}" for i in range(9)]
    names += ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    op = frame["opacities"]
    cols = np.concatenate([
        frame["means"], np.zeros((n, 3)), (frame["rgb"] - 0.5) / SH_C0, np.zeros((n, 9)),
        np.log(op / (1 - op))[:, None], np.log(frame["scales"]), frame["quats"],
    ], 1).astype("<f4")  # fmt: skip
    header = "ply\nformat binary_little_endian 1.0\n" + f"element vertex {n}\n"
    header += "".join(f"property float {name}\n" for name in names) + "end_header\n"
    path.write_bytes(header.encode() + cols.tobytes())


def test_viewer_from_3dgs_plys(tmp_path):
    frames = blob_frames(num_times=3, n=50)
    for f in frames:
        f["rgb"] = np.clip(f["rgb"], 0.01, 0.99)
    plys = [tmp_path / f"t{i}.ply" for i in range(3)]
    for p, f in zip(plys, frames):
        write_3dgs_ply(p, f)  # another tool's layout: normals and f_rest present
    g = Gaussians(**{k: torch.as_tensor(v, dtype=torch.float32) for k, v in {
        "means": frames[2]["means"], "quats": frames[2]["quats"], "log_scales": np.log(frames[2]["scales"]),
        "opacity_logits": np.log(frames[2]["opacities"] / (1 - frames[2]["opacities"])),
        "sh0": (frames[2]["rgb"] - 0.5) / SH_C0}.items()})  # fmt: skip
    write_ply(plys[2], g)  # ours
    for key, value in frame_from_gaussians(g).items():
        assert np.allclose(value, frames[2][key], atol=1e-5, rtol=1e-5), key
    decoded, times, _ = read_viewer(write_viewer_from_plys(tmp_path / "v.html", plys, times=[0, 0.5, 1]))
    assert times == [0, 0.5, 1]
    for f, d in zip(frames, decoded):
        assert np.abs(d["rgb"] - f["rgb"]).max() < 0.003 and np.allclose(d["scales"], f["scales"], rtol=1e-3)
        assert np.abs(d["opacities"] - f["opacities"]).max() < 0.003
    plys[0].write_bytes(plys[0].read_bytes()[:-10])
    with pytest.raises(ValueError, match=r"t0\.ply: truncated"):
        write_viewer_from_plys(tmp_path / "w.html", plys)
    with pytest.raises(ValueError, match="no PLY files"):
        write_viewer_from_plys(tmp_path / "w.html", [])
    assert not (tmp_path / "w.html").exists()


# ------------------------------------------------------------------------------- the page, in headless Chromium


def find_chromium() -> str | None:
    for name in (os.environ.get("CHROMIUM", ""), "chromium", "chromium-browser", "/usr/bin/chromium"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


class Chromium:
    """A headless Chromium driven through the DevTools protocol over --remote-debugging-pipe (its fds 3 and 4)."""

    FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--remote-debugging-pipe"]  # fmt: skip
    # Seconds for one protocol call. Generous: it only catches a hung browser, and on a loaded 2-core machine
    # Chromium's start and a software-rendered (SwiftShader) frame can take many seconds.
    TIMEOUT = 300.0

    def __init__(self, exe: str, *extra_flags: str):
        self.profile = tempfile.mkdtemp(prefix="d4d-chromium-")
        self.log = open(os.path.join(self.profile, "stderr.log"), "w+b")  # a file: a full pipe would stall it
        # Our pipe ends go above 4, so that dup2-ing them onto the child's fds 3 and 4 cannot clobber one another.
        high = lambda fd: (fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10), os.close(fd))[0]  # noqa: E731
        cmd_r, self.cmd_w = map(high, os.pipe())
        self.res_r, res_w = map(high, os.pipe())
        # posix_spawn's dup2 puts our pipe ends at the fds the protocol expects, without a pre-exec hook.
        actions = [(os.POSIX_SPAWN_DUP2, cmd_r, 3), (os.POSIX_SPAWN_DUP2, res_w, 4),
                   (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0), (os.POSIX_SPAWN_DUP2, self.log.fileno(), 2)]
        argv = [exe, *self.FLAGS, *extra_flags, f"--user-data-dir={self.profile}", "about:blank"]
        # A new session: Chromium's own children (GPU, renderer, zygote processes) join its group, killed whole.
        self.pid = os.posix_spawn(exe, argv, os.environ, file_actions=actions, setsid=True)
        os.close(cmd_r)
        os.close(res_w)
        self.buffer, self.next_id, self.session = b"", 0, None
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]

    def call(self, method: str, **params):
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params}
        if self.session:
            message["sessionId"] = self.session
        os.write(self.cmd_w, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.TIMEOUT
        while True:
            while b"\0" in self.buffer:
                raw, self.buffer = self.buffer.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self.next_id:
                    if "error" in reply:
                        raise RuntimeError(f"{method}: {reply['error']}")
                    return reply["result"]
            if not select.select([self.res_r], [], [], max(0.0, deadline - time.monotonic()))[0]:
                raise TimeoutError(f"chromium did not answer {method} in {self.TIMEOUT} s")
            chunk = os.read(self.res_r, 1 << 20)
            if not chunk:
                self.log.seek(0)
                raise RuntimeError(f"chromium exited: {self.log.read().decode(errors='replace')[-2000:]}")
            self.buffer += chunk

    def js(self, expression: str):
        """Evaluate ``expression`` in the page (awaiting promises); its JSON value, or RuntimeError on a throw."""
        r = self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"page error: {r['exceptionDetails']}")
        return r["result"].get("value")

    def screenshot(self) -> np.ndarray:
        """The page as RGB uint8 [H, W, 3], taken after the canvas has drawn a frame since the last call."""
        png = self.call("Page.captureScreenshot", format="png")["data"]
        return np.asarray(Image.open(io.BytesIO(base64.b64decode(png))).convert("RGB"))

    def mouse(self, kind: str, x: float, y: float, buttons: int = 1) -> None:
        self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", buttons=buttons, clickCount=1)

    def close(self) -> None:
        kill_group(self.pid)
        os.waitpid(self.pid, 0)
        for fd in (self.cmd_w, self.res_r):
            os.close(fd)
        self.log.close()
        shutil.rmtree(self.profile, ignore_errors=True)

    def open(self, path: Path) -> None:
        """Load a viewer page into a SIZE × SIZE canvas (plus the control bar) and wait for window.viewer."""
        self.call("Emulation.setDeviceMetricsOverride", width=SIZE, height=SIZE + 40, deviceScaleFactor=1,
                  mobile=False)  # fmt: skip
        self.call("Page.enable")
        self.call("Page.navigate", url=path.as_uri())
        deadline = time.monotonic() + self.TIMEOUT  # an event to wait for; the limit only catches a broken page
        while self.js("typeof window.viewer === 'object' && window.viewer !== null") is not True:
            assert time.monotonic() < deadline, "the page did not define window.viewer"
            time.sleep(0.05)


def chromium_or_skip() -> str:
    exe = find_chromium()
    if exe is None:
        if shutil.which("apt-get") is None:
            pytest.skip("no chromium and no apt-get to install it")
        pytest.fail("chromium is not installed: `make test` installs it (apt-get install -y chromium)")
    return exe


FRONT = "(window.viewer.setView({azimuth_deg: 0, elevation_deg: 0, distance: 2}), window.viewer.setTime(%d), true)"
WAIT_DRAWN = """new Promise((resolve, reject) => {
  const canvas = document.getElementById("view"), start = Date.now();
  (function poll() {
    if (Number(canvas.dataset.frameRendered || 0) > %d) resolve(Number(canvas.dataset.frameRendered));
    else if (Date.now() - start > 240000) reject(new Error("no frame drawn"));  // a hang, not a slow frame
    else setTimeout(poll, 10);
  })();
})"""


WAIT_FRAMES_SEEN = """new Promise((resolve, reject) => {
  const seen = new Set(), start = Date.now();
  (function poll() {
    seen.add(window.viewer.getTime());
    if (seen.size >= %d) resolve([...seen]);
    else if (Date.now() - start > 240000) reject(new Error("playback did not advance: " + [...seen]));
    else setTimeout(poll, 10);
  })();
})"""


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    exe = chromium_or_skip()
    path = write_viewer(tmp_path_factory.mktemp("viewer") / "viewer.html", blob_frames(), fps=20)
    browser = Chromium(exe)
    try:
        browser.viewer_path = path
        browser.open(path)
        browser.js("window.viewer.ready.then(() => true)")
        browser.js("(window.viewer.pause(), true)")
        yield browser
    finally:
        browser.close()


def settle(browser: Chromium, act) -> np.ndarray:
    """Run ``act()``, wait until the canvas has drawn again, and return a screenshot of the canvas area."""
    drawn = int(browser.js("Number(document.getElementById('view').dataset.frameRendered || 0)"))
    act()
    browser.js(WAIT_DRAWN % drawn)
    return browser.screenshot()[:SIZE, :SIZE]


def blob_centre(rgb: np.ndarray, channel: int) -> tuple[int, np.ndarray]:
    """Pixel count and centroid (u, v) of the pixels where ``channel`` clearly dominates the other two."""
    img = rgb.astype(np.int32)
    others = np.delete(img, channel, axis=2).max(2)
    mask = (img[..., channel] > others + 60) & (img.sum(2) < 3 * 240)
    vs, us = np.nonzero(mask)
    return int(mask.sum()), np.array([us.mean(), vs.mean()]) if mask.any() else np.full(2, np.nan)


def expected_centre(x: float) -> np.ndarray:
    """Where the blob centre (x, 0, 0) projects in the default front view of the page's canvas."""
    c2w = orbit_camera_to_world(2)[0]
    uv, _ = project(np.array([[x, 0.0, 0.0]]), c2w, *fov_xy(39.6, SIZE, SIZE), SIZE, SIZE)
    return uv[0]


def test_page_renders_the_blob_where_it_projects(page):
    image = settle(page, lambda: page.js(FRONT % 0))
    assert page.js("window.viewer.getTime()") == 0
    background = (image.min(2) > 250).mean()
    assert 0.5 < background < 0.99, f"white fraction {background:.3f}: blank or flooded"
    count, centre = blob_centre(image, channel=0)  # red at t = 0
    assert count > 100
    assert np.linalg.norm(centre - expected_centre(-0.3)) < 6, (centre, expected_centre(-0.3))
    assert blob_centre(image, channel=2)[0] < 10  # no blue yet


def test_time_slider_changes_the_image(page):
    first = settle(page, lambda: page.js(FRONT % 0))
    box = page.js("(() => { const r = document.getElementById('time').getBoundingClientRect();"
                  " return [r.left, r.top, r.width, r.height]; })()")  # fmt: skip
    x, y = box[0] + box[2] - 2, box[1] + box[3] / 2  # the slider's right end: the last timestamp

    def click_slider():
        page.mouse("mousePressed", x, y)
        page.mouse("mouseReleased", x, y, buttons=0)

    last = settle(page, click_slider)
    assert page.js("window.viewer.getTime()") == NUM_TIMES - 1
    assert page.js("document.getElementById('time').value") == str(NUM_TIMES - 1)
    assert (np.abs(last.astype(int) - first).max(2) > 40).sum() > 200
    count, centre = blob_centre(last, channel=2)  # blue at the end, moved right
    assert count > 100 and np.linalg.norm(centre - expected_centre(0.3)) < 6, centre
    assert blob_centre(last, channel=0)[0] < 10


def test_play_pause_button_toggles_playback(page):
    page.js("(window.viewer.setTime(0), true)")
    assert page.js("window.viewer.isPlaying()") is False
    page.js("(document.getElementById('play').click(), true)")
    assert page.js("window.viewer.isPlaying()") is True
    assert page.js("document.getElementById('play').textContent") == "Pause"
    # The time advances by itself: wait until it has shown 3 different frames (a loaded machine draws late, so
    # no fixed number of samples at fixed intervals), with a limit that only catches playback that never moves.
    seen = page.js(WAIT_FRAMES_SEEN % 3)
    assert len(set(seen)) >= 3, seen
    page.js("(document.getElementById('play').click(), true)")
    assert page.js("window.viewer.isPlaying()") is False
    still = page.js("window.viewer.getTime()")
    assert page.js("new Promise(r => setTimeout(() => r(window.viewer.getTime()), 200))") == still


def test_dragging_the_canvas_orbits_the_view(page):
    before = settle(page, lambda: page.js(FRONT % 3))
    view0 = page.js("window.viewer.getView()")

    def drag():
        page.mouse("mousePressed", 128, 128, buttons=1)
        for x in (140, 160, 180):
            page.mouse("mouseMoved", x, 134, buttons=1)
        page.mouse("mouseReleased", 180, 134, buttons=0)

    after = settle(page, drag)
    view1 = page.js("window.viewer.getView()")
    assert view1["azimuth_deg"] < view0["azimuth_deg"] - 20 and view1["elevation_deg"] > view0["elevation_deg"]
    assert (np.abs(after.astype(int) - before).max(2) > 40).sum() > 50
    zoomed = settle(page, lambda: page.call("Input.dispatchMouseEvent", type="mouseWheel", x=128, y=128,
                                            deltaX=0, deltaY=-400))  # fmt: skip
    assert page.js("window.viewer.getView()")["distance"] < view1["distance"]
    assert (zoomed.min(2) < 250).sum() > (after.min(2) < 250).sum()  # nearer: the blob covers more pixels


@pytest.mark.parametrize("azimuth, elevation", [(0.0, 0.0), (50.0, 30.0)])
def test_page_matches_the_reference_rasterizer(page, azimuth, elevation):
    """The page's splats against our PyTorch rasterizer (gsplat's classic maths) on the data the page decodes."""
    view = {"azimuth_deg": azimuth, "elevation_deg": elevation, "distance": 2.0}
    shot = settle(page, lambda: page.js(f"(window.viewer.setTime(2), window.viewer.setView({json.dumps(view)}), true)"))
    frame = read_viewer(page.viewer_path)[0][2]
    c2w = orbit_camera_to_world(2, start_deg=azimuth, elevation_deg=elevation)[0]
    t = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in frame.items()}
    ref = rasterize(t["means"], t["quats"], t["scales"], t["opacities"], t["rgb"], viewmats_from_c2w(c2w),
                    intrinsics_matrix(*fov_xy(39.6, SIZE, SIZE), SIZE, SIZE)[None], SIZE, SIZE, backend="torch")
    ref = ref.rgb[0].numpy() * 255
    diff = np.abs(shot.astype(np.float64) - ref)
    assert (ref.min(2) < 200).sum() > 500  # the blob is in view
    assert diff.mean() < 0.3 and diff.max() < 10, (diff.mean(), diff.max())  # measured: 0.04 and 3.4 (of 255)


def test_page_says_so_without_webgl2(tmp_path):
    browser = Chromium(chromium_or_skip(), "--disable-webgl")
    try:
        browser.open(write_viewer(tmp_path / "v.html", blob_frames(num_times=2, n=10)))
        error = browser.js("window.viewer.ready.then(() => 'drawn', (e) => e.message)")
        assert "needs WebGL2" in error
        assert browser.js("[document.getElementById('msg').hidden, document.getElementById('msg').textContent]") == [
            False, error]  # fmt: skip
    finally:
        browser.close()
