"""A student's view, in a real browser: JupyterLab opens chapter 01, runs it, and the check
cell of a wrong answer shows the layered feedback. Uses Debian's chromium (.ci/run installs it);
skipped, saying so, where no chromium is installed."""

import os
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

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="no chromium installed (apt-get install "
                                 "chromium); .ci/run installs it")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lab(tmp_path):
    """JupyterLab on a chapter-01 notebook whose `linreg` forgets the bias."""
    from grader.assign import CHECKED  # noqa: F401 - the package must import

    nb = answered_release("01_linear_regression",
                          {"linreg": "def linreg(X, w, b):\n    return X @ w\n"})
    (tmp_path / "nb").mkdir()
    nbformat.write(nb, tmp_path / "nb" / "01_linear_regression.ipynb")
    port, token = free_port(), "ui-token"
    env = dict(os.environ, GRADER_FAST="1", JUPYTER_CONFIG_DIR=str(tmp_path / "cfg"),
               JUPYTER_DATA_DIR=str(tmp_path / "data"), JUPYTER_RUNTIME_DIR=str(tmp_path / "rt"),
               IPYTHONDIR=str(tmp_path / "ipy"), MPLCONFIGDIR=str(tmp_path / "mpl"))
    env.pop("GRADER_STRICT", None)
    jupyter = Path(sys.executable).parent / "jupyter"
    proc = subprocess.Popen(
        [str(jupyter), "lab", "--no-browser", "--allow-root", "--ip=127.0.0.1", f"--port={port}",
         f"--IdentityProvider.token={token}", f"--notebook-dir={tmp_path / 'nb'}",
         "--ServerApp.answer_yes=True"], env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    yield f"http://127.0.0.1:{port}/lab/tree/01_linear_regression.ipynb?token={token}"
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def test_student_sees_layered_feedback_in_jupyterlab(lab, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(lab)
        page.wait_for_selector(".jp-Notebook", timeout=60_000)
        page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']",
                               timeout=60_000)
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
    assert "ExerciseFailed" in text and "expected:" in text and "received:" in text
    assert "synthetic_data: all" in text and "visible checks passed" in text
