"""grader/sandbox.py: each defence of the grading kernel, attacked from inside the kernel.

The sandboxed tests skip (with bwrap's reason) where bubblewrap cannot run; the --no-sandbox
tests run everywhere, and `test_no_sandbox_is_not_isolated` shows that the attacks that fail
in the sandbox succeed without it (so the sandboxed tests do test the sandbox).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

from grader import sandbox
from grader.sandbox import GradingKernel, Limits, SandboxUnavailable, check_sandbox

REPO = Path(__file__).resolve().parents[1]
REPO_CHAPTERS = REPO / "grader" / "chapters"


def _bwrap_reason() -> str | None:
    try:
        check_sandbox()
    except SandboxUnavailable as exc:
        return str(exc)
    return None


BWRAP_REASON = _bwrap_reason()
needs_bwrap = pytest.mark.skipif(BWRAP_REASON is not None,
                                 reason=f"bubblewrap sandbox unavailable: {BWRAP_REASON}")
# The tests that run both in the sandbox and without it.
both_modes = pytest.mark.parametrize(
    "sandboxed", [pytest.param(True, marks=needs_bwrap, id="sandbox"),
                  pytest.param(False, id="no-sandbox")])


@pytest.fixture(autouse=True)
def _jupyter_dirs(tmp_path_factory, monkeypatch):
    base = tmp_path_factory.mktemp("jupyter")
    for name in ("JUPYTER_RUNTIME_DIR", "JUPYTER_DATA_DIR", "JUPYTER_CONFIG_DIR", "IPYTHONDIR"):
        monkeypatch.setenv(name, str(base / name.lower()))


def run(kc, code: str, timeout: float = 30) -> tuple[str, str, str]:
    """Execute `code`; (status, stdout, "ename: evalue" or "")."""
    out: list[str] = []
    err: list[str] = []

    def hook(msg):
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream" and content["name"] == "stdout":
            out.append(content["text"])
        elif kind == "error":
            err.append(f"{content['ename']}: {content['evalue']}")

    reply = kc.execute_interactive(textwrap.dedent(code), timeout=timeout, output_hook=hook)
    return reply["content"]["status"], "".join(out), "".join(err)


def interrupted(reply) -> bool:
    """A KeyboardInterrupt reply (or, under load, the request aborted just after one)."""
    content = reply["content"]
    return content.get("status") == "aborted" or content.get("ename") == "KeyboardInterrupt"


def ok(kc, code: str, timeout: float = 30) -> str:
    status, out, err = run(kc, code, timeout)
    if status == "aborted":  # ipykernel aborts requests that arrive just after an error
        time.sleep(0.5)
        status, out, err = run(kc, code, timeout)
    assert status == "ok", err
    return out


def reply_to(kc, msg_id: str, timeout: float = 10) -> dict:
    """The shell reply to `msg_id` (skipping stale replies, e.g. to wait_for_ready's requests)."""
    deadline = time.monotonic() + timeout
    while True:
        reply = kc.get_shell_msg(timeout=max(0.01, deadline - time.monotonic()))
        if reply["parent_header"].get("msg_id") == msg_id:
            return reply


def student_grader(root: Path) -> Path:
    """A tiny student edition of the `grader` package (no `grader.chapters`)."""
    (root / "grader").mkdir(parents=True)
    (root / "grader" / "__init__.py").write_text("EDITION = 'student'\n")
    return root


def processes_with(marker: str) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    if marker.encode() in f.read():
                        found.append(int(name))
            except OSError:
                pass
    return found


def gone(pid: int) -> bool:
    """No such process, or only its zombie (whose parent, maybe init, has not reaped it yet)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in "ZX"
    except OSError:
        return True


def processes_in(workdir: Path) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if Path(os.readlink(f"/proc/{name}/cwd")) == workdir:
                    found.append(int(name))
            except OSError:
                pass
    return found


# ------------------------------------------------------------------ availability

def test_missing_bwrap_is_reported_with_the_remedy(monkeypatch, tmp_path):
    monkeypatch.setattr(sandbox, "BWRAP", str(tmp_path / "no" / "bwrap"))
    with pytest.raises(SandboxUnavailable, match="apt-get install bubblewrap") as info:
        check_sandbox()
    assert "--no-sandbox" in str(info.value)
    with pytest.raises(SandboxUnavailable):
        GradingKernel(tmp_path).start()
    monkeypatch.setattr(sandbox, "BWRAP", None)
    monkeypatch.delenv("GRADER_BWRAP", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SandboxUnavailable, match="not installed.*apt-get install bubblewrap"):
        check_sandbox()


def test_bwrap_that_cannot_sandbox_is_reported(monkeypatch, tmp_path):
    monkeypatch.setattr(sandbox, "BWRAP", "/bin/false")
    with pytest.raises(SandboxUnavailable, match="cannot create the sandbox") as info:
        GradingKernel(tmp_path).start()
    assert "unprivileged_userns_clone" in str(info.value) or "namespace" in str(info.value)
    assert "--no-sandbox" in str(info.value)


# ------------------------------------------------------------------ one sandbox, many attacks

@pytest.fixture(scope="module")
def box(tmp_path_factory):
    """A sandboxed kernel and the files around it; SECRET_TOKEN is in the grader's environment."""
    if BWRAP_REASON is not None:
        pytest.skip(f"bubblewrap sandbox unavailable: {BWRAP_REASON}")
    base = tmp_path_factory.mktemp("box")
    workdir = base / "alice"
    workdir.mkdir()
    (base / "bob").mkdir()
    (base / "bob" / "submission.ipynb").write_text("bob's work")
    course = base / "course"                      # mounted read-only...
    (course / "solutions").mkdir(parents=True)    # ...but these are hidden
    (course / "solutions" / "answer.py").write_text("SECRET_SOLUTION = 42\n")
    (course / "gradebook.db").write_text("grades")
    (course / "data.txt").write_text("public data")
    outside = base / "solutions"                  # not mounted at all (and also in hide)
    outside.mkdir()
    (outside / "key.py").write_text("KEY = 1\n")
    python_path = student_grader(base / "student")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SECRET_TOKEN", "xyz")
        gk = GradingKernel(workdir, python_path=[python_path], readonly=[course],
                           hide=[course / "solutions", course / "gradebook.db", outside],
                           env={"GRADER_FAST": "1"})
        kc = gk.start()
    yield SimpleNamespace(gk=gk, kc=kc, base=base, workdir=workdir, course=course,
                          outside=outside, python_path=python_path)
    gk.kill()


@needs_bwrap
def test_files_outside_the_binds_and_hidden_files_cannot_be_read(box):
    assert ok(box.kc, f"print(open({str(box.course / 'data.txt')!r}).read())") == "public data\n"
    for path in (box.outside / "key.py", box.course / "solutions" / "answer.py",
                 box.course / "gradebook.db", box.base / "bob" / "submission.ipynb"):
        assert path.exists()
        status, _, err = run(box.kc, f"open({str(path)!r}).read()")
        assert status == "error" and ("FileNotFoundError" in err or "PermissionError" in err), path
    assert ok(box.kc, f"import os; print(os.listdir({str(box.course / 'solutions')!r}))") == "[]\n"


@needs_bwrap
def test_repository_chapters_and_solutions_cannot_be_read(box):
    chapter = REPO_CHAPTERS / "linear_regression.py"
    if not chapter.exists():  # the chapters were reorganised: any reference module will do
        chapter = next(REPO_CHAPTERS.glob("*.py"))
    status, _, err = run(box.kc, f"open({str(chapter)!r}).read()")
    assert status == "error" and "FileNotFoundError" in err
    # the student edition of `grader` is importable; the repository's (editable install) is not
    assert ok(box.kc, "import grader; print(grader.EDITION)") == "student\n"
    status, _, err = run(box.kc, "import grader.chapters.linear_regression")
    assert status == "error" and "ModuleNotFoundError" in err
    for name in ("solutions", "tests", "grader"):
        status, _, err = run(box.kc, f"import os; os.listdir({str(REPO / name)!r})")
        assert status == "error" and "FileNotFoundError" in err, name


@needs_bwrap
def test_no_network_not_even_loopback(box):
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    try:
        status, _, err = run(box.kc, f"""
            import socket
            socket.create_connection(("127.0.0.1", {port}), timeout=3)""")
        assert status == "error" and ("ConnectionRefusedError" in err or "OSError" in err), err
        status, _, err = run(box.kc, "import socket; socket.getaddrinfo('pypi.org', 443)")
        assert status == "error" and "gaierror" in err
        status, _, err = run(box.kc, """
            import socket
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.connect(("8.8.8.8", 53))""")
        assert status == "error" and "unreachable" in err.lower()
        out = ok(box.kc, "import socket; print(socket.if_nameindex())")
        assert "eth" not in out and "ens" not in out
    finally:
        listener.close()


@needs_bwrap
def test_only_workdir_is_writable(box):
    targets = ["/x", "/usr/x", "/etc/x", f"{sys.prefix}/x", f"{box.course}/x",
               f"{box.python_path}/grader/x.py", f"{box.base}/x", f"{box.outside}/x",
               f"{box.course}/solutions/x", "/dev/x", "/proc/x"]
    for target in targets:
        status, _, err = run(box.kc, f"open({target!r}, 'w').write('pwned')")
        assert status == "error" and ("OSError" in err or "PermissionError" in err
                                      or "FileNotFoundError" in err), target
        assert not Path(target).exists()
    private = f"/tmp/sandbox-test-{uuid.uuid4().hex}"
    ok(box.kc, f"open('result.txt', 'w').write('written inside'); open({private!r}, 'w').write('t')")
    ok(box.kc, "open('/dev/null', 'w').write('x'); open('/dev/shm/x', 'w').write('x')")
    assert (box.workdir / "result.txt").read_text() == "written inside"
    assert ok(box.kc, "import os; print(os.getcwd() == os.environ['HOME'])") == "True\n"
    assert ok(box.kc, "import os; print(os.getcwd())") == f"{box.workdir}\n"
    assert not Path(private).exists()  # the sandbox's /tmp is its own


@needs_bwrap
def test_instructor_environment_does_not_leak(box):
    env = json.loads(ok(box.kc, "import os, json; print(json.dumps(dict(os.environ)))"))
    assert "SECRET_TOKEN" not in env
    assert env["GRADER_FAST"] == "1"  # the caller's `env`
    assert env["HOME"] == str(box.workdir)
    assert env["PYTHONPATH"] == str(box.python_path)
    assert env["MPLBACKEND"] == "Agg"
    allowed = {"PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "PYTHONHASHSEED",
               "PYTHONDONTWRITEBYTECODE", "PYTHONNOUSERSITE", "PYTHONPATH", "MPLBACKEND",
               "MPLCONFIGDIR", "IPYTHONDIR", "JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR",
               "JUPYTER_RUNTIME_DIR", "JUPYTER_PLATFORM_DIRS", "TMPDIR", "GRADER_FAST",
               "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
               # set by ipykernel itself
               "CLICOLOR", "CLICOLOR_FORCE", "FORCE_COLOR", "PAGER", "GIT_PAGER", "TERM",
               "PYDEVD_USE_FRAME_EVAL"}
    assert set(env) <= allowed, set(env) - allowed


@needs_bwrap
def test_own_pid_namespace_and_no_privileges(box):
    status, _, err = run(box.kc, f"import os; os.kill({os.getpid()}, 0)")
    assert status == "error" and "ProcessLookupError" in err
    pids = ok(box.kc, "import os; print(' '.join(p for p in os.listdir('/proc') if p.isdigit()))")
    pids = pids.split()
    assert len(pids) < 10, pids  # bwrap's init, the kernel and its helpers only
    # --new-session: the session leader is inside the sandbox (outside it, getsid would be 0)
    assert ok(box.kc, "import os; print(os.getsid(0) in (1, os.getpid()))") == "True\n"
    status = ok(box.kc, "print(open('/proc/self/status').read())")
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    assert int(fields["CapEff"].strip(), 16) == 0
    assert fields["NoNewPrivs"].strip() == "1"
    if os.geteuid() == 0:  # root's sandbox drops to an unprivileged uid
        assert int(fields["Uid"].split()[0]) != 0
        assert box.workdir.stat().st_uid != 0


@needs_bwrap
def test_interrupt_stops_a_running_cell(box):
    msg_id = box.kc.execute("import time; time.sleep(60)")
    time.sleep(0.5)
    began = time.monotonic()
    box.gk.interrupt()
    reply = reply_to(box.kc, msg_id)
    assert reply["content"]["status"] == "error"
    assert reply["content"]["ename"] == "KeyboardInterrupt"
    assert time.monotonic() - began < 5
    time.sleep(0.5)  # ipykernel aborts requests that arrive just after an error
    # nbclient's way (KernelManager.interrupt_kernel, interrupt_mode "message") works too
    msg_id = box.kc.execute("import time; time.sleep(60)")
    time.sleep(0.5)
    box.gk.manager.interrupt_kernel()
    reply = reply_to(box.kc, msg_id)
    assert interrupted(reply)
    time.sleep(0.5)
    # the fallback: SIGINT to the kernel's host pid, across the PID namespace
    msg_id = box.kc.execute("import time; time.sleep(60)")
    time.sleep(0.5)
    box.gk._signal_interrupt()
    reply = reply_to(box.kc, msg_id)
    assert interrupted(reply)
    time.sleep(0.5)
    assert ok(box.kc, "print(1 + 1)") == "2\n"


@needs_bwrap
def test_nbclient_drives_the_manager_and_interrupts_on_timeout(tmp_path):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(src) for src in (
        "print(6 * 7)", "import time; time.sleep(60)", "print('after')")])
    with GradingKernel(tmp_path) as gk:
        gk.start()
        began = time.monotonic()
        NotebookClient(nb, km=gk.manager, timeout=2, interrupt_on_timeout=True,
                       allow_errors=True).execute()
        assert time.monotonic() - began < 20
    outputs = [[o.get("text") or o.get("ename") for o in cell.outputs] for cell in nb.cells]
    assert outputs == [["42\n"], ["KeyboardInterrupt"], ["after\n"]]


# ------------------------------------------------------------------ killing

DAEMON = """
    import os, signal, sys, time
    code = '''
    import signal, sys, time
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, signal.SIG_IGN)
    i = 0
    while True:
        i += 1
        open('heartbeat', 'w').write(str(i))
        time.sleep(0.1)
    '''
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            os.execv(sys.executable, [sys.executable, '-c', code, '{marker}'])
        os._exit(0)
    os.wait()
"""


def _beats(workdir: Path) -> int:
    try:
        return int((workdir / "heartbeat").read_text() or 0)
    except (OSError, ValueError):
        return 0


def _start_daemon(kc, workdir: Path) -> str:
    marker = f"daemon-{uuid.uuid4().hex}"
    ok(kc, DAEMON.replace("{marker}", marker))
    deadline = time.monotonic() + 10
    while _beats(workdir) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _beats(workdir) >= 3, "the daemon never beat"
    return marker


def _assert_dead(workdir: Path, marker: str) -> None:
    time.sleep(0.5)
    before = _beats(workdir)
    time.sleep(1.0)
    assert _beats(workdir) == before, "the daemon still beats after kill()"
    assert processes_with(marker) == []


@both_modes
def test_kill_takes_a_double_forked_setsid_daemon_with_it(tmp_path, sandboxed):
    gk = GradingKernel(tmp_path, sandbox=sandboxed)
    kc = gk.start()
    marker = _start_daemon(kc, tmp_path)
    assert processes_with(marker)
    gk.kill()
    assert not gk.alive()
    _assert_dead(tmp_path, marker)
    gk.kill()  # idempotent


@both_modes
def test_shutdown_through_the_kernel_manager_also_kills_the_daemon(tmp_path, sandboxed):
    """nbclient ends with km.shutdown_kernel(): that path must empty the sandbox as well."""
    with GradingKernel(tmp_path, sandbox=sandboxed) as gk:
        kc = gk.start()
        marker = _start_daemon(kc, tmp_path)
        kc.stop_channels()
        gk.manager.shutdown_kernel(now=False)
        _assert_dead(tmp_path, marker)


@both_modes
def test_kill_a_kernel_that_ignores_sigint_and_sigterm(tmp_path, sandboxed):
    with GradingKernel(tmp_path, sandbox=sandboxed) as gk:
        kc = gk.start()
        ok(kc, """
            import os, signal
            for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(s, signal.SIG_IGN)
            try:
                os.setsid()
            except OSError:
                pass""")
        kc.execute("while True: pass")
        time.sleep(0.3)
        outer = gk.manager.provisioner.process.pid  # bwrap, or the --no-sandbox launcher
        kernel = sandbox._kernel_pid(outer)
        assert kernel is not None
        began = time.monotonic()
        gk.kill()
        assert time.monotonic() - began < 5
        assert not gk.alive()
        assert gone(kernel) and gone(outer)


GRADER_THAT_DIES = """
import importlib.util, sys, time
from pathlib import Path
spec = importlib.util.spec_from_file_location("sandbox", sys.argv[1])
sandbox = importlib.util.module_from_spec(spec)
sys.modules["sandbox"] = sandbox
spec.loader.exec_module(sandbox)
gk = sandbox.GradingKernel(Path(sys.argv[2]), sandbox=sys.argv[3] == "1")
kc = gk.start()
kc.execute_interactive(sys.argv[4], timeout=30, output_hook=lambda msg: None)
print("started", flush=True)
time.sleep(120)
"""


@both_modes
def test_the_sandbox_dies_with_the_grader(tmp_path, sandboxed):
    """--die-with-parent (no-sandbox: the launcher's PR_SET_PDEATHSIG): a grader that crashes
    or is SIGKILLed leaves no kernel and no daemon behind."""
    marker = f"daemon-{uuid.uuid4().hex}"
    workdir = tmp_path / "work"
    workdir.mkdir()
    scratch = tempfile.mkdtemp(prefix="gk-")  # the dead grader's connection directory goes here
    grader_process = subprocess.Popen(
        [sys.executable, "-c", GRADER_THAT_DIES, sandbox.__file__, str(workdir),
         "1" if sandboxed else "0", textwrap.dedent(DAEMON.replace("{marker}", marker))],
        stdout=subprocess.PIPE, text=True, env=dict(os.environ, TMPDIR=scratch))
    try:
        assert grader_process.stdout.readline() == "started\n"
        assert processes_with(marker)
        grader_process.kill()
        grader_process.wait()
        deadline = time.monotonic() + 5
        while processes_with(marker) and time.monotonic() < deadline:
            time.sleep(0.1)
        _assert_dead(workdir, marker)
        assert processes_in(workdir) == []
    finally:
        grader_process.kill()
        shutil.rmtree(scratch, ignore_errors=True)


@needs_bwrap
def test_restart_gives_a_fresh_kernel_in_the_same_workdir(tmp_path):
    with GradingKernel(tmp_path) as gk:
        kc = gk.start()
        ok(kc, "x = 41; open('kept.txt', 'w').write('kept')")
        kc = gk.restart()
        assert gk.client is kc and gk.alive()
        status, _, err = run(kc, "x")
        assert status == "error" and "NameError" in err
        assert ok(kc, "print(open('kept.txt').read())") == "kept\n"


# ------------------------------------------------------------------ resource limits

@both_modes
def test_memory_bomb_raises_memory_error(tmp_path, sandboxed):
    with GradingKernel(tmp_path, sandbox=sandboxed, limits=Limits(memory_bytes=1 * 2**30)) as gk:
        kc = gk.start()
        for bomb in ("import numpy as np; a = np.ones(2**30, dtype=np.float64)",  # 8 GiB
                     "b = bytearray(8 * 2**30)",
                     "import mmap; m = mmap.mmap(-1, 16 * 2**30)"):  # shared: the RLIMIT_AS backstop
            status, _, err = run(kc, bomb)
            assert status == "error" and ("MemoryError" in err or "OSError" in err), (bomb, err)
        assert ok(kc, "import numpy as np; print(np.ones(2**24).sum())") == f"{2.0**24}\n"


@both_modes
def test_file_size_bomb_fails(tmp_path, sandboxed):
    with GradingKernel(tmp_path, sandbox=sandboxed, limits=Limits(file_bytes=2**20)) as gk:
        kc = gk.start()
        status, _, err = run(kc, "open('big.bin', 'wb').write(b'x' * 2**21)")
        assert status == "error" and "File too large" in err
        assert (tmp_path / "big.bin").stat().st_size <= 2**20


def test_open_files_are_limited(tmp_path):
    with GradingKernel(tmp_path, sandbox=False, limits=Limits(open_files=128)) as gk:
        kc = gk.start()
        status, _, err = run(kc, "fs = [open('f', 'w') for _ in range(200)]")
        assert status == "error" and "Too many open files" in err


def test_cpu_time_is_limited(tmp_path):
    with GradingKernel(tmp_path, sandbox=False, limits=Limits(cpu_seconds=3)) as gk:
        kc = gk.start()
        kc.execute("while True: pass")
        deadline = time.monotonic() + 20
        while gk.alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not gk.alive()


@needs_bwrap
def test_fork_bomb_is_limited(tmp_path):
    with GradingKernel(tmp_path, limits=Limits(processes=64)) as gk:
        kc = gk.start()
        out = ok(kc, """
            import os, time
            n = 0
            try:
                for _ in range(300):
                    if os.fork() == 0:
                        time.sleep(60)
                        os._exit(0)
                    n += 1
            except OSError as e:
                print(n, type(e).__name__)""", timeout=60)
        forks, error = out.split()
        assert error == "BlockingIOError" and int(forks) < 64, out
    assert processes_in(tmp_path) == []


@needs_bwrap
@pytest.mark.slow
def test_torch_imports_and_computes_inside_the_default_sandbox(tmp_path):
    with GradingKernel(tmp_path) as gk:
        kc = gk.start()
        out = ok(kc, """
            import torch, numpy, matplotlib.pyplot as plt
            x = torch.randn(256, 256)
            print(torch.__version__.split('+')[0], float((x @ x.T).trace()) > 0)
            plt.plot([1, 2]); plt.savefig('plot.png')""", timeout=120)
        assert out.split()[1] == "True"
        assert (tmp_path / "plot.png").stat().st_size > 0


# ------------------------------------------------------------------ timing and --no-sandbox

def test_start_time_is_measured(tmp_path):
    """Prints the start time of a kernel with and without the sandbox (no assertion on it)."""
    times = {}
    for sandboxed in (False, True):
        if sandboxed and BWRAP_REASON is not None:
            continue
        workdir = tmp_path / str(sandboxed)
        workdir.mkdir()
        with GradingKernel(workdir, sandbox=sandboxed) as gk:
            gk.start()
            times["sandbox" if sandboxed else "no-sandbox"] = gk.start_seconds
    print("kernel start time:", ", ".join(f"{k} {v:.2f} s" for k, v in times.items()))
    assert all(v > 0 for v in times.values())


def test_no_sandbox_keeps_the_api_env_allowlist_and_interrupt(tmp_path, monkeypatch):
    monkeypatch.setenv("SECRET_TOKEN", "xyz")
    python_path = student_grader(tmp_path / "student")
    workdir = tmp_path / "work"
    workdir.mkdir()
    with GradingKernel(workdir, sandbox=False, python_path=[python_path], env={"A": "b"}) as gk:
        kc = gk.start()
        env = json.loads(ok(kc, "import os, json; print(json.dumps(dict(os.environ)))"))
        assert "SECRET_TOKEN" not in env and env["A"] == "b" and env["HOME"] == str(workdir)
        assert ok(kc, "import grader; print(grader.EDITION)") == "student\n"
        msg_id = kc.execute("import time; time.sleep(60)")
        time.sleep(0.5)
        gk.interrupt()
        reply = reply_to(kc, msg_id)
        assert reply["content"]["ename"] == "KeyboardInterrupt"
        connection = Path(gk.manager.connection_file)
        assert connection.exists() and "ipc" in connection.read_text()
    assert not connection.exists()


def test_no_sandbox_is_not_isolated(tmp_path):
    """What the sandbox prevents works without it: the sandboxed tests above do test it."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    secret = tmp_path / "solutions" / "answer.py"
    secret.parent.mkdir()
    secret.write_text("42")
    workdir = tmp_path / "work"
    workdir.mkdir()
    try:
        with GradingKernel(workdir, sandbox=False, hide=[secret.parent]) as gk:
            kc = gk.start()
            ok(kc, f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=3)")
            assert ok(kc, f"print(open({str(secret)!r}).read())") == "42\n"
            ok(kc, f"import os; print(os.listdir({str(REPO_CHAPTERS)!r}))")
            ok(kc, f"open({str(tmp_path / 'outside.txt')!r}, 'w').write('x')")
    finally:
        listener.close()


def test_hidden_path_that_is_also_mounted_is_refused(tmp_path):
    if BWRAP_REASON is not None:
        pytest.skip(f"bubblewrap sandbox unavailable: {BWRAP_REASON}")
    data = tmp_path / "data"
    data.mkdir()
    with pytest.raises(ValueError, match="hide"):
        GradingKernel(tmp_path, readonly=[data], hide=[data]).start()
