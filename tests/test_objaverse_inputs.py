"""Objaverse inputs of `diffusion4d render`: uid list + objaverse cache + Cap3D captions → orbits named by uid."""

import json
import re
import shutil

import pytest

from diffusion4d.cli import main as cli_main
from diffusion4d.data import objaverse
from diffusion4d.data.curate import CurationConfig, curate

UIDS = ["0123456789abcdef0123456789abcdef", "fedcba9876543210fedcba9876543210", "00000000000000000000000000000abc"]
MISSING = "ffffffffffffffffffffffffffffffff"
TINY = ["--frames", "4", "--size", "24", "--samples", "0", "--workers", "1"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A fake objaverse cache (<root>/hf-objaverse-v1/glbs/<group>/<uid>.glb) of two procedural assets."""
    from diffusion4d.assets.procedural import write_procedural_dataset

    root = tmp_path_factory.mktemp("objaverse")
    glbs = write_procedural_dataset(root / "procedural", count=2, seed=3, progress=False)
    for uid, glb, group in zip(UIDS, glbs, ["000-000", "000-001"]):
        (root / "hf-objaverse-v1" / "glbs" / group).mkdir(parents=True)
        shutil.copy(glb, root / "hf-objaverse-v1" / "glbs" / group / f"{uid}.glb")
    return root


def _write(path, text):
    path.write_text(text)
    return path


def test_render_objaverse_uids_with_cap3d_captions(tmp_path, cache, capsys):
    uids = _write(tmp_path / "ObjV1_curated.txt", f"# curated\n{UIDS[0]}\n\n  {UIDS[1].upper()}  \n{MISSING}\n")
    captions = _write(tmp_path / "Cap3D.csv", f'uid,caption\n{UIDS[0]},"a fox, running; it says ""hi"""\n'
                                              f"{UIDS[2]},unused\n")
    out = tmp_path / "orbits"
    code = cli_main(["-q", "render", "--objaverse-uids", str(uids), "--objaverse-dir", str(cache / "hf-objaverse-v1"),
                     "--captions", str(captions), "--caption-prefix", "a dynamic asset, ", "--out", str(out), *TINY])
    assert code == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "render_report.json").read_text())
    assert [p.split("/")[-1] for p in report["done"]] == [f"{UIDS[0]}.glb", f"{UIDS[1]}.glb"]
    problems = {p["uid"]: p["problem"] for p in report["input_problems"]}
    assert set(problems) == {MISSING, UIDS[1]}
    assert "no file" in problems[MISSING] and "no caption" in problems[UIDS[1]] and str(captions) in problems[UIDS[1]]
    assert MISSING in printed and UIDS[1] in printed
    meta = json.loads((out / UIDS[0] / "metadata.json").read_text())
    assert meta["caption"] == 'a dynamic asset, a fox, running; it says "hi"'
    rows = curate(out, CurationConfig(s_low=-1.0, s_high=1.0, val_fraction=0.0), progress=False)
    assert {r["uid"]: r["caption"] for r in rows} == {UIDS[0]: meta["caption"], UIDS[1]: ""}


def test_cache_root_or_its_folder(cache):
    assert objaverse.index_glbs(cache) == objaverse.index_glbs(cache / "hf-objaverse-v1")
    assert sorted(objaverse.index_glbs(cache)) == sorted(UIDS[:2])


@pytest.mark.parametrize("text, line, words", [
    ("# uids\n\nnot-a-uid\n", 3, "not an Objaverse uid"),
    (f"{UIDS[0]}\n{UIDS[0]}x\n", 2, "not an Objaverse uid"),
])
def test_malformed_uid_list_names_file_and_line(tmp_path, text, line, words):
    path = _write(tmp_path / "uids.txt", text)
    with pytest.raises(ValueError, match=re.escape(f"{path}:{line}: {words}")):
        objaverse.read_uids(path)


@pytest.mark.parametrize("data, line, words", [
    (f'{UIDS[0]},"two\nlines"\nno comma here\n'.encode(), 3, "expected 'uid,caption', found no comma"),
    (b"not-hex,a caption\n", 1, "not an Objaverse uid"),
    (f"{UIDS[0]},fine\n{UIDS[1]},caf\xe9\n".encode("latin-1"), 2, "not UTF-8"),
])
def test_malformed_captions_name_file_and_line(tmp_path, data, line, words):
    path = tmp_path / "captions.csv"
    path.write_bytes(data)
    with pytest.raises(ValueError, match=re.escape(f"{path}:{line}: {words}")):
        objaverse.read_captions_csv(path)


def test_no_listed_file_is_an_error_naming_list_and_dir(tmp_path, cache, capsys):
    uids = _write(tmp_path / "uids.txt", f"{MISSING}\n")
    code = cli_main(["-q", "render", "--objaverse-uids", str(uids), "--objaverse-dir", str(cache),
                     "--out", str(tmp_path / "o"), *TINY])
    err = capsys.readouterr().err
    assert code == 2 and str(uids) in err and str(cache / "hf-objaverse-v1" / "glbs") in err
    with pytest.raises(FileNotFoundError, match="hf-objaverse-v1/glbs"):
        objaverse.index_glbs(tmp_path)
