"""The instructor's route of README.md ("Grading with nbgrader"), followed as written, on a class
of three: alice (every answer right), bob (the notebook as released, untouched) and carol (a
wrong `linreg`, and her `linreg` test cell edited to `pass`).

A course directory made by `python -m grader.instructor course`; the roster imported; the
assignment generated, released to the exchange inside the course, fetched and submitted by the
students (nbgrader's exchange classes, each student with their own Jupyter directories and the
two-line config the README gives students), collected, autograded, its feedback generated,
released and fetched, and the grades exported. Every nbgrader command exits 0 and logs no
warning, except the one that signals a real problem: carol's edited test cell.

The browser test drives the formgrader in Debian's chromium, with every request that does not
go to the local server blocked: the class with names and scores, "Tests Failed?", a submission
with its math rendered by the course's own MathJax, and a feedback file rendering math offline.
Screenshots are kept in the test's temporary directory (printed).
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from grader import instructor

CID = "01_linear_regression"
COURSE_ID = "dl-foundations"
ROSTER = {"alice": ("Alice", "Adams"), "bob": ("Bob", "Brown"), "carol": ("Carol", "Clark")}
BIN = Path(sys.executable).parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# the only warning a run of this class may log: carol edited a locked test cell
TAMPERING = re.compile(r"Attribute 'checksum' for cell test_linreg has changed!.* in carol's "
                       + CID)
WARNING = re.compile(r"\| WARNING\]|\| ERROR\]|\| CRITICAL\]|Traceback|Warning:|\[W |\[E ")

pytestmark = pytest.mark.slow


def _env(base: Path, who: str) -> dict:
    """Jupyter's, IPython's and matplotlib's directories of one person, inside the test."""
    home = base / "people" / who
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
               JUPYTER_CONFIG_DIR=str(home / ".jupyter"),
               JUPYTER_DATA_DIR=str(home / ".local" / "share" / "jupyter"),
               JUPYTER_RUNTIME_DIR=str(home / ".local" / "share" / "jupyter" / "runtime"),
               IPYTHONDIR=str(home / ".ipython"), MPLCONFIGDIR=str(home / ".matplotlib"),
               GRADER_FAST="1", MPLBACKEND="Agg")
    env.pop("GRADER_STRICT", None)
    env.pop("JUPYTER_PATH", None)
    (home / ".jupyter").mkdir(parents=True, exist_ok=True)
    return env


def _student_config(course: Path) -> str:
    """What README.md tells each student to put in ~/.jupyter/nbgrader_config.py."""
    return ("c = get_config()\n"
            f'c.CourseDirectory.course_id = "{COURSE_ID}"\n'
            f'c.Exchange.root = "{course / "nbgrader_exchange"}"\n')


def _student_apps(base: Path, course: Path, student: str):
    """nbgrader's exchange, as `nbgrader fetch_assignment/submit/fetch_feedback` runs it for
    `student` (their config file, their home as the working directory, their cache)."""
    from nbgrader.auth import Authenticator
    from nbgrader.coursedir import CourseDirectory
    from traitlets.config import Config, PyFileConfigLoader

    env = _env(base, student)
    cfg_dir = Path(env["JUPYTER_CONFIG_DIR"])
    (cfg_dir / "nbgrader_config.py").write_text(_student_config(course))
    config = Config()
    config.merge(PyFileConfigLoader("nbgrader_config.py", path=str(cfg_dir)).load_config())
    home = cfg_dir.parent
    config.CourseDirectory.root = str(home)
    config.CourseDirectory.assignment_id = CID
    config.CourseDirectory.student_id = student  # as `--student=<id>`: one OS account here
    config.Exchange.assignment_dir = str(home)
    config.Exchange.cache = str(Path(env["JUPYTER_DATA_DIR"]) / "nbgrader_cache")
    coursedir = CourseDirectory(config=config)
    return home, dict(coursedir=coursedir, authenticator=Authenticator(config=config),
                      config=config)


def _answered(nb, course: Path, replace: dict[str, str]):
    """The fetched notebook with each answer cell filled in from the course's solutions/
    (`replace`: other answers by exercise name)."""
    source = nbformat.read(course / "solutions" / CID / f"{CID}.ipynb", as_version=4)
    answers = {c.metadata["nbgrader"]["grade_id"]: c.source for c in source.cells
               if c.metadata.get("nbgrader", {}).get("solution")}
    answers.update({f"answer_{name}": src for name, src in replace.items()})
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("solution") and meta.get("grade_id") in answers:
            cell.source = answers[meta["grade_id"]]
    return nb


def _nbgrader(course: Path, env: dict, *args: str) -> dict:
    proc = subprocess.run([str(BIN / "nbgrader"), *args], cwd=course, env=env,
                          capture_output=True, text=True, timeout=900)
    return {"args": args, "rc": proc.returncode, "log": proc.stdout + proc.stderr}


@pytest.fixture(scope="module")
def route(tmp_path_factory):
    """Run the README's route once for the module; the tests read what it left."""
    from nbgrader.exchange.default import ExchangeFetchAssignment, ExchangeFetchFeedback, ExchangeSubmit

    base = tmp_path_factory.mktemp("instructor")
    env = _env(base, "instructor")
    course = base / "dl-2026"
    made = subprocess.run([sys.executable, "-m", "grader.instructor", "course", str(course), CID],
                          env=env, capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    subprocess.run(["mkdir", "-m", "777", "nbgrader_exchange"], cwd=course, check=True)
    with open(course / "students.csv", "w", newline="") as f:
        rows = csv.writer(f)
        rows.writerow(["id", "first_name", "last_name", "email"])
        for sid, (first, last) in ROSTER.items():
            rows.writerow([sid, first, last, f"{sid}@example.org"])

    steps = []

    def instructor_runs(*args):
        steps.append(_nbgrader(course, env, *args))
        return steps[-1]

    instructor_runs("db", "student", "import", "students.csv")
    instructor_runs("generate_assignment", CID)
    instructor_runs("release_assignment", CID)

    answers = {"alice": {}, "carol": {"linreg": "def linreg(X, w, b):\n    return X @ w\n"}}
    for student in ROSTER:
        home, kw = _student_apps(base, course, student)
        ExchangeFetchAssignment(**kw).start()
        fetched = home / CID / f"{CID}.ipynb"
        assert fetched.is_file(), f"{student} could not fetch {CID}"
        if student in answers:
            nb = _answered(nbformat.read(fetched, as_version=4), course, answers[student])
            if student == "carol":
                for cell in nb.cells:
                    if cell.metadata.get("nbgrader", {}).get("grade_id") == "test_linreg":
                        cell.source = "# nothing to check here\npass"
            nbformat.write(nb, fetched)
        ExchangeSubmit(**kw).start()

    # one OS account plays all three students here, so every submission is owned by it
    instructor_runs("collect", CID, "--ExchangeCollect.check_owner=False")
    instructor_runs("autograde", CID)
    instructor_runs("generate_feedback", CID)
    instructor_runs("release_feedback", CID)
    instructor_runs("export")

    home, kw = _student_apps(base, course, "alice")
    ExchangeFetchFeedback(**kw).start()
    return {"base": base, "course": course, "steps": steps, "alice": home, "env": env}


def test_readme_route_runs_with_clean_logs(route):
    course, steps = route["course"], route["steps"]
    for step in steps:
        assert step["rc"] == 0, f"nbgrader {' '.join(step['args'])} failed:\n{step['log'][-3000:]}"
    noise = [(" ".join(step["args"]), line) for step in steps
             for line in step["log"].splitlines()
             if WARNING.search(line) and not TAMPERING.search(line)]
    assert not noise, "warnings that signal no real problem:\n" + "\n".join(
        f"  nbgrader {cmd}: {line}" for cmd, line in noise)
    autograde = next(s["log"] for s in steps if s["args"][0] == "autograde")
    tampering = [line for line in autograde.splitlines() if "has changed!" in line]
    assert len(tampering) == 1 and TAMPERING.search(tampering[0]), (
        "exactly carol's edited test cell is reported:\n" + "\n".join(tampering))
    assert (course / "nbgrader_release" / CID / f"{CID}.ipynb").is_file()
    assert (course / "nbgrader_exchange" / COURSE_ID / "outbound" / CID).is_dir()


def test_gradebook_has_names_scores_and_failed_tests(route):
    from nbgrader.api import Gradebook

    from grader.registry import get_chapter

    course = route["course"]
    full = get_chapter(CID).max_score
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}", COURSE_ID) as gb:
        rows = {r["student"]: r for r in gb.notebook_submission_dicts(CID, CID)}
        assert set(rows) == set(ROSTER)
        for sid, (first, last) in ROSTER.items():
            assert (rows[sid]["first_name"], rows[sid]["last_name"]) == (first, last)
        assert rows["alice"]["score"] == rows["alice"]["max_score"] == full
        assert not rows["alice"]["failed_tests"]
        assert rows["bob"]["score"] == 0 and rows["bob"]["failed_tests"]
        assert 0 < rows["carol"]["score"] < full and rows["carol"]["failed_tests"]
        carol = {g.name: g for g in gb.find_submission_notebook(CID, CID, "carol").grades}
        linreg = carol["test_linreg"]
        assert linreg.auto_score < linreg.max_score, "her edited check cell did not save her"
    with open(course / "grades.csv", newline="") as f:
        grades = {r["student_id"]: r for r in csv.DictReader(f)}
    assert {sid: (r["first_name"], r["last_name"]) for sid, r in grades.items()} == ROSTER
    assert float(grades["alice"]["score"]) == full and float(grades["bob"]["score"]) == 0
    graded = nbformat.read(course / "autograded" / "carol" / CID / f"{CID}.ipynb", as_version=4)
    cell = next(c for c in graded.cells
                if c.metadata.get("nbgrader", {}).get("grade_id") == "test_linreg")
    assert "check('linreg', linreg)" in cell.source and "nothing to check" not in cell.source


def test_feedback_loads_mathjax_from_the_course_environment(route):
    course = route["course"]
    pages = sorted((course / "feedback").glob(f"*/{CID}/{CID}.html"))
    assert [p.parts[-3] for p in pages] == sorted(ROSTER)
    fetched = list((route["alice"] / CID / "feedback").rglob("*.html"))
    assert len(fetched) == 1, "alice fetched her feedback, and only hers"
    local = instructor.mathjax_dir()
    assert local is not None and (local / "MathJax.js").is_file(), (
        "jupyter_server_mathjax (a requirement of the course) is not installed")
    for page in pages + fetched:
        html = page.read_text()
        assert not re.search(r"https?://[^\"'\s]*mathjax", html, re.I), f"{page}: a MathJax CDN"
        assert not re.search(r"<script[^>]+src=[\"']https?:", html), f"{page}: remote script"
        assert (local / "MathJax.js").as_uri() in html
        assert "static/jupyter_server_mathjax/MathJax.js" in html


# --- the formgrader in a browser --------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def formgrader(route):
    """`jupyter lab` started from the course directory, as the README says."""
    port, token = _free_port(), "formgrader-token"
    env = _env(route["base"], "formgrader")
    log = route["base"] / "formgrader.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [str(BIN / "jupyter"), "lab", "--no-browser", "--allow-root", "--ip=127.0.0.1",
             f"--port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
             "--ServerApp.answer_yes=True"], cwd=route["course"], env=env, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True)
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while time.time() < deadline and proc.poll() is None:
            try:
                urllib.request.urlopen(f"{base_url}/api/status?token={token}", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail(f"JupyterLab did not start:\n{log.read_text()[-3000:]}")
        yield {"url": base_url, "token": token, "log": log}
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium installed (apt-get install chromium); "
                    ".ci/run installs it")
def test_formgrader_shows_the_class_offline(route, formgrader):
    from playwright.sync_api import sync_playwright

    shots = route["base"] / "screenshots"
    shots.mkdir(exist_ok=True)
    base, outside, errors = formgrader["url"], [], []

    def local_only(request_route):
        url = request_route.request.url
        if url.startswith((base, "file:", "data:", "about:")):
            return request_route.continue_()
        outside.append(url)
        return request_route.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        page.route("**/*", local_only)
        page.on("pageerror", lambda e: errors.append(str(e)))

        page.goto(f"{base}/formgrader?token={formgrader['token']}")  # Manage Assignments
        page.wait_for_selector(f"tr:has-text('{CID}') td:has-text('3')", timeout=60_000)
        assignments = page.inner_text("table")
        page.screenshot(path=str(shots / "manage_assignments.png"), full_page=True)

        page.goto(f"{base}/formgrader/manage_students")
        for sid in ROSTER:
            page.wait_for_selector(f"td:has-text('{sid}@example.org')", timeout=60_000)
        students = page.inner_text("table")
        page.screenshot(path=str(shots / "manage_students.png"), full_page=True)

        page.goto(f"{base}/formgrader/gradebook/{CID}/{CID}")
        page.wait_for_selector("td.tests-failed", timeout=60_000)
        page.click("text=Show All Names")
        page.wait_for_timeout(300)
        rows = page.eval_on_selector_all("tbody tr", """rows => rows.map(r => ({
            text: r.innerText,
            failed: r.querySelector('td.tests-failed').children.length > 0}))""")
        page.screenshot(path=str(shots / "gradebook.png"), full_page=True)

        page.click("tbody tr:has-text('Clark') a.name-shown[href*='/formgrader/submissions/']")
        page.wait_for_function("window.MathJax && MathJax.Hub && "
                               "document.querySelectorAll('.MathJax').length > 0",
                               timeout=60_000)
        submission_math = page.evaluate("document.querySelectorAll('.MathJax').length")
        page.screenshot(path=str(shots / "submission_carol.png"))

        feedback = route["course"] / "feedback" / "carol" / CID / f"{CID}.html"
        page.goto(feedback.as_uri())
        page.wait_for_function("window.MathJax && MathJax.Hub && "
                               "document.querySelectorAll('.MathJax').length > 0",
                               timeout=60_000)
        page.wait_for_timeout(500)
        feedback_math = page.evaluate("document.querySelectorAll('.MathJax').length")
        page.screenshot(path=str(shots / "feedback_carol.png"))
        browser.close()

    print(f"formgrader screenshots: {shots}")
    from grader.registry import get_chapter

    full = f"{get_chapter(CID).max_score:g} / {get_chapter(CID).max_score:g}"
    assert CID in assignments and "released" in assignments.lower(), assignments
    for sid, (first, last) in ROSTER.items():
        assert f"{last}, {first}" in students and sid in students
    assert "None, None" not in students
    assert re.search(rf"Adams, Alice\s+alice\s+\S+\s+{full}", students), students
    by_name = {last: r for r in rows for last in ("Adams", "Brown", "Clark") if last in r["text"]}
    assert set(by_name) == {"Adams", "Brown", "Clark"}, rows
    assert full in by_name["Adams"]["text"] and not by_name["Adams"]["failed"]
    assert f"0 / {full.split(' / ')[1]}" in by_name["Brown"]["text"] and by_name["Brown"]["failed"]
    assert by_name["Clark"]["failed"]
    assert submission_math > 0 and feedback_math > 0
    assert not outside, f"requests outside the course server (a CDN?): {outside}"
    assert not errors, f"errors in the formgrader's pages: {errors}"
    server_log = formgrader["log"].read_text()
    noise = [line for line in server_log.splitlines() if WARNING.search(line)]
    assert not noise, "the formgrader's server logged:\n" + "\n".join(noise)
