"""The student edition (`python -m grader edition DIR`): everything a student needs, no answers.

- no line of a reference implementation, of a likely-mistake table or of a solution cell appears
  in any file of the edition, archives included;
- the instructor's modules cannot be imported from it (run as a student's Python would: the
  course's packages installed, this repository not);
- its visible checks give a student the same feedback as the full grader (see also
  tests/test_edition_equivalence.py for every variant of every chapter);
- building refuses to overwrite a folder with content unless asked, and then keeps a backup.
"""

import ast
import os
import re
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import nbformat
import pytest

from grader.assign import ROOT
from grader.registry import chapter_ids

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def edition(tmp_path_factory):
    from grader.edition import build

    dest = tmp_path_factory.mktemp("ed") / "student-edition"
    build(dest, archive=True)
    return dest


def _normal(line: str) -> str:
    return " ".join(line.split())


def _judge_code(node) -> bool:
    """A check or a check's helper (it takes the tester `t`), not a reference."""
    args = [a.arg for a in node.args.args] if hasattr(node, "args") else []
    return bool(args[:1] == ["t"] or node.decorator_list)


# Lines that occur in references or solutions and also, as plain plumbing, in public code (type
# tests, flattening a batch, returning a data split): they reveal nothing. Each was reviewed.
PLUMBING = {"if isinstance(x, torch.Tensor):", "return X, y, X_test, y_test",
            "A = X.reshape(len(X), -1)"}


def secret_lines() -> set[str]:
    """Lines of reference code, likely-mistake tables and solution cells (long enough to tell).

    References are the instructor modules' functions and classes that are not checks (a check
    or a check's helper takes the tester `t`), their `LIKELY`/`REFERENCES` tables and lambdas.
    """
    public = set()
    for cid in chapter_ids():
        nb = nbformat.read(ROOT / "chapters" / cid / f"{cid}.ipynb", as_version=4)
        public |= {_normal(line) for c in nb.cells for line in c.source.splitlines()}
    found = set()
    for path in sorted((ROOT / "grader" / "chapters").glob("*.py")):
        text = path.read_text()
        tree = ast.parse(text)
        nodes = []
        for node in tree.body:
            if isinstance(node, ast.FunctionDef | ast.ClassDef) and not _judge_code(node):
                nodes.append(node)
            elif isinstance(node, ast.Assign) and any(
                    isinstance(t, ast.Name) and t.id in ("LIKELY", "REFERENCES")
                    for t in node.targets):
                nodes.append(node)
        nodes += [n for n in ast.walk(tree) if isinstance(n, ast.Lambda)]
        for node in nodes:
            seg = ast.get_source_segment(text, node) or ""
            lines = seg.splitlines()
            found |= {_normal(line) for line in (lines[1:] if len(lines) > 1 else lines)}
    for cid in chapter_ids():
        nb = nbformat.read(ROOT / "solutions" / cid / f"{cid}.ipynb", as_version=4)
        for cell in nb.cells:
            if cell.metadata.get("nbgrader", {}).get("solution"):
                inside = cell.source.split("### BEGIN SOLUTION")[-1].split("### END SOLUTION")[0]
                found |= {_normal(line) for line in inside.splitlines()}
    judge = re.compile(r"\bt\.|\(t,|\bt\)")  # a line of judge logic (uses the tester)
    found = {line for line in found - public - PLUMBING if not judge.search(line)
             and not line.startswith(("#", '"""', "raise "))}
    return {line for line in found
            if (len(line) >= 24 and line.count(" ") >= 2)
            or (line.startswith("return ") and len(line) >= 20)}


def edition_texts(edition: Path):
    for f in sorted(edition.rglob("*")):
        if f.is_file():
            yield str(f), f.read_bytes().decode("utf-8", "replace")
    zip_path = edition.with_suffix(".zip")
    with zipfile.ZipFile(zip_path) as z:
        for name in z.namelist():
            yield f"{zip_path}:{name}", z.read(name).decode("utf-8", "replace")


def test_no_reference_or_solution_code_in_any_file(edition):
    secrets = secret_lines()
    assert len(secrets) > 200, "the search must cover the references and solutions"
    leaks = []
    for where, text in edition_texts(edition):
        normal = {_normal(line) for line in text.splitlines()}
        for line in secrets & normal:
            leaks.append(f"{where}: {line}")
    assert not leaks, "\n".join(leaks[:30])
    names = {p.relative_to(edition).as_posix() for p in edition.rglob("*")}
    assert not any(n.startswith(("grader/chapters", "solutions", "tests")) for n in names)
    assert {f"chapters/{cid}/{cid}.ipynb" for cid in chapter_ids()} <= names
    assert {f"grader/recorded/{cid}.wire" for cid in chapter_ids()} <= names
    assert {"README.md", "Makefile", "requirements.txt", "constraints.txt"} <= names


def student_python(edition: Path, code: str) -> subprocess.CompletedProcess:
    """Python as a student's environment has it: the course's packages, not this repository."""
    site = sysconfig.get_paths()["purelib"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GRADER_", "PYTHON"))}
    env["PYTHONPATH"] = os.pathsep.join([str(edition), site])
    return subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True,
                          cwd=edition, env=env, timeout=300)


def test_instructor_modules_cannot_be_imported(edition):
    proc = student_python(edition, """
import importlib, grader
print(grader.__file__)
for name in ("grader.chapters", "grader.chapters.linear_regression", "grader.judge",
             "grader.grade", "grader.testing", "grader.edition", "grader.assign"):
    try:
        importlib.import_module(name)
        print("IMPORTED", name)
    except ImportError:
        pass
""")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(str(edition)), proc.stdout
    assert "IMPORTED" not in proc.stdout


def test_visible_checks_work_in_the_edition(edition):
    proc = student_python(edition, """
import torch
from grader import checker
from grader.check import ExerciseFailed
check = checker("01_linear_regression")
check("linreg", lambda X, w, b: X @ w + b)
try:
    check("linreg", lambda X, w, b: X @ w)
except ExerciseFailed as e:
    print("FEEDBACK", e)
check2 = checker("02_softmax")
try:
    check2("softmax", lambda X: torch.exp(X) / torch.exp(X).sum(1, keepdim=True))
except ExerciseFailed as e:
    print("FEEDBACK2", e)
""")
    assert proc.returncode == 0, proc.stderr
    assert "linreg: the visible check passed" in proc.stdout
    assert "likely cause: the bias b is not added" in proc.stdout
    assert "expected:" in proc.stdout and "received:" in proc.stdout
    assert "FEEDBACK2" in proc.stdout


def test_building_never_overwrites_without_asking(tmp_path):
    from grader.edition import build

    dest = tmp_path / "ed"
    dest.mkdir()
    (dest / "my-notes.txt").write_text("mine")
    with pytest.raises(SystemExit, match="not empty"):
        build(dest, chapters=["01_linear_regression"])
    assert (dest / "my-notes.txt").read_text() == "mine"
    build(dest, chapters=["01_linear_regression"], force=True)
    assert (tmp_path / "ed.backup" / "my-notes.txt").read_text() == "mine"
    assert (dest / "chapters" / "01_linear_regression").is_dir()
