"""`python -m grader grade`: bad paths are reported after the rest is graded; a buggy notebook
loses marks with specific feedback; the chapter is the assignment's (its folder), never what the
notebook's metadata claims; the table output is readable."""

import json
import subprocess
import sys

import nbformat
import pytest

from grader.testing import answered_release

CH = "01_linear_regression"

LINREG_NO_BIAS = "def linreg(X, w, b):\n    return X @ w\n"
HUBER_BATCH_SWITCH = '''def huber_loss(y_hat, y, delta=1.0):
    r = y_hat - y.reshape(y_hat.shape)
    if (r.abs() <= delta).all():
        return 0.5 * r ** 2
    return delta * (r.abs() - delta / 2)
'''


def grade(*args, tmp_path, timeout=600):
    return subprocess.run([sys.executable, "-m", "grader", "grade", "--quiet", "--out",
                           str(tmp_path / "results"), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_bad_paths_reported_after_grading_the_rest(tmp_path):
    buggy = tmp_path / CH / "buggy.ipynb"
    buggy.parent.mkdir()
    nb = answered_release(CH, {"linreg": LINREG_NO_BIAS, "huber_loss": HUBER_BATCH_SWITCH},
                          lean=True)
    nb.cells = [c for c in nb.cells  # a student who deleted a test cell
                if c.metadata.get("nbgrader", {}).get("grade_id") != "test_squared_loss"]
    nb.metadata["grader"] = {"chapter": "02_softmax"}  # metadata does not choose the grader
    nbformat.write(nb, buggy)
    (tmp_path / CH / "corrupt.ipynb").write_text("{not json")
    (tmp_path / "notes.txt").write_text("hello")
    csv_path = tmp_path / "grades.csv"
    proc = grade("--json", "--csv", csv_path, tmp_path / "missing.ipynb",
                 tmp_path / CH / "corrupt.ipynb", tmp_path / "notes.txt", tmp_path / CH,
                 tmp_path=tmp_path)
    assert proc.returncode == 2, proc.stderr
    for what in ("missing.ipynb: no such file", "corrupt.ipynb: not a valid notebook",
                 "notes.txt: not a notebook"):
        assert what in proc.stderr
    assert "Traceback" not in proc.stderr
    out = json.loads(proc.stdout)
    (sub,) = [s for s in out["submissions"] if s["status"] == "ok"]
    assert sub["path"] == str(buggy) and sub["chapter"] == CH
    ex = {e["name"]: e for e in sub["exercises"]}
    assert ex["linreg"]["score"] == 0 and "the bias b is not added" in ex["linreg"]["feedback"]
    assert 0 < ex["huber_loss"]["score"] < ex["huber_loss"]["max_score"]
    assert "one switch for the whole batch" in ex["huber_loss"]["feedback"]
    assert ex["squared_loss"]["passed"], "a deleted test cell is still graded"
    assert ex["sgd"]["passed"] and ex["gaussian_nll"]["passed"]
    assert sub["score"] < sub["max_score"]
    rows = csv_path.read_text().splitlines()
    assert rows[0].startswith("path,chapter,status,score,max_score,") and "linreg" in rows[0]
    assert any(r.startswith(f"{buggy},{CH},ok,{sub['score']}") for r in rows)


def test_usage_errors_are_clear(tmp_path):
    proc = grade(tmp_path / "nope.ipynb", tmp_path=tmp_path, timeout=120)
    assert proc.returncode == 2 and "no such file" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "grader", "chapters"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and "linreg (1)" in proc.stdout


def test_unknown_chapter_is_reported(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1")]
    nb.metadata["grader"] = {"chapter": CH}  # what the notebook claims does not count
    path = tmp_path / "mystery.ipynb"
    nbformat.write(nb, path)
    proc = grade(path, tmp_path=tmp_path, timeout=120)
    assert proc.returncode == 2 and "cannot tell which chapter" in proc.stderr


@pytest.mark.slow
def test_dask_cluster_gives_the_local_scores(tmp_path):
    """The same submissions graded on a local Dask cluster and locally, with the same hidden-input
    seed: identical scores and feedback."""
    sub = tmp_path / CH
    sub.mkdir()
    nbformat.write(answered_release(CH, {"linreg": LINREG_NO_BIAS}, lean=True), sub / "a.ipynb")
    nbformat.write(answered_release(CH, {"huber_loss": HUBER_BATCH_SWITCH}, lean=True),
                   sub / "b.ipynb")
    runs = {}
    for name, extra in (("local", []), ("dask", ["--scheduler", "local", "-j", "2"])):
        proc = subprocess.run([sys.executable, "-m", "grader", "grade", "--quiet", "--json",
                               "--seed", "99", "--out", str(tmp_path / name), *extra, str(sub)],
                              capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr
        runs[name] = {s["path"]: [(e["name"], e["score"], e["feedback"]) for e in s["exercises"]]
                      for s in json.loads(proc.stdout)["submissions"]}
    assert runs["local"] == runs["dask"]
    assert len(runs["local"]) == 2
