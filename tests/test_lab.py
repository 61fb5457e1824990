"""`make lab` serves the chapters with JupyterLab, prints the URL, and stops on Ctrl-C."""

import os
import re
import signal
import socket
import subprocess
import time
import urllib.request

import pytest

from grader.assign import ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_make_lab_serves_chapter_01_and_stops_on_ctrl_c(tmp_path):
    port, token = free_port(), "test-token"
    env = dict(os.environ,
               JUPYTER_CONFIG_DIR=str(tmp_path / "config"), JUPYTER_DATA_DIR=str(tmp_path / "data"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"), IPYTHONDIR=str(tmp_path / "ipython"),
               MPLCONFIGDIR=str(tmp_path / "mpl"))
    args = f"--no-browser --ip=127.0.0.1 --port={port} --ServerApp.port_retries=0 " \
           f"--IdentityProvider.token={token}"
    proc = subprocess.Popen(["make", "-s", "lab", f"LAB_ARGS={args}"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}/api/contents/01_linear_regression/01_linear_regression.ipynb"
    try:
        deadline, status = time.time() + 90, None
        while time.time() < deadline and proc.poll() is None:
            try:
                req = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
                with urllib.request.urlopen(req, timeout=5) as resp:
                    status, body = resp.status, resp.read().decode()
                    break
            except OSError:
                time.sleep(0.5)
        assert status == 200, "JupyterLab did not serve chapter 01"
        assert '"check(\\"linreg\\", linreg)"' in body or "check('linreg', linreg)" in body
        lab = urllib.request.urlopen(f"http://127.0.0.1:{port}/lab?token={token}", timeout=10)
        assert lab.status == 200
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            pytest.fail(f"make lab did not stop on Ctrl-C:\n{out[-2000:]}")
    assert re.search(rf"http://127\.0\.0\.1:{port}/lab\?token=", out), "the URL is printed"
    assert "Interrupted" in out, "the server saw Ctrl-C"
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0, "the server still listens"
