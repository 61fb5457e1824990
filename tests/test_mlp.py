"""Chapter 03: references agree with torch; the hidden checks accept correct answers written
differently and reject realistic buggy ones (naive tanh, wrong-shaped parameters, an
activation on the output layer, ...) with specific feedback."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from grader.chapters import mlp as ref

CH = "03_mlp"


# --- references against torch built-ins and autograd ----------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_activations_match_torch(dtype):
    X = torch.cat([torch.randn(200, dtype=torch.float64) * 5,
                   torch.tensor(ref.EXTREMES, dtype=torch.float64)]).to(dtype)
    torch.testing.assert_close(ref.relu(X), torch.relu(X))
    torch.testing.assert_close(ref.sigmoid(X), torch.sigmoid(X))
    torch.testing.assert_close(ref.tanh(X), torch.tanh(X))
    torch.testing.assert_close(ref.prelu(X, 0.25), F.prelu(X, torch.tensor([0.25], dtype=dtype)))
    torch.testing.assert_close(ref.tanh_via_sigmoid(X, ref.sigmoid), torch.tanh(X))


def test_derivatives_match_autograd():
    X = torch.randn(300, dtype=torch.float64) * 4
    for fn, grad in ((torch.relu, ref.relu_grad), (torch.sigmoid, ref.sigmoid_grad),
                     (torch.tanh, ref.tanh_grad),
                     (lambda Z: ref.prelu(Z, 0.3), lambda Z: ref.prelu_grad(Z, 0.3))):
        x = X.clone().requires_grad_()
        fn(x).sum().backward()
        torch.testing.assert_close(grad(X), x.grad)
    for beta in (1.0, 0.5, 2.0, -1.0, 0.0):
        x = X.clone().requires_grad_()
        (x * torch.sigmoid(beta * x)).sum().backward()
        torch.testing.assert_close(ref.swish_grad(X, beta), x.grad)
        torch.testing.assert_close(ref.swish(X, beta), F.silu(beta * X) / beta if beta else X / 2)
    x = torch.zeros(3, requires_grad=True)
    torch.relu(x).sum().backward()
    assert torch.equal(ref.relu_grad(torch.zeros(3)), x.grad)  # 0 at 0, as PyTorch


def test_make_mlp_matches_mlp_forward():
    net = ref.make_mlp(12, [7], 3)
    params = [net[1].weight.T, net[1].bias, net[3].weight.T, net[3].bias]
    X = torch.randn(5, 3, 4)
    torch.testing.assert_close(net(X), ref.mlp_forward(X, params))


# --- the public half: no reference in it; its probes --------------------------------------

def test_public_module_holds_no_reference():
    import ast
    import inspect

    from grader.checks import mlp as public

    tree = ast.parse(inspect.getsource(public))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not any(m and m.startswith("grader.chapters") for m in imported)
    for name in ("relu", "sigmoid", "tanh", "relu_grad", "sigmoid_grad", "tanh_grad",
                 "mlp_forward", "collapse_linear", "make_mlp", "prelu", "prelu_grad",
                 "tanh_via_sigmoid", "swish", "swish_grad", "LIKELY", "REFERENCES",
                 "EXTREMES"):
        assert not hasattr(public, name), name


def test_probe_describes_layers_as_plain_data():
    from grader.probes.mlp import describe_layers

    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3, bias=False), nn.ReLU(),
                        nn.Sequential(nn.Linear(3, 2)))
    layers = describe_layers(net)["layers"]
    assert [m["class"] for m in layers] == ["Flatten", "Linear", "ReLU", "Sequential"]
    assert layers[1] == {"type": "torch.nn.modules.linear.Linear", "class": "Linear",
                         "linear": True, "in_features": 4, "out_features": 3, "bias": False}
    assert "error" in describe_layers([nn.ReLU()])

    class Broken(nn.Sequential):
        def __iter__(self):
            raise RuntimeError("no")

    relu = nn.ReLU()  # a module used twice is listed twice, as iterating the Sequential does
    assert len(describe_layers(Broken(nn.Linear(2, 2), relu, relu))["layers"]) == 3


def test_probe_recorder_is_not_the_students_use_of_torch_sigmoid():
    from grader.remote import local_remote
    from grader.runner import Tester

    remote = local_remote({"tvs": ref.tanh_via_sigmoid})
    t = Tester("tanh_via_sigmoid", hidden=False, remote_=remote)
    f = t.build("mlp.recorder", 1)
    X = torch.linspace(-3, 3, 7)
    got = t.call(remote.global_("tvs"), X, f, forbidden={torch.sigmoid: "torch.sigmoid"})
    torch.testing.assert_close(got, torch.tanh(X))
    assert f.calls == 1
    g = t.build("mlp.recorder", 2)
    t.call(remote.global_("tvs"), X, g)
    t.call(remote.global_("tvs"), X, g)
    assert g.calls == 2


# --- correct variants ----------------------------------------------------------------------

def relu_d2l(X):
    a = torch.zeros_like(X)
    return torch.max(X, a)


def relu_where(X):
    return torch.where(X > 0, X, torch.zeros_like(X))


def relu_clamp(X):
    return X.clamp(min=0)


def sigmoid_d2l(X):
    return 1 / (1 + torch.exp(-X))


def sigmoid_where(X):
    pos = 1 / (1 + torch.exp(-X.clamp(min=0)))
    e = torch.exp(X.clamp(max=0))
    return torch.where(X >= 0, pos, e / (1 + e))


def tanh_stable(X):
    return 2 * sigmoid_d2l(2 * X) - 1


def tanh_where(X):
    e = torch.exp(-2 * X.abs())
    t = (1 - e) / (1 + e)
    return torch.where(X < 0, -t, t)


def tanh_loop(X):
    out = torch.empty_like(X)
    flat, res = X.reshape(-1), out.reshape(-1)
    for i, x in enumerate(flat.tolist()):
        res[i] = math.tanh(x)
    return out


def relu_grad_where(X):
    return torch.where(X > 0, 1.0, 0.0).to(X.dtype)


def relu_grad_heaviside(X):
    return torch.heaviside(X, torch.zeros_like(X))


def sigmoid_grad_d2l(X):
    s = sigmoid_d2l(X)
    return s * (1 - s)


def sigmoid_grad_exp(X):
    e = torch.exp(-X.abs())
    return e / (1 + e) ** 2


def tanh_grad_stable(X):
    return 1 - tanh_stable(X) ** 2


def tanh_grad_sigmoid(X):
    return 4 * sigmoid_grad_exp(2 * X)


def init_d2l(num_inputs, num_hiddens, num_outputs, sigma=0.01, generator=None):
    W1 = nn.Parameter(torch.randn(num_inputs, num_hiddens, generator=generator) * sigma)
    b1 = nn.Parameter(torch.zeros(num_hiddens))
    W2 = nn.Parameter(torch.randn(num_hiddens, num_outputs, generator=generator) * sigma)
    b2 = nn.Parameter(torch.zeros(num_outputs))
    return [W1, b1, W2, b2]


def init_normal(num_inputs, num_hiddens, num_outputs, sigma=0.01, generator=None):
    W1 = torch.normal(0, sigma, (num_inputs, num_hiddens), generator=generator)
    W2 = torch.normal(0, sigma, (num_hiddens, num_outputs), generator=generator)
    b1, b2 = torch.zeros(num_hiddens), torch.zeros(num_outputs)
    return tuple(p.requires_grad_() for p in (W1, b1, W2, b2))


def forward_d2l(X, params):
    W1, b1, W2, b2 = params
    X = X.reshape((-1, W1.shape[0]))
    H = relu_d2l(X @ W1 + b1)
    return H @ W2 + b2


def forward_flatten(X, params):
    W1, b1, W2, b2 = params
    H = torch.addmm(b1, X.flatten(1), W1).clamp(min=0)
    return torch.matmul(H, W2) + b2


def collapse_einsum(W1, b1, W2, b2):
    return torch.einsum("dh,hq->dq", W1, W2), torch.einsum("h,hq->q", b1, W2) + b2


def collapse_row_bias(W1, b1, W2, b2):
    return W1 @ W2, (b1.reshape(1, -1) @ W2 + b2).reshape(1, -1)


def make_mlp_loop(num_inputs, num_hiddens, num_outputs):
    net = nn.Sequential(nn.Flatten())
    sizes = [num_inputs, *num_hiddens]
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        net.add_module(f"hidden{i}", nn.Linear(a, b))
        net.add_module(f"relu{i}", nn.ReLU())
    net.add_module("out", nn.Linear(sizes[-1], num_outputs))
    return net


def make_mlp_lazy_lists(num_inputs, num_hiddens, num_outputs):
    widths = list(num_hiddens)
    layers = [nn.Flatten()]
    for w_in, w_out in zip([num_inputs] + widths, widths):
        layers.extend([nn.Linear(w_in, w_out), nn.ReLU()])
    layers.append(nn.Linear(([num_inputs] + widths)[-1], num_outputs))
    return nn.Sequential(*layers)


def prelu_where(X, alpha):
    return torch.where(X > 0, X, alpha * X)


def prelu_grad_mask(X, alpha):
    pos = (X > 0).to(X.dtype)
    return pos + alpha * (1 - pos)


def swish_via_tanh(X, beta=1.0):
    # sigmoid(z) = (1 + tanh(z / 2)) / 2, tanh written stably
    return X * (1 + tanh_where(beta * X / 2)) / 2


def swish_grad_factored(X, beta=1.0):
    s = sigmoid_where(beta * X)
    return s * (1 + beta * X * (1 - s))


def swish_grad_two_sigmoids(X, beta=1.0):
    # 1 - sigmoid(z) = sigmoid(-z): no cancellation when sigmoid(z) is close to 1
    s, r = sigmoid_where(beta * X), sigmoid_where(-beta * X)
    return s + beta * X * s * r


CORRECT = [
    ("relu", ref.relu), ("relu", relu_d2l), ("relu", relu_where), ("relu", relu_clamp),
    ("sigmoid", ref.sigmoid), ("sigmoid", sigmoid_d2l), ("sigmoid", sigmoid_where),
    ("tanh", ref.tanh), ("tanh", tanh_stable), ("tanh", tanh_where), ("tanh", tanh_loop),
    ("relu_grad", ref.relu_grad), ("relu_grad", relu_grad_where),
    ("relu_grad", relu_grad_heaviside),
    ("sigmoid_grad", ref.sigmoid_grad), ("sigmoid_grad", sigmoid_grad_d2l),
    ("sigmoid_grad", sigmoid_grad_exp),
    ("tanh_grad", ref.tanh_grad), ("tanh_grad", tanh_grad_stable),
    ("tanh_grad", tanh_grad_sigmoid),
    ("init_mlp_params", ref.init_mlp_params), ("init_mlp_params", init_d2l),
    ("init_mlp_params", init_normal),
    ("mlp_forward", ref.mlp_forward), ("mlp_forward", forward_d2l),
    ("mlp_forward", forward_flatten),
    ("collapse_linear", ref.collapse_linear), ("collapse_linear", collapse_einsum),
    ("collapse_linear", collapse_row_bias),
    ("make_mlp", ref.make_mlp), ("make_mlp", make_mlp_loop),
    ("make_mlp", make_mlp_lazy_lists),
    ("prelu", ref.prelu), ("prelu", prelu_where),
    ("prelu_grad", ref.prelu_grad), ("prelu_grad", prelu_grad_mask),
    ("tanh_via_sigmoid", ref.tanh_via_sigmoid),
    ("tanh_via_sigmoid", lambda X, sigmoid: sigmoid(2 * X) * 2 - torch.ones_like(X)),
    ("swish", ref.swish), ("swish", swish_via_tanh),
    ("swish", lambda X, beta=1.0: X * sigmoid_d2l(beta * X)),
    ("swish_grad", ref.swish_grad), ("swish_grad", swish_grad_factored),
    ("swish_grad", swish_grad_two_sigmoids),
]


# --- buggy variants ------------------------------------------------------------------------

def tanh_naive(X):
    return (torch.exp(X) - torch.exp(-X)) / (torch.exp(X) + torch.exp(-X))


def tanh_d2l_formula(X):
    return (1 - torch.exp(-2 * X)) / (1 + torch.exp(-2 * X))


def relu_inplace(X):
    X[X < 0] = 0
    return X


def init_transposed(num_inputs, num_hiddens, num_outputs, sigma=0.01, generator=None):
    W1 = nn.Parameter(torch.randn(num_hiddens, num_inputs, generator=generator) * sigma)
    W2 = nn.Parameter(torch.randn(num_outputs, num_hiddens, generator=generator) * sigma)
    return [W1, nn.Parameter(torch.zeros(num_hiddens)), W2,
            nn.Parameter(torch.zeros(num_outputs))]


def init_row_bias(num_inputs, num_hiddens, num_outputs, sigma=0.01, generator=None):
    params = init_d2l(num_inputs, num_hiddens, num_outputs, sigma, generator)
    params[1] = nn.Parameter(torch.zeros(1, num_hiddens))
    return params


def init_variance(num_inputs, num_hiddens, num_outputs, sigma=0.01, generator=None):
    return init_d2l(num_inputs, num_hiddens, num_outputs, sigma ** 2, generator)


def init_global_rng(num_inputs, num_hiddens, num_outputs, sigma=0.01, generator=None):
    return init_d2l(num_inputs, num_hiddens, num_outputs, sigma, None)


def init_random_bias(num_inputs, num_hiddens, num_outputs, sigma=0.01, generator=None):
    params = init_d2l(num_inputs, num_hiddens, num_outputs, sigma, generator)
    params[1] = nn.Parameter(torch.randn(num_hiddens, generator=generator) * sigma)
    return params


def init_not_leaf(num_inputs, num_hiddens, num_outputs, sigma=0.01, generator=None):
    W1 = torch.randn(num_inputs, num_hiddens, generator=generator, requires_grad=True) * sigma
    W2 = torch.randn(num_hiddens, num_outputs, generator=generator, requires_grad=True) * sigma
    return [W1, torch.zeros(num_hiddens, requires_grad=True), W2,
            torch.zeros(num_outputs, requires_grad=True)]


def init_no_grad(num_inputs, num_hiddens, num_outputs, sigma=0.01, generator=None):
    return [p.detach() for p in init_d2l(num_inputs, num_hiddens, num_outputs, sigma, generator)]


def init_uniform(num_inputs, num_hiddens, num_outputs, sigma=0.01, generator=None):
    a = sigma * math.sqrt(3)  # the same standard deviation, the wrong distribution
    W1 = (torch.rand(num_inputs, num_hiddens, generator=generator) * 2 - 1) * a
    W2 = (torch.rand(num_hiddens, num_outputs, generator=generator) * 2 - 1) * a
    return [nn.Parameter(W1), nn.Parameter(torch.zeros(num_hiddens)), nn.Parameter(W2),
            nn.Parameter(torch.zeros(num_outputs))]


def forward_no_relu(X, params):
    W1, b1, W2, b2 = params
    return (X.reshape(-1, W1.shape[0]) @ W1 + b1) @ W2 + b2


def forward_relu_output(X, params):
    return relu_d2l(forward_d2l(X, params))


def forward_no_reshape(X, params):
    W1, b1, W2, b2 = params
    return relu_d2l(X @ W1 + b1) @ W2 + b2


def forward_wrong_reshape(X, params):
    W1, b1, W2, b2 = params
    return relu_d2l(X.reshape(W1.shape[0], -1).T @ W1 + b1) @ W2 + b2


def forward_detached(X, params):
    return forward_d2l(X, [p.detach() for p in params])


def forward_sigmoid(X, params):
    W1, b1, W2, b2 = params
    return sigmoid_d2l(X.reshape(-1, W1.shape[0]) @ W1 + b1) @ W2 + b2


def make_mlp_relu_last(num_inputs, num_hiddens, num_outputs):
    return nn.Sequential(*ref.make_mlp(num_inputs, num_hiddens, num_outputs), nn.ReLU())


def make_mlp_no_flatten(num_inputs, num_hiddens, num_outputs):
    return nn.Sequential(*list(ref.make_mlp(num_inputs, num_hiddens, num_outputs))[1:])


def make_mlp_first_width(num_inputs, num_hiddens, num_outputs):
    return nn.Sequential(nn.Flatten(), nn.Linear(num_inputs, num_hiddens[0]), nn.ReLU(),
                         nn.Linear(num_hiddens[0], num_outputs))


def make_mlp_sigmoid(num_inputs, num_hiddens, num_outputs):
    return nn.Sequential(*[nn.Sigmoid() if isinstance(m, nn.ReLU) else m
                           for m in ref.make_mlp(num_inputs, num_hiddens, num_outputs)])


def make_mlp_same_input(num_inputs, num_hiddens, num_outputs):
    layers = [nn.Flatten()]
    for h in num_hiddens:
        layers += [nn.Linear(num_inputs, h), nn.ReLU()]
    layers.append(nn.Linear(num_hiddens[-1] if num_hiddens else num_inputs, num_outputs))
    return nn.Sequential(*layers)


def make_mlp_no_bias(num_inputs, num_hiddens, num_outputs):
    net = ref.make_mlp(num_inputs, num_hiddens, num_outputs)
    net[-1] = nn.Linear(net[-1].in_features, num_outputs, bias=False)
    return net


class OwnMLP(nn.Module):
    def __init__(self, num_inputs, num_hiddens, num_outputs):
        super().__init__()
        self.body = ref.make_mlp(num_inputs, num_hiddens, num_outputs)

    def forward(self, X):
        return self.body(X)


def make_mlp_layer_list(num_inputs, num_hiddens, num_outputs):
    return list(ref.make_mlp(num_inputs, num_hiddens, num_outputs))


def swish_autograd(X, beta=1.0):
    x = X.detach().clone().requires_grad_()
    (x * sigmoid_d2l(beta * x)).sum().backward()
    return x.grad


def tvs_also_torch(X, sigmoid):
    sigmoid(X)
    return 2 * torch.sigmoid(2 * X) - 1


def tvs_tanh(X, sigmoid):
    return torch.tanh(X)


def tvs_own(X, sigmoid):
    return tanh_stable(X)


BUGGY = [
    ("relu", torch.abs, "absolute value"),
    ("relu", lambda X: torch.relu(X), "torch.relu"),
    ("relu", lambda X: F.relu(X), "F.relu"),
    ("relu", lambda X: nn.ReLU()(X), "nn.ReLU"),
    ("relu", lambda X: torch.where(X > 0, X, 0.01 * X), "leaky"),
    ("relu", relu_inplace, "in place"),
    ("sigmoid", lambda X: torch.exp(X) / (1 + torch.exp(X)), "overflows for large x"),
    ("sigmoid", lambda X: 1 / (1 + torch.exp(X)), "sigmoid(-x)"),
    ("sigmoid", lambda X: torch.sigmoid(X), "torch.sigmoid"),
    ("sigmoid", lambda X: torch.special.expit(X), "expit"),
    ("sigmoid", lambda X: X.sigmoid(), "Tensor.sigmoid"),
    ("tanh", tanh_naive, "overflows (inf / inf = NaN)"),
    ("tanh", tanh_d2l_formula, "very negative"),
    ("tanh", lambda X: 2 * sigmoid_d2l(X) - 1, "tanh(x / 2)"),
    ("tanh", lambda X: torch.tanh(X), "torch.tanh"),
    ("tanh", lambda X: X.tanh(), "Tensor.tanh"),
    ("relu_grad", lambda X: (X >= 0).to(X.dtype), "at 0"),
    ("relu_grad", lambda X: X > 0, "boolean"),
    ("relu_grad", relu_d2l, "ReLU itself"),
    ("relu_grad", torch.sign, "-1"),
    ("relu_grad", lambda X: (X > 0).float(), "dtype"),
    ("sigmoid_grad", lambda X: torch.exp(-X) / (1 + torch.exp(-X)) ** 2, "overflows"),
    ("sigmoid_grad", lambda X: sigmoid_d2l(X) * (1 - X), "(1 - x)"),
    ("sigmoid_grad", lambda X: 1 - sigmoid_d2l(X) ** 2, "tanh's derivative"),
    ("sigmoid_grad", lambda X: torch.sigmoid(X) * (1 - torch.sigmoid(X)), "torch.sigmoid"),
    ("tanh_grad", lambda X: 1 - tanh_stable(X), "without the square"),
    ("tanh_grad", lambda X: 1 - X ** 2, "square tanh(x), not x"),
    ("tanh_grad", lambda X: 1 - tanh_naive(X) ** 2, "stable tanh"),
    ("tanh_grad", sigmoid_grad_d2l, "sigmoid's derivative"),
    ("tanh_grad", lambda X: 1 - torch.tanh(X) ** 2, "torch.tanh"),
    ("init_mlp_params", init_transposed, "transposed"),
    ("init_mlp_params", init_row_bias, "shape"),
    ("init_mlp_params", init_variance, "standard deviation"),
    ("init_mlp_params", init_global_rng, "generator"),
    ("init_mlp_params", init_random_bias, "biases start at zero"),
    ("init_mlp_params", init_not_leaf, "leaf"),
    ("init_mlp_params", init_no_grad, "requires_grad"),
    ("init_mlp_params", init_uniform, "normal"),
    ("mlp_forward", forward_no_relu, "no activation on the hidden layer"),
    ("mlp_forward", forward_relu_output, "activation on the output layer"),
    ("mlp_forward", forward_no_reshape, "mat1 and mat2"),
    ("mlp_forward", forward_wrong_reshape, "reshape to (-1, num_inputs)"),
    ("mlp_forward", forward_detached, "autograd"),
    ("mlp_forward", forward_sigmoid, "sigmoid instead of ReLU"),
    ("collapse_linear", lambda W1, b1, W2, b2: (W1 @ W2, b1 + b2), "b1 @ W2 + b2"),
    ("collapse_linear", lambda W1, b1, W2, b2: (W1 @ W2, b2), "b = b2 only"),
    ("collapse_linear", lambda W1, b1, W2, b2: (W2 @ W1, b1 @ W2 + b2), "first layer acts first"),
    ("collapse_linear", lambda W1, b1, W2, b2: (W1 @ W2, b1 @ W2), "without b2"),
    ("collapse_linear", lambda W1, b1, W2, b2: (W1 * W2, b1 @ W2 + b2), "elementwise"),
    ("collapse_linear", lambda W1, b1, W2, b2: W1 @ W2, "pair"),
    ("make_mlp", make_mlp_relu_last, "after the last Linear"),
    ("make_mlp", make_mlp_no_flatten, "Flatten"),
    ("make_mlp", make_mlp_first_width, "for each width"),
    ("make_mlp", make_mlp_sigmoid, "nn.ReLU()"),
    ("make_mlp", make_mlp_same_input, "previous layer's out_features"),
    ("make_mlp", make_mlp_no_bias, "no bias"),
    ("make_mlp", OwnMLP, "should return an nn.Sequential, but returned OwnMLP"),
    ("make_mlp", make_mlp_layer_list, "should return an nn.Sequential, but returned list"),
    ("prelu", lambda X, alpha: torch.maximum(X, alpha * X), "alpha <= 1"),
    ("prelu", lambda X, alpha: torch.where(X > 0, alpha * X, X), "positive part"),
    ("prelu", lambda X, alpha: relu_d2l(X), "alpha is ignored"),
    ("prelu", lambda X, alpha: F.prelu(X, torch.tensor([alpha], dtype=X.dtype)), "F.prelu)"),
    ("prelu", lambda X, alpha: F.leaky_relu(X, alpha), "F.leaky_relu"),
    ("prelu_grad", lambda X, alpha: torch.where(X >= 0, 1.0, alpha).to(X.dtype), "at 0"),
    ("prelu_grad", lambda X, alpha: torch.where(X > 0, torch.ones_like(X), alpha * X),
     "alpha * x instead of alpha"),
    ("prelu_grad", lambda X, alpha: torch.where(X > 0, alpha, 1.0).to(X.dtype), "swapped"),
    ("prelu_grad", lambda X, alpha: (X > 0).to(X.dtype), "alpha is ignored"),
    ("tanh_via_sigmoid", tvs_tanh, "torch.tanh"),
    ("tanh_via_sigmoid", tvs_also_torch, "calls torch.sigmoid"),
    ("tanh_via_sigmoid", tvs_own, "never calls the sigmoid"),
    ("tanh_via_sigmoid", lambda X, sigmoid: 2 * sigmoid(X) - 1, "2 * sigmoid(2x) - 1"),
    ("tanh_via_sigmoid", lambda X, sigmoid: 2 * sigmoid(2 * X), "without the - 1"),
    ("tanh_via_sigmoid", lambda X, sigmoid: sigmoid(2 * X) - 1, "multiply the sigmoid by 2"),
    ("swish", lambda X, beta=1.0: X * sigmoid_d2l(X), "beta is ignored"),
    ("swish", lambda X, beta=1.0: beta * X * sigmoid_d2l(X), "inside the sigmoid"),
    ("swish", lambda X, beta=1.0: X * torch.exp(beta * X) / (1 + torch.exp(beta * X)),
     "overflows"),
    ("swish", lambda X, beta=1.0: F.silu(beta * X) / beta, "F.silu"),
    ("swish", lambda X, beta=1.0: X * torch.sigmoid(beta * X), "torch.sigmoid"),
    ("swish_grad", lambda X, beta=1.0: sigmoid_d2l(beta * X) + X * sigmoid_grad_d2l(beta * X),
     "factor beta is missing"),
    ("swish_grad", lambda X, beta=1.0: sigmoid_d2l(beta * X), "second term is missing"),
    ("swish_grad", lambda X, beta=1.0: beta * X * sigmoid_grad_exp(beta * X), "first term"),
    ("swish_grad", lambda X, beta=1.0: sigmoid_d2l(beta * X) - beta * X
     * sigmoid_grad_exp(beta * X), "sign error"),
    ("swish_grad", lambda X, beta=1.0: sigmoid_d2l(beta * X) + beta * X * torch.exp(-beta * X)
     / (1 + torch.exp(-beta * X)) ** 2, "overflows"),
    ("swish_grad", swish_autograd, "Tensor.backward"),
]
