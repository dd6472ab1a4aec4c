"""Evaluation report in the layout of the paper's Table 1: one row per task, one column per metric."""

from __future__ import annotations

import math
from pathlib import Path

from diffusion4d.io import write_json_atomic, write_text_atomic

# (row key, column header with the paper's arrow, decimals as the paper prints them; None = a duration)
COLUMNS: tuple[tuple[str, str, int | None], ...] = (
    ("clip_f", "CLIP-F ↑", 2),
    ("clip_o", "CLIP-O ↑", 2),
    ("ssim", "SSIM ↑", 2),
    ("psnr", "PSNR ↑", 1),
    ("lpips", "LPIPS ↓", 2),
    ("fvd", "FVD ↓", 1),
    ("generation_time_s", "Generation time ↓", None),
)
MISSING = "–"
_KEYS = tuple(key for key, _, _ in COLUMNS)


def format_duration(seconds: float) -> str:
    """Seconds as the paper writes times: "42.0s", "8m", "1h30m", "23h" (minutes rounded)."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    hours, minutes = divmod(round(seconds / 60), 60)
    if hours == 0:
        return f"{minutes}m"
    return f"{hours}h" if minutes == 0 else f"{hours}h{minutes}m"


def _cell(value: float | None, decimals: int | None) -> str:
    if value is None:
        return MISSING
    if decimals is None:
        return format_duration(value)
    if math.isinf(value):  # PSNR of identical images
        return "∞" if value > 0 else "−∞"
    return f"{value:.{decimals}f}"


def _check_keys(rows: dict[str, dict[str, float | None]]) -> None:
    for task, row in rows.items():
        unknown = set(row) - set(_KEYS)
        if unknown:  # a misspelt key would otherwise show as a silently missing metric
            raise ValueError(f"task {task!r}: unknown metrics {sorted(unknown)}; known: {list(_KEYS)}")


def format_table1(rows: dict[str, dict[str, float | None]], notes: dict[str, str] | None = None) -> str:
    """Markdown table in the paper's Table 1 column order.

    Args:
        rows: task name -> {metric key: value or None}; keys are those of `COLUMNS` ("clip_f", "clip_o",
            "ssim", "psnr", "lpips", "fvd", "generation_time_s"); an absent key counts as None.
        notes: why a metric was skipped, keyed "task/metric" (one task) or "metric" (all tasks), e.g.
            {"lpips": "LPIPS skipped: provide --lpips-weights PATH (no path given)"}.
    Returns:
        The table; every None cell shows "–" and gets a footnote line with its reason below the table.
    """
    _check_keys(rows)
    notes = notes or {}
    lines = [
        "| Task | " + " | ".join(header for _, header, _ in COLUMNS) + " |",
        "|---|" + "---:|" * len(COLUMNS),
    ]
    footnotes: dict[tuple[int, str, str], list[str]] = {}  # (column index, name, reason) -> tasks
    for task, row in rows.items():
        cells = []
        for col, (key, header, decimals) in enumerate(COLUMNS):
            value = row.get(key)
            cells.append(_cell(value, decimals))
            if value is None:
                reason = notes.get(f"{task}/{key}", notes.get(key, "not computed (no reason recorded)"))
                footnotes.setdefault((col, header.rsplit(" ", 1)[0], reason), []).append(task)
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    if footnotes:
        lines.append("")
        # column order, like the table; within a column, reasons in order of first appearance (stable sort)
        for (_, name, reason), tasks in sorted(footnotes.items(), key=lambda item: item[0][0]):
            lines.append(f"{MISSING} {name} ({', '.join(tasks)}): {reason}  ")
    return "\n".join(lines) + "\n"


def json_safe(value):
    # JSON has no infinity; a PSNR of +inf is written as the string "inf" rather than invalid "Infinity"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def write_report(
    out_dir: str | Path,
    rows: dict[str, dict[str, float | None]],
    notes: dict[str, str] | None = None,
    remarks: list[str] | None = None,
    details: dict | None = None,
) -> tuple[Path, Path]:
    """Write ``report.md`` (the table) and ``report.json`` ({"rows", "notes", "remarks"}) atomically.

    ``remarks`` are lines about the run as a whole (uids skipped, averages over part of the set, what the FVD
    rests on), listed under the table. ``details``, when given, goes into report.json as "details" (the same
    facts in machine-readable form). Returns the two paths (markdown, json).
    """
    out_dir = Path(out_dir)
    md = "# Evaluation (paper Table 1 layout)\n\n" + format_table1(rows, notes)
    if remarks:
        md += "\n## Remarks\n\n" + "".join(f"- {line}\n" for line in remarks)
    data = {
        "rows": {task: {key: json_safe(row.get(key)) for key in _KEYS} for task, row in rows.items()},
        "notes": dict(notes or {}),
        "remarks": list(remarks or []),
    }
    if details:
        data["details"] = details
    md_path, json_path = out_dir / "report.md", out_dir / "report.json"
    write_text_atomic(md_path, md)
    write_json_atomic(json_path, data)
    return md_path, json_path
