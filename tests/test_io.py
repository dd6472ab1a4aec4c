"""diffusion4d.io: atomic writers."""

import numpy as np
import pytest


def test_videos_fall_back_to_gif_only_without_the_ffmpeg_plugin(tmp_path, monkeypatch):
    import importlib.util

    import imageio.v3 as iio

    from diffusion4d.io import write_videos_atomic

    frames = np.random.default_rng(0).integers(0, 255, (3, 16, 16, 3), dtype=np.uint8)
    mp4, gif = write_videos_atomic(tmp_path / "a", frames, fps=4)
    assert mp4.stat().st_size > 0 and iio.imread(gif).shape[0] == 3
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "imageio_ffmpeg" else real(name, *a))
    with pytest.warns(UserWarning, match="imageio-ffmpeg"):
        mp4, gif = write_videos_atomic(tmp_path / "b", frames, fps=4)
    assert mp4 is None and not (tmp_path / "b.mp4").exists() and gif.exists()


def test_gif_keeps_every_frame_close_to_the_input():
    import imageio.v3 as iio

    from diffusion4d.io import gif_bytes

    yy, xx = np.mgrid[:32, :32]
    frames = np.stack([np.stack([xx * 8, yy * 8, np.full_like(xx, 40 * k)], -1) for k in range(5)]).astype(np.uint8)
    back = iio.imread(gif_bytes(frames, fps=10))
    assert back.shape[:4] == (5, 32, 32, back.shape[3]) and back.shape[3] in (3, 4)
    assert np.abs(back[..., :3].astype(int) - frames).mean() < 4  # as close as imageio's median cut (2.6)
    assert not np.array_equal(back[0], back[4])  # the frames stay distinct
