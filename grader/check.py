"""Student-side checks: what the test cells of a chapter notebook call.

    from grader import checker
    check = checker("01_linear_regression")
    ...
    check("linreg", linreg)

A visible check runs in the student's kernel in well under a second, prints one line when it
passes, and raises `ExerciseFailed` with layered feedback (type -> dtype -> shape -> values,
input/expected/received, likely cause) when it does not.

When a notebook is graded, a hidden check for the exercise runs first in the same test cell
(`grader.grade.hidden_check`); the visible call then returns the hidden score instead of checking
again, so nbgrader reads it as the cell's (partial) credit.
"""

from __future__ import annotations

from grader.feedback import Mismatch
from grader.registry import get_chapter
from grader.runner import Verdict, run_check

# Hidden verdicts recorded by grader.grade.hidden_check in this kernel, by (chapter, exercise).
HIDDEN_RESULTS: dict[tuple[str, str], Verdict] = {}


class ExerciseFailed(AssertionError):
    """A visible check failed; the message says what and why."""


class Checker:
    """The visible checks of one chapter."""

    def __init__(self, chapter_id: str):
        self.chapter = get_chapter(chapter_id)

    def __repr__(self) -> str:
        return f"checker({self.chapter.id!r}): {', '.join(self.chapter.exercises)}"

    def __call__(self, name: str, answer):
        __tracebackhide__ = True
        exercise = self.chapter.exercises.get(name)
        if exercise is None:
            raise KeyError(f"{self.chapter.id} has no exercise {name!r}; its exercises are "
                           f"{', '.join(self.chapter.exercises)}")
        graded = HIDDEN_RESULTS.pop((self.chapter.id, name), None)
        if graded is not None:
            return graded.score
        try:
            verdict = run_check(exercise.check, name, answer, exercise.points, hidden=False,
                                d2l_names=exercise.d2l_names)
        except Mismatch as failure:
            raise ExerciseFailed(f"{name}: {failure}") from None
        if verdict.score == 0:
            raise NotImplementedError(
                f"{name} is not implemented yet: replace `raise NotImplementedError()` in its "
                "cell with your code, run that cell, then run this one again.")
        print(f"{name}: all {verdict.checks} visible checks passed. Hidden checks run when your "
              "notebook is graded.")


def checker(chapter_id: str) -> Checker:
    """The `check` function for the chapter's test cells."""
    return Checker(chapter_id)
