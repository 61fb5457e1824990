"""Grades reach the instructor's tools: nbgrader's gradebook (what the formgrader and
`nbgrader export` read) and one feedback page per student without hidden inputs or code."""

import pytest

from grader import assign
from grader.gradebook import export_to_gradebook, student_of, write_feedback
from grader.registry import get_chapter

CH = "01_linear_regression"


def result(student, scores):
    chapter = get_chapter(CH)
    exercises = [{"name": n, "score": scores.get(n, ex.points), "max_score": ex.points,
                  "passed": scores.get(n, ex.points) == ex.points,
                  "feedback": f"{n}: <b>not</b> escaped?" if n in scores else f"{n}: ok"}
                 for n, ex in chapter.exercises.items()]
    return {"path": f"/course/submitted/{student}/{CH}/{CH}.ipynb", "status": "ok",
            "chapter": CH, "score": sum(e["score"] for e in exercises),
            "max_score": chapter.max_score, "exercises": exercises}


def test_student_is_the_folder_above_the_chapter():
    assert student_of(f"a/submitted/ada/{CH}/{CH}.ipynb", CH) == "ada"
    assert student_of("elsewhere/bob.ipynb", CH) == "bob"


@pytest.mark.slow
def test_scores_go_into_the_gradebook(tmp_path):
    from nbgrader.api import Gradebook

    (tmp_path / "solutions").symlink_to(assign.ROOT / "solutions")
    api = assign.nbgrader_api(tmp_path, tmp_path / "release", tmp_path / "gradebook.db")
    assert api.generate_assignment(CH, force=True, create=True)["success"]
    results = [result("ada", {}), result("bob", {"linreg": 0.0, "huber_loss": 1.0}),
               {"path": "x.ipynb", "status": "error", "reason": "corrupt", "score": 0}]
    assert export_to_gradebook(tmp_path, results) == []
    with Gradebook(f"sqlite:///{tmp_path / 'gradebook.db'}") as gb:
        full = get_chapter(CH).max_score
        assert gb.find_submission(CH, "ada").score == full
        assert gb.find_submission(CH, "bob").score == full - 2.0
        assert gb.find_grade("test_linreg", CH, CH, "bob").score == 0
    assert export_to_gradebook(tmp_path, [result("ada", {"sgd": 1.0})]) == []  # regrading
    with Gradebook(f"sqlite:///{tmp_path / 'gradebook.db'}") as gb:
        assert gb.find_submission(CH, "ada").score == full - 1.0


def test_unknown_assignment_is_reported(tmp_path):
    problems = export_to_gradebook(tmp_path, [result("ada", {})])
    assert problems and "generate_assignment" in problems[0]


def test_feedback_pages(tmp_path):
    (page,) = write_feedback(tmp_path, [result("bob", {"linreg": 0.0})])
    text = page.read_text()
    assert page == tmp_path / "bob" / f"{CH}.html"
    assert "linreg: 0 / 1" in text and "&lt;b&gt;not&lt;/b&gt;" in text
    assert "<script" not in text and "def " not in text
