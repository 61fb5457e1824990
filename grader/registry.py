"""Chapters and their graded exercises.

A chapter id (the nbgrader assignment id, e.g. ``01_linear_regression``) names two modules by
its topic (the id without its number):

- ``grader.checks.<topic>`` (public: it ships to students) defines ``CHAPTER`` and, for each
  exercise, its *visible* check: fixed inputs, judged against reference values that it asks
  for with ``t.ref``/``t.likely`` (computed by the instructor's references, or recorded in a
  student edition);
- ``grader.chapters.<topic>`` (instructor only) holds the references, the tables of likely
  mistakes (``LIKELY``) and the *hidden* check of each exercise.

A chapter written before this split has only ``grader.chapters.<topic>``, whose checks
(``@CHAPTER.exercise``) hold both parts, separated by ``if not t.hidden: return``.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import re
from collections.abc import Callable

CHAPTER_ID = re.compile(r"^(\d\d)_([a-z0-9_]+)$")


@dataclasses.dataclass
class Exercise:
    name: str
    points: float
    visible: Callable | None = None  # visible(t, answer): the worked examples (public)
    hidden: Callable | None = None  # hidden(t, answer): the rest (instructor only)
    d2l_names: tuple[str, ...] = ()  # d2l functions that must not be called
    check: Callable | None = None  # a chapter not yet split: check(t, answer), both parts

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
        self.references = None  # the instructor module, when installed

    def visible(self, name: str, points: float, d2l: tuple[str, ...] = ()):
        """Register the decorated function as the visible check of exercise `name`."""
        def register(fn):
            if name in self.exercises:
                raise ValueError(f"exercise {name!r} registered twice in {self.id}")
            self.exercises[name] = Exercise(name, float(points), visible=fn, d2l_names=tuple(d2l))
            return fn
        return register

    def hidden(self, name: str):
        """Register the decorated function as the hidden check of exercise `name`."""
        def register(fn):
            ex = self.exercises.get(name)
            if ex is None:
                raise ValueError(f"{self.id}: hidden check for unknown exercise {name!r}")
            ex.hidden = fn
            return fn
        return register

    def exercise(self, name: str, points: float, d2l: tuple[str, ...] = ()):
        """A check holding both parts (chapters not yet split)."""
        def register(check):
            if name in self.exercises:
                raise ValueError(f"exercise {name!r} registered twice in {self.id}")
            self.exercises[name] = Exercise(name, float(points), check=check, d2l_names=tuple(d2l))
            return check
        return register

    @property
    def max_score(self) -> float:
        return sum(e.points for e in self.exercises.values())

    @property
    def instructor(self) -> bool:
        """True when the hidden checks and references are installed."""
        return self.references is not None

    def by_grade_id(self, grade_id: str) -> Exercise | None:
        return next((e for e in self.exercises.values() if e.grade_id == grade_id), None)


def topic(chapter_id: str) -> str:
    m = CHAPTER_ID.match(chapter_id)
    if not m:
        raise KeyError(f"unknown chapter {chapter_id!r}: chapter ids look like 01_linear_regression")
    return m.group(2)


def module_name(chapter_id: str) -> str:
    """The instructor module of a chapter."""
    return f"grader.chapters.{topic(chapter_id)}"


def _import(name: str):
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and name.startswith(exc.name):
            return None  # the module (or its package) is not installed here
        raise


def get_chapter(chapter_id: str) -> Chapter:
    t = topic(chapter_id)
    public = _import(f"grader.checks.{t}")
    private = _import(f"grader.chapters.{t}")
    source = public or private
    if source is None:
        raise KeyError(f"unknown chapter {chapter_id!r}; known: {', '.join(chapter_ids())}")
    chapter = source.CHAPTER
    if chapter.id != chapter_id:
        raise KeyError(f"unknown chapter {chapter_id!r}; did you mean {chapter.id!r}?")
    if private is not None:
        chapter.references = private
    return chapter


def _topics(package: str) -> list[str]:
    pkg = _import(package)
    if pkg is None:
        return []
    return [i.name for i in pkgutil.iter_modules(pkg.__path__) if not i.name.startswith("_")]


def chapter_ids() -> list[str]:
    """Every chapter with checks, in course order."""
    ids = set()
    for package in ("grader.checks", "grader.chapters"):
        for name in _topics(package):
            module = importlib.import_module(f"{package}.{name}")
            chapter = getattr(module, "CHAPTER", None)
            if chapter is not None:
                ids.add(chapter.id)
    return sorted(ids)
