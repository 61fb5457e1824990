"""The judge's view of the student's objects: handles that talk to an observer.

A check never holds a student's object. It holds a `Handle`, and every use of it (calling it,
reading or setting an attribute, iterating, taking its length) is a request to the observer
(`grader.observe`) where the student's code runs: in the grading kernel, or in this process
for the grader's own tests and a student's visible checks. What comes back is plain data
decoded by `grader.wire` (exact types only) or another handle.

Restrictions of the exercise (forbidden torch functions and library code, whether inputs may
be modified) travel with each request as a guard; `Tester.call` sets it for the calls it
makes, including those made by a local helper it wraps.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading

import torch

from grader import wire
from grader.feedback import Mismatch, NotImplementedAnswer

_GUARD: contextvars.ContextVar[dict | None] = contextvars.ContextVar("guard", default=None)


class RemoteFailure(RuntimeError):
    """The observer did not answer (the kernel died, timed out, or answered nonsense)."""


class StudentAttributeError(Mismatch, AttributeError):
    """The student's object has no such attribute (or reading it raised)."""


class StudentError(Mismatch):
    """The student's code raised; the message is feedback, already scrubbed by the judge."""

    def __init__(self, message: str, report: dict):
        super().__init__(message)
        self.report = report


# --- naming torch functions for the observer ---------------------------------------------

_NAMESPACES = ("torch", "torch.Tensor", "torch.nn.functional", "torch.linalg", "torch.special",
               "torch.autograd", "torch.nn.init", "torch.fft")
_PATHS: dict[int, str] = {}
_PATHS_LOCK = threading.Lock()


def torch_path(func) -> str | None:
    """The dotted name of a torch function or Tensor method (for the observer to look up)."""
    with _PATHS_LOCK:
        if not _PATHS:
            from grader.observe import resolve
            for ns in _NAMESPACES:
                try:
                    obj = resolve(ns)
                except (ImportError, AttributeError):
                    continue
                for name in dir(obj):
                    if name.startswith("__"):
                        continue
                    try:
                        _PATHS.setdefault(id(getattr(obj, name)), f"{ns}.{name}")
                    except Exception:  # noqa: BLE001 - some attributes raise on access
                        continue
    return _PATHS.get(id(func))


def make_guard(forbidden: dict | None = None, forbidden_python=(), may_modify: bool = False,
               return_args: bool = False) -> dict:
    """The restrictions of one call, as plain data.

    `forbidden` maps torch functions to the label shown in feedback; `forbidden_python` lists
    (module name, function names or None, label or None): Python code in that module must not
    be called (e.g. ("d2l", {"linreg"}, None) or ("torch.optim", None, "torch.optim")).
    """
    table = []
    for func, label in (forbidden or {}).items():
        path = func if isinstance(func, str) else torch_path(func)
        if path:
            table.append([path, label])
    python = [[m, sorted(n) if n is not None else None, label] for m, n, label in forbidden_python]
    return {"torch": table, "python": python, "may_modify": may_modify, "return_args": return_args}


# --- scrubbing what the student's code says --------------------------------------------------

def scrub(text: str, limit: int = 600) -> str:
    """An exception message without hidden inputs or paths: tensors and long numbers elided."""
    import re

    text = re.sub(r"tensor\((?:[^()]|\([^()]*\))*\)", "tensor(...)", text, flags=re.S)
    text = re.sub(r"array\((?:[^()]|\([^()]*\))*\)", "array(...)", text, flags=re.S)
    text = re.sub(r"\[[-+0-9.eE,\s\[\]naif]{40,}\]", "[...]", text)
    text = re.sub(r"-?\d+\.\d{3,}(?:[eE][-+]?\d+)?", "<number>", text)
    text = re.sub(r"(?<![\w.])/(?:[\w.+-]+/)+[\w.+-]*", "<path>", text)
    text = " ".join(text.split()) if "\n" in text and len(text) > limit else text
    return text if len(text) <= limit else text[:limit] + " ..."


# --- transports and the remote ---------------------------------------------------------------

class Remote:
    """Requests to one observer through `transport(bytes) -> bytes`."""

    def __init__(self, transport, max_answer: int = 256 * 2**20):
        self.transport = transport
        self.max_answer = max_answer
        self.requests = 0

    def _encode_local(self, obj):
        if isinstance(obj, Handle):
            if object.__getattribute__(obj, "_remote") is not self:
                raise wire.WireError("a handle of another kernel")
            return {"$h": object.__getattribute__(obj, "_ref").id}
        raise wire.WireError(
            f"cannot send an object of type {wire.type_path(type(obj))} to the student's code: "
            "send plain data, or build it there with Tester.build")

    def request(self, req: dict):
        self.requests += 1
        data = wire.dumps(req, opaque=self._encode_local)
        answer = self.transport(data)
        try:
            out = wire.loads(answer, refs=lambda ref: Handle(self, ref), max_bytes=self.max_answer)
        except wire.WireError as exc:
            raise RemoteFailure(f"the notebook's kernel sent an answer that is not valid data "
                                f"({exc})") from None
        if type(out) is dict and "failed" in out:
            raise RemoteFailure(f"the notebook's kernel could not answer: {out['failed']}")
        return out

    # helpers used by Handle and Tester
    def report(self, req: dict) -> dict:
        out = self.request(req)
        if type(out) is not dict:
            raise RemoteFailure("the notebook's kernel sent an answer of the wrong shape")
        return out

    def global_(self, name: str):
        out = self.report({"op": "global", "name": name})
        if out.get("missing"):
            raise KeyError(name)
        return out.get("result")

    def build(self, kind: str, *args, **kwargs):
        return self.report({"op": "build", "kind": kind, "args": list(args),
                            "kwargs": kwargs}).get("result")


def local_remote(namespace: dict | None = None) -> Remote:
    """An observer in this process (the grader's tests, a student's visible checks)."""
    from grader.observe import Observer

    observer = Observer(namespace or {})
    return Remote(observer.handle)




# --- handles ---------------------------------------------------------------------------------

def _raise_from_report(report: dict, what: str):
    raised = report.get("raised")
    if type(raised) is not dict:
        return
    if raised.get("not_implemented"):
        raise NotImplementedAnswer(scrub(str(raised.get("message", ""))))
    etype = str(raised.get("type", "Exception"))[:80]
    message = scrub(str(raised.get("message", "")))
    where = raised.get("where")
    line = ""
    if type(where) is dict and where.get("line") is not None:
        text = scrub(str(where.get("text", "")), 200)
        line = (f"\n  in your code, function {str(where.get('function'))[:80]}, line "
                f"{where.get('line')}:" + (f" `{text}`" if text else ""))
    from grader.runner import known_cause

    raise StudentError(f"{what} raised {etype}: {message}{line}{known_cause(message)}", report)


def _check_used(report: dict, what: str):
    used = [str(u) for u in report.get("used_torch", []) or []][:6]
    if used:
        raise Mismatch(f"{what} calls {', '.join(used)}, which this exercise asks you to write "
                       "from scratch with elementary tensor operations.")
    used = [str(u) for u in report.get("used_python", []) or []][:6]
    if used:
        raise Mismatch(f"{what} calls {', '.join(used)}; this exercise asks for your own "
                       "implementation, not a library's.")


def default_guard() -> dict:
    guard = _GUARD.get()
    return guard if guard is not None else {"may_modify": True}


@contextlib.contextmanager
def guarded(guard: dict):
    token = _GUARD.set(guard)
    try:
        yield
    finally:
        _GUARD.reset(token)


class Handle:
    """A student's object living with the observer."""

    __slots__ = ("_remote", "_ref")

    def __init__(self, remote: Remote, ref: wire.Ref):
        object.__setattr__(self, "_remote", remote)
        object.__setattr__(self, "_ref", ref)

    # what the judge may ask without a round trip
    @property
    def type_name(self) -> str:
        return object.__getattribute__(self, "_ref").type

    def is_a(self, *types) -> bool:
        """True if the object's class (or a base) is one of `types` (classes or dotted names)."""
        mro = object.__getattribute__(self, "_ref").mro
        names = {t if isinstance(t, str) else wire.type_path(t) for t in types}
        return any(m in names for m in mro)

    @property
    def info(self) -> dict:
        return object.__getattribute__(self, "_ref").info

    @property
    def is_callable(self) -> bool:
        return object.__getattribute__(self, "_ref").callable

    def __repr__(self) -> str:
        return f"<your {self.type_name.rsplit('.', 1)[-1]} object>"

    def __bool__(self) -> bool:
        return True

    def __eq__(self, other) -> bool:
        return isinstance(other, Handle) and (
            object.__getattribute__(other, "_ref").id == object.__getattribute__(self, "_ref").id)

    def __hash__(self) -> int:
        return hash(("handle", object.__getattribute__(self, "_ref").id))

    def _remote_report(self, req: dict, what: str) -> dict:
        remote = object.__getattribute__(self, "_remote")
        report = remote.report(req)
        _raise_from_report(report, what)
        _check_used(report, what)
        return report

    def __getattr__(self, name: str):
        if name.startswith("__") or name in ("_ipython_display_", "_repr_html_", "_fields"):
            raise AttributeError(name)
        guard = dict(default_guard(), may_modify=True, return_args=False)
        try:
            report = self._remote_report({"op": "getattr", "obj": self, "name": name,
                                          "guard": guard},
                                         f"reading {self.type_name.rsplit('.', 1)[-1]}.{name}")
        except StudentError as exc:
            if exc.report.get("raised", {}).get("type") == "AttributeError":
                raise StudentAttributeError(
                    f"your {self.type_name.rsplit('.', 1)[-1]} has no attribute `{name}`") \
                    from None
            raise
        return report.get("result")

    def __setattr__(self, name: str, value) -> None:
        self._remote_report({"op": "setattr", "obj": self, "name": name, "value": value},
                            f"setting {self.type_name.rsplit('.', 1)[-1]}.{name}")

    def __call__(self, *args, **kwargs):
        guard = dict(default_guard(), return_args=False)
        what = f"{self.type_name.rsplit('.', 1)[-1]}(...)"
        return self._remote_report({"op": "call", "fn": self, "args": list(args),
                                    "kwargs": kwargs, "guard": guard}, what).get("result")

    def method(self, name: str, *args, **kwargs):
        """Call a method (looked up inside the guard)."""
        guard = dict(default_guard(), return_args=False)
        return self._remote_report({"op": "call", "fn": ["attr", self, name], "args": list(args),
                                    "kwargs": kwargs, "guard": guard},
                                   f"{self.type_name.rsplit('.', 1)[-1]}.{name}(...)"
                                   ).get("result")

    def to_list(self, limit: int = 100000, what: str | None = None) -> list:
        out = self._remote_report({"op": "list", "obj": self, "limit": limit,
                                   "guard": dict(default_guard(), may_modify=True)},
                                  what or f"iterating over your {self.type_name}").get("result")
        return out if type(out) is list else []

    def __iter__(self):
        return iter(self.to_list())

    def __len__(self) -> int:
        n = self._remote_report({"op": "len", "obj": self,
                                 "guard": dict(default_guard(), may_modify=True)},
                                f"len() of your {self.type_name}").get("result")
        if type(n) is not int or n < 0:
            raise Mismatch(f"len() of your {self.type_name} should be a non-negative int")
        return n


def is_instance(x, *types) -> bool:
    """isinstance for local objects and handles alike."""
    if isinstance(x, Handle):
        return x.is_a(*types)
    classes = tuple(t for t in types if isinstance(t, type))
    return bool(classes) and isinstance(x, classes)


def write_back(local, new) -> None:
    """Make a local tensor look like its copy after the student's code changed it."""
    if not isinstance(local, torch.Tensor) or not isinstance(new, torch.Tensor):
        return
    with torch.no_grad():
        if local.shape == new.shape and local.dtype == new.dtype:
            local.copy_(new.detach())
        else:
            local.data = new.detach()
    if local.is_leaf:
        if new.requires_grad != local.requires_grad and (local.is_floating_point()
                                                          or local.is_complex()):
            local.requires_grad_(new.requires_grad)
        g = new.grad if new.is_leaf else None
        local.grad = g if (g is not None and g.shape == local.shape and g.dtype == local.dtype
                           and local.requires_grad) else None


class SocketSession:
    """Observations over a Unix socket served by the kernel (`grader.observe.serve_loop`).

    One execute request starts the loop; each request is then a length-prefixed message. Ending
    the session sends an empty request and waits until the kernel is idle again.
    """

    def __init__(self, client, path: str, timeout: float, max_answer: int = 256 * 2**20,
                 start_timeout: float = 30.0):
        import socket
        import time

        self.client, self.path, self.max_answer = client, path, max_answer
        self.deadline = time.monotonic() + timeout
        started = time.monotonic()
        code = ("__import__('grader.observe', fromlist=['serve_loop']).serve_loop("
                f"{path!r})")
        self.msg_id = client.execute(code, silent=True, store_history=False, allow_stdin=False)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        while True:
            try:
                self.sock.connect(path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() > min(self.deadline, started + start_timeout) or \
                        not client.is_alive():
                    self.sock.close()
                    raise RemoteFailure("the kernel did not start answering") from None
                if self._finished():
                    self.sock.close()
                    raise RemoteFailure("the kernel did not start answering (its observer "
                                        "was replaced or failed)") from None
                time.sleep(0.01)

    def _finished(self) -> bool:
        """True once the kernel went idle for our execute request (without waiting)."""
        import queue

        while True:
            try:
                msg = self.client.get_iopub_msg(timeout=0)
            except queue.Empty:
                return False
            if (msg.get("parent_header", {}).get("msg_id") == self.msg_id
                    and msg["msg_type"] == "status"
                    and msg["content"].get("execution_state") == "idle"):
                return True

    def _read(self, n: int) -> bytes:
        import time

        chunks, left = [], n
        while left:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise RemoteFailure("checking took longer than its time limit")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(min(left, 1 << 20))
            except TimeoutError:
                raise RemoteFailure("checking took longer than its time limit") from None
            except OSError as exc:
                raise RemoteFailure(f"the kernel stopped answering ({exc})") from None
            if not chunk:
                raise RemoteFailure("the kernel stopped answering (it may have died)")
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def __call__(self, data: bytes) -> bytes:
        import struct

        try:
            self.sock.sendall(struct.pack("<Q", len(data)) + data)
        except OSError as exc:
            raise RemoteFailure(f"the kernel stopped answering ({exc})") from None
        (n,) = struct.unpack("<Q", self._read(8))
        if n > self.max_answer:
            raise RemoteFailure("the kernel's answer is too large")
        return self._read(n)

    def close(self, timeout: float = 10.0) -> bool:
        """End the loop; True when the kernel is idle again."""
        import queue
        import struct
        import time

        try:
            self.sock.sendall(struct.pack("<Q", 0))
        except OSError:
            pass
        self.sock.close()
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                msg = self.client.get_iopub_msg(timeout=max(0.01, end - time.monotonic()))
            except queue.Empty:
                break
            if (msg.get("parent_header", {}).get("msg_id") == self.msg_id
                    and msg["msg_type"] == "status"
                    and msg["content"].get("execution_state") == "idle"):
                return True
        return False
