"""Instructor-side grading.

Two ways in, one verdict:
- `hidden_check`, called by the hidden part of a test cell, in the kernel that runs the
  notebook (nbgrader autograde, or `grade_notebook` below);
- `grade_notebook`, which runs a submitted notebook in a fresh kernel without a course
  directory or database: it restores every test cell to the authoritative one (as nbgrader's
  autograde does), adds the test cells a student deleted, and reads the verdicts back.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

import nbformat

from grader.registry import Chapter, chapter_ids, get_chapter
from grader.runner import Verdict, run_check

VERDICT_MIME = "application/vnd.dl-grader.verdict+json"


class SubmissionError(Exception):
    """A path that cannot be graded at all (missing, not a notebook, corrupt, unknown chapter)."""


def hidden_check(chapter_id: str, name: str, answer) -> Verdict:
    """The author's view: run the hidden check in this kernel and show the verdict.

    Solution notebooks call this from their hidden test cells (CI runs them with
    GRADER_STRICT=1, so a reference below full marks fails). It is never trusted for grading:
    `grader.judge` runs hidden checks in the grader's own process.
    """
    from grader.remote import local_remote
    from grader.runner import LiveRefs

    chapter = get_chapter(chapter_id)
    exercise = chapter.exercises[name]
    if answer is None:
        verdict = Verdict(name, 0.0, exercise.points,
                          f"{name}: not defined. Run (and fix) the cell that defines it.")
    else:
        remote = local_remote({"answer": answer})
        verdict = run_check(exercise, remote.global_("answer"), hidden=True, remote_=remote,
                            refs=LiveRefs(chapter.references), salt=0)
    text = f"{verdict.feedback}\nscore: {verdict.score:g} / {verdict.max_score:g}"
    print(text)
    if os.environ.get("GRADER_STRICT") and not verdict.passed:
        raise AssertionError(f"hidden check below full marks:\n{text}")
    return verdict


def cell_source(chapter: Chapter, name: str) -> str:
    """The authoritative source of a test cell when grading outside nbgrader."""
    return (f"from grader.grade import hidden_check as _grader_hidden_check\n"
            f"_grader_hidden_check({chapter.id!r}, {name!r}, globals().get({name!r}))")


def read_notebook(path: Path) -> nbformat.NotebookNode:
    if not path.exists():
        raise SubmissionError(f"{path}: no such file")
    if path.suffix != ".ipynb":
        raise SubmissionError(f"{path}: not a notebook (expected a .ipynb file)")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SubmissionError(f"{path}: cannot be read ({exc})") from None
    try:
        nb = nbformat.reads(text, as_version=4)
    except Exception as exc:  # nbformat raises several kinds for corrupt files
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SubmissionError(f"{path}: not a valid notebook (corrupt JSON?): {reason}") from None
    if not isinstance(nb.get("cells"), list):
        raise SubmissionError(f"{path}: not a valid notebook (no cells)")
    return nb


def detect_chapter(nb, path: Path) -> str:
    """The chapter id: notebook metadata, else the path, else the checker(...) call."""
    known = chapter_ids()
    meta = nb.get("metadata", {}).get("grader", {}).get("chapter")
    if meta in known:
        return meta
    for part in [path.stem, *[p.name for p in path.parents]]:
        if part in known:
            return part
    for cell in nb.cells[:10]:
        m = re.search(r"checker\(\s*['\"](\d\d_[a-z0-9_]+)['\"]", cell.get("source", ""))
        if m and m.group(1) in known:
            return m.group(1)
    raise SubmissionError(f"{path}: cannot tell which chapter this notebook is "
                          f"(known chapters: {', '.join(known)})")


def prepare(nb, chapter: Chapter) -> dict[int, str]:
    """Restore test cells in place; return {cell index: exercise name}."""
    cells, graded = [], {}
    for cell in nb.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        is_test = cell.get("cell_type") == "code" and meta.get("grade") and not meta.get("solution")
        if is_test:
            exercise = chapter.by_grade_id(meta.get("grade_id", ""))
            if exercise is None or exercise.name in graded.values():
                continue  # an unknown or duplicated test cell is dropped
            cell.source = cell_source(chapter, exercise.name)
            graded[len(cells)] = exercise.name
        if cell.get("cell_type") == "code":
            cell.outputs = []
        cells.append(cell)
    for name in chapter.exercises:
        if name not in graded.values():  # a deleted test cell is graded at the end
            graded[len(cells)] = name
            cells.append(nbformat.v4.new_code_cell(cell_source(chapter, name)))
    nb.cells = cells
    return graded


def _verdict_from_cell(cell, name: str, points: float) -> Verdict:
    for out in cell.get("outputs", []):
        data = out.get("data", {})
        if VERDICT_MIME in data:
            v = data[VERDICT_MIME]
            return Verdict(name, float(v["score"]), points, v["feedback"])
    errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    reason = (f"{errors[0]['ename']}: {errors[0]['evalue']}" if errors
              else "the notebook stopped before this check ran")
    return Verdict(name, 0.0, points, f"{name}: could not be graded ({reason}).")


def grade_notebook(path: Path, cell_timeout: int = 120, fast: bool = True) -> dict:
    """Execute one submitted notebook in a fresh kernel and grade it."""
    from nbclient import NotebookClient

    nb = read_notebook(path)
    chapter = get_chapter(detect_chapter(nb, path))
    graded = prepare(nb, chapter)
    env_keys = {"GRADER_FAST": "1" if fast else "0", "MPLBACKEND": "Agg",
                "GRADER_STRICT": ""}
    old = {k: os.environ.get(k) for k in env_keys}
    os.environ.update(env_keys)
    problem = None
    try:
        with tempfile.TemporaryDirectory(prefix="grade-") as cwd:
            client = NotebookClient(nb, timeout=cell_timeout, allow_errors=True,
                                    interrupt_on_timeout=True, kernel_name="python3",
                                    resources={"metadata": {"path": cwd}})
            try:
                client.execute()
            except Exception as exc:  # the kernel died: grade what ran
                problem = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    exercises = []
    for index, name in graded.items():
        points = chapter.exercises[name].points
        verdict = _verdict_from_cell(nb.cells[index], name, points)
        if problem and verdict.score == 0 and "could not be graded" in verdict.feedback:
            verdict.feedback = f"{name}: could not be graded (the notebook failed: {problem})."
        exercises.append(verdict.to_json())
    return {
        "chapter": chapter.id,
        "score": round(sum(e["score"] for e in exercises), 2),
        "max_score": chapter.max_score,
        "exercises": exercises,
    }


def find_notebooks(paths: list[str]) -> list[tuple[str, Path]]:
    """Expand directories into the notebooks under them; keep files (even bad ones) as given."""
    found = []
    for given in paths:
        p = Path(given)
        if p.is_dir():
            nbs = sorted(q for q in p.rglob("*.ipynb") if ".ipynb_checkpoints" not in q.parts)
            if not nbs:
                found.append((given, p))  # reported as an error
            found.extend((str(q), q) for q in nbs)
        else:
            found.append((given, p))
    return found


def format_table(submissions: list[dict]) -> str:
    lines = []
    for sub in submissions:
        lines.append(f"{sub['path']}  [{sub['chapter']}]  score {sub['score']:g} / "
                     f"{sub['max_score']:g}")
        width = max((len(e["name"]) for e in sub["exercises"]), default=10)
        for e in sub["exercises"]:
            mark = "ok  " if e["passed"] else "FAIL"
            lines.append(f"  {mark} {e['name']:<{width}}  {e['score']:>5g} / {e['max_score']:g}")
            if not e["passed"]:
                lines.extend("         " + line for line in e["feedback"].splitlines()[1:] or
                             e["feedback"].splitlines())
        lines.append("")
    return "\n".join(lines)


def grade_one_to_json(path: str, cell_timeout: int, fast: bool) -> str:
    """Worker entry point (one notebook per process)."""
    try:
        result = grade_notebook(Path(path), cell_timeout=cell_timeout, fast=fast)
        return json.dumps({"ok": result})
    except SubmissionError as exc:
        return json.dumps({"error": str(exc)})
    except KeyError as exc:
        return json.dumps({"error": f"{path}: {exc.args[0]}"})
