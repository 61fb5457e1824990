"""Helpers for the grader's own tests: run a chapter's checks on a given implementation."""

from __future__ import annotations

from grader.registry import get_chapter
from grader.runner import Verdict, run_check


def hidden_verdict(chapter_id: str, name: str, answer) -> Verdict:
    ex = get_chapter(chapter_id).exercises[name]
    return run_check(ex.check, name, answer, ex.points, hidden=True, d2l_names=ex.d2l_names)


def visible_verdict(chapter_id: str, name: str, answer) -> Verdict:
    """Raises grader.feedback.Mismatch when the visible check fails."""
    ex = get_chapter(chapter_id).exercises[name]
    return run_check(ex.check, name, answer, ex.points, hidden=False, d2l_names=ex.d2l_names)


def assert_full_marks(chapter_id: str, name: str, answer) -> None:
    v = hidden_verdict(chapter_id, name, answer)
    assert v.passed, f"a correct {name} lost marks ({v.score}/{v.max_score}):\n{v.feedback}"
    visible_verdict(chapter_id, name, answer)


def assert_loses_marks(chapter_id: str, name: str, answer, phrase: str) -> Verdict:
    """The hidden check must take marks off and say `phrase` (case-insensitive)."""
    v = hidden_verdict(chapter_id, name, answer)
    assert v.score < v.max_score, f"a buggy {name} got full marks"
    assert phrase.lower() in v.feedback.lower(), (
        f"feedback for a buggy {name} does not say {phrase!r}:\n{v.feedback}")
    return v


def answered_release(chapter_id: str, replace: dict[str, str] | None = None):
    """The released notebook with every answer cell filled in from the solution notebook.

    `replace` maps exercise names to other answer sources (e.g. a buggy implementation).
    """
    import nbformat

    from grader.assign import RELEASE, ROOT, SOURCE

    release = nbformat.read(ROOT / RELEASE / chapter_id / f"{chapter_id}.ipynb", as_version=4)
    source = nbformat.read(ROOT / SOURCE / chapter_id / f"{chapter_id}.ipynb", as_version=4)
    answers = {c.metadata["nbgrader"]["grade_id"]: c.source for c in source.cells
               if c.metadata.get("nbgrader", {}).get("solution")}
    for name, src in (replace or {}).items():
        answers[f"answer_{name}"] = src
    for cell in release.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if cell.metadata.get("nbgrader", {}).get("solution") and grade_id in answers:
            cell.source = answers[grade_id]
    return release
