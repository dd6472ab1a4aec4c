"""Shards (diffusion4d encode) and streamed training (train --data SHARDS): the shards hold the latent cache's values,
a killed or split encode ends with the same files, streamed and in-memory training agree where their sample orders
do, two gloo processes stream disjoint samples that make up one process's global batch, and damaged shards are named.
"""

import json
import os
from datetime import timedelta

import pytest
import torch

from diffusion4d.cli import main as cli_main
from diffusion4d.data.dataset import OrbitDataset
from diffusion4d.diffusion.latent_cache import OrbitLatents, load_or_encode
from diffusion4d.diffusion.shards import INDEX_NAME, ShardError, encode_shards, load_shard, read_index, shard_name
from diffusion4d.diffusion.stream import ShardStream, StreamOrder
from diffusion4d.diffusion.train import TrainConfig, train
from orbit_fixtures import rendered_orbits

T, S = 4, 32


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """6 orbits (3 assets × front + random start), a tiny VAE and text encoder, and the orbits encoded into 3 shards
    of 2, plus a one-orbit copy of the dataset."""
    from diffusers import AutoencoderKL

    from diffusion4d.diffusion.train_vae import build_vae
    from tiny_models import make_tiny_text_encoder

    root = tmp_path_factory.mktemp("shard_world")
    rendered_orbits(root, count=3, seed=3, frames=T, size=S)
    torch.manual_seed(0)
    build_vae((8, 16, 16, 16)).save_pretrained(root / "vae")
    make_tiny_text_encoder(root / "text_encoder")
    vae = AutoencoderKL.from_pretrained(root / "vae")
    encode_shards(root / "orbits", root / "shards", vae, shard_size=2, vae_source=str(root / "vae"), progress=False)
    _one_orbit_copy(root / "orbits", root / "one")
    return root


def _one_orbit_copy(orbits, out):
    """``out``: the first asset's front orbit alone (a manifest of one row, the folder linked)."""
    row = json.loads((orbits / "manifest.jsonl").read_text().splitlines()[0])
    row["orbits"] = row["orbits"][:1]
    out.mkdir()
    (out / "manifest.jsonl").write_text(json.dumps(row) + "\n")
    (out / row["orbits"][0]["folder"]).symlink_to(orbits / row["orbits"][0]["folder"])


def _vae(world):
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_pretrained(world / "vae")


def _cache(world, tmp_path, data="orbits") -> OrbitLatents:
    return load_or_encode(tmp_path / "cache.safetensors", _vae(world), OrbitDataset(world / data), "cpu")[0]


def _contents(folder) -> dict:
    """Each file of ``folder``: a shard's metadata and tensors (as bytes), else the file's bytes. safetensors writes
    the metadata's entries in a random order, so equal shards need not be equal files."""
    from safetensors import safe_open

    out = {}
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        if path.suffix != ".safetensors":
            out[path.name] = path.read_bytes()
            continue
        with safe_open(str(path), framework="pt") as f:
            out[path.name] = (f.metadata(), {k: f.get_tensor(k).numpy().tobytes() for k in f.keys()})
    return out


def _config(world, out, data, **kw) -> TrainConfig:
    base = dict(data=str(data), out=str(out), condition="text", stage="4d", preset="tiny", max_steps=3,
                batch_size=2, checkpoint_every=1000, log_every=1, vae=str(world / "vae"),
                text_encoder=str(world / "text_encoder"), data_workers=0, lr=1e-4)
    return TrainConfig(**{**base, **kw})


def _losses(run) -> list[dict]:
    keys = ("step", "loss", "l_ldm", "l_mr")
    return [{k: r[k] for k in keys} for r in map(json.loads, (run / "loss.jsonl").read_text().splitlines())]


def test_shards_hold_the_latent_cache_and_the_index_describes_them(world, tmp_path):
    from diffusion4d.diffusion.latent_cache import vae_digest

    cache = _cache(world, tmp_path)
    index = read_index(world / "shards")
    assert [e["file"] for e in index.shards] == [shard_name(i) for i in range(3)]
    assert index.vae_digest == vae_digest(_vae(world)) and index.info["vae"]["source"] == str(world / "vae")
    assert index.frame_shape == (T, 3, S, S) and index.video_shape == (4, T, S // 8, S // 8)
    assert index.info["num_samples"] == 6 and index.info["shard_size"] == 2
    shards = [load_shard(index, e) for e in index.shards]
    for entry in index.shards:
        assert (world / "shards" / entry["file"]).stat().st_size == entry["bytes"]
        assert all(orbit.startswith(uid) for orbit, uid in zip(entry["orbits"], entry["uids"]))
    together = OrbitLatents.cat(shards)
    assert together.orbits == cache.orbits and together.captions == cache.captions
    for name in OrbitLatents.TENSORS:  # encoded one orbit per call in both: equal to the bit
        torch.testing.assert_close(getattr(together, name), getattr(cache, name), rtol=0, atol=0)
    assert (world / "shards" / "vae" / "config.json").is_file()


def test_a_killed_encode_rerun_writes_only_the_missing_and_truncated_shards(world, tmp_path):
    out = tmp_path / "shards"
    vae = _vae(world)
    first = encode_shards(world / "orbits", out, vae, shard_size=2, progress=False)
    assert first.written == [shard_name(i) for i in range(3)] and first.index == out / INDEX_NAME
    before = _contents(out)
    kept = (out / shard_name(0)).stat().st_mtime_ns
    (out / shard_name(1)).unlink()  # never written
    cut = out / shard_name(2)
    cut.write_bytes(cut.read_bytes()[:-100])  # cut short (as a copy would, not our atomic write)
    (out / INDEX_NAME).unlink()
    again = encode_shards(world / "orbits", out, vae, shard_size=2, progress=False)
    assert again.written == [shard_name(1), shard_name(2)] and again.kept == [shard_name(0)]
    assert list(again.replaced) == [shard_name(2)] and "unreadable" in again.replaced[shard_name(2)]
    assert (out / shard_name(0)).stat().st_mtime_ns == kept
    assert _contents(out) == before  # the index included
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_an_encode_split_across_two_processes_writes_the_same_files(world, tmp_path):
    vae = _vae(world)
    source = str(world / "vae")
    one = encode_shards(world / "orbits", tmp_path / "one", vae, shard_size=2, vae_source=source, progress=False)
    first = encode_shards(world / "orbits", tmp_path / "two", vae, shard_size=2, rank=0, world=2, vae_source=source,
                          progress=False)
    assert first.written == [shard_name(0), shard_name(2)] and first.index is None
    assert first.pending == [shard_name(1)]
    second = encode_shards(world / "orbits", tmp_path / "two", vae, shard_size=2, rank=1, world=2, vae_source=source,
                           progress=False)
    assert second.written == [shard_name(1)] and second.index is not None  # the last one to finish writes it
    assert _contents(tmp_path / "two") == _contents(tmp_path / "one") and one.index is not None
    with pytest.raises(ValueError, match="--rank"):
        encode_shards(world / "orbits", tmp_path / "bad", vae, rank=2, world=2, progress=False)


def test_two_encode_processes_at_once_as_torchrun_starts_them(world, tmp_path):
    """Two concurrent `diffusion4d encode` processes told their share by RANK / WORLD_SIZE (as torchrun sets them):
    together they write the one-process shards and index."""
    import contextlib
    import subprocess
    import sys

    from process_group import HANG_TIMEOUT_S, popen_group

    cmd = [sys.executable, "-m", "diffusion4d", "-q", "encode", "--data", str(world / "orbits"), "--out",
           str(tmp_path / "two"), "--vae", str(world / "vae"), "--shard-size", "2", "--workers", "0", "--device", "cpu"]
    with contextlib.ExitStack() as stack:  # both process groups are killed whatever happens
        procs = [stack.enter_context(popen_group(cmd, env={**os.environ, "RANK": str(r), "WORLD_SIZE": "2"},
                                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
                 for r in (0, 1)]
        outputs = [p.communicate(timeout=HANG_TIMEOUT_S) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outputs]
    assert "process 0 of 2: 2 shards written" in outputs[0][0] and "process 1 of 2: 1 shards written" in outputs[1][0]
    _assert_same_shards(tmp_path / "two", world / "shards")


def _assert_same_shards(a, b) -> None:
    """The same files, metadata and index; tensors equal up to float rounding: another process's CPU convolutions
    may use another thread count, which changes the last bits of the latents."""
    from safetensors import safe_open

    names = sorted(p.name for p in a.iterdir() if p.is_file())
    assert names == sorted(p.name for p in b.iterdir() if p.is_file())
    for name in names:
        if not name.endswith(".safetensors"):
            assert (a / name).read_bytes() == (b / name).read_bytes(), name
            continue
        with safe_open(str(a / name), framework="pt") as fa, safe_open(str(b / name), framework="pt") as fb:
            assert fa.metadata() == fb.metadata() and sorted(fa.keys()) == sorted(fb.keys()), name
            for key in fa.keys():
                torch.testing.assert_close(fa.get_tensor(key), fb.get_tensor(key), rtol=1e-5, atol=1e-5)


def test_shards_read_whole_train_exactly_as_the_latent_cache(world, tmp_path):
    """--in-memory samples as the cache does (with replacement, StepBatches), from the same tensors: the same
    losses, to the bit."""
    cached = train(_config(world, tmp_path / "cached", world / "orbits"), progress=False)
    whole = train(_config(world, tmp_path / "whole", world / "shards", in_memory=True), progress=False)
    assert _losses(whole) == _losses(cached)


def test_streamed_training_matches_the_cache_where_the_sample_orders_agree(world, tmp_path):
    """Streamed samples are drawn per epoch without replacement, the cache's with replacement, so on several orbits
    the two runs train on different samples. On one orbit both draw it every time; every other draw comes from
    (seed, step, micro-step, rank) in both: the loss curves are equal."""
    vae = _vae(world)
    encode_shards(world / "one", tmp_path / "shards", vae, shard_size=2, progress=False)
    cached = train(_config(world, tmp_path / "cached", world / "one"), progress=False)
    streamed = train(_config(world, tmp_path / "streamed", tmp_path / "shards"), progress=False)
    assert _losses(streamed) == _losses(cached)


def test_a_streamed_batch_is_the_cache_rows_of_the_samples_the_order_names(world, tmp_path):
    cache = _cache(world, tmp_path)
    index = read_index(world / "shards")
    config = _config(world, tmp_path, world / "shards", batch_size=3, grad_accum=2, stream_lanes=None)
    stream = ShardStream(index, index.shards, config, rank=0, world=1)
    try:
        seen = []
        for step, micro in [(0, 0), (0, 1), (1, 0), (1, 1)]:
            batch = stream.batch(step, micro)
            named = [index.shards[s]["orbits"][r] for s, r in stream.items(step, micro)]
            assert batch["orbit"] == named and len(named) == 3
            rows = torch.tensor([cache.orbits.index(o) for o in named])
            for name in OrbitLatents.TENSORS:
                torch.testing.assert_close(batch[name], getattr(cache, name)[rows], rtol=0, atol=0)
            assert batch["caption"] == [cache.captions[i] for i in rows]
            seen += named
        assert sorted(seen[:6]) == sorted(cache.orbits)  # the first epoch: every sample once
    finally:
        stream.close()
    assert len(stream.cache.loaded) <= 2 * config.stream_window * stream.order.lanes


@pytest.mark.parametrize("sizes,lanes,window", [([3, 3, 3, 2, 3], 4, 2), ([2, 2, 1], 2, 1), ([5], 4, 2)])
def test_stream_order_epochs_worlds_and_resume(sizes, lanes, window):
    order = StreamOrder(sizes, lanes, window, seed=7)
    for e in range(3):
        start, length, lane_shards = order.epoch(e)
        assert start == sum(order.epoch(x)[1] for x in range(e))  # every lane changes epochs together
        for lane, shards in enumerate(lane_shards):  # each sample of the lane's shards once, then over again
            n = sum(sizes[s] for s in shards)
            first = [order.locate(lane, start + k) for k in range(n)]
            assert sorted(first) == sorted((s, r) for s in shards for r in range(sizes[s]))
            assert [order.locate(lane, start + k) for k in range(n, length)] == [first[j % n] for j in
                                                                                   range(length - n)]
        if len(sizes) >= lanes:  # each shard in one lane per epoch
            assert sorted(s for shards in lane_shards for s in shards) == list(range(len(sizes)))
    G = 2 * lanes
    steps = [order.micro_step(t, G, 0, 1) for t in range(12)]
    for world in (w for w in (2, 4) if lanes % w == 0):
        for t in range(12):
            parts = [order.micro_step(t, G, r, world) for r in range(world)]
            assert [parts[p % world][p // world] for p in range(G)] == steps[t]
    fresh = StreamOrder(sizes, lanes, window, seed=7)  # a resumed run: no state, straight to micro-step 9
    assert [fresh.micro_step(t, G, 0, 1) for t in (9, 10, 11)] == steps[9:]
    with pytest.raises(ValueError, match="must divide the global batch"):
        order.micro_step(0, G + 1, 0, 1)


def _gloo_worker(rank: int, world: int, shards: str, tmp: str) -> None:
    """One of two processes: the orbits and shards of its first 4 steps, gathered on rank 0 into a file."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp}/rendezvous", rank=rank, world_size=world,
                            timeout=timedelta(seconds=120))
    stream = None
    try:
        index = read_index(shards)
        stream = ShardStream(index, index.shards, TrainConfig(data=shards, out=tmp, batch_size=2), rank, world)
        steps = [{"orbits": stream.batch(step, 0)["orbit"], "shards": [s for s, _ in stream.items(step, 0)]}
                 for step in range(4)]
        gathered = [None] * world
        dist.all_gather_object(gathered, steps)
        if rank == 0:
            with open(os.path.join(tmp, "gathered.json"), "w") as f:
                json.dump(gathered, f)
    finally:
        if stream is not None:
            stream.close()
        dist.destroy_process_group()


def test_two_gloo_processes_stream_disjoint_samples_that_make_up_the_global_batch(world, tmp_path):
    """6 shards of one orbit, global batch 4 in 4 lanes (the default), 2 per process: an epoch is 2 steps (the
    lanes hold 2, 2, 1 and 1 shards; the short ones start over)."""
    import torch.multiprocessing as mp

    shards = tmp_path / "shards"
    encode_shards(world / "orbits", shards, _vae(world), shard_size=1, progress=False)
    # join=True: a worker that fails ends the other and raises here
    mp.spawn(_gloo_worker, args=(2, str(shards), str(tmp_path)), nprocs=2, join=True)
    ranks = json.loads((tmp_path / "gathered.json").read_text())
    index = read_index(shards)
    one = ShardStream(index, index.shards, TrainConfig(data="x", out="x", batch_size=4), rank=0, world=1)
    try:
        for step in range(4):
            a, b = ranks[0][step]["orbits"], ranks[1][step]["orbits"]
            assert [(a, b)[p % 2][p // 2] for p in range(4)] == one.batch(step, 0)["orbit"]  # = one process
    finally:
        one.close()
    for epoch in (0, 1):
        steps = (2 * epoch, 2 * epoch + 1)
        orbits = [{o for s in steps for o in ranks[r][s]["orbits"]} for r in (0, 1)]
        read = [{i for s in steps for i in ranks[r][s]["shards"]} for r in (0, 1)]
        assert not orbits[0] & orbits[1] and not read[0] & read[1]  # disjoint samples, disjoint shards
        assert len(orbits[0] | orbits[1]) == 6  # together: every sample of the epoch


def test_missing_and_truncated_shards_are_left_out_and_named_a_damaged_one_refused(world, tmp_path, capsys):
    import shutil

    shards = tmp_path / "shards"
    shutil.copytree(world / "shards", shards)
    data = (shards / shard_name(1)).read_bytes()
    (shards / shard_name(1)).write_bytes(data[: len(data) // 2])
    run = train(_config(world, tmp_path / "run", shards, max_steps=2), progress=False)
    out = capsys.readouterr().out
    assert f"shard left out: {shards / shard_name(1)}: {len(data) // 2} bytes, the index lists {len(data)}" in out
    assert "streaming 4 samples from 2 shards" in out
    assert [json.loads(line)["skipped_shards"] for line in (run / "loss.jsonl").read_text().splitlines()] == [1, 1]
    # the right size but damaged bytes: found when read, and refused (the last checkpoint stays the one to resume)
    (shards / shard_name(1)).write_bytes(b"\0" * len(data))
    index = read_index(shards)
    with pytest.raises(ShardError, match=f"{shard_name(1)}: unreadable shard"):
        load_shard(index, index.shards[1])
    (shards / INDEX_NAME).unlink()
    with pytest.raises(FileNotFoundError, match="encode has not finished"):
        train(_config(world, tmp_path / "run2", shards), progress=False)


def test_a_run_whose_vae_is_not_the_shards_is_refused_naming_both(world, tmp_path):
    from diffusion4d.diffusion.train_vae import build_vae

    torch.manual_seed(1)
    build_vae((8, 16, 16, 16)).save_pretrained(tmp_path / "other_vae")
    with pytest.raises(ValueError, match=r"encoded with the VAE .*/vae \(digest \w+\), but this run's VAE is "
                                         r".*other_vae \(digest \w+\)"):
        train(_config(world, tmp_path / "run", world / "shards", vae=str(tmp_path / "other_vae")), progress=False)
    assert not (tmp_path / "run" / "train_config.json").exists()  # refused before anything was written


def test_cli_encode_then_train_on_the_shards_with_their_vae_and_resume(world, tmp_path, capsys):
    shards = tmp_path / "shards"
    assert cli_main(["-q", "encode", "--data", str(world / "orbits"), "--out", str(shards), "--vae",
                     str(world / "vae"), "--shard-size", "4", "--workers", "0", "--device", "cpu"]) == 0
    assert "process 0 of 1: 2 shards written" in capsys.readouterr().out
    common = ["-q", "train", "--data", str(shards), "--condition", "text", "--preset", "tiny", "--batch-size", "2",
              "--text-encoder", str(world / "text_encoder"), "--log-every", "1", "--stream-lanes", "1",
              "--stream-window", "2"]
    # no --vae: the shards' own; a checkpoint at step 2, resumed to 4, equals a straight run to 4
    assert cli_main(common + ["--out", str(tmp_path / "a"), "--max-steps", "2", "--checkpoint-every", "2"]) == 0
    assert cli_main(common + ["--out", str(tmp_path / "a"), "--max-steps", "4", "--resume"]) == 0
    assert cli_main(common + ["--out", str(tmp_path / "b"), "--max-steps", "4"]) == 0
    assert _losses(tmp_path / "a") == _losses(tmp_path / "b")
    run = json.loads((tmp_path / "b" / "run.json").read_text())
    assert (run["num_frames"], run["image_size"]) == (T, S)
    assert json.loads((tmp_path / "b" / "train_config.json").read_text())["stream_lanes"] == 1


@pytest.mark.gpu
def test_gpu_streamed_training_eager_and_from_a_cuda_graph(world, tmp_path):
    """On a GPU: the streamed samples arrive pinned and non-blocking, and the graphed step copies them into its
    buffers; both runs finish with finite losses."""
    for name, kw in (("eager", {}), ("graph", {"cuda_graph": True})):
        run = train(_config(world, tmp_path / name, world / "shards", max_steps=6, mixed_precision="bf16", **kw),
                    progress=False)
        losses = [r["loss"] for r in _losses(run)]
        assert len(losses) == 6 and all(loss == loss for loss in losses)
