"""Chapter 05: references agree with torch; the hidden checks accept correct answers written
differently and reject realistic buggy ones with specific feedback."""

import torch
import torch.nn.functional as F
from torch import nn

from grader.chapters import dropout as ref

CH = "05_dropout"


# --- references against torch built-ins ---------------------------------------------------------

def test_dropout_layer_matches_torch_statistics():
    X = torch.ones(400, 500)
    ours = ref.dropout_layer(X, 0.3, torch.Generator().manual_seed(0))
    theirs = F.dropout(X, 0.3, training=True)
    assert set(ours.unique().tolist()) == set(theirs.unique().tolist())
    assert abs((ours == 0).float().mean() - (theirs == 0).float().mean()) < 0.01


def test_dropout_mlp_eval_matches_a_sequential():
    net = ref.DropoutMLP(16, 3, 8, 8, 0.5, 0.5).eval()
    seq = nn.Sequential(nn.Flatten(), net.lin1, nn.ReLU(), nn.Dropout(0.5), net.lin2, nn.ReLU(),
                        nn.Dropout(0.5), net.lin3).eval()
    X = torch.rand(5, 1, 4, 4)
    torch.testing.assert_close(net(X), seq(X))


def test_evaluate_loss_is_the_mean_over_examples():
    net = nn.Linear(3, 1)
    X, y = torch.randn(11, 3), torch.randn(11, 1)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=4)
    with torch.no_grad():
        expected = F.mse_loss(net(X), y).item()
    assert abs(ref.evaluate_loss(net, loader, nn.MSELoss(reduction="none")) - expected) < 1e-6


# --- correct variants: written differently, must get full marks ---------------------------------

def dropout_bernoulli(X, dropout, generator=None):
    if dropout < 0 or dropout > 1:
        raise ValueError("dropout must be between 0 and 1")
    if dropout == 1:
        return torch.zeros_like(X)
    keep = torch.bernoulli(torch.full_like(X, 1 - dropout), generator=generator)
    return keep * X / (1 - dropout)


def dropout_index_mask(X, dropout, generator=None):
    if not 0 <= dropout <= 1:
        raise ValueError(dropout)
    out = X.clone()
    drop = torch.rand(X.shape, generator=generator) < dropout
    out[drop] = 0
    if dropout < 1:
        out[~drop] = out[~drop] / (1 - dropout)
    return out


def dropout_rand_lt_keep(X, dropout, generator=None):
    if not 0 <= dropout <= 1:
        raise ValueError
    keep = 1 - dropout
    mask = torch.rand(X.shape, generator=generator, dtype=X.dtype) < keep
    return torch.where(mask, X / max(keep, 1e-12), torch.zeros_like(X))


def dropout_d2l_style(X, dropout, generator=None):
    if not 0 <= dropout <= 1:
        raise ValueError("dropout out of range")
    if dropout == 1:
        return torch.zeros_like(X)
    if dropout == 0:
        return X
    mask = (torch.rand(X.shape, generator=generator) > dropout).float()
    return mask * X / (1.0 - dropout)


class MLPNNDropout(nn.Module):
    """nn.Dropout modules: allowed in DropoutMLP."""

    def __init__(self, num_inputs, num_outputs, num_hiddens1, num_hiddens2, dropout1, dropout2):
        super().__init__()
        self.lin1 = nn.Linear(num_inputs, num_hiddens1)
        self.lin2 = nn.Linear(num_hiddens1, num_hiddens2)
        self.lin3 = nn.Linear(num_hiddens2, num_outputs)
        self.drop1, self.drop2 = nn.Dropout(dropout1), nn.Dropout(dropout2)

    def forward(self, X):
        H = self.drop1(F.relu(self.lin1(X.flatten(1))))
        return self.lin3(self.drop2(F.relu(self.lin2(H))))


class MLPDropBeforeRelu(ref.DropoutMLP):
    """Dropout before the ReLU: the same function (the scale is positive)."""

    def forward(self, X):
        H = self.lin1(X.reshape(len(X), -1))
        if self.training:
            H = ref.dropout_layer(H, self.dropout1)
        H = self.lin2(torch.relu(H))
        if self.training:
            H = ref.dropout_layer(H, self.dropout2)
        return self.lin3(torch.relu(H))


def eval_loss_try_finally(net, data_iter, loss):
    mode = net.training
    net.eval()
    try:
        total, n = torch.zeros(()), 0
        with torch.no_grad():
            for X, y in data_iter:
                l = loss(net(X), y)
                total += l.sum()
                n += l.shape[0]
        return total / n
    finally:
        net.train(mode)


def eval_loss_weighted_means(net, data_iter, loss):
    was = net.training
    net.eval()
    s, n = 0.0, 0
    with torch.inference_mode():
        for X, y in data_iter:
            s += loss(net(X), y).mean().item() * len(X)
            n += len(X)
    if was:
        net.train()
    return s / n


CORRECT = [
    ("dropout_layer", ref.dropout_layer),
    ("dropout_layer", dropout_bernoulli),
    ("dropout_layer", dropout_index_mask),
    ("dropout_layer", dropout_rand_lt_keep),
    ("dropout_layer", dropout_d2l_style),
    ("DropoutMLP", ref.DropoutMLP),
    ("DropoutMLP", MLPNNDropout),
    ("DropoutMLP", MLPDropBeforeRelu),
    ("evaluate_loss", ref.evaluate_loss),
    ("evaluate_loss", eval_loss_try_finally),
    ("evaluate_loss", eval_loss_weighted_means),
]


# --- buggy variants: must lose marks, with feedback naming the cause ---------------------------

def _checked(fn):
    def wrapped(X, dropout, generator=None):
        if not 0 <= dropout <= 1:
            raise ValueError(dropout)
        if dropout == 1:
            return torch.zeros_like(X)
        return fn(X, dropout, generator)
    return wrapped


drop_no_rescale = _checked(lambda X, p, g: (torch.rand(X.shape, generator=g) > p) * X)
drop_times_keep = _checked(lambda X, p, g: (torch.rand(X.shape, generator=g) > p) * X * (1 - p))
drop_keeps_p = _checked(lambda X, p, g: (torch.rand(X.shape, generator=g) < p) * X / (1 - p))
drop_row_mask = _checked(lambda X, p, g: (torch.rand(X.shape[-1], generator=g) > p) * X / (1 - p))
drop_col_mask = _checked(lambda X, p, g: (torch.rand(X.shape[0], *[1] * (X.dim() - 1),
                                                     generator=g) > p) * X / (1 - p))
drop_global_rng = _checked(lambda X, p, g: (torch.rand(X.shape) > p) * X / (1 - p))
drop_library = _checked(lambda X, p, g: F.dropout(X, p, training=True))
drop_module = _checked(lambda X, p, g: nn.Dropout(p)(X))


def drop_nan_at_one(X, dropout, generator=None):
    if not 0 <= dropout <= 1:
        raise ValueError(dropout)
    mask = (torch.rand(X.shape, generator=generator) > dropout).to(X.dtype)
    return mask * X / (1.0 - dropout)


def drop_in_place(X, dropout, generator=None):
    if not 0 <= dropout <= 1:
        raise ValueError(dropout)
    if dropout == 1:
        return X.zero_()
    X[torch.rand(X.shape, generator=generator) <= dropout] = 0
    X /= 1 - dropout
    return X


def drop_assert(X, dropout, generator=None):
    assert 0 <= dropout <= 1
    return ref.dropout_layer(X, dropout, generator)


def drop_no_validation(X, dropout, generator=None):
    if dropout >= 1:
        return torch.zeros_like(X)
    return ref.dropout_layer(X, max(dropout, 0.0), generator)


def drop_reseed(X, dropout, generator=None):
    torch.manual_seed(0)
    return ref.dropout_layer(X, dropout)


def drop_float32_zeros(X, dropout, generator=None):
    if not 0 <= dropout <= 1:
        raise ValueError(dropout)
    if dropout == 1:
        return torch.zeros(X.shape)
    return ref.dropout_layer(X, dropout, generator)


class MLPAlwaysDrop(ref.DropoutMLP):
    def forward(self, X):
        H1 = ref.dropout_layer(torch.relu(self.lin1(X.reshape(len(X), -1))), self.dropout1)
        H2 = ref.dropout_layer(torch.relu(self.lin2(H1)), self.dropout2)
        return self.lin3(H2)


class MLPNoDrop(ref.DropoutMLP):
    def forward(self, X):
        return self.lin3(torch.relu(self.lin2(torch.relu(self.lin1(X.reshape(len(X), -1))))))


class MLPSwapped(ref.DropoutMLP):
    def forward(self, X):
        H1 = torch.relu(self.lin1(X.reshape(len(X), -1)))
        if self.training:
            H1 = ref.dropout_layer(H1, self.dropout2)
        H2 = torch.relu(self.lin2(H1))
        if self.training:
            H2 = ref.dropout_layer(H2, self.dropout1)
        return self.lin3(H2)


class MLPNoFlatten(ref.DropoutMLP):
    def forward(self, X):
        H1 = torch.relu(self.lin1(X))
        if self.training:
            H1 = ref.dropout_layer(H1, self.dropout1)
        H2 = torch.relu(self.lin2(H1))
        if self.training:
            H2 = ref.dropout_layer(H2, self.dropout2)
        return self.lin3(H2)


class MLPDropOutput(ref.DropoutMLP):
    def forward(self, X):
        out = super().forward(X)
        return ref.dropout_layer(out, self.dropout2) if self.training else out


class MLPNoRelu2(ref.DropoutMLP):
    def forward(self, X):
        H1 = torch.relu(self.lin1(X.reshape(len(X), -1)))
        if self.training:
            H1 = ref.dropout_layer(H1, self.dropout1)
        H2 = self.lin2(H1)
        if self.training:
            H2 = ref.dropout_layer(H2, self.dropout2)
        return self.lin3(H2)


class MLPInvertedFlag(ref.DropoutMLP):
    def forward(self, X):
        H1 = torch.relu(self.lin1(X.reshape(len(X), -1)))
        if not self.training:
            H1 = ref.dropout_layer(H1, self.dropout1)
        H2 = torch.relu(self.lin2(H1))
        if not self.training:
            H2 = ref.dropout_layer(H2, self.dropout2)
        return self.lin3(H2)


class MLPSequential(nn.Module):
    def __init__(self, num_inputs, num_outputs, num_hiddens1, num_hiddens2, dropout1, dropout2):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(num_inputs, num_hiddens1), nn.ReLU(),
                                 nn.Dropout(dropout1), nn.Linear(num_hiddens1, num_hiddens2),
                                 nn.ReLU(), nn.Dropout(dropout2),
                                 nn.Linear(num_hiddens2, num_outputs))

    def forward(self, X):
        return self.net(X)


def eval_loss_batch_means(net, data_iter, loss):
    was = net.training
    net.eval()
    means = []
    with torch.no_grad():
        for X, y in data_iter:
            means.append(loss(net(X), y).mean().item())
    net.train(was)
    return sum(means) / len(means)


def eval_loss_no_eval(net, data_iter, loss):
    total, n = 0.0, 0
    with torch.no_grad():
        for X, y in data_iter:
            l = loss(net(X), y)
            total, n = total + l.sum().item(), n + len(l)
    return total / n


def eval_loss_not_restored(net, data_iter, loss):
    net.eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for X, y in data_iter:
            l = loss(net(X), y)
            total, n = total + l.sum().item(), n + len(l)
    return total / n


def eval_loss_always_train(net, data_iter, loss):
    out = eval_loss_not_restored(net, data_iter, loss)
    net.train()
    return out


def eval_loss_grad(net, data_iter, loss):
    was = net.training
    net.eval()
    total, n = 0.0, 0
    for X, y in data_iter:
        l = loss(net(X), y)
        total, n = total + l.sum().item(), n + len(l)
    net.train(was)
    return total / n


def eval_loss_d2l(net, data_iter, loss):
    from d2l import torch as d2l
    was = net.training
    net.eval()
    with torch.no_grad():
        out = d2l.evaluate_loss(net, data_iter, loss)
    net.train(was)
    return out


def eval_loss_full_batches(net, data_iter, loss):
    was = net.training
    net.eval()
    total, batches, size = 0.0, 0, None
    with torch.no_grad():
        for X, y in data_iter:
            size = size or len(X)
            total += loss(net(X), y).sum().item()
            batches += 1
    net.train(was)
    return total / (batches * size)


BUGGY = [
    ("dropout_layer", drop_no_rescale, "not rescaled"),
    ("dropout_layer", drop_times_keep, "multiplied by 1 - dropout"),
    ("dropout_layer", drop_keeps_p, "kept instead of dropped"),
    ("dropout_layer", drop_row_mask, "one mask shared by all rows"),
    ("dropout_layer", drop_col_mask, "dropped together"),
    ("dropout_layer", drop_global_rng, "generator"),
    ("dropout_layer", drop_library, "from scratch"),
    ("dropout_layer", drop_module, "from scratch"),
    ("dropout_layer", drop_nan_at_one, "NaN"),
    ("dropout_layer", drop_in_place, "in place"),
    ("dropout_layer", drop_assert, "ValueError"),
    ("dropout_layer", drop_no_validation, "ValueError"),
    ("dropout_layer", drop_reseed, "same"),
    ("dropout_layer", drop_float32_zeros, "dtype"),
    ("DropoutMLP", MLPAlwaysDrop, "evaluation mode"),
    ("DropoutMLP", MLPInvertedFlag, "evaluation mode"),
    ("DropoutMLP", MLPNoDrop, "no dropout in training mode"),
    ("DropoutMLP", MLPSwapped, "swapped"),
    ("DropoutMLP", MLPNoFlatten, "flatten"),
    ("DropoutMLP", MLPDropOutput, "output layer"),
    ("DropoutMLP", MLPNoRelu2, "ReLU is missing after lin2"),
    ("DropoutMLP", MLPSequential, "attribute `lin1`"),
    ("evaluate_loss", eval_loss_batch_means, "per-batch means"),
    ("evaluate_loss", eval_loss_no_eval, "net.eval()"),
    ("evaluate_loss", eval_loss_not_restored, "not restored"),
    ("evaluate_loss", eval_loss_always_train, "switches an evaluating net"),
    ("evaluate_loss", eval_loss_grad, "torch.no_grad()"),
    ("evaluate_loss", eval_loss_d2l, "d2l"),
    ("evaluate_loss", eval_loss_full_batches, "last batch is smaller"),
]


# --- the objects the checks make in the kernel ------------------------------------------------

def test_with_generator_shares_one_generator_across_calls():
    """A generator sent over the wire is a copy; the probe keeps one in the kernel."""
    from grader.remote import local_remote

    remote = local_remote({"answer": ref.dropout_layer})
    fn = remote.global_("answer")
    shared = remote.build("dropout.with_generator", fn, torch.Generator().manual_seed(3))
    X = torch.ones(50, 40)
    first, second = shared(X, 0.5), shared(X, 0.5)
    assert not torch.equal(first, second)
    g = torch.Generator().manual_seed(3)
    torch.testing.assert_close(first, ref.dropout_layer(X, 0.5, g))
    torch.testing.assert_close(second, ref.dropout_layer(X, 0.5, g))


def test_recorder_sees_each_layers_input_and_output():
    from grader.remote import local_remote

    remote = local_remote({"net": ref.DropoutMLP(4, 2, 8, 6, 0.5, 0.5)})
    net = remote.global_("net")
    layers = {name: getattr(net, name) for name in ("lin1", "lin2", "lin3")}
    rec = remote.build("dropout.recorder", layers)
    X = torch.rand(5, 4)
    out = net(X).detach()
    seen = rec.method("last")
    assert set(seen) == {"lin1", "lin2", "lin3"}
    torch.testing.assert_close(seen["lin1"][0], X)
    torch.testing.assert_close(seen["lin3"][1], out)
    rec.method("remove")
    rec.method("clear")
    net(X)
    assert rec.method("last") == {}


def test_the_public_module_holds_no_reference():
    import grader.checks.dropout as public

    for name in ("dropout_layer", "DropoutMLP", "evaluate_loss", "LIKELY", "_mlp_forward",
                 "_dropout_scale", "dropconnect_linear", "gaussian_noise_layer",
                 "_noise_ratio_var", "_dropconnect_zero_input"):
        assert not hasattr(public, name), name


# --- dropconnect_linear and gaussian_noise_layer (D2L 5.6, exercises 6 and 7) -----------------

def dc_via_dropout(X, W, b, p, generator=None):
    """DropConnect is dropout applied to W."""
    return X @ ref.dropout_layer(W, p, generator) + b


def dc_bernoulli_linear(X, W, b, p, generator=None):
    keep = torch.bernoulli(torch.full_like(W, 1 - p), generator=generator)
    return F.linear(X, (keep * W).T / (1 - p), b)


def dc_where(X, W, b, p, generator=None):
    u = torch.rand(W.shape, generator=generator, dtype=W.dtype)
    return X @ torch.where(u < 1 - p, W / (1 - p), torch.zeros_like(W)) + b


def noise_randn_like(X, sigma, training=True, generator=None):
    if not training:
        return X
    return X + sigma * X * torch.randn(X.shape, generator=generator, dtype=X.dtype)


def noise_normal(X, sigma, training=True, generator=None):
    if training:
        m = torch.normal(1.0, sigma, size=X.shape, generator=generator, dtype=torch.float64)
        return (X * m).to(X.dtype)
    return X.clone()


CORRECT += [
    ("dropconnect_linear", ref.dropconnect_linear),
    ("dropconnect_linear", dc_via_dropout),
    ("dropconnect_linear", dc_bernoulli_linear),
    ("dropconnect_linear", dc_where),
    ("gaussian_noise_layer", ref.gaussian_noise_layer),
    ("gaussian_noise_layer", noise_randn_like),
    ("gaussian_noise_layer", noise_normal),
]


def _mask(W, p, g):
    return (torch.rand(W.shape, generator=g) > p).to(W.dtype)


def dc_no_rescale(X, W, b, p, generator=None):
    return X @ (_mask(W, p, generator) * W) + b


def dc_outputs(X, W, b, p, generator=None):
    return ref.dropout_layer(X @ W, p, generator) + b


def dc_inputs(X, W, b, p, generator=None):
    return ref.dropout_layer(X, p, generator) @ W + b


def dc_column_mask(X, W, b, p, generator=None):
    mask = (torch.rand(W.shape[1], generator=generator) > p).to(W.dtype)
    return X @ (mask * W / (1 - p)) + b


def dc_bias_dropped(X, W, b, p, generator=None):
    Wb = torch.cat([W, b[None]])
    thinned = _mask(Wb, p, generator) * Wb / (1 - p)
    return X @ thinned[:-1] + thinned[-1]


def dc_per_example(X, W, b, p, generator=None):
    masks = (torch.rand(X.shape[0], *W.shape, generator=generator) > p).to(W.dtype)
    return torch.einsum("ni,nio->no", X, masks * W / (1 - p)) + b


def dc_keeps_p(X, W, b, p, generator=None):
    mask = (torch.rand(W.shape, generator=generator) < p).to(W.dtype)
    return X @ (mask * W / (1 - p)) + b


def dc_global_rng(X, W, b, p, generator=None):
    return X @ (F.dropout(W, p, training=True)) + b


def dc_whole_output_scaled(X, W, b, p, generator=None):
    return (X @ (_mask(W, p, generator) * W) + b) / (1 - p)


def noise_eval_too(X, sigma, training=True, generator=None):
    return X * (1 + sigma * torch.randn(X.shape, generator=generator, dtype=X.dtype))


def noise_additive(X, sigma, training=True, generator=None):
    if not training:
        return X
    return X + sigma * torch.randn(X.shape, generator=generator, dtype=X.dtype)


def noise_variance_as_std(X, sigma, training=True, generator=None):
    if not training:
        return X
    return X * torch.normal(1.0, sigma ** 2, size=X.shape, generator=generator).to(X.dtype)


def noise_shared(X, sigma, training=True, generator=None):
    if not training:
        return X
    return X * (1 + sigma * torch.randn(X.shape[1:], generator=generator, dtype=X.dtype))


def noise_mean_zero(X, sigma, training=True, generator=None):
    if not training:
        return X
    return X * sigma * torch.randn(X.shape, generator=generator, dtype=X.dtype)


def noise_uniform(X, sigma, training=True, generator=None):
    if not training:
        return X
    return X * (1 + sigma * torch.rand(X.shape, generator=generator, dtype=X.dtype))


def noise_global_rng(X, sigma, training=True, generator=None):
    if not training:
        return X
    return X * (1 + sigma * torch.randn_like(X))


BUGGY += [
    ("dropconnect_linear", dc_no_rescale, "not rescaled"),
    ("dropconnect_linear", dc_outputs, "outputs X @ W are dropped"),
    ("dropconnect_linear", dc_inputs, "the inputs are dropped"),
    ("dropconnect_linear", dc_column_mask, "one number per output unit"),
    ("dropconnect_linear", dc_bias_dropped, "the bias is dropped too"),
    ("dropconnect_linear", dc_per_example, "a different mask for each example"),
    ("dropconnect_linear", dc_keeps_p, "kept instead of dropped"),
    ("dropconnect_linear", dc_global_rng, "generator"),
    ("dropconnect_linear", dc_whole_output_scaled, "bias included, is divided"),
    ("gaussian_noise_layer", noise_eval_too, "evaluation mode"),
    ("gaussian_noise_layer", noise_additive, "added (X + sigma * eps)"),
    ("gaussian_noise_layer", noise_variance_as_std, "sigma**2"),
    ("gaussian_noise_layer", noise_shared, "same noise"),
    ("gaussian_noise_layer", noise_mean_zero, "mean 0"),
    ("gaussian_noise_layer", noise_uniform, "uniform"),
    ("gaussian_noise_layer", noise_global_rng, "generator"),
]
