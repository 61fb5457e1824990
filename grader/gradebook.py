"""Grades into the instructor's tools: nbgrader's gradebook and a feedback file per student.

`python -m grader grade ... --gradebook COURSE_DIR` writes each graded submission's exercise
scores into the course's nbgrader gradebook (as autograded scores of the test cells), so the
formgrader and `nbgrader export` show them. `--feedback DIR` writes one HTML page per
submission with the score and the feedback of every exercise: no hidden input (the checks'
feedback never shows them) and no reference code.

A submission's student is the folder above the chapter folder
(`submitted/<student>/<chapter>/<file>.ipynb`, nbgrader's layout), else the file's name.
"""

from __future__ import annotations

import html
from pathlib import Path


def student_of(path: str, chapter: str) -> str:
    p = Path(path)
    parts = p.parts
    if chapter in parts:
        i = len(parts) - 1 - parts[::-1].index(chapter)
        if i >= 1:
            return parts[i - 1]
    return p.stem


def export_to_gradebook(course_dir: Path, results: list[dict]) -> list[str]:
    """Record the ok results in COURSE_DIR/gradebook.db; return one line per problem."""
    from nbgrader.api import Gradebook, MissingEntry

    course_dir = Path(course_dir)
    db = course_dir / "gradebook.db"
    problems = []
    with Gradebook(f"sqlite:///{db}") as gb:
        for r in results:
            if r.get("status") != "ok":
                continue
            chapter = r["chapter"]
            student = student_of(r["path"], chapter)
            try:
                gb.find_assignment(chapter)
            except MissingEntry:
                problems.append(f"{chapter} is not in {db}: run `nbgrader generate_assignment "
                                f"{chapter} --force` in {course_dir} first")
                continue
            try:
                gb.find_student(student)
            except MissingEntry:
                gb.add_student(student)
            try:
                gb.find_submission(chapter, student)
            except MissingEntry:
                gb.add_submission(chapter, student)
            for e in r.get("exercises", []):
                try:
                    grade = gb.find_grade(f"test_{e['name']}", chapter, chapter, student)
                except MissingEntry:
                    problems.append(f"{student}/{chapter}: no test cell test_{e['name']} in the "
                                    "gradebook's copy of the assignment")
                    continue
                grade.auto_score = float(e["score"])
            gb.db.commit()
    return problems


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}
pre{{background:#f6f6f6;padding:.6em;white-space:pre-wrap}}.ok{{color:#080}}.no{{color:#a00}}
</style></head><body><h1>{title}</h1><p>Score: <b>{score:g} / {max_score:g}</b></p>
{body}</body></html>
"""


def write_feedback(out_dir: Path, results: list[dict]) -> list[Path]:
    """One HTML page per graded submission: DIR/<student>/<chapter>.html."""
    written = []
    for r in results:
        if r.get("status") != "ok":
            continue
        student = student_of(r["path"], r["chapter"])
        parts = []
        for e in r.get("exercises", []):
            mark = "ok" if e.get("passed") else "no"
            parts.append(f"<h2 class=\"{mark}\">{html.escape(e['name'])}: {e['score']:g} / "
                         f"{e['max_score']:g}</h2><pre>{html.escape(e['feedback'])}</pre>")
        page = PAGE.format(title=html.escape(f"{r['chapter']}: feedback for {student}"),
                           score=r["score"], max_score=r["max_score"] or 0, body="\n".join(parts))
        dest = Path(out_dir) / student / f"{r['chapter']}.html"
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(page, encoding="utf-8")
        written.append(dest)
    return written
