"""Every chapter end to end: notebook structure, the released notebook's run, and the round trip
(perfect answers score full marks, untouched ones 0) through `python -m grader grade` and through
nbgrader's own autograde."""

import json
import os
import subprocess
import sys

import nbformat
import pytest

from grader import assign
from grader.registry import get_chapter
from grader.testing import answered_release

ROOT = assign.ROOT
CHAPTERS = assign.source_chapters()
# nbgrader's autograde round trip per chapter: the first chapter and the newest ones
AUTOGRADE_ROUND_TRIP = ("01_linear_regression", "07_backprop", "10_optimization")
# the released notebook run as a student runs it, check cells included (the other chapters' runs
# are checked through the grader's round trip, which runs every cell but the check cells)
RELEASE_RUN = ("01_linear_regression",)


def source_nb(cid):
    return nbformat.read(ROOT / "solutions" / cid / f"{cid}.ipynb", as_version=4)


class ChapterSuite:
    """The tests of one chapter; a subclass per chapter (below) lets pytest-xdist's loadscope
    spread chapters over workers while keeping each chapter's runs together."""

    cid: str

    def test_source_notebook_structure(self):
        check_source_notebook_structure(self.cid)

    @pytest.mark.slow
    def test_release_runs_with_only_not_implemented_failures(self, tmp_path, monkeypatch):
        if self.cid not in RELEASE_RUN:
            pytest.skip("the grader CLI round trip below runs the untouched notebook and checks "
                        "that its cells fail only with NotImplementedError; the released "
                        f"notebook's own check cells are run as a student runs them for "
                        f"{', '.join(RELEASE_RUN)}")
        check_release_runs(self.cid, tmp_path, monkeypatch)

    @pytest.mark.slow
    def test_round_trip_through_grader_cli(self, tmp_path):
        check_round_trip_cli(self.cid, tmp_path)

    @pytest.mark.slow
    def test_round_trip_through_nbgrader_autograde(self, tmp_path, monkeypatch):
        if self.cid not in AUTOGRADE_ROUND_TRIP:
            pytest.skip("autograde judges with the same code as the CLI round trip above; "
                        f"nbgrader's own path is run for {', '.join(AUTOGRADE_ROUND_TRIP)} and "
                        "by tests/test_instructor_route.py")
        check_round_trip_autograde(self.cid, tmp_path, monkeypatch)


for _cid in CHAPTERS:
    globals()[f"TestChapter{_cid}"] = type(f"TestChapter{_cid}", (ChapterSuite,), {"cid": _cid})


def check_source_notebook_structure(cid):
    """One answer cell and one authoritative test cell per exercise, points as registered,
    no execution noise."""
    chapter = get_chapter(cid)
    nb = source_nb(cid)
    assert nb.metadata.get("grader", {}).get("chapter") == cid
    tests, answers = {}, set()
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type == "code" and assign.CHECKED not in cell.metadata.get("tags", []):
            assert cell.execution_count is None, "committed with execution counts"
            assert not cell.outputs, f"committed with outputs: {cell.source[:60]!r}"
        if meta.get("solution"):
            answers.add(meta["grade_id"])
            assert "### BEGIN SOLUTION" in cell.source and "### END SOLUTION" in cell.source
        elif meta.get("grade"):
            tests[meta["grade_id"]] = cell
    for name, ex in chapter.exercises.items():
        assert f"answer_{name}" in answers, f"no answer cell for {name}"
        cell = tests.pop(f"test_{name}", None)
        assert cell is not None, f"no test cell for {name}"
        assert cell.metadata.nbgrader["points"] == ex.points
        assert cell.metadata.nbgrader["locked"]
        says = cell.source.splitlines()[0]
        assert says.startswith("# ") and len(says) > 10, "a test cell says what it checks first"
        expected = assign.test(cid, name, ex.points, says[2:]).source
        assert cell.source == expected, f"test cell of {name} differs from the standard one"
    assert not tests, f"test cells for unregistered exercises: {sorted(tests)}"


def run_notebook(nb, cwd, env_extra=None, timeout=600):
    from nbclient import NotebookClient

    os.environ.update({"GRADER_FAST": "1", "MPLBACKEND": "Agg", **(env_extra or {})})
    NotebookClient(nb, timeout=timeout, allow_errors=True, kernel_name="python3",
                   resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


def assigned_names(source):
    import ast

    try:
        tree = ast.parse("\n".join(line for line in source.splitlines()
                                   if not line.lstrip().startswith(("%", "!"))))
    except SyntaxError:
        return set()
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.FunctionDef | ast.ClassDef):
            names.add(node.name)
    return names


def check_release_runs(cid, tmp_path, monkeypatch):
    monkeypatch.delenv("GRADER_STRICT", raising=False)
    nb = nbformat.read(ROOT / "chapters" / cid / f"{cid}.ipynb", as_version=4)
    run_notebook(nb, tmp_path)
    errors = [(cell.source, [(o.ename, o.evalue) for o in cell.outputs if o.output_type == "error"])
              for cell in nb.cells if cell.cell_type == "code"]
    failures = assert_only_stub_failures(errors)
    assert failures >= len(get_chapter(cid).exercises), "the stubs do not fail their checks"


def assert_only_stub_failures(errors):
    """`errors`: (cell source, [(ename, evalue)]) per code cell in order. Every failure is a stub's
    NotImplementedError, or a NameError for a name that a failing cell never got to define."""
    failed_names, failures = set(), 0
    for source, errs in errors:
        for ename, evalue in errs:
            failures += 1
            if ename == "NotImplementedError":
                continue
            missing = evalue.split("'")[1] if ename == "NameError" and "'" in evalue else None
            assert missing in failed_names, (
                f"the student notebook fails with {ename}: {evalue} in\n{source}")
        if errs:
            failed_names |= assigned_names(source)
    return failures


def grade_cli(*paths, chapter, out, jobs=2):
    env = {k: v for k, v in os.environ.items() if k != "GRADER_STRICT"}
    proc = subprocess.run([sys.executable, "-m", "grader", "grade", "--json", "--quiet",
                           "--chapter", chapter, "--out", str(out), "-j", str(jobs),
                           *map(str, paths)], capture_output=True, text=True, env=env,
                          timeout=1200)
    return proc, json.loads(proc.stdout)


def check_round_trip_cli(cid, tmp_path):
    perfect, untouched = tmp_path / "perfect.ipynb", tmp_path / "untouched.ipynb"
    # the chapters of the autograde round trip run their whole perfect notebook there; here they
    # run only the answers (what the CLI adds is the batch around the same judge)
    nbformat.write(answered_release(cid, lean=cid in AUTOGRADE_ROUND_TRIP), perfect)
    untouched.write_bytes((ROOT / "chapters" / cid / f"{cid}.ipynb").read_bytes())
    proc, out = grade_cli(perfect, untouched, chapter=cid, out=tmp_path / "results")
    assert proc.returncode == 0, proc.stderr
    by_path = {s["path"]: s for s in out["submissions"]}
    full, zero = by_path[str(perfect)], by_path[str(untouched)]
    chapter = get_chapter(cid)
    assert full["chapter"] == zero["chapter"] == cid
    assert full["score"] == full["max_score"] == chapter.max_score, json.dumps(full, indent=1)
    assert zero["score"] == 0
    assert {e["name"] for e in full["exercises"]} == set(chapter.exercises)
    assert all(e["passed"] for e in full["exercises"])
    assert all(set(e) == {"name", "score", "max_score", "passed", "feedback"}
               for e in zero["exercises"])
    # every cell of the perfect notebook runs; the untouched one fails only where a stub is called
    assert full["cell_errors"] == [] and full["notes"] == [], (full["cell_errors"], full["notes"])
    from grader.judge import plan

    cells = plan(nbformat.read(untouched, as_version=4), chapter).cells
    by_cell = {}
    for e in zero["cell_errors"]:
        ename, _, evalue = e["error"].partition(": ")
        by_cell.setdefault(e["cell"], []).append((ename, evalue))
    assert_only_stub_failures([(src, by_cell.get(i + 1, [])) for i, src in enumerate(cells)])


def check_round_trip_autograde(cid, tmp_path, monkeypatch):
    from nbgrader.api import Gradebook

    monkeypatch.delenv("GRADER_STRICT", raising=False)
    monkeypatch.setenv("GRADER_FAST", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    (tmp_path / "solutions").symlink_to(ROOT / "solutions")
    db = tmp_path / "gradebook.db"
    api = assign.nbgrader_api(tmp_path, tmp_path / "release", db)
    assert api.generate_assignment(cid, force=True, create=True)["success"]
    for student, nb in (("perfect", answered_release(cid)),
                        ("untouched", nbformat.read(tmp_path / "release" / cid / f"{cid}.ipynb",
                                                    as_version=4))):
        dest = tmp_path / "submitted" / student / cid / f"{cid}.ipynb"
        dest.parent.mkdir(parents=True)
        nbformat.write(nb, dest)
        result = api.autograde(cid, student, force=True, create=True)
        assert result["success"], result["log"]
    with Gradebook(f"sqlite:///{db}") as gb:
        perfect = gb.find_submission(cid, "perfect")
        untouched = gb.find_submission(cid, "untouched")
        assert perfect.score == perfect.max_score == get_chapter(cid).max_score
        assert untouched.score == 0
    feedback = api.generate_feedback(cid, "perfect")
    assert feedback["success"], feedback["log"]
    html = next((tmp_path / "feedback" / "perfect" / cid).glob("*.html")).read_text()
    assert "hidden_check" in html and "def check_" not in html, "feedback shows only the call"


@pytest.mark.slow
def test_nbgrader_validate_button(tmp_path, monkeypatch):
    """What a student's Validate button reports: a perfect notebook passes, a stub fails."""
    from nbgrader.validator import Validator

    monkeypatch.delenv("GRADER_STRICT", raising=False)
    monkeypatch.setenv("GRADER_FAST", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    assign.use_environment_path()
    cid = "01_linear_regression"
    perfect, untouched = tmp_path / "perfect.ipynb", tmp_path / "untouched.ipynb"
    # the chapters of the autograde round trip run their whole perfect notebook there; here they
    # run only the answers (what the CLI adds is the batch around the same judge)
    nbformat.write(answered_release(cid, lean=cid in AUTOGRADE_ROUND_TRIP), perfect)
    untouched.write_bytes((ROOT / "chapters" / cid / f"{cid}.ipynb").read_bytes())
    validator = Validator()
    assert not validator.validate(str(perfect)).get("failed")
    failed = validator.validate(str(untouched)).get("failed")
    assert failed and len(failed) >= len(get_chapter(cid).exercises)
