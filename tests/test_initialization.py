"""Chapter 06: references agree with torch.nn.init; the hidden checks accept correct answers
written differently and reject realistic buggy ones with specific feedback."""

import math

import pytest
import torch
from torch import nn

from grader.chapters import initialization as ref
from grader.testing import hidden_verdict

CH = "06_initialization"


# --- references against torch.nn.init --------------------------------------------------------

def test_softmax_regression_grad_matches_autograd():
    X, y = torch.randn(9, 4, dtype=torch.float64), torch.tensor([0, 1, 2, 2, 1, 0, 0, 1, 2])
    W, b = torch.randn(3, 4, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    got = ref.softmax_regression_grad(X, y, W, b)
    torch.testing.assert_close(got, srg_autograd(X, y, W, b))
    torch.testing.assert_close(got, ref._softmax_grads(X, y, W, b))


def test_initialisers_match_torch_nn_init():
    for shape in ((300, 100), (64, 64), (8, 4, 3, 3)):
        for gain in (1.0, 2.0):
            a, b = torch.empty(*shape), torch.empty(*shape)
            ref.xavier_uniform_(a, gain, torch.Generator().manual_seed(0))
            nn.init.xavier_uniform_(b, gain, generator=torch.Generator().manual_seed(0))
            torch.testing.assert_close(a, b)
            ref.xavier_normal_(a, gain, torch.Generator().manual_seed(0))
            nn.init.xavier_normal_(b, gain, generator=torch.Generator().manual_seed(0))
            torch.testing.assert_close(a, b)
        ref.kaiming_normal_(a, torch.Generator().manual_seed(0))
        nn.init.kaiming_normal_(b, nonlinearity="relu", generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(a, b)


def test_layer_gradient_norms_reference():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    X, y = torch.randn(5, 3), torch.tensor([0, 1, 1, 0, 1])
    norms = ref.layer_gradient_norms(net, X, y, nn.CrossEntropyLoss(reduction="none"))
    assert norms == ref.layer_gradient_norms(net, X, y, nn.CrossEntropyLoss())
    w = [net[0].weight, net[2].weight]
    g = torch.autograd.grad(nn.functional.cross_entropy(net(X), y), w)
    assert norms == pytest.approx([torch.linalg.matrix_norm(x).item() for x in g], rel=1e-6)


# --- correct variants ----------------------------------------------------------------------

def xu_rand(W, gain=1.0, generator=None):
    fan_out, fan_in = W.shape
    a = gain * (6 / (fan_in + fan_out)) ** 0.5
    with torch.no_grad():
        W.copy_(torch.rand(W.shape, generator=generator, dtype=W.dtype) * 2 * a - a)
    return W


def xu_data(W, gain=1.0, generator=None):
    std = gain * math.sqrt(2.0 / (W.size(0) + W.size(1)))
    W.data.uniform_(-math.sqrt(3.0) * std, math.sqrt(3.0) * std, generator=generator)
    return W


def xn_randn(W, gain=1.0, generator=None):
    std = gain * math.sqrt(2.0 / sum(W.shape))
    with torch.no_grad():
        W[...] = torch.randn(W.shape, generator=generator, dtype=W.dtype) * std
    return W


def xn_normal(W, gain=1.0, generator=None):
    W.data.normal_(0, gain * math.sqrt(2 / (W.shape[0] + W.shape[1])), generator=generator)
    return W


def kn_randn(W, generator=None):
    with torch.no_grad():
        W.copy_(torch.randn(W.shape, generator=generator, dtype=W.dtype)
                * math.sqrt(2 / W.shape[1]))
    return W


def kn_normal(W, generator=None):
    W.data.normal_(mean=0.0, std=(2.0 / W.size(1)) ** 0.5, generator=generator)
    return W


def iw_type(m):
    if type(m) == nn.Linear:  # noqa: E721 - a student's way of writing it
        ref.xavier_uniform_(m.weight)
        if m.bias is not None:
            m.bias.data.fill_(0)


def iw_data(m):
    if isinstance(m, nn.Linear):
        xu_data(m.weight)
        if m.bias is not None:
            m.bias.data.zero_()


def lgn_zero_grad(net, X, y, loss):
    net.zero_grad()
    l = loss(net(X), y).mean()
    l.backward()
    return [float(torch.linalg.norm(m.weight.grad)) for m in net.modules()
            if isinstance(m, nn.Linear)]


def lgn_autograd_grad(net, X, y, loss):
    weights = [m.weight for m in net.modules() if isinstance(m, nn.Linear)]
    grads = torch.autograd.grad(loss(net(X), y).mean(), weights)
    return [torch.sqrt((g ** 2).sum()).item() for g in grads]


def lgn_none(net, X, y, loss):
    for p in net.parameters():
        p.grad = None
    loss(net(X), y).mean().backward()
    return tuple(m.weight.grad.norm() for m in net.modules() if isinstance(m, nn.Linear))


def srg_loop(X, y, W, b):
    """Example by example, with a softmax that subtracts the maximum."""
    dW, db = torch.zeros_like(W), torch.zeros_like(b)
    for x, label in zip(X, y):
        o = W @ x + b
        e = torch.exp(o - o.max())
        p = e / e.sum()
        p[label] -= 1
        dW += torch.outer(p, x)
        db += p
    return dW / len(X), db / len(X)


def srg_log_softmax(X, y, W, b):
    O = X @ W.T + b
    P = torch.exp(O - torch.logsumexp(O, dim=1, keepdim=True))
    Y = torch.zeros_like(P)
    Y[torch.arange(len(y)), y] = 1
    G = torch.einsum("nq,nd->qd", P - Y, X) / len(X)
    return G, (P - Y).mean(dim=0)


def _srg(**kw):
    return lambda X, y, W, b: ref._softmax_grads(X, y, W, b, **kw)


def srg_transposed(X, y, W, b):
    dW, db = ref.softmax_regression_grad(X, y, W, b)
    return dW.T, db


def srg_autograd(X, y, W, b):
    W, b = W.clone().requires_grad_(), b.clone().requires_grad_()
    nn.functional.cross_entropy(X @ W.T + b, y).backward()
    return W.grad, b.grad


CORRECT = [
    ("softmax_regression_grad", ref.softmax_regression_grad),
    ("softmax_regression_grad", srg_loop),
    ("softmax_regression_grad", srg_log_softmax),
    ("xavier_uniform_", ref.xavier_uniform_),
    ("xavier_uniform_", xu_rand),
    ("xavier_uniform_", xu_data),
    ("xavier_normal_", ref.xavier_normal_),
    ("xavier_normal_", xn_randn),
    ("xavier_normal_", xn_normal),
    ("kaiming_normal_", ref.kaiming_normal_),
    ("kaiming_normal_", kn_randn),
    ("kaiming_normal_", kn_normal),
    ("init_weights", ref.init_weights),
    ("init_weights", iw_type),
    ("init_weights", iw_data),
    ("layer_gradient_norms", ref.layer_gradient_norms),
    ("layer_gradient_norms", lgn_zero_grad),
    ("layer_gradient_norms", lgn_autograd_grad),
    ("layer_gradient_norms", lgn_none),
]


# --- buggy variants --------------------------------------------------------------------------

def _uniform(a):
    def init(W, gain=1.0, generator=None):
        fan_out, fan_in = W.shape
        b = a(fan_in, fan_out, gain)
        with torch.no_grad():
            W.uniform_(-b, b, generator=generator)
        return W
    return init


def _normal(std, uniform=False):
    def init(W, gain=1.0, generator=None):
        fan_out, fan_in = W.shape
        s = std(fan_in, fan_out, gain)
        with torch.no_grad():
            if uniform:
                W.uniform_(-math.sqrt(3) * s, math.sqrt(3) * s, generator=generator)
            else:
                W.normal_(0, s, generator=generator)
        return W
    return init


def _kaiming(std, uniform=False):
    f = _normal(lambda fi, fo, g: std(fi, fo), uniform)
    return lambda W, generator=None: f(W, 1.0, generator)


xu_no_gain = _uniform(lambda fi, fo, g: math.sqrt(6 / (fi + fo)))
xu_fan_in = _uniform(lambda fi, fo, g: g * math.sqrt(3 / fi))
xu_normal = _normal(lambda fi, fo, g: g * math.sqrt(2 / (fi + fo)))
xu_var_as_std = _uniform(lambda fi, fo, g: g * 6 / (fi + fo))
xu_std_bound = _uniform(lambda fi, fo, g: g * math.sqrt(2 / (fi + fo)))


def xu_new_tensor(W, gain=1.0, generator=None):
    a = gain * math.sqrt(6 / sum(W.shape))
    return torch.empty_like(W).uniform_(-a, a, generator=generator)


def xu_constant(W, gain=1.0, generator=None):
    with torch.no_grad():
        W.fill_(gain * math.sqrt(2 / sum(W.shape)))
    return W


def xu_no_return(W, gain=1.0, generator=None):
    ref.xavier_uniform_(W, gain, generator)


def xu_global(W, gain=1.0, generator=None):
    return ref.xavier_uniform_(W, gain)


def xu_no_grad(W, gain=1.0, generator=None):
    a = gain * math.sqrt(6 / sum(W.shape))
    return W.uniform_(-a, a, generator=generator)


def xu_nn_init(W, gain=1.0, generator=None):
    return nn.init.xavier_uniform_(W, gain, generator=generator)


xn_no_gain = _normal(lambda fi, fo, g: math.sqrt(2 / (fi + fo)))
xn_uniform = _normal(lambda fi, fo, g: g * math.sqrt(2 / (fi + fo)), uniform=True)
xn_var_as_std = _normal(lambda fi, fo, g: g * 2 / (fi + fo))
xn_fan_in = _normal(lambda fi, fo, g: g * math.sqrt(1 / fi))


def xn_new_tensor(W, gain=1.0, generator=None):
    return torch.randn(W.shape, generator=generator, dtype=W.dtype) * gain * math.sqrt(
        2 / sum(W.shape))


def xn_nn_init(W, gain=1.0, generator=None):
    return nn.init.xavier_normal_(W, gain, generator=generator)


kn_fan_out = _kaiming(lambda fi, fo: math.sqrt(2 / fo))
kn_no_gain = _kaiming(lambda fi, fo: math.sqrt(1 / fi))
kn_var_as_std = _kaiming(lambda fi, fo: 2 / fi)
kn_uniform = _kaiming(lambda fi, fo: math.sqrt(2 / fi), uniform=True)
kn_xavier = _kaiming(lambda fi, fo: math.sqrt(2 / (fi + fo)))


def kn_global(W, generator=None):
    return ref.kaiming_normal_(W)


def kn_nn_init(W, generator=None):
    return nn.init.kaiming_normal_(W, generator=generator)


def iw_bias_kept(m):
    if isinstance(m, nn.Linear):
        ref.xavier_uniform_(m.weight)


def iw_constant(m):
    if isinstance(m, nn.Linear):
        m.weight.data.fill_(0.01)
        if m.bias is not None:
            m.bias.data.zero_()


def iw_everything(m):
    if hasattr(m, "weight") and m.weight is not None and m.weight.dim() >= 2:
        ref.xavier_uniform_(m.weight)
    if getattr(m, "bias", None) is not None:
        m.bias.data.zero_()


def iw_normal(m):
    if isinstance(m, nn.Linear):
        ref.xavier_normal_(m.weight)
        if m.bias is not None:
            m.bias.data.zero_()


def iw_nn_init(m):
    if isinstance(m, nn.Linear):
        nn.init.xavier_uniform_(m.weight)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def iw_bias_assumed(m):
    if isinstance(m, nn.Linear):
        ref.xavier_uniform_(m.weight)
        m.bias.data.zero_()


def lgn_weight_norms(net, X, y, loss):
    net.zero_grad()
    loss(net(X), y).mean().backward()
    return [m.weight.norm().item() for m in net.modules() if isinstance(m, nn.Linear)]


def lgn_stale(net, X, y, loss):
    loss(net(X), y).mean().backward()
    return [m.weight.grad.norm().item() for m in net.modules() if isinstance(m, nn.Linear)]


def lgn_sum(net, X, y, loss):
    net.zero_grad()
    loss(net(X), y).sum().backward()
    return [m.weight.grad.norm().item() for m in net.modules() if isinstance(m, nn.Linear)]


def lgn_with_bias(net, X, y, loss):
    net.zero_grad()
    loss(net(X), y).mean().backward()
    return [p.grad.norm().item() for m in net.modules() if isinstance(m, nn.Linear)
            for p in m.parameters()]


def lgn_top_level(net, X, y, loss):
    net.zero_grad()
    loss(net(X), y).mean().backward()
    return [m.weight.grad.norm().item() for m in net if isinstance(m, nn.Linear)]


def lgn_step(net, X, y, loss):
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    opt.zero_grad()
    loss(net(X), y).mean().backward()
    out = [m.weight.grad.norm().item() for m in net.modules() if isinstance(m, nn.Linear)]
    opt.step()
    return out


def lgn_tensors(net, X, y, loss):
    net.zero_grad()
    loss(net(X), y).mean().backward()
    return [m.weight.grad for m in net.modules() if isinstance(m, nn.Linear)]


def lgn_squared(net, X, y, loss):
    net.zero_grad()
    loss(net(X), y).mean().backward()
    return [(m.weight.grad ** 2).sum().item() for m in net.modules() if isinstance(m, nn.Linear)]


BUGGY = [
    ("xavier_uniform_", xu_no_gain, "gain is missing"),
    ("xavier_uniform_", xu_fan_in, "fan_in only"),
    ("xavier_uniform_", xu_normal, "normal distribution instead of uniform"),
    ("xavier_uniform_", xu_var_as_std, "used as the standard deviation"),
    ("xavier_uniform_", xu_std_bound, "standard deviation is used as the bound"),
    ("xavier_uniform_", xu_new_tensor, "not in place"),
    ("xavier_uniform_", xu_no_return, "return W"),
    ("xavier_uniform_", xu_constant, "constant initialisation"),
    ("xavier_uniform_", xu_global, "generator"),
    ("xavier_uniform_", xu_no_grad, "no_grad"),
    ("xavier_uniform_", xu_nn_init, "own implementation"),
    ("xavier_normal_", xn_no_gain, "gain is missing"),
    ("xavier_normal_", xn_uniform, "uniform instead of normal"),
    ("xavier_normal_", xn_var_as_std, "variance is used as the standard deviation"),
    ("xavier_normal_", xn_fan_in, "fan_in only"),
    ("xavier_normal_", xn_new_tensor, "not in place"),
    ("xavier_normal_", xn_nn_init, "own implementation"),
    ("kaiming_normal_", kn_fan_out, "W.shape[1]"),
    ("kaiming_normal_", kn_no_gain, "ReLU gain is missing"),
    ("kaiming_normal_", kn_var_as_std, "used as the standard deviation"),
    ("kaiming_normal_", kn_uniform, "uniform instead of normal"),
    ("kaiming_normal_", kn_xavier, "Xavier's variance"),
    ("kaiming_normal_", kn_global, "generator"),
    ("kaiming_normal_", kn_nn_init, "own implementation"),
    ("init_weights", iw_bias_kept, "bias is not zeroed"),
    ("init_weights", iw_constant, "constant initialisation"),
    ("init_weights", iw_everything, "only nn.Linear"),
    ("init_weights", iw_normal, "normal"),
    ("init_weights", iw_nn_init, "own implementation"),
    ("init_weights", iw_bias_assumed, "NoneType"),
    ("layer_gradient_norms", lgn_weight_norms, "weight norms instead of gradient norms"),
    ("layer_gradient_norms", lgn_stale, "stale accumulated gradients"),
    ("layer_gradient_norms", lgn_sum, "summed instead of averaged"),
    ("layer_gradient_norms", lgn_with_bias, "bias gradients"),
    ("layer_gradient_norms", lgn_top_level, "net.modules()"),
    ("layer_gradient_norms", lgn_step, "parameter values must be unchanged"),
    ("layer_gradient_norms", lgn_tensors, "instead of its norm"),
    ("layer_gradient_norms", lgn_squared, "squared norms"),
    ("softmax_regression_grad", _srg(mean=False), "sum over examples"),
    ("softmax_regression_grad", _srg(sign=-1.0), "sign is flipped"),
    ("softmax_regression_grad", _srg(bias=False), "bias b is left out"),
    ("softmax_regression_grad", _srg(labels=False), "one-hot labels are not subtracted"),
    ("softmax_regression_grad", _srg(dim=0), "over the examples"),
    ("softmax_regression_grad", _srg(naive=True), "overflows"),
    ("softmax_regression_grad", srg_transposed, "(P - Y).T @ X"),
    ("softmax_regression_grad", srg_autograd, "Tensor.backward"),
]


def test_weird_answers_never_crash_the_grader():
    weird = [lambda *a, **k: None, lambda *a, **k: "W", lambda W, *a, **k: W.zero_(),
             lambda W, *a, **k: W.fill_(float("nan")), lambda *a, **k: [1.0],
             lambda *a, **k: torch.ones(3), 42]
    from grader.registry import get_chapter

    for name in get_chapter(CH).exercises:
        for answer in weird:
            v = hidden_verdict(CH, name, answer)
            assert v.score < v.max_score and "grader failed" not in v.feedback, (name, v.feedback)


# --- the objects the checks make in the kernel ------------------------------------------------

def test_returning_tells_whether_W_itself_came_back():
    from grader.remote import local_remote

    remote = local_remote({"good": ref.xavier_uniform_, "bad": xu_new_tensor})
    W = torch.zeros(6, 4)
    same, out = remote.build("initialization.returning", remote.global_("good"))(W)
    assert same is True and out is None
    same, out = remote.build("initialization.returning", remote.global_("bad"))(W)
    assert same is False and isinstance(out, torch.Tensor) and out.shape == (6, 4)


def test_mlp_and_fill_grads_build_what_the_check_reads_back():
    from grader.checks.initialization import mlp_params
    from grader.remote import local_remote

    remote = local_remote({})
    params = mlp_params([4, 6, 3], 0, torch.float64)
    net = remote.build("initialization.mlp", [4, 6, 3], "ReLU", params, torch.float64, True)
    state = net.method("state_dict")
    assert type(state) is dict and list(state) == ["0.0.weight", "0.0.bias", "1.weight",
                                                   "1.bias"]
    for got, want in zip(state.values(), [p for W, b in params for p in (W, b)]):
        assert torch.equal(got, want)
    remote.build("initialization.fill_grads", net, 3.0)
    grads = [p.grad for p in net.method("parameters").to_list()]
    assert [float(g.flatten()[0]) for g in grads] == [3.0, 4.0, 5.0, 6.0]


def test_init_net_has_non_default_values():
    from grader.remote import local_remote

    remote = local_remote({})
    state = remote.build("initialization.init_net", True, torch.Generator().manual_seed(0)
                         ).method("state_dict")
    for i in (0, 3, 6):
        assert torch.equal(state[f"{i}.bias"], torch.full_like(state[f"{i}.bias"], 0.25))
    assert state["2.bias"].abs().max() > 0 and not torch.equal(state["2.weight"],
                                                                torch.ones(300))


def test_the_public_module_holds_no_reference():
    import grader.checks.initialization as public

    for name in ("xavier_uniform_", "xavier_normal_", "kaiming_normal_", "init_weights",
                 "layer_gradient_norms", "LIKELY", "_xavier_uniform_law", "_gradient_norms",
                 "softmax_regression_grad", "_softmax_grads", "REFERENCES"):
        assert not hasattr(public, name), name
