"""Chapter 04: references agree with torch and closed forms; the hidden checks accept correct
answers written differently and reject realistic buggy ones with specific feedback."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from grader.chapters import weight_decay as ref

CH = "04_weight_decay"


# --- references against torch built-ins and closed forms ---------------------------------------

def test_polynomial_features_match_gamma():
    x = torch.randn(30, dtype=torch.float64)
    P = ref.polynomial_features(x, 6)
    for i in range(7):
        torch.testing.assert_close(P[:, i], x ** i / math.gamma(i + 1))


def test_penalties_match_norms():
    w = torch.randn(5, 4, dtype=torch.float64)
    torch.testing.assert_close(ref.l2_penalty(w), torch.linalg.norm(w) ** 2 / 2)
    torch.testing.assert_close(ref.l1_penalty(w), torch.linalg.norm(w.flatten(), 1))


def test_k_fold_split_partitions_the_used_examples():
    X, y = torch.arange(23.0).reshape(-1, 1), torch.arange(23)
    for i in range(5):
        Xt, yt, Xv, yv = ref.k_fold_split(5, i, X, y)
        assert len(Xv) == 4 and len(Xt) == 16
        assert sorted(torch.cat([Xt, Xv]).reshape(-1).long().tolist()) == list(range(20))
        torch.testing.assert_close(yv, torch.arange(4 * i, 4 * i + 4))


def test_weight_decay_sgd_matches_l2_penalty_gradient():
    """Decay in the optimizer = adding wd * l2_penalty(weights) to the loss."""
    torch.manual_seed(0)
    net1 = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    net2 = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    net2.load_state_dict(net1.state_dict())
    X, y = torch.randn(8, 3), torch.randn(8, 1)
    opt1 = ref.weight_decay_sgd(net1, 0.1, 0.3)
    opt2 = torch.optim.SGD(net2.parameters(), lr=0.1)
    for _ in range(3):
        opt1.zero_grad()
        ((net1(X) - y) ** 2).mean().backward()
        opt1.step()
        opt2.zero_grad()
        (((net2(X) - y) ** 2).mean()
         + 0.3 * sum(ref.l2_penalty(w) for w in ref.linear_weights(net2))).backward()
        opt2.step()
    for a, b in zip(net1.parameters(), net2.parameters()):
        torch.testing.assert_close(a, b)


def test_early_stopping_follows_keras():
    """Keras' EarlyStopping (monitor val_loss, mode min, no baseline, no restore): stop when
    `wait >= patience`, wait reset when loss - min_delta < best (min_delta taken negative)."""
    def keras(losses, patience, min_delta):
        best, wait, best_epoch = math.inf, 0, 0
        for epoch, loss in enumerate(losses):
            wait += 1
            if loss + min_delta < best:  # np.less(current - (-min_delta), best)
                best, best_epoch, wait = loss, epoch, 0
            if wait >= patience and epoch > 0:
                return epoch, best_epoch
        return len(losses) - 1, best_epoch

    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        n = int(torch.randint(1, 30, (1,), generator=g))
        # multiples of 1/8: best - min_delta and loss + min_delta are exact
        losses = [float(v) / 8 for v in torch.randint(0, 9, (n,), generator=g)]
        patience = int(torch.randint(1, 5, (1,), generator=g))
        min_delta = float(torch.randint(0, 3, (1,), generator=g)) / 8
        assert ref.early_stopping(losses, patience, min_delta) == keras(losses, patience,
                                                                        min_delta)
    assert ref.early_stopping([1.21, 1.13, 0.9, 0.68, 0.65, 0.62, 0.46, 0.5, 0.43, 0.45], 2,
                              0.035) == (8, 6)


# --- correct variants: written differently, must get full marks ---------------------------------

def poly_numpy(x, degree):
    powers = np.power(x.numpy().reshape(-1, 1), np.arange(degree + 1).reshape(1, -1))
    powers = powers / np.array([math.gamma(i + 1) for i in range(degree + 1)])
    return torch.from_numpy(powers).to(x.dtype)


def poly_loop(x, degree):
    cols = [x ** i / math.factorial(i) for i in range(degree + 1)]
    return torch.stack(cols, dim=1)


def poly_lgamma(x, degree):
    i = torch.arange(degree + 1, dtype=x.dtype)
    return x.reshape(-1, 1) ** i / torch.exp(torch.lgamma(i + 1))


def poly_cumulative(x, degree):
    cols = [torch.ones_like(x)]
    for i in range(1, degree + 1):
        cols.append(cols[-1] * x / i)
    return torch.stack(cols, 1)


def k_fold_d2l(k, i, X, y):
    assert k > 1
    fold_size = X.shape[0] // k
    X_train, y_train = None, None
    for j in range(k):
        idx = slice(j * fold_size, (j + 1) * fold_size)
        X_part, y_part = X[idx, :], y[idx]
        if j == i:
            X_valid, y_valid = X_part, y_part
        elif X_train is None:
            X_train, y_train = X_part, y_part
        else:
            X_train = torch.cat([X_train, X_part], 0)
            y_train = torch.cat([y_train, y_part], 0)
    return X_train, y_train, X_valid, y_valid


def k_fold_mask(k, i, X, y):
    fs = len(X) // k
    idx = torch.arange(k * fs)
    valid = (idx // fs) == i
    return X[idx[~valid]], y[idx[~valid]], X[idx[valid]], y[idx[valid]]


def k_fold_chunks(k, i, X, y):
    fs = len(X) // k
    Xs, ys = X[:k * fs].split(fs), y[:k * fs].split(fs)
    return (torch.cat(Xs[:i] + Xs[i + 1:]), torch.cat(ys[:i] + ys[i + 1:]), Xs[i], ys[i])


def wd_named_modules(net, lr, wd):
    decay, rest = [], []
    linear = {f"{name}.weight" if name else "weight"
              for name, m in net.named_modules() if isinstance(m, nn.Linear)}
    for name, p in net.named_parameters():
        (decay if name in linear else rest).append(p)
    return torch.optim.SGD([{"params": decay, "weight_decay": wd}, {"params": rest}], lr=lr,
                           weight_decay=0)


def wd_modules_ids(net, lr, wd):
    weights = [m.weight for m in net.modules() if isinstance(m, nn.Linear)]
    ids = {id(w) for w in weights}
    others = [p for p in net.parameters() if id(p) not in ids]
    groups = [{"params": weights, "weight_decay": wd}]
    if others:
        groups.append({"params": others, "weight_decay": 0.0})
    return torch.optim.SGD(groups, lr)


def wd_add_group(net, lr, wd):
    weights = [m.weight for m in net.modules() if isinstance(m, nn.Linear)]
    opt = torch.optim.SGD(weights, lr=lr, weight_decay=wd)
    opt.add_param_group({"params": [p for p in net.parameters()
                                    if all(p is not w for w in weights)], "weight_decay": 0})
    return opt


def es_since_best(val_losses, patience, min_delta=0.0):
    """Epochs since the last improvement, counted from its index."""
    best_epoch = 0
    for t in range(1, len(val_losses)):
        if val_losses[t] < val_losses[best_epoch] - min_delta:
            best_epoch = t
        elif t - best_epoch >= patience:
            return t, best_epoch
    return len(val_losses) - 1, best_epoch


class KerasLikeEarlyStopping:
    """A callback as Keras writes it: best starts at +inf, on_epoch_end says when to stop."""

    def __init__(self, patience, min_delta):
        self.patience, self.min_delta = patience, min_delta
        self.best, self.best_epoch, self.wait = math.inf, None, 0

    def on_epoch_end(self, epoch, loss):
        if loss - self.best < -self.min_delta or self.best_epoch is None:
            self.best, self.best_epoch, self.wait = loss, epoch, 0
            return False
        self.wait += 1
        return self.wait >= self.patience


def es_callback(val_losses, patience, min_delta=0.0):
    cb = KerasLikeEarlyStopping(patience, min_delta)
    for epoch, loss in enumerate(val_losses):
        if cb.on_epoch_end(epoch, loss):
            return epoch, cb.best_epoch
    return len(val_losses) - 1, cb.best_epoch


def es_flags(val_losses, patience, min_delta=0.0):
    """First mark the improving epochs, then look for a run of `patience` others."""
    improved, best = [True], val_losses[0]
    for loss in val_losses[1:]:
        improved.append(bool(loss < best - min_delta))
        if improved[-1]:
            best = loss
    n = len(improved)
    stop = next((t for t in range(patience, n) if not any(improved[t - patience + 1:t + 1])),
                n - 1)
    best_epoch = max(e for e in range(stop + 1) if improved[e])
    return int(stop), best_epoch


def es_numpy(val_losses, patience, min_delta=0.0):
    v = np.asarray(val_losses, dtype=np.float64)
    best_epoch, best = 0, v[0]
    for t in range(1, len(v)):
        if v[t] < best - min_delta:
            best_epoch, best = t, v[t]
        if t - best_epoch == patience:
            return t, best_epoch
    return len(v) - 1, best_epoch


CORRECT = [
    ("polynomial_features", ref.polynomial_features),
    ("polynomial_features", poly_numpy),
    ("polynomial_features", poly_loop),
    ("polynomial_features", poly_lgamma),
    ("polynomial_features", poly_cumulative),
    ("k_fold_split", ref.k_fold_split),
    ("k_fold_split", k_fold_d2l),
    ("k_fold_split", k_fold_mask),
    ("k_fold_split", k_fold_chunks),
    ("l2_penalty", ref.l2_penalty),
    ("l2_penalty", lambda w: torch.sum(w.pow(2)) / 2),
    ("l2_penalty", lambda w: 0.5 * torch.linalg.norm(w) ** 2),
    ("l1_penalty", ref.l1_penalty),
    ("l1_penalty", lambda w: torch.linalg.norm(w.flatten(), ord=1)),
    ("l1_penalty", lambda w: torch.sum(torch.abs(w))),
    ("weight_decay_sgd", ref.weight_decay_sgd),
    ("weight_decay_sgd", wd_named_modules),
    ("weight_decay_sgd", wd_modules_ids),
    ("weight_decay_sgd", wd_add_group),
    ("early_stopping", ref.early_stopping),
    ("early_stopping", es_since_best),
    ("early_stopping", es_callback),
    ("early_stopping", es_flags),
    ("early_stopping", es_numpy),
]


# --- buggy variants: must lose marks, with feedback naming the cause ---------------------------

def poly_no_factorial(x, degree):
    return x.reshape(-1, 1) ** torch.arange(degree + 1, dtype=x.dtype)


def poly_from_one(x, degree):
    return torch.stack([x ** i / math.factorial(i) for i in range(1, degree + 1)], 1)


def poly_degree_columns(x, degree):
    return torch.stack([x ** i / math.factorial(i) for i in range(degree)], 1)


def poly_next_factorial(x, degree):
    return torch.stack([x ** i / math.factorial(i + 1) for i in range(degree + 1)], 1)


def poly_transposed(x, degree):
    return torch.stack([x ** i / math.factorial(i) for i in range(degree + 1)], 0)


def poly_float32(x, degree):
    out = torch.zeros(len(x), degree + 1)
    for i in range(degree + 1):
        out[:, i] = x ** i / math.factorial(i)
    return out


def fold_leak(k, i, X, y):
    fs = len(X) // k
    valid = slice(i * fs, (i + 1) * fs)
    return X[:k * fs], y[:k * fs], X[valid], y[valid]


def fold_leak_no_elif(k, i, X, y):
    fs = len(X) // k
    parts_X, parts_y = [], []
    for j in range(k):
        idx = slice(j * fs, (j + 1) * fs)
        if j == i:
            X_valid, y_valid = X[idx], y[idx]
        parts_X.append(X[idx])
        parts_y.append(y[idx])
    return torch.cat(parts_X), torch.cat(parts_y), X_valid, y_valid


def fold_one_based(k, i, X, y):
    return ref.k_fold_split(k, (i - 1) % k, X, y)


def fold_slice_plus_one(k, i, X, y):
    fs = len(X) // k
    idx = torch.arange(len(X))
    valid = (idx >= i * fs) & (idx <= (i + 1) * fs)
    train = ~valid & (idx < k * fs)
    return X[train], y[train], X[valid], y[valid]


def fold_remainder_last(k, i, X, y):
    fs = len(X) // k
    bounds = [j * fs for j in range(k)] + [len(X)]
    parts = [slice(bounds[j], bounds[j + 1]) for j in range(k)]
    train = [p for j, p in enumerate(parts) if j != i]
    return (torch.cat([X[p] for p in train]), torch.cat([y[p] for p in train]),
            X[parts[i]], y[parts[i]])


def fold_ceil(k, i, X, y):
    fs = math.ceil(len(X) / k)
    parts = [slice(j * fs, (j + 1) * fs) for j in range(k)]
    train = [p for j, p in enumerate(parts) if j != i]
    return (torch.cat([X[p] for p in train]), torch.cat([y[p] for p in train]),
            X[parts[i]], y[parts[i]])


def fold_rotated(k, i, X, y):
    fs = len(X) // k
    Xs, ys = list(X[:k * fs].split(fs)), list(y[:k * fs].split(fs))
    return (torch.cat(Xs[i + 1:] + Xs[:i]), torch.cat(ys[i + 1:] + ys[:i]), Xs[i], ys[i])


def fold_wrong_order(k, i, X, y):
    Xt, yt, Xv, yv = ref.k_fold_split(k, i, X, y)
    return Xt, Xv, yt, yv


def wd_all(net, lr, wd):
    return torch.optim.SGD(net.parameters(), lr=lr, weight_decay=wd)


def wd_first_weight_only(net, lr, wd):
    return torch.optim.SGD([{"params": net[0].weight, "weight_decay": wd}], lr=lr)


def wd_d2l_first_layer(net, lr, wd):
    return torch.optim.SGD([{"params": net[0].weight, "weight_decay": wd},
                            {"params": net[0].bias}], lr=lr)


def wd_top_level(net, lr, wd):
    decay, rest = [], []
    for m in net.children():
        if isinstance(m, nn.Linear):
            decay.append(m.weight)
            if m.bias is not None:
                rest.append(m.bias)
    return torch.optim.SGD([{"params": decay, "weight_decay": wd}, {"params": rest}], lr=lr)


def wd_by_name(net, lr, wd):
    decay = [p for n, p in net.named_parameters() if n.endswith("weight")]
    rest = [p for n, p in net.named_parameters() if not n.endswith("weight")]
    return torch.optim.SGD([{"params": decay, "weight_decay": wd}, {"params": rest}], lr=lr)


def wd_by_ndim(net, lr, wd):
    decay = [p for p in net.parameters() if p.dim() >= 2]
    rest = [p for p in net.parameters() if p.dim() < 2]
    return torch.optim.SGD([{"params": decay, "weight_decay": wd}, {"params": rest}], lr=lr)


def wd_none(net, lr, wd):
    return torch.optim.SGD(net.parameters(), lr=lr)


def wd_times_lr(net, lr, wd):
    return ref.weight_decay_sgd(net, lr, wd * lr)


def wd_fixed_lr(net, lr, wd):
    return ref.weight_decay_sgd(net, 0.1, wd)


def wd_momentum(net, lr, wd):
    opt = ref.weight_decay_sgd(net, lr, wd)
    for g in opt.param_groups:
        g["momentum"] = 0.9
    return opt


def wd_adam(net, lr, wd):
    return torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=wd)


def es_late(val_losses, patience, min_delta=0.0):
    best, best_epoch, wait = val_losses[0], 0, 0
    for t in range(1, len(val_losses)):
        if val_losses[t] < best - min_delta:
            best, best_epoch, wait = val_losses[t], t, 0
        else:
            if wait >= patience:  # checked before counting this epoch
                return t, best_epoch
            wait += 1
    return len(val_losses) - 1, best_epoch


def es_early(val_losses, patience, min_delta=0.0):
    best, best_epoch = val_losses[0], 0
    for t in range(1, len(val_losses)):
        if val_losses[t] < best - min_delta:
            best, best_epoch = val_losses[t], t
        elif t - best_epoch + 1 >= patience:  # counts the best epoch as one of the wait
            return t, best_epoch
    return len(val_losses) - 1, best_epoch


def es_no_min_delta(val_losses, patience, min_delta=0.0):
    return ref.early_stopping(val_losses, patience)


def es_best_always(val_losses, patience, min_delta=0.0):
    best, best_epoch, wait = val_losses[0], 0, 0
    for t in range(1, len(val_losses)):
        if val_losses[t] < best - min_delta:
            best_epoch, wait = t, 0
        else:
            wait += 1
            if wait >= patience:
                return t, best_epoch
        best = min(best, val_losses[t])
    return len(val_losses) - 1, best_epoch


def es_best_as_stop(val_losses, patience, min_delta=0.0):
    stop, best = ref.early_stopping(val_losses, patience, min_delta)
    return best, best


def es_previous(val_losses, patience, min_delta=0.0):
    best_epoch, wait = 0, 0
    for t in range(1, len(val_losses)):
        if val_losses[t] < val_losses[t - 1] - min_delta:
            best_epoch, wait = t, 0
        else:
            wait += 1
            if wait >= patience:
                return t, best_epoch
    return len(val_losses) - 1, best_epoch


def es_less_equal(val_losses, patience, min_delta=0.0):
    best, best_epoch, wait = val_losses[0], 0, 0
    for t in range(1, len(val_losses)):
        if val_losses[t] <= best - min_delta:
            best, best_epoch, wait = val_losses[t], t, 0
        else:
            wait += 1
            if wait >= patience:
                return t, best_epoch
    return len(val_losses) - 1, best_epoch


def es_plus_delta(val_losses, patience, min_delta=0.0):
    best, best_epoch, wait = val_losses[0], 0, 0
    for t in range(1, len(val_losses)):
        if val_losses[t] < best + min_delta:
            best, best_epoch, wait = val_losses[t], t, 0
        else:
            wait += 1
            if wait >= patience:
                return t, best_epoch
    return len(val_losses) - 1, best_epoch


def es_no_reset(val_losses, patience, min_delta=0.0):
    best, best_epoch, wait = val_losses[0], 0, 0
    for t in range(1, len(val_losses)):
        if val_losses[t] < best - min_delta:
            best, best_epoch = val_losses[t], t
        else:
            wait += 1
            if wait >= patience:
                return t, best_epoch
    return len(val_losses) - 1, best_epoch


def es_argmin(val_losses, patience, min_delta=0.0):
    stop, _ = ref.early_stopping(val_losses, patience, min_delta)
    return stop, int(np.argmin(val_losses))


def es_len(val_losses, patience, min_delta=0.0):
    stop, best = ref.early_stopping(val_losses, patience, min_delta)
    return (len(val_losses) if stop == len(val_losses) - 1 else stop), best


def es_floats(val_losses, patience, min_delta=0.0):
    stop, best = ref.early_stopping(val_losses, patience, min_delta)
    return float(stop), float(best)


BUGGY = [
    ("polynomial_features", poly_no_factorial, "i!"),
    ("polynomial_features", poly_from_one, "x**0"),
    ("polynomial_features", poly_degree_columns, "degree + 1 columns"),
    ("polynomial_features", poly_next_factorial, "(i + 1)!"),
    ("polynomial_features", poly_transposed, "transposed"),
    ("polynomial_features", poly_float32, "dtype"),
    ("k_fold_split", fold_leak, "leaks into training"),
    ("k_fold_split", fold_leak_no_elif, "leaks into training"),
    ("k_fold_split", fold_one_based, "off by one"),
    ("k_fold_split", fold_slice_plus_one, "off by one"),
    ("k_fold_split", fold_remainder_last, "n % k examples should be dropped"),
    ("k_fold_split", fold_ceil, "rounded down"),
    ("k_fold_split", fold_rotated, "original order"),
    ("k_fold_split", fold_wrong_order, "in the order"),
    ("l2_penalty", lambda w: (w ** 2).sum(), "not halved"),
    ("l2_penalty", lambda w: (w ** 2).mean() / 2, "mean instead of a sum"),
    ("l2_penalty", lambda w: torch.linalg.norm(w) / 2, "not squared"),
    ("l2_penalty", lambda w: torch.tensor(float((w ** 2).sum() / 2), dtype=w.dtype),
     "not differentiable"),
    ("l2_penalty", lambda w: w ** 2 / 2, "scalar"),
    ("l1_penalty", lambda w: w.sum(), "abs() is missing"),
    ("l1_penalty", lambda w: w.abs().sum() / 2, "not halved"),
    ("l1_penalty", lambda w: (w ** 2).sum(), "L2 penalty"),
    ("l1_penalty", lambda w: torch.tensor(np.abs(w.detach().numpy()).sum(), dtype=w.dtype),
     "not differentiable"),
    ("weight_decay_sgd", wd_all, "biases are decayed"),
    ("weight_decay_sgd", wd_first_weight_only, "never trained"),
    ("weight_decay_sgd", wd_d2l_first_layer, "never trained"),
    ("weight_decay_sgd", wd_top_level, "nested modules"),
    ("weight_decay_sgd", wd_by_name, "not the weight of an nn.Linear"),
    ("weight_decay_sgd", wd_by_ndim, "not the weight of an nn.Linear"),
    ("weight_decay_sgd", wd_none, "is not decayed"),
    ("weight_decay_sgd", wd_times_lr, "instead of wd"),
    ("weight_decay_sgd", wd_fixed_lr, "learning rate"),
    ("weight_decay_sgd", wd_momentum, "momentum"),
    ("weight_decay_sgd", wd_adam, "torch.optim.SGD"),
    ("early_stopping", es_late, "one epoch late"),
    ("early_stopping", es_early, "one epoch early"),
    ("early_stopping", es_no_min_delta, "min_delta ignored"),
    ("early_stopping", es_best_always, "`best` updated on an epoch that did not improve"),
    ("early_stopping", es_best_as_stop, "best epoch returned as the stop epoch"),
    ("early_stopping", es_previous, "previous epoch"),
    ("early_stopping", es_less_equal, "strictly below"),
    ("early_stopping", es_plus_delta, "best + min_delta"),
    ("early_stopping", es_no_reset, "not reset"),
    ("early_stopping", es_argmin, "lowest loss of all epochs"),
    ("early_stopping", es_len, "len(val_losses) - 1"),
    ("early_stopping", es_floats, "two ints"),
]


def test_visible_check_catches_the_first_weight_only_bug():
    """Only net[0].weight in the optimizer: the bias is never trained, already visibly."""
    from grader.feedback import Mismatch
    from grader.testing import visible_verdict

    with pytest.raises(Mismatch, match="never trained"):
        visible_verdict(CH, "weight_decay_sgd", wd_first_weight_only)
    with pytest.raises(Mismatch, match="biases are decayed"):
        visible_verdict(CH, "weight_decay_sgd", wd_all)


# --- frobenius_sq and prior_to_weight_decay (D2L 3.7, exercises 4 and 6) ------------------------

def frob_sum_squares(W):
    return (W ** 2).sum()


def frob_trace_gram_rows(W):
    return torch.trace(W @ W.T)


def frob_einsum(W):
    return torch.einsum("ij,ij->", W, W)


def prior_formula(sigma_w, sigma_noise, n):
    return sigma_noise ** 2 / sigma_w ** 2 / n


def prior_math(sigma_w, sigma_noise, n):
    return math.pow(sigma_noise / sigma_w, 2) * (1.0 / n)


CORRECT += [
    ("frobenius_sq", ref.frobenius_sq),
    ("frobenius_sq", frob_sum_squares),
    ("frobenius_sq", frob_trace_gram_rows),
    ("frobenius_sq", frob_einsum),
    ("prior_to_weight_decay", ref.prior_to_weight_decay),
    ("prior_to_weight_decay", prior_formula),
    ("prior_to_weight_decay", prior_math),
]


def frob_gram_sum(W):
    return (W.T @ W).sum()


def frob_no_transpose(W):
    return torch.trace(W @ W)


def frob_norm(W):
    return torch.linalg.norm(W) ** 2


def frob_sqrt(W):
    return torch.sqrt((W ** 2).sum())


def frob_halved(W):
    return (W ** 2).sum() / 2


def frob_item(W):
    return torch.tensor((W ** 2).sum().item(), dtype=W.dtype)


def prior_only(sigma_w, sigma_noise, n):
    return 1 / sigma_w ** 2


def prior_no_n(sigma_w, sigma_noise, n):
    return sigma_noise ** 2 / sigma_w ** 2


def prior_stds(sigma_w, sigma_noise, n):
    return sigma_noise / (n * sigma_w)


def prior_inverted(sigma_w, sigma_noise, n):
    return sigma_w ** 2 / (n * sigma_noise ** 2)


def prior_tensor(sigma_w, sigma_noise, n):
    return torch.tensor(sigma_noise ** 2 / (n * sigma_w ** 2))


BUGGY += [
    ("frobenius_sq", frob_gram_sum, "sum of ALL entries of WᵀW"),
    ("frobenius_sq", frob_no_transpose, "W is not transposed"),
    ("frobenius_sq", frob_norm, "torch.linalg.norm"),
    ("frobenius_sq", frob_sqrt, "not its square"),
    ("frobenius_sq", frob_halved, "halved"),
    ("frobenius_sq", frob_item, "not differentiable"),
    ("prior_to_weight_decay", prior_only, "multiply by sigma_noise^2 / n"),
    ("prior_to_weight_decay", prior_no_n, "n is missing"),
    ("prior_to_weight_decay", prior_stds, "standard deviations instead of variances"),
    ("prior_to_weight_decay", prior_inverted, "inverted"),
    ("prior_to_weight_decay", prior_tensor, "Python float"),
]


def test_frobenius_reference_is_the_squared_frobenius_norm():
    W = torch.randn(4, 7, dtype=torch.float64)
    torch.testing.assert_close(ref.frobenius_sq(W), torch.linalg.matrix_norm(W) ** 2)


def test_prior_lambda_makes_ridge_the_posterior_mean():
    """Ridge regression with lambda = prior_to_weight_decay(...) is the Bayesian posterior mean."""
    g = torch.Generator().manual_seed(0)
    n, d, s_w, s = 30, 5, 0.7, 0.3
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = X @ torch.randn(d, generator=g, dtype=torch.float64) + s * torch.randn(n, generator=g,
                                                                               dtype=torch.float64)
    lam = ref.prior_to_weight_decay(s_w, s, n)
    ridge = torch.linalg.solve(X.T @ X / n + lam * torch.eye(d, dtype=X.dtype), X.T @ y / n)
    posterior = torch.linalg.solve(X.T @ X / s ** 2 + torch.eye(d, dtype=X.dtype) / s_w ** 2,
                                   X.T @ y / s ** 2)
    torch.testing.assert_close(ridge, posterior)
