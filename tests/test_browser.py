"""A student's view, in a real browser (JupyterLab driven by Debian's chromium through playwright;
.ci/run installs chromium, and the tests are skipped, saying so, where none is installed).

- `test_student_sees_layered_feedback_in_jupyterlab`: the author's view (the repository's
  `grader`), chapter 01 run from the Run menu with a `linreg` that forgets the bias.
- `test_student_edition_path`: what a student gets. A student edition is built into a temporary
  folder and JupyterLab runs on its `chapters/` with the edition's `grader` (not the
  repository's). The notebook opens clean (not marked unsaved); the student types a wrong
  `linreg`, runs it and its check with Shift-Enter and sees the specific cause at once, without
  grader frames; fixes it and sees the success line; runs the training cell and sees a progress
  bar and a plot. Screenshots are saved under pytest's tmp dir and their paths printed.
"""

import contextlib
import json
import os
import platform
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

from grader.testing import answered_release

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = next((c for c in ("/usr/bin/chromium", shutil.which("chromium"),
                             shutil.which("chromium-browser")) if c and os.path.exists(c)), None)
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="no chromium installed (apt-get install "
                                 "chromium); .ci/run installs it")]
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"]
PASSED = re.compile(r"(\w+): (all \d+ visible checks passed|the visible check passed)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def jupyterlab(root: Path, tmp: Path, env_extra: dict | None = None):
    """JupyterLab on `root`, its config, data, runtime, IPython and matplotlib folders in `tmp`;
    yields (base URL, token)."""
    port, token = free_port(), "ui-token"
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(tmp / "cfg"), JUPYTER_DATA_DIR=str(tmp / "data"),
               JUPYTER_RUNTIME_DIR=str(tmp / "rt"), IPYTHONDIR=str(tmp / "ipy"),
               MPLCONFIGDIR=str(tmp / "mpl"), **(env_extra or {}))
    for name in [k for k, v in env.items() if v is None]:
        env.pop(name)
    # no "get notified about Jupyter news?" toast over the outputs of the screenshots
    settings = tmp / "cfg" / "lab" / "user-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True, exist_ok=True)
    (settings / "notification.jupyterlab-settings").write_text(
        '{"fetchNews": "false", "checkForUpdates": false}')
    jupyter = Path(sys.executable).parent / "jupyter"
    log = open(tmp / "jupyterlab.log", "wb")
    proc = subprocess.Popen(
        [str(jupyter), "lab", "--no-browser", "--allow-root", "--ip=127.0.0.1", f"--port={port}",
         f"--IdentityProvider.token={token}", f"--notebook-dir={root}",
         "--ServerApp.answer_yes=True"], env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True)
    try:
        deadline = time.time() + 90
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}",
                                       timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError("JupyterLab did not start:\n" + (tmp / "jupyterlab.log")
                                       .read_text(errors="replace")[-3000:]) from None
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}", token
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def open_notebook(page, url: str) -> None:
    page.goto(url)
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=90_000)
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=90_000)


# ---------------------------------------------------------------------------------------------
# the author's view: Run -> Run All Cells

@pytest.fixture
def lab(tmp_path):
    """JupyterLab on a chapter-01 notebook whose `linreg` forgets the bias."""
    from grader.assign import CHECKED  # noqa: F401 - the package must import

    nb = answered_release("01_linear_regression",
                          {"linreg": "def linreg(X, w, b):\n    return X @ w\n"})
    (tmp_path / "nb").mkdir()
    nbformat.write(nb, tmp_path / "nb" / "01_linear_regression.ipynb")
    with jupyterlab(tmp_path / "nb", tmp_path, {"GRADER_FAST": "1", "GRADER_STRICT": None}) \
            as (base, token):
        yield f"{base}/lab/tree/01_linear_regression.ipynb?token={token}"


def test_student_sees_layered_feedback_in_jupyterlab(lab, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        open_notebook(page, lab)
        page.click(".jp-Notebook")
        page.keyboard.press("Escape")
        # Run -> Run All Cells, as a student would from the menu
        page.click("text=Run", timeout=10_000)
        page.click("text=Run All Cells", timeout=10_000)
        feedback = page.wait_for_selector("text=likely cause: the bias b is not added",
                                          timeout=120_000)
        feedback.evaluate("e => e.scrollIntoView({block: 'center'})")
        page.wait_for_timeout(300)
        page.screenshot(path=str(tmp_path / "feedback.png"))
        text = page.inner_text(".jp-Notebook")
        browser.close()
    print(f"screenshot: {tmp_path / 'feedback.png'}")
    assert "ExerciseFailed" in text and "expected:" in text and "received:" in text
    assert any(m.group(1) == "synthetic_data" for m in PASSED.finditer(text)), text[:3000]


# ---------------------------------------------------------------------------------------------
# the student edition

CHAPTER = "01_linear_regression"
WRONG_LINREG = ("def linreg(X, w, b):", "return X @ w")
RIGHT_LINREG = ("def linreg(X, w, b):", "return X @ w + b")
CAUSE = "the bias b is not added"


def solution_answers(chapter_id: str) -> dict[str, str]:
    """{exercise: the solution's code without nbgrader's markers}, from solutions/."""
    nb = nbformat.read(REPO / "solutions" / chapter_id / f"{chapter_id}.ipynb", as_version=4)
    out = {}
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("solution"):
            lines = [ln for ln in cell.source.splitlines()
                     if ln.strip() not in ("### BEGIN SOLUTION", "### END SOLUTION")]
            out[meta["grade_id"].removeprefix("answer_")] = "\n".join(lines)
    return out


@pytest.fixture
def edition_lab(tmp_path):
    """A student edition of chapter 01 in tmp_path/ed and JupyterLab on its chapters/, with the
    edition's `grader` first on the kernel's path. Yields (notebook URL, edition folder)."""
    from grader.edition import STUDENT_MAKEFILE, build

    edition = build(tmp_path / "ed", chapters=[CHAPTER])
    path = edition / "chapters" / CHAPTER / f"{CHAPTER}.ipynb"
    nb = nbformat.read(path, as_version=4)
    recorded = nb.metadata.get("language_info", {}).get("version")
    if recorded != platform.python_version():
        # JupyterLab writes the kernel's language_info into the notebook when the kernel starts;
        # the released notebooks carry the course environment's, and only its Python version
        # can differ on another machine (then the notebook is marked unsaved once, until saved).
        print(f"note: the notebook records Python {recorded}, this kernel is "
              f"{platform.python_version()}; the copy under test records the latter")
        nb.metadata.setdefault("language_info", {})["version"] = platform.python_version()
        nbformat.write(nb, path)
    run = tmp_path / "run"
    # the lab extensions that the edition's `make env` switches off (nbgrader's instructor tools)
    off = re.findall(r"(?:@jupyter/)?nbgrader:[\w-]+", STUDENT_MAKEFILE)
    (run / "cfg" / "labconfig").mkdir(parents=True)
    (run / "cfg" / "labconfig" / "page_config.json").write_text(json.dumps(
        {"disabledExtensions": dict.fromkeys(off, True)}))
    # a student's environment: no fast mode, no strict mode, the edition's grader package
    env = {"PYTHONPATH": str(edition), "GRADER_FAST": None, "GRADER_STRICT": None,
           "MPLBACKEND": None}
    with jupyterlab(edition / "chapters", run, env) as (base, token):
        yield f"{base}/lab/tree/{CHAPTER}/{CHAPTER}.ipynb?token={token}", edition


CELL_INFO = """([i, needle]) => {
    const scroller = document.querySelector('.jp-Notebook');
    const cell = document.querySelectorAll('.jp-Notebook .jp-Cell')[i];
    const out = cell.querySelector('.jp-Cell-outputArea') || cell.querySelector('.jp-OutputArea');
    const box = r => r && {top: r.top, bottom: r.bottom, left: r.left, right: r.right};
    let cause = null;
    if (needle && out) {
        const walk = document.createTreeWalker(out, NodeFilter.SHOW_TEXT);
        for (let node = walk.nextNode(); node; node = walk.nextNode()) {
            const k = node.data.indexOf(needle);
            if (k >= 0) {
                const range = document.createRange();
                range.setStart(node, k);
                range.setEnd(node, k + needle.length);
                cause = box(range.getBoundingClientRect());
                break;
            }
        }
    }
    return {text: out ? out.innerText : '', output: box(out && out.getBoundingClientRect()),
            cell: box(cell.getBoundingClientRect()), view: box(scroller.getBoundingClientRect()),
            cause, innerHeight: window.innerHeight};
}"""


def cells(page):
    return page.locator(".jp-Notebook .jp-Cell")


def active_index(page) -> int:
    return page.evaluate("""() => [...document.querySelectorAll('.jp-Notebook .jp-Cell')]
                                  .findIndex(c => c.classList.contains('jp-mod-active'))""")


def is_dirty(page) -> bool:
    return page.evaluate("""() => !!document.querySelector(
        '.lm-TabBar-tab.jp-mod-dirty, .jp-NotebookPanel.jp-mod-dirty, .jp-Document.jp-mod-dirty')""")


def wait_idle(page, timeout_s: float = 120) -> None:
    """Every queued cell has run: the kernel is idle and no prompt shows [*]."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        busy = page.evaluate("""() => [...document.querySelectorAll(
                '.jp-Notebook .jp-InputArea-prompt')].some(p => p.textContent.includes('*'))""")
        idle = page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").count() > 0
        if idle and not busy:
            return
        page.wait_for_timeout(100)
    raise AssertionError("the kernel did not finish the queued cells")


def set_source(page, index: int, lines, *, type_it: bool) -> None:
    """Replace the code of cell `index`: typed key by key (`type_it`) or pasted as a whole."""
    editor = cells(page).nth(index).locator(".cm-content")
    editor.scroll_into_view_if_needed()
    editor.click()
    page.keyboard.press("Control+a")
    page.keyboard.press("Delete")
    if type_it:  # the editor indents the line after "def ...:" itself
        first, *rest = lines
        page.keyboard.type(first, delay=15)
        for line in rest:
            page.keyboard.press("Enter")
            page.keyboard.type(line.strip(), delay=15)
    else:
        page.keyboard.insert_text(lines if isinstance(lines, str) else "\n".join(lines))
    page.keyboard.press("Escape")  # command mode
    text = cells(page).nth(index).locator(".cm-content").inner_text()
    want = lines if isinstance(lines, str) else "\n".join(lines)
    assert code_lines(text) == code_lines(want), text


def code_lines(text: str) -> list[str]:
    """The non-blank lines, stripped (the editor's innerText doubles blank lines)."""
    return [ln.strip() for ln in text.splitlines() if ln.strip()]


def shift_enter_until(page, stop: int) -> None:
    """Shift-Enter from the active cell until cell `stop` is active (not run)."""
    for _ in range(200):
        if active_index(page) == stop:
            return
        page.keyboard.press("Shift+Enter")
        page.wait_for_timeout(150)
    raise AssertionError(f"could not reach cell {stop}")


def find_cells(chapter_nb) -> dict[str, int]:
    """{grade_id or a marker: index} of the cells the test uses."""
    where = {}
    for i, cell in enumerate(chapter_nb.cells):
        gid = cell.metadata.get("nbgrader", {}).get("grade_id")
        if gid:
            where[gid] = i
        if cell.cell_type == "code" and "def train_scratch" in cell.source:
            where["training"] = i
    return where


def test_student_edition_path(edition_lab, tmp_path):
    from playwright.sync_api import sync_playwright

    url, edition = edition_lab
    nb = nbformat.read(edition / "chapters" / CHAPTER / f"{CHAPTER}.ipynb", as_version=4)
    at = find_cells(nb)
    answers = solution_answers(CHAPTER)
    shots = []

    def shot(page, name):
        path = tmp_path / f"{name}.png"
        page.screenshot(path=str(path))
        shots.append(path)
        print(f"screenshot: {path}")

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        open_notebook(page, url)

        # 1. opening marks nothing unsaved: JupyterLab writes the kernel's language_info and
        # kernelspec into the model once the kernel is up; they must already be the same
        page.wait_for_timeout(4000)
        dirty = []
        for _ in range(10):
            dirty.append(is_dirty(page))
            page.wait_for_timeout(300)
        shot(page, "01-opened")

        # 2. the answers a student has written before reaching linreg (and the next two, which
        # the training cell needs), pasted; then linreg, typed, without the bias
        for name in ("synthetic_data", "data_iter", "squared_loss", "sgd"):
            set_source(page, at[f"answer_{name}"], answers[name], type_it=False)
        set_source(page, at["answer_linreg"], WRONG_LINREG, type_it=True)

        # 3. Shift-Enter from the top down to linreg's check cell; time its feedback
        cells(page).nth(0).click()
        page.keyboard.press("Escape")
        shift_enter_until(page, at["test_linreg"])
        wait_idle(page)
        check_cell = at["test_linreg"]
        t0 = time.perf_counter()
        page.keyboard.press("Shift+Enter")
        page.wait_for_function(
            """([i, needle]) => {
                const c = document.querySelectorAll('.jp-Notebook .jp-Cell')[i];
                return c && c.innerText.includes(needle);
            }""", arg=[check_cell, CAUSE], timeout=60_000, polling=20)
        feedback_s = time.perf_counter() - t0
        print(f"Shift-Enter on the check cell -> feedback visible: {feedback_s:.2f} s")
        page.wait_for_timeout(500)  # let the layout settle as a student would see it
        info = page.evaluate(CELL_INFO, [check_cell, CAUSE])
        shot(page, "02-feedback")
        out = info["text"]
        assert "ExerciseFailed" in out and f"likely cause: {CAUSE}" in out, out
        assert "expected:" in out and "received:" in out, out
        for frame_text in ("Traceback", "grader/check.py", "check.py", 'File "', "run_check"):
            assert frame_text not in out, f"grader frames shown ({frame_text!r}):\n{out}"
        cause, view, area = info["cause"], info["view"], info["output"]
        assert cause is not None, info
        in_view = view["top"] <= cause["top"] and cause["bottom"] <= view["bottom"]
        near_top = cause["top"] - area["top"] <= 0.6 * (view["bottom"] - view["top"])
        print(f"cause line at y={cause['top']:.0f}..{cause['bottom']:.0f} px, notebook view "
              f"{view['top']:.0f}..{view['bottom']:.0f}, {cause['top'] - area['top']:.0f} px "
              f"below the top of the cell's output")
        assert in_view or near_top, info
        assert feedback_s < 10, f"feedback took {feedback_s:.1f} s"

        # 4. fix the answer: run it and the check again -> the success line
        set_source(page, at["answer_linreg"], RIGHT_LINREG, type_it=True)
        page.keyboard.press("Shift+Enter")  # the answer cell
        page.wait_for_timeout(200)
        assert active_index(page) == check_cell
        page.keyboard.press("Shift+Enter")  # its check
        page.wait_for_function(
            """([i]) => /linreg: (all \\d+ visible checks passed|the visible check passed)/
                        .test(document.querySelectorAll('.jp-Notebook .jp-Cell')[i].innerText)""",
            arg=[check_cell], timeout=60_000)
        info = page.evaluate(CELL_INFO, [check_cell, None])
        assert "ExerciseFailed" not in info["text"], info["text"]
        shot(page, "03-fixed")

        # 5. on to the training cell: a progress bar and a live plot
        wait_idle(page)
        shift_enter_until(page, at["training"])
        wait_idle(page)
        page.keyboard.press("Shift+Enter")
        train = cells(page).nth(at["training"])
        train.locator(".jp-OutputArea-output img, .jp-OutputArea-output svg").first.wait_for(
            timeout=120_000)
        bar = train.locator(".widget-progress, .jupyter-widgets .progress-bar, "
                            ".jp-OutputArea-output:has-text('epochs')")
        bar.first.wait_for(timeout=60_000)
        wait_idle(page, 300)
        train.scroll_into_view_if_needed()
        shot(page, "04-training")
        text = train.inner_text()
        assert "error in estimating w" in text, text
        assert "epochs" in text and ("100%" in text or train.locator(".widget-progress").count()), \
            text

        # 6. it was the edition's grader that ran in the kernel
        page.keyboard.press("Escape")
        page.keyboard.press("b")  # a cell of the student's own, below
        page.keyboard.press("Enter")
        page.keyboard.type("import grader; print(grader.__file__)")
        page.keyboard.press("Shift+Enter")
        page.wait_for_function("() => document.querySelector('.jp-Notebook').innerText"
                               ".includes('__init__.py')", timeout=30_000)
        text = page.inner_text(".jp-Notebook")
        browser.close()
    assert str(edition / "grader" / "__init__.py") in text, "the kernel did not use the edition"
    assert not any(dirty), f"the notebook was marked unsaved right after opening: {dirty}"
    assert all(s.exists() for s in shots)
