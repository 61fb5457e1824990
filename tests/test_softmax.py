"""Chapter 02: references agree with torch; the hidden checks accept correct answers written
differently and reject realistic buggy ones (naive softmax, global max, wrong axis, logits taken
for probabilities, fraction for count, missing net.train(), ...) with specific feedback."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from grader.chapters import softmax as ref
from grader.testing import assert_loses_marks

CH = "02_softmax"


# --- references against torch built-ins -------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_references_match_torch(dtype):
    X = (torch.randn(20, 7, dtype=torch.float64) * 1e4).to(dtype)
    y = torch.randint(0, 7, (20,))
    torch.testing.assert_close(ref.softmax(X), torch.softmax(X, 1))
    torch.testing.assert_close(ref.logsumexp(X), torch.logsumexp(X, 1))
    torch.testing.assert_close(ref.log_softmax(X), torch.log_softmax(X, 1))
    torch.testing.assert_close(ref.cross_entropy(X, y), F.cross_entropy(X, y, reduction="none"))


def test_exp_range_is_the_edge_of_overflow_and_underflow():
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        lo, hi = ref.exp_range(dtype)
        tiny = torch.finfo(dtype).tiny
        assert torch.isinf(torch.exp(torch.tensor(hi * 1.01, dtype=dtype)))
        assert torch.isfinite(torch.exp(torch.tensor(hi * 0.99, dtype=dtype)))
        assert torch.exp(torch.tensor(lo * 0.99, dtype=dtype)) >= tiny
        assert torch.exp(torch.tensor(lo * 1.01, dtype=dtype)) < tiny


def test_train_epoch_reference_learns():
    torch.manual_seed(0)
    X = torch.randn(200, 1, 4)
    y = (X[:, 0, 0] > 0).long()
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    batches = [(X[i:i + 20], y[i:i + 20]) for i in range(0, 200, 20)]
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    first = ref.train_epoch(net, batches, ref.cross_entropy, opt)
    for _ in range(5):
        last = ref.train_epoch(net, batches, ref.cross_entropy, opt)
    assert last[0] < first[0] and last[1] > 0.9


# --- correct variants ----------------------------------------------------------------------

def softmax_d2l_stable(X):
    X_exp = torch.exp(X - X.max(1, keepdim=True)[0])
    partition = X_exp.sum(1, keepdim=True)
    return X_exp / partition


def softmax_via_lse(X):
    return torch.exp(X - logsumexp_loop(X).reshape(-1, 1))


def softmax_loop(X):
    rows = []
    for row in X:
        e = torch.exp(row - torch.max(row))
        rows.append(e / torch.sum(e))
    return torch.stack(rows)


def logsumexp_loop(X):
    out = torch.empty(X.shape[0], dtype=X.dtype)
    for i in range(X.shape[0]):
        m = X[i].max()
        out[i] = m + torch.log(torch.exp(X[i] - m).sum())
    return out


def logsumexp_amax(X):
    c = torch.amax(X, dim=-1, keepdim=True)
    return (c + (X - c).exp().sum(-1, keepdim=True).log()).squeeze(-1)


def logsumexp_log1p(X):
    m, idx = X.max(1, keepdim=True)
    rest = torch.exp(X - m).sum(1) - 1  # the max contributes exp(0) = 1 exactly
    return m.squeeze(1) + torch.log1p(rest)


def log_softmax_keepdim(X):
    return X - logsumexp_amax(X)[:, None]


def log_softmax_shift(X):
    Z = X - X.max(dim=1, keepdim=True).values
    return Z - torch.log(torch.exp(Z).sum(dim=1, keepdim=True))


def ls_loop(X):
    return torch.stack([row - logsumexp_loop(row[None])[0] for row in X])


def ce_gather(logits, y):
    return logsumexp_amax(logits) - logits.gather(1, y.reshape(-1, 1)).reshape(-1)


def ce_one_hot(logits, y):
    one_hot = torch.zeros_like(logits)
    one_hot[torch.arange(len(y)), y] = 1
    return -(one_hot * log_softmax_shift(logits)).sum(1)


def ce_loop(logits, y):
    return torch.stack([logsumexp_loop(logits[i:i + 1])[0] - logits[i, y[i]]
                        for i in range(len(y))])


def accuracy_d2l(y_hat, y):
    if len(y_hat.shape) > 1 and y_hat.shape[1] > 1:
        y_hat = y_hat.argmax(axis=1)
    cmp = y_hat.type(y.dtype) == y
    return float(cmp.type(y.dtype).sum())


def accuracy_loop(y_hat, y):
    if y_hat.dim() == 2:
        y_hat = torch.max(y_hat, dim=1).indices
    return float(sum(int(a) == int(b) for a, b in zip(y_hat.tolist(), y.tolist())))


def accuracy_where(y_hat, y):
    preds = y_hat.argmax(-1) if y_hat.dim() == 2 else y_hat.long()
    return torch.where(preds == y, 1.0, 0.0).sum().item()


def ce_where(logits, y):
    hit = torch.arange(logits.shape[1])[None, :] == y[:, None]
    return -torch.where(hit, log_softmax_shift(logits), torch.zeros_like(logits)).sum(1)


def softmax_where(X):
    m = X[:, :1]
    for j in range(1, X.shape[1]):  # a running row max with torch.where
        m = torch.where(X[:, j:j + 1] > m, X[:, j:j + 1], m)
    e = torch.exp(X - m)
    return e / e.sum(1, keepdim=True)


def train_epoch_d2l(net, train_iter, loss, updater):
    if isinstance(net, torch.nn.Module):
        net.train()
    metric = [0.0, 0.0, 0.0]
    for X, y in train_iter:
        y_hat = net(X)
        l = loss(y_hat, y)
        if isinstance(updater, torch.optim.Optimizer):
            updater.zero_grad()
            l.mean().backward()
            updater.step()
        else:
            l.sum().backward()
            updater(X.shape[0])
        metric = [a + float(b) for a, b in zip(metric, (l.sum(), accuracy_d2l(y_hat, y),
                                                          y.numel()))]
    return metric[0] / metric[2], metric[1] / metric[2]


def train_epoch_tensors(net, train_iter, loss, updater):
    if hasattr(net, "train"):
        net.train(True)
    losses, hits = [], []
    for X, y in train_iter:
        y_hat = net(X)
        l = loss(y_hat, y)
        if isinstance(updater, torch.optim.Optimizer):
            l.mean().backward()
            updater.step()
            updater.zero_grad(set_to_none=False)  # zeroed after the step: same effect
        else:
            l.sum().backward()
            updater(len(y))
        losses.append(l.detach())
        hits.append(y_hat.detach().argmax(1) == y)
    return torch.cat(losses).mean(), torch.cat(hits).double().mean().item()


def exp_range_manual(dtype):
    info = torch.finfo(dtype)
    return float(torch.tensor(info.smallest_normal, dtype=torch.float64).log()), \
        math.log(float(info.max))


CORRECT = [
    ("softmax", ref.softmax),
    ("softmax", softmax_d2l_stable),
    ("softmax", softmax_via_lse),
    ("softmax", softmax_loop),
    ("softmax", softmax_where),
    ("logsumexp", ref.logsumexp),
    ("logsumexp", logsumexp_loop),
    ("logsumexp", logsumexp_amax),
    ("logsumexp", logsumexp_log1p),
    ("log_softmax", ref.log_softmax),
    ("log_softmax", log_softmax_keepdim),
    ("log_softmax", log_softmax_shift),
    ("log_softmax", ls_loop),
    ("cross_entropy", ref.cross_entropy),
    ("cross_entropy", ce_gather),
    ("cross_entropy", ce_one_hot),
    ("cross_entropy", ce_loop),
    ("cross_entropy", ce_where),
    ("accuracy", ref.accuracy),
    ("accuracy", accuracy_d2l),
    ("accuracy", accuracy_loop),
    ("accuracy", accuracy_where),
    ("train_epoch", ref.train_epoch),
    ("train_epoch", train_epoch_d2l),
    ("train_epoch", train_epoch_tensors),
    ("exp_range", ref.exp_range),
    ("exp_range", exp_range_manual),
]


# --- buggy variants ------------------------------------------------------------------------

def softmax_naive(X):
    X_exp = torch.exp(X)
    return X_exp / X_exp.sum(1, keepdim=True)


def softmax_global_max(X):
    return softmax_naive(X - X.max())


def softmax_axis0(X):
    e = torch.exp(X - X.max(0, keepdim=True).values)
    return e / e.sum(0, keepdim=True)


def softmax_no_keepdim(X):
    return softmax_naive(X - X.max(dim=1).values)


def softmax_builtin(X):
    return torch.softmax(X, dim=1)


def softmax_tensor_method(X):
    return X.softmax(-1)


def softmax_special(X):
    return torch.special.softmax(X, 1)


def softmax_inplace(X):
    X -= X.max(1, keepdim=True).values
    return softmax_naive(X)


def softmax_float32(X):
    return softmax_d2l_stable(X.float())


def lse_naive(X):
    return torch.log(torch.exp(X).sum(1))


def lse_global(X):
    m = X.max()
    return m + torch.log(torch.exp(X - m).sum(1))


def lse_no_add_back(X):
    m = X.max(1, keepdim=True).values
    return torch.log(torch.exp(X - m).sum(1))


def lse_axis0(X):
    return logsumexp_amax(X.T)


def lse_keepdim(X):
    return logsumexp_amax(X)[:, None]


def lse_builtin(X):
    return torch.logsumexp(X, 1)


def ls_via_softmax(X):
    return torch.log(softmax_d2l_stable(X))


def ls_broadcast(X):
    return X - logsumexp_amax(X)


def ls_naive(X):
    return X - torch.log(torch.exp(X).sum(1, keepdim=True))


def ls_global_max(X):
    Z = X - X.max()
    return Z - torch.log(torch.exp(Z).sum(1, keepdim=True))


def ls_axis0(X):
    return X - logsumexp_amax(X.T)[None, :]


def ls_builtin(X):
    return F.log_softmax(X, dim=1)


def ce_d2l_probabilities(y_hat, y):
    return -torch.log(y_hat[range(len(y_hat)), y])


def ce_log_softmax_probs(logits, y):
    return -torch.log(softmax_d2l_stable(logits)[range(len(logits)), y])


def ce_columns(logits, y):
    return logsumexp_amax(logits) - logits[:, y]


def ce_mean(logits, y):
    return ce_gather(logits, y).mean()


def ce_builtin(logits, y):
    return F.cross_entropy(logits, y, reduction="none")


def ce_module(logits, y):
    return nn.CrossEntropyLoss(reduction="none")(logits, y)


def ce_nll(logits, y):
    return F.nll_loss(log_softmax_shift(logits), y, reduction="none")


def ce_sign(logits, y):
    return logits.gather(1, y[:, None])[:, 0] - logsumexp_amax(logits)


def acc_fraction(y_hat, y):
    return accuracy_d2l(y_hat, y) / len(y)


def acc_tensor(y_hat, y):
    return (y_hat.argmax(1) == y).sum()


def acc_int(y_hat, y):
    if y_hat.dim() > 1:
        y_hat = y_hat.argmax(1)
    return int((y_hat == y).sum())


def acc_axis0(y_hat, y):
    if y_hat.dim() > 1:
        y_hat = y_hat.argmax(0)
    return float((y_hat == y).sum())


def acc_always_argmax(y_hat, y):
    return float((y_hat.argmax(-1) == y).sum())


def acc_d2l(y_hat, y):
    from d2l import torch as d2l
    return d2l.accuracy(y_hat, y)


def _train(net, train_iter, loss, updater, *, train=True, zero=True, flip=False, ret=None):
    if train and isinstance(net, torch.nn.Module):
        net.train()
    total, correct, n, means = 0.0, 0.0, 0, []
    for X, y in train_iter:
        y_hat = net(X)
        l = loss(y_hat, y)
        if isinstance(updater, torch.optim.Optimizer):
            if zero:
                updater.zero_grad()
            (l.sum() if flip else l.mean()).backward()
            updater.step()
        else:
            (l.mean() if flip else l.sum()).backward()
            updater(X.shape[0])
        total += l.sum().item()
        correct += accuracy_d2l(y_hat, y)
        n += len(y)
        means.append(l.mean().item())
    if ret == "sum":
        return total, correct / n
    if ret == "batch_means":
        return sum(means) / len(means), correct / n
    if ret == "count":
        return total / n, correct
    return total / n, correct / n


def train_always_train(net, train_iter, loss, updater):
    net.train()
    return _train(net, train_iter, loss, updater)


BUGGY = [
    ("softmax", softmax_naive, "subtract each row's max"),
    ("softmax", softmax_global_max, "global max"),
    ("softmax", softmax_axis0, "wrong axis"),
    ("softmax", softmax_no_keepdim, "keepdim"),
    ("softmax", softmax_builtin, "from scratch"),
    ("softmax", softmax_tensor_method, "Tensor.softmax"),
    ("softmax", softmax_special, "torch.special.softmax"),
    ("softmax", softmax_inplace, "in place"),
    ("softmax", softmax_float32, "dtype"),
    ("logsumexp", lse_naive, "naive"),
    ("logsumexp", lse_global, "global max"),
    ("logsumexp", lse_no_add_back, "not added back"),
    ("logsumexp", lse_axis0, "wrong axis"),
    ("logsumexp", lse_keepdim, "shape"),
    ("logsumexp", lse_builtin, "torch.logsumexp"),
    ("log_softmax", ls_via_softmax, "log(softmax(X))"),
    ("log_softmax", ls_broadcast, "reshape it to (n, 1)"),
    ("log_softmax", ls_naive, "naive log-sum-exp"),
    ("log_softmax", ls_builtin, "F.log_softmax"),
    ("log_softmax", ls_global_max, "global max"),
    ("log_softmax", ls_axis0, "wrong axis"),
    ("cross_entropy", ce_d2l_probabilities, "treated as probabilities"),
    ("cross_entropy", ce_log_softmax_probs, "infinite loss"),
    ("cross_entropy", ce_columns, "logits[torch.arange(n), y]"),
    ("cross_entropy", ce_mean, "reduction"),
    ("cross_entropy", ce_builtin, "F.cross_entropy"),
    ("cross_entropy", ce_module, "nn.CrossEntropyLoss"),
    ("cross_entropy", ce_nll, "F.nll_loss"),
    ("cross_entropy", ce_sign, "sign"),
    ("accuracy", acc_fraction, "fraction correct instead"),
    ("accuracy", acc_tensor, "expected a Python float"),
    ("accuracy", acc_int, "float(count)"),
    ("accuracy", acc_axis0, "wrong axis"),
    ("accuracy", acc_always_argmax, "already holds predicted labels"),
    ("accuracy", acc_d2l, "d2l"),
    ("train_epoch", lambda *a: _train(*a, train=False), "net.train()"),
    ("train_epoch", train_always_train, "plain function"),
    ("train_epoch", lambda *a: _train(*a, zero=False), "zero_grad"),
    ("train_epoch", lambda *a: _train(*a, flip=True), "l.mean()"),
    ("train_epoch", lambda *a: _train(*a, ret="sum"), "summed loss"),
    ("train_epoch", lambda *a: _train(*a, ret="batch_means"), "mean of the batch means"),
    ("train_epoch", lambda *a: _train(*a, ret="count"), "number correct instead"),
    ("exp_range", lambda dtype: (math.log10(torch.finfo(dtype).tiny),
                                 math.log10(torch.finfo(dtype).max)), "log10"),
    ("exp_range", lambda dtype: (math.log(torch.finfo(dtype).eps),
                                 math.log(torch.finfo(dtype).max)), "eps"),
    ("exp_range", lambda dtype: ref.exp_range(torch.float32), "whatever the dtype"),
    ("exp_range", lambda dtype: (math.log(torch.finfo(dtype).tiny * torch.finfo(dtype).eps),
                                 math.log(torch.finfo(dtype).max)), "subnormal"),
    ("exp_range", lambda dtype: (-math.log(torch.finfo(dtype).max),
                                 math.log(torch.finfo(dtype).max)), "not symmetric"),
]


def test_flipped_reduction_with_a_custom_updater_is_named():
    """l.mean() with a custom updater divides by the batch size twice."""
    def train(net, train_iter, loss, updater):
        if isinstance(updater, torch.optim.Optimizer):
            return ref.train_epoch(net, train_iter, loss, updater)
        return _train(net, train_iter, loss, updater, flip=True)
    assert_loses_marks(CH, "train_epoch", train, "back-propagate l.sum()")


# --- the split: public visible checks, builders, recorded values ----------------------------

@pytest.fixture(scope="module")
def recorded_refs():
    from grader import wire
    from grader.edition import record_chapter
    from grader.runner import RecordedRefs

    return RecordedRefs({k: wire.dumps(v) for k, v in record_chapter(CH).items()})


@pytest.mark.parametrize("name,fn,phrase", [
    ("softmax", softmax_naive, "subtract each row's max"),
    ("logsumexp", lse_no_add_back, "not added back"),
    ("log_softmax", ls_via_softmax, "log(softmax(X))"),
    ("cross_entropy", ce_d2l_probabilities, "treated as probabilities"),
    ("accuracy", acc_fraction, "fraction correct instead"),
    ("train_epoch", lambda *a: _train(*a, zero=False), "zero_grad"),
    ("train_epoch", lambda *a: _train(*a, flip=True), "l.mean()"),
    ("train_epoch", lambda *a: _train(*a, ret="batch_means"), "mean of the batch means"),
    ("exp_range", lambda dtype: (math.log10(torch.finfo(dtype).tiny),
                                 math.log10(torch.finfo(dtype).max)), "log10"),
])
def test_visible_checks_name_the_cause_from_recorded_values(recorded_refs, name, fn, phrase):
    """A student edition (recorded values only, no references) names the same causes."""
    from grader.feedback import Mismatch
    from grader.testing import visible_verdict

    with pytest.raises(Mismatch) as failure:
        visible_verdict(CH, name, fn, refs=recorded_refs)
    assert phrase.lower() in str(failure.value).lower(), str(failure.value)


def test_train_epoch_builders_behave_as_the_check_assumes():
    """The nets and updater made in the kernel: handed over in eval mode, the updater is
    minibatch SGD of step lr / batch_size, and the judge can read everything back."""
    from grader.remote import local_remote

    remote = local_remote({})
    W, b = torch.randn(3, 4, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    net = remote.build("softmax.module_net", W, b)
    assert net.is_a(nn.Module) and net.info["training"] is False
    torch.testing.assert_close(net.method("param_values"), [W, b])
    X, y = torch.randn(5, 1, 4, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1])

    local = nn.Linear(4, 3).double()
    with torch.no_grad():
        local.weight.copy_(W)
        local.bias.copy_(b)
    F.cross_entropy(local(X.reshape(5, 4)), y, reduction="sum").backward()
    expected = [(p - 0.5 * p.grad / 5).detach() for p in local.parameters()]

    def epoch(net_, batches, loss_, updater):
        net_.train()
        for Xb, yb in batches:
            loss_(net_(Xb), yb).sum().backward()
            updater(Xb.shape[0])
        return 0.0, 0.0

    answer = local_remote({"epoch": epoch})
    fn = answer.global_("epoch")
    net = answer.build("softmax.module_net", W, b)
    upd = answer.build("softmax.updater", net, 0.5)
    fn(net, [(X, y)], answer.build("loss", "CrossEntropyLoss", reduction="none"), upd)
    assert net.method("modes") == [True] and upd.calls == [5]
    torch.testing.assert_close(net.method("param_values"), expected)

    scratch = answer.build("softmax.scratch_net", W.T.contiguous(), b)
    assert not scratch.is_a(nn.Module)
    torch.testing.assert_close(scratch.method("param_values"), [W.T, b])


def test_public_modules_hold_no_reference_code():
    import inspect

    import grader.checks.softmax as public
    import grader.probes.softmax as probes

    for module in (public, probes):
        src = inspect.getsource(module)
        assert "import grader.chapters" not in src and "from grader.chapters" not in src
        for formula in ("torch.exp(", "torch.log(", ".exp()", ".log()", "argmax", "math.log",
                        ".tiny", "p.grad /", "lr * "):
            assert formula not in src, f"{module.__name__} holds {formula!r}"


# --- D2L 4.1, exercises 1 and 4 ------------------------------------------------------------------

def test_hessian_and_bradley_terry_match_autograd_and_sigmoid():
    o = torch.randn(5, dtype=torch.float64)
    y = torch.tensor([2])
    H = torch.autograd.functional.hessian(
        lambda v: F.cross_entropy(v.reshape(1, -1), y).sum(), o)
    torch.testing.assert_close(ref.softmax_ce_hessian(o), H)
    p = torch.softmax(o, 0)
    cov = torch.diag(p) - torch.outer(p, p)  # the covariance of the one-hot e_Y, Y ~ p
    torch.testing.assert_close(ref.softmax_ce_hessian(o), cov)
    a, b = torch.randn(9, dtype=torch.float64) * 5, torch.randn(9, dtype=torch.float64) * 5
    torch.testing.assert_close(ref.bradley_terry(a, b), torch.sigmoid(a - b))
    torch.testing.assert_close(ref.bradley_terry(a, b),
                               torch.softmax(torch.stack([a, b], 1), 1)[:, 0])


def hessian_outer(o):
    e = torch.exp(o - o.max())
    p = e / e.sum()
    return torch.diag(p) - p[:, None] * p[None, :]


def hessian_loop(o):
    e = torch.exp(o - o.max())
    p = e / e.sum()
    q = len(o)
    H = torch.zeros(q, q, dtype=o.dtype)
    for i in range(q):
        for j in range(q):
            H[i, j] = p[i] * ((1.0 if i == j else 0.0) - p[j])
    return H


def hessian_covariance(o):
    """The covariance of the one-hot vector e_Y, Y ~ softmax(o): E[e e^T] - E[e] E[e]^T."""
    p = torch.exp(o - o.max())
    p = p / p.sum()
    E = torch.eye(len(o), dtype=o.dtype)
    second = (p[:, None, None] * E[:, :, None] * E[:, None, :]).sum(0)
    return second - torch.outer(p, p)


def _p(o):
    e = torch.exp(o - o.max())
    return e / e.sum()


def bt_sigmoid(o_a, o_b):
    return torch.sigmoid(o_a - o_b)


def bt_where(o_a, o_b):
    d = o_a - o_b
    e = torch.exp(-d.abs())
    return torch.where(d >= 0, 1 / (1 + e), e / (1 + e))


def bt_max_shift(o_a, o_b):
    m = torch.maximum(o_a, o_b)
    ea, eb = torch.exp(o_a - m), torch.exp(o_b - m)
    return ea / (ea + eb)


def hessian_autograd(o):
    return torch.autograd.functional.hessian(lambda v: v.exp().sum().log() - v[0], o)


def hessian_softmax_builtin(o):
    p = torch.softmax(o, 0)
    return torch.diag(p) - torch.outer(p, p)


CORRECT += [
    ("softmax_ce_hessian", ref.softmax_ce_hessian),
    ("softmax_ce_hessian", hessian_outer),
    ("softmax_ce_hessian", hessian_loop),
    ("softmax_ce_hessian", hessian_covariance),
    ("bradley_terry", ref.bradley_terry),
    ("bradley_terry", bt_sigmoid),
    ("bradley_terry", bt_where),
    ("bradley_terry", bt_max_shift),
]

BUGGY += [
    ("softmax_ce_hessian", lambda o: torch.diag(_p(o)), "p p^T term is missing"),
    ("softmax_ce_hessian", lambda o: -torch.outer(_p(o), _p(o)), "diag(p) is missing"),
    ("softmax_ce_hessian", lambda o: torch.diag(hessian_outer(o).diagonal()), "only the diagonal"),
    ("softmax_ce_hessian", lambda o: -hessian_outer(o), "sign is flipped"),
    ("softmax_ce_hessian", lambda o: torch.diag(torch.exp(o) / torch.exp(o).sum())
     - torch.outer(torch.exp(o) / torch.exp(o).sum(), torch.exp(o) / torch.exp(o).sum()),
     "stable softmax"),
    ("softmax_ce_hessian", hessian_autograd, "autograd"),
    ("softmax_ce_hessian", hessian_softmax_builtin, "torch.softmax"),
    ("bradley_terry", lambda a, b: torch.exp(a) / (torch.exp(a) + torch.exp(b)), "overflows"),
    ("bradley_terry", lambda a, b: a / (a + b), "used as weights"),
    ("bradley_terry", lambda a, b: torch.sigmoid(b - a), "probability of choosing b"),
    ("bradley_terry", lambda a, b: torch.softmax(torch.stack([a, b]), 0)[0], "torch.softmax"),
]
