"""Planning an export: every image's source files and mask, decided from the run and its review before anything
is written, with every missing file collected at once (export.py writes what this plans; export_files.py the
files)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from . import runs
from .export_files import ExportError, Item
from .ids import UnsafeIdError
from .review import ReviewSession

_SAFE_EXT = re.compile(r"^[A-Za-z0-9._-]*$")


def open_run(run_dir: Path) -> tuple[runs.RunFolder, list[dict[str, Any]]]:
    """The run and its cases (cases.csv, then held_out.csv) through the gateway, which checks config.json and
    every case line; its errors become ExportError."""
    try:
        run = runs.RunFolder(run_dir)
        return run, [_case_dict(c) for c in run.case_rows(held_out=True)]
    except (runs.RunError, UnsafeIdError) as exc:
        raise ExportError(str(exc)) from None


def _case_dict(c: runs.CaseRow) -> dict[str, Any]:
    return {"id": c.id, "split": c.split, "image_path": c.image_path, "mask_path": c.mask_path,
            "orig_shape": (c.orig_h, c.orig_w)}


def _image_name(image_id: str, src: Path) -> str:
    """``<id><ext>`` keeping the original extension (also multi-dot ones, and none for bare DICOM names)."""
    name = src.name
    ext = name[len(image_id):] if name.startswith(image_id) else src.suffix
    if not _SAFE_EXT.match(ext):
        ext = src.suffix if _SAFE_EXT.match(src.suffix) else ""
    return f"{image_id}{ext}"


def plan(
    run: runs.RunFolder,
    session: ReviewSession,
    cases: list[dict[str, Any]],
    unreviewed: str,
    threshold: float | None,
    data_root: Path | None,
) -> tuple[list[Item], list[str]]:
    """Decide every image's files before writing anything; collects every missing file at once."""
    problems: list[str] = []
    scored = set(session.ids)
    order = session.ids + [c["id"] for c in cases if c["id"] not in scored]
    by_id = {c["id"]: c for c in cases}
    items: list[Item] = []
    names: dict[str, str] = {}
    for image_id in order:
        case = by_id[image_id]
        image_src, why_image = run.original(case["image_path"], runs.IMAGES, data_root)
        orig_mask, why_mask = run.original(case["mask_path"], "masks", data_root)
        if image_src is None:
            problems.append(f"{why_image} (original image of {image_id!r})")
        if orig_mask is None:
            problems.append(f"{why_mask} (original mask of {image_id!r})")
        split = case["split"] or ("train" if image_id in scored else "test")
        if image_id in scored and session.status(image_id) == "excluded":  # listed in the manifest, no files
            d = session.decision(image_id)
            items.append(Item(id=image_id, split=split, image_src=Path(), image_name="", mask_source="",
                               mask_src=Path(), orig_mask=Path(), orig_shape=case["orig_shape"], status="excluded",
                               suspicion=session.row(image_id)["suspicion"], reviewer=d["reviewer"],
                               time=d["time"], comment=session.comment(image_id)))
            continue
        status, suspicion, reviewer, time = "", None, "", ""
        source, mask_src = "original", orig_mask
        if image_id in scored:
            status = session.status(image_id)
            suspicion = session.row(image_id)["suspicion"]
            decision = session.decision(image_id) or {}
            reviewer, time = decision.get("reviewer", ""), decision.get("time", "")
            if status == "accepted":
                source, mask_src = "corrected", run.corrected_path(image_id)
            elif status == "edited":
                source, mask_src = "edited", session.edit_path(image_id)
            elif status in ("pending", "flagged") and unreviewed == "accept_above" and suspicion >= threshold:
                source, mask_src = "corrected_by_policy", run.corrected_path(image_id)
            if source != "original" and not mask_src.is_file():
                problems.append(f"{mask_src}: {source} mask of {image_id!r} missing")
        if image_src is None or orig_mask is None or mask_src is None:
            continue
        image_name = _image_name(image_id, image_src)
        if image_name in names:
            problems.append(f"{image_src}: exported name {image_name!r} clashes with {names[image_name]!r}")
            continue
        names[image_name] = image_id
        items.append(Item(id=image_id, split=split, image_src=image_src, image_name=image_name,
                           mask_source=source, mask_src=mask_src, orig_mask=orig_mask,
                           orig_shape=case["orig_shape"], status=status, suspicion=suspicion,
                           reviewer=reviewer, time=time,
                           comment=session.comment(image_id) if image_id in scored else ""))
    return items, problems
