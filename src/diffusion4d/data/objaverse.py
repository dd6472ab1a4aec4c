"""Objaverse inputs for the render job: a uid list, the ``objaverse`` package's local cache, Cap3D captions.

- uid list: one uid a line, as the Diffusion4D authors' ``ObjV1_curated.txt``; blank lines and ``#`` comments are
  skipped. A uid is 32 hex characters.
- cache: ``<root>/hf-objaverse-v1/glbs/<group>/<uid>.glb`` (``<group>`` like ``000-023``); ``root`` may also be
  the ``hf-objaverse-v1`` folder itself. It is scanned once into a uid → file dict.
- captions: Cap3D's ``uid,caption`` CSV (no header in Cap3D's release; a ``uid,caption`` header is skipped).

A listed uid without a file, or without a caption, is reported, not fatal. Malformed files raise ``ValueError``
naming the file and line.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

UID = re.compile(r"[0-9a-fA-F]{32}")
CACHE_FOLDER = "hf-objaverse-v1"


def _uid_or_error(text: str, where: str) -> str:
    if not UID.fullmatch(text):
        raise ValueError(f"{where}: not an Objaverse uid (32 hex characters): {text[:60]!r}")
    return text.lower()


def _decode(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ValueError(f"{path}:{line}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def read_uids(path: str | Path) -> list[str]:
    """The uids of a uid list, in order, each once."""
    path = Path(path)
    uids: dict[str, None] = {}
    for n, line in enumerate(_decode(path).splitlines(), 1):
        line = line.strip()
        if line and not line.startswith("#"):
            uids[_uid_or_error(line, f"{path}:{n}")] = None
    return list(uids)


def glbs_folder(objaverse_dir: str | Path) -> Path:
    """``<dir>/hf-objaverse-v1/glbs`` or ``<dir>/glbs`` (``dir`` being hf-objaverse-v1 itself)."""
    root = Path(objaverse_dir)
    for candidate in (root / CACHE_FOLDER / "glbs", root / "glbs"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"{root}: no {CACHE_FOLDER}/glbs/ folder (the objaverse package's cache) in it")


def index_glbs(objaverse_dir: str | Path) -> dict[str, Path]:
    """uid → ``.glb`` file, from one scan of ``glbs/*/``."""
    return {p.stem.lower(): p for p in sorted(glbs_folder(objaverse_dir).glob("*/*.glb"))}


def read_captions_csv(path: str | Path, prefix: str = "") -> dict[str, str]:
    """uid → ``prefix + caption`` from a Cap3D ``uid,caption`` CSV (captions may hold commas and quotes)."""
    path = Path(path)
    captions: dict[str, str] = {}
    reader = csv.reader(io.StringIO(_decode(path), newline=""))
    start = 1
    try:
        for row in reader:
            where, start = f"{path}:{start}", reader.line_num + 1
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) < 2:
                raise ValueError(f"{where}: expected 'uid,caption', found no comma: {row[0][:60]!r}")
            uid, caption = row[0].strip(), ",".join(row[1:]).strip()  # unquoted commas stay in the caption
            if reader.line_num == 1 and [uid.lower(), caption.lower()] == ["uid", "caption"]:
                continue  # a header
            uid = _uid_or_error(uid, where)
            if caption:
                captions[uid] = prefix + caption
    except csv.Error as exc:
        raise ValueError(f"{path}:{start}: malformed CSV ({exc})") from None
    return captions


def resolve(uids_file: str | Path, objaverse_dir: str | Path) -> tuple[list[Path], list[dict]]:
    """The listed uids' files (in the list's order) and a problem ({"uid", "problem"}) for each uid without one."""
    uids = read_uids(uids_file)
    index = index_glbs(objaverse_dir)
    paths = [index[uid] for uid in uids if uid in index]
    if not paths:
        raise FileNotFoundError(f"{uids_file}: none of its {len(uids)} uids has a .glb file in "
                                f"{glbs_folder(objaverse_dir)}")
    return paths, [{"uid": uid, "problem": f"no file {uid}.glb in {glbs_folder(objaverse_dir)}"}
                   for uid in uids if uid not in index]


def uncaptioned(uids: list[str], captions: dict[str, str], captions_csv: str | Path) -> list[dict]:
    """A problem ({"uid", "problem"}) for each uid without a caption."""
    return [{"uid": uid, "problem": f"no caption in {captions_csv}"} for uid in uids if uid not in captions]
