"""Chapters and their graded exercises.

A chapter id (the nbgrader assignment id, e.g. ``01_linear_regression``) names a module of
`grader.chapters` without its number (``grader.chapters.linear_regression``). That module holds
the chapter's reference implementations and its checks, registered with `Chapter.exercise`.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import re
from collections.abc import Callable

CHAPTER_ID = re.compile(r"^(\d\d)_([a-z0-9_]+)$")


@dataclasses.dataclass(frozen=True)
class Exercise:
    name: str
    points: float
    check: Callable  # check(t: Tester, answer) -> None
    d2l_names: tuple[str, ...] = ()  # d2l functions that must not be called

    @property
    def grade_id(self) -> str:
        """The nbgrader grade id of the exercise's test cell."""
        return f"test_{self.name}"


class Chapter:
    def __init__(self, chapter_id: str, title: str):
        if not CHAPTER_ID.match(chapter_id):
            raise ValueError(f"bad chapter id {chapter_id!r}")
        self.id = chapter_id
        self.title = title
        self.exercises: dict[str, Exercise] = {}

    def exercise(self, name: str, points: float, d2l: tuple[str, ...] = ()):
        """Register the decorated function as the check of exercise `name`."""
        def register(check):
            if name in self.exercises:
                raise ValueError(f"exercise {name!r} registered twice in {self.id}")
            self.exercises[name] = Exercise(name, float(points), check, tuple(d2l))
            return check
        return register

    @property
    def max_score(self) -> float:
        return sum(e.points for e in self.exercises.values())

    def by_grade_id(self, grade_id: str) -> Exercise | None:
        return next((e for e in self.exercises.values() if e.grade_id == grade_id), None)


def module_name(chapter_id: str) -> str:
    m = CHAPTER_ID.match(chapter_id)
    if not m:
        raise KeyError(f"unknown chapter {chapter_id!r}: chapter ids look like 01_linear_regression")
    return f"grader.chapters.{m.group(2)}"


def get_chapter(chapter_id: str) -> Chapter:
    try:
        module = importlib.import_module(module_name(chapter_id))
    except ModuleNotFoundError as exc:
        if exc.name == module_name(chapter_id):
            raise KeyError(f"unknown chapter {chapter_id!r}; known: {', '.join(chapter_ids())}") \
                from None
        raise
    chapter = module.CHAPTER
    if chapter.id != chapter_id:
        raise KeyError(f"unknown chapter {chapter_id!r}; did you mean {chapter.id!r}?")
    return chapter


def chapter_ids() -> list[str]:
    """Every chapter with a checks module, in course order."""
    import grader.chapters as pkg

    ids = []
    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"grader.chapters.{info.name}")
        chapter = getattr(module, "CHAPTER", None)
        if chapter is not None:
            ids.append(chapter.id)
    return sorted(ids)
