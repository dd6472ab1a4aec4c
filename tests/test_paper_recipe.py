"""README's "Paper-scale training (recipe)": its commands exist, and run in its order at toy size on a CPU.

The toy run passes every flag the README's command passes (with toy values), so a flag dropped from the code or
renamed in the README fails here. What it cannot run is the launchers' multi-process set-up (torchrun, a
multi-node `accelerate launch`): their flags are checked against their own parsers, and the commands they start
run in this process (tests/test_train_sample.py and test_shards.py cover several processes).
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import torch

from diffusion4d.cli import build_parser, main
from diffusion4d.data import layout
from test_videomv_loading import _save_pth, _tiny, to_videomv

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## Paper-scale training (recipe)"
T, SIZE = 4, 64  # toy orbits: 4 views at 64² (the recipe: 24 at 256²)


# -- the README's commands ----------------------------------------------------------------------------------------

def recipe_section() -> str:
    text = README.read_text()
    assert SECTION in text, f"README.md has no section {SECTION!r}"
    return text.split(SECTION, 1)[1].split("\n## ", 1)[0]


def recipe_lines() -> list[list[str]]:
    """The shell lines of the section's bash blocks, continuations joined, as tokens."""
    blocks = re.findall(r"```bash\n(.*?)```", recipe_section(), flags=re.S)
    joined = "\n".join(blocks).replace("\\\n", " ")
    return [shlex.split(line) for line in joined.splitlines() if line.strip()]


def split_launcher(tokens: list[str]) -> tuple[list[str], str, list[str]] | None:
    """(launcher tokens, subcommand, subcommand tokens) of a line that runs diffusion4d, else None. The launcher is
    empty for a plain `diffusion4d …`, else e.g. ["accelerate", "launch", …, "-m"]."""
    if "diffusion4d" not in tokens:
        return None
    i = tokens.index("diffusion4d")
    return tokens[:i], tokens[i + 1], tokens[i + 2:]


def recipe_commands() -> list[tuple[list[str], str, list[str]]]:
    return [c for c in map(split_launcher, recipe_lines()) if c is not None]


def flags_of(tokens: list[str]) -> set[str]:
    return {t.split("=", 1)[0] for t in tokens if t.startswith("-")}


def subparsers() -> dict:
    return next(a for a in build_parser()._actions if a.dest == "command").choices


def launcher_parser(launcher: list[str]):
    if launcher[:2] == ["accelerate", "launch"]:
        from accelerate.commands.launch import launch_command_parser

        return launch_command_parser()
    if launcher[:1] == ["torchrun"]:
        from torch.distributed.run import get_args_parser

        return get_args_parser()
    raise AssertionError(f"README runs diffusion4d through an unknown launcher: {' '.join(launcher)}")


def test_readme_recipe_names_only_real_subcommands_and_flags():
    commands = recipe_commands()
    assert [c[1] for c in commands] == ["render", "curate", "encode", "train", "sample", "evaluate"]
    parsers = subparsers()
    for launcher, command, args in commands:
        known = parsers[command]._option_string_actions
        assert flags_of(args) <= known.keys(), f"{command}: {sorted(flags_of(args) - known.keys())} not accepted"
        if launcher:
            assert launcher[-1] == "-m", "a launcher runs the package as a module"
            known = launcher_parser(launcher)._option_string_actions
            unknown = flags_of(launcher) - known.keys()
            assert not unknown, f"{' '.join(launcher[:2])}: {sorted(unknown)} not accepted"


def test_readme_recipe_states_the_papers_hyper_parameters():
    """Sec. 4.1: lr 3e-5, 6k iterations, bf16, batch 128 (here per process × processes × grad-accum), Eq. 3's
    w1 = 7, w2 = 0.5 with 50 DDIM steps, VideoMV as the base and as ε̄."""
    (accelerate, _, train), = [c for c in recipe_commands() if c[1] == "train"]
    (_, _, sample), = [c for c in recipe_commands() if c[1] == "sample"]
    value = lambda tokens, flag: tokens[tokens.index(flag) + 1]  # noqa: E731
    assert value(train, "--lr") == "3e-5" and value(train, "--max-steps") == "6000"
    assert value(train, "--mixed-precision") == "bf16" and value(train, "--stage") == "4d"
    batch = int(value(train, "--batch-size")) * int(value(accelerate, "--num_processes")) * int(
        value(train, "--grad-accum"))
    assert batch == 128
    assert value(train, "--init") == value(sample, "--base") == "i2v_00882000.pth"
    assert (value(sample, "--w1"), value(sample, "--w2"), value(sample, "--steps")) == ("7", "0.5", "50")


# -- the same commands at toy size ---------------------------------------------------------------------------------

class Recipe:
    """Runs diffusion4d commands in this process and records them, to compare with the README's."""

    def __init__(self):
        self.ran: list[tuple[str, list[str]]] = []

    def __call__(self, command: str, *args: str) -> None:
        assert main(["-q", command, *map(str, args)]) == 0, f"diffusion4d {command} failed"
        self.ran.append((command, list(map(str, args))))


def cpu_bf16() -> str:
    """bf16 where the CPU has it natively; elsewhere emulated and slow, so "no"."""
    return "bf16" if getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)() else "no"


def toy_base(root: Path) -> Path:
    """A tiny random image-to-3D model saved as VideoMV saves its checkpoints (the stand-in for i2v_00882000.pth)."""
    return _save_pth(to_videomv(_tiny("image")), root / "i2v_00882000.pth", step=882000)


def held_out(orbits: Path) -> list[tuple[str, float]]:
    """(uid, m) of the kept val assets: what the README's jq line selects."""
    rows = [json.loads(line) for line in (orbits / layout.MANIFEST).read_text().splitlines() if line.strip()]
    return [(r["uid"], r["m"]) for r in rows if r["kept"] and r["split"] == "val"]


def test_recipe_runs_at_toy_size(tmp_path):
    from diffusion4d.assets.procedural import write_procedural_dataset
    from tiny_models import make_tiny_image_encoder

    run = Recipe()
    # stand-ins for the downloads: Objaverse glbs, VideoMV's checkpoint, a CLIP vision model
    write_procedural_dataset(tmp_path / "glbs", count=4, seed=0, progress=False)
    base = toy_base(tmp_path)
    clip_vision = make_tiny_image_encoder(tmp_path / "clip_vision")
    orbits, shards, model, gen = (tmp_path / d for d in ("orbits", "shards", "runs/4d", "gen"))

    # 1. data (toy renders keep all: the paper's SSIM thresholds are for 256²; half held out, to have some)
    run("render", tmp_path / "glbs", "--out", orbits, "--frames", T, "--size", SIZE, "--random-starts", 1,
        "--workers", 1, "--samples", 0)
    run("curate", orbits, "--val-fraction", 0.5, "--s-low", -1.0, "--s-high", 1.0, "--workers", 1)
    val = held_out(orbits)
    assert val, "no held-out asset: pick another seed"
    # 2. encode (the README's --vae is Stable Diffusion's; here a fresh tiny VAE's folder, as train would use)
    run("encode", "--data", orbits, "--out", shards, "--vae", vae_folder(tmp_path), "--workers", 1)
    index = json.loads((shards / "index.json").read_text())
    assert sum(len(s["orbits"]) for s in index["shards"]) == 2 * (4 - len(val))  # two orbits per training asset
    # 3. train stage 4d from the VideoMV file, the paper's constant lr; batch 1 × 1 process × 2 accumulated
    run("train", "--data", shards, "--out", model, "--condition", "image", "--stage", "4d", "--init", base,
        "--image-encoder", clip_vision, "--lr", 3e-5, "--batch-size", 1, "--grad-accum", 2, "--max-steps", 2,
        "--mixed-precision", cpu_bf16(), "--checkpoint-every", 2, "--log-every", 1)
    config = json.loads((model / "train_config.json").read_text())
    assert (config["lr"], config["stage"], config["grad_accum"]) == (3e-5, "4d", 2)
    assert [json.loads(line)["step"] for line in (model / "loss.jsonl").read_text().splitlines()] == [1, 2]
    # 4. sample each held-out asset from its front view and m, with Eq. 3 against the VideoMV file
    for uid, m in val:
        run("sample", "--model", model, "--base", base, "--image", orbits / uid / "multi_frame0.png",
            "--motion", m, "--w1", 7, "--w2", 0.5, "--steps", 2, "--out", gen / uid, "--device", "cpu")
        frames = layout.read_orbit(gen / uid).images
        assert frames.shape[:3] == (T, SIZE, SIZE)
    # 5. evaluate: without weight files PSNR/SSIM are scored and LPIPS, CLIP, FVD skipped with notes
    run("evaluate", "--generated", gen, "--reference", orbits, "--out", tmp_path / "report", "--task", "image",
        "--device", "cpu")
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    row = report["rows"]["Image-to-4D, Diffusion4D* (orbits)"]
    assert row["psnr"] is not None and row["ssim"] is not None and row["lpips"] is None
    assert {"--clip", "--lpips-weights", "--i3d-weights"} <= set(" ".join(report["notes"].values()).split())

    assert_same_commands(run.ran)


def vae_folder(root: Path) -> Path:
    """A fresh tiny VAE saved as a diffusers folder (what `--vae SD_VAE_DIR` names in the recipe)."""
    from diffusion4d.diffusion.components import tiny_vae

    torch.manual_seed(0)
    tiny_vae().save_pretrained(root / "vae")
    return root / "vae"


# the metric networks' weight files: real ones only (the toy evaluate checks that the report names them instead)
METRIC_WEIGHTS = {"--clip", "--lpips-weights", "--lpips-backbone", "--i3d-weights"}


def assert_same_commands(ran: list[tuple[str, list[str]]]) -> None:
    """The toy run's commands are the README's, in its order (sample once per held-out asset), each with at least
    the README's flags but the metric weights."""
    readme = [(command, flags_of(args) - METRIC_WEIGHTS) for _, command, args in recipe_commands()]
    collapsed = [c for i, (c, _) in enumerate(ran) if i == 0 or ran[i - 1][0] != c]
    assert collapsed == [c for c, _ in readme]
    for command, flags in readme:
        for toy_command, args in ran:
            if toy_command == command:
                missing = flags - flags_of(args)
                assert not missing, f"the toy {command} lacks the README's {sorted(missing)}"
