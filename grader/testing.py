"""Helpers for the grader's own tests: run a chapter's checks on a given implementation.

The implementation runs behind an in-process observer, exactly as a notebook's does behind the
grading kernel's: the check sees it only through a handle and plain data.
"""

from __future__ import annotations

from grader.registry import get_chapter
from grader.remote import local_remote
from grader.runner import LiveRefs, Verdict, run_check

# Hidden inputs in the grader's own tests come from this run seed (grading draws a new one).
TEST_SALT = 20261202


def _answer(answer):
    remote = local_remote({"answer": answer})
    return remote, remote.global_("answer")


def hidden_verdict(chapter_id: str, name: str, answer, salt: int = TEST_SALT) -> Verdict:
    chapter = get_chapter(chapter_id)
    remote, handle = _answer(answer)
    return run_check(chapter.exercises[name], handle, hidden=True, remote_=remote,
                     refs=LiveRefs(chapter.references), salt=salt)


def visible_verdict(chapter_id: str, name: str, answer, refs=None) -> Verdict:
    """Raises grader.feedback.Mismatch when the visible check fails."""
    chapter = get_chapter(chapter_id)
    remote, handle = _answer(answer)
    return run_check(chapter.exercises[name], handle, hidden=False, remote_=remote,
                     refs=refs or (LiveRefs(chapter.references) if chapter.instructor else None))


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


def answered_release(chapter_id: str, replace: dict[str, str] | None = None, lean: bool = False):
    """The released notebook with every answer cell filled in from the solution notebook.

    `replace` maps exercise names to other answer sources (e.g. a buggy implementation). `lean`
    drops the code cells that are not nbgrader's (demonstrations, plots): a submission that
    grades in seconds, for tests of the grading machinery rather than of the chapter.
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
    if lean:
        release.cells = [c for c in release.cells
                         if c.cell_type != "code" or c.metadata.get("nbgrader")]
    return release
