"""Chapter 08: references agree with closed forms; the hidden checks accept correct answers
written differently and reject realistic buggy ones with specific feedback."""

import math

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from grader.chapters import kaggle_house as ref
from grader.data.kaggle_house import synthetic_house_data
from grader.testing import hidden_verdict
from tests.test_weight_decay import k_fold_d2l as k_fold_data_d2l  # same contract

CH = "08_kaggle_house"


# --- references ---------------------------------------------------------------------------------

def test_preprocess_reference_on_the_synthetic_table():
    train, test = synthetic_house_data(300, 200, seed=1)
    X_tr, X_te, y = ref.preprocess(train, test)
    assert X_tr.dtype == X_te.dtype == y.dtype == torch.float32
    assert y.shape == (300, 1) and X_tr.shape[0] == 300 and X_te.shape[0] == 200
    assert not torch.isnan(torch.cat([X_tr, X_te])).any()
    X = torch.cat([X_tr, X_te]).double()
    numeric = train.drop(columns=["Id", "SalePrice"]).select_dtypes("number").shape[1]
    # numeric columns come first: mean 0 over train + test (missing values are 0 = the mean)
    assert X[:, :numeric].mean(0).abs().max() < 1e-5
    text = train.drop(columns=["Id", "SalePrice"]).select_dtypes(exclude="number").shape[1]
    onehot = X[:, numeric:]
    assert set(onehot.unique().tolist()) <= {0.0, 1.0}
    assert torch.allclose(onehot.sum(1), torch.full((500,), float(text), dtype=torch.float64))


def test_log_rmse_matches_closed_form():
    preds = torch.tensor([[0.5], [100.0], [1000.0]])
    labels = torch.tensor([[2.0], [100.0], [500.0]])
    expected = math.sqrt((math.log(2.0) ** 2 + 0 + math.log(2.0) ** 2) / 3)
    assert abs(ref.log_rmse(preds, labels) - expected) < 1e-6


def test_get_k_fold_data_reference():
    X, y = torch.arange(11.0).reshape(-1, 1), torch.arange(11.0)
    X_tr, y_tr, X_va, y_va = ref.get_k_fold_data(3, 1, X, y)
    assert X_va.reshape(-1).tolist() == [3.0, 4.0, 5.0]
    assert X_tr.reshape(-1).tolist() == [0.0, 1.0, 2.0, 6.0, 7.0, 8.0]


# --- correct variants ------------------------------------------------------------------------------

def preprocess_numpy(train_data, test_data):
    """Standardised with NumPy (ddof=0), one-hot column by column, text columns first."""
    features = pd.concat([train_data.iloc[:, 1:-1], test_data.iloc[:, 1:]], ignore_index=True)
    parts = []
    for col in features.columns:
        s = features[col]
        if pd.api.types.is_numeric_dtype(s):
            v = s.to_numpy(dtype=np.float64)
            v = (v - np.nanmean(v)) / np.nanstd(v)
            parts.append(pd.DataFrame({col: np.nan_to_num(v, nan=0.0)}))
        else:
            parts.insert(0, pd.get_dummies(s, prefix=col, dummy_na=True, dtype=float))
    X = torch.tensor(pd.concat(parts, axis=1).to_numpy(dtype=np.float32))
    n = len(train_data)
    return X[:n], X[n:], torch.tensor(train_data["SalePrice"].to_numpy(np.float32)).reshape(-1, 1)


def preprocess_d2l(train_data, test_data):
    all_features = pd.concat((train_data.iloc[:, 1:-1], test_data.iloc[:, 1:]))
    numeric_features = all_features.dtypes[all_features.dtypes != "str"].index
    numeric_features = [c for c in numeric_features if all_features[c].dtype != object]
    all_features[numeric_features] = all_features[numeric_features].apply(
        lambda x: (x - x.mean()) / (x.std()))
    all_features[numeric_features] = all_features[numeric_features].fillna(0)
    all_features = pd.get_dummies(all_features, dummy_na=True) * 1
    n_train = train_data.shape[0]
    train_features = torch.tensor(all_features[:n_train].values.astype(float), dtype=torch.float32)
    test_features = torch.tensor(all_features[n_train:].values.astype(float), dtype=torch.float32)
    train_labels = torch.tensor(train_data.SalePrice.values.reshape(-1, 1), dtype=torch.float32)
    return train_features, test_features, train_labels


def log_rmse_mse(preds, labels):
    return float(F.mse_loss(preds.clamp(min=1).log(), labels.log()).sqrt())


def log_rmse_numpy(preds, labels):
    p, y = preds.detach().numpy().astype(np.float64), labels.numpy().astype(np.float64)
    return float(np.sqrt(np.mean((np.log(np.maximum(p, 1)) - np.log(y)) ** 2)))


def k_fold_data_mask(k, i, X, y):
    n = (X.shape[0] // k) * k
    fold = torch.arange(n) // (X.shape[0] // k)
    return X[:n][fold != i], y[:n][fold != i], X[:n][fold == i], y[:n][fold == i]


def k_fold_lists(k, X_train, y_train, num_epochs, learning_rate, weight_decay, batch_size):
    train_ls, valid_ls = [], []
    for i in range(k):
        X_tr, y_tr, X_va, y_va = k_fold_data_mask(k, i, X_train, y_train)
        net = nn.Linear(X_train.shape[1], 1)
        a, b = ref.train(net, X_tr, y_tr, X_va, y_va, num_epochs, learning_rate, weight_decay,
                         batch_size)
        train_ls.append(a[-1])
        valid_ls.append(b[-1])
    return sum(train_ls) / k, sum(valid_ls) / k


CORRECT = [
    ("preprocess", ref.preprocess),
    ("preprocess", preprocess_numpy),
    ("preprocess", preprocess_d2l),
    ("log_rmse", ref.log_rmse),
    ("log_rmse", log_rmse_mse),
    ("log_rmse", log_rmse_numpy),
    ("get_k_fold_data", ref.get_k_fold_data),
    ("get_k_fold_data", k_fold_data_mask),
    ("get_k_fold_data", k_fold_data_d2l),
    ("k_fold", ref.k_fold),
    ("k_fold", k_fold_lists),
]


# --- buggy variants ---------------------------------------------------------------------------------

def variant(**kw):
    return lambda train_data, test_data: ref.preprocess(train_data, test_data, **kw)


def preprocess_bool(train_data, test_data):
    features = pd.concat((train_data.iloc[:, 1:-1], test_data.iloc[:, 1:]))
    num = features.select_dtypes("number").columns
    features[num] = ((features[num] - features[num].mean()) / features[num].std()).fillna(0)
    features = pd.get_dummies(features, dummy_na=True)
    n = len(train_data)
    return (torch.tensor(features[:n].values, dtype=torch.float32),
            torch.tensor(features[n:].values, dtype=torch.float32),
            torch.tensor(train_data.SalePrice.values, dtype=torch.float32).reshape(-1, 1))


def preprocess_flat_labels(train_data, test_data):
    X_tr, X_te, y = ref.preprocess(train_data, test_data)
    return X_tr, X_te, y.reshape(-1)


def preprocess_separately(train_data, test_data):
    X_tr = ref.preprocess(train_data, train_data.drop(columns=["SalePrice"]).iloc[:0])[0]
    t = test_data.copy()
    t["SalePrice"] = 0
    X_te = ref.preprocess(t, test_data.iloc[:0])[0]
    return X_tr, X_te, ref.preprocess(train_data, test_data)[2]


def log_rmse_no_clamp(preds, labels):
    return torch.sqrt(torch.mean((torch.log(preds) - torch.log(labels)) ** 2)).item()


def log_rmse_no_log(preds, labels):
    return torch.sqrt(torch.mean((preds.clamp(1, float("inf")) - labels) ** 2)).item()


def log_rmse_no_sqrt(preds, labels):
    return torch.mean((torch.log(preds.clamp(1, float("inf"))) - torch.log(labels)) ** 2).item()


def log_rmse_tensor(preds, labels):
    return torch.sqrt(torch.mean((torch.log(preds.clamp(1, float("inf"))) - torch.log(labels)) ** 2))


def folds_keep_remainder(k, i, X, y):
    fs = X.shape[0] // k
    end = X.shape[0] if i == k - 1 else (i + 1) * fs
    return (torch.cat([X[:i * fs], X[end:]]), torch.cat([y[:i * fs], y[end:]]), X[i * fs:end],
            y[i * fs:end])


def folds_remainder_in_train(k, i, X, y):
    fs = X.shape[0] // k
    return (torch.cat([X[:i * fs], X[(i + 1) * fs:]]), torch.cat([y[:i * fs], y[(i + 1) * fs:]]),
            X[i * fs:(i + 1) * fs], y[i * fs:(i + 1) * fs])


def folds_one_based(k, i, X, y):
    return ref.get_k_fold_data(k, (i + 1) % k, X, y)


def folds_swapped(k, i, X, y):
    a, b, c, d = ref.get_k_fold_data(k, i, X, y)
    return c, d, a, b


def k_fold_reused(k, X_train, y_train, num_epochs, learning_rate, weight_decay, batch_size):
    return ref.k_fold(k, X_train, y_train, num_epochs, learning_rate, weight_decay, batch_size,
                      reuse=True)


def k_fold_sum(k, X_train, y_train, num_epochs, learning_rate, weight_decay, batch_size):
    a, b = ref.k_fold(k, X_train, y_train, num_epochs, learning_rate, weight_decay, batch_size)
    return a * k, b * k


def k_fold_fixed_lr(k, X_train, y_train, num_epochs, learning_rate, weight_decay, batch_size):
    return ref.k_fold(k, X_train, y_train, num_epochs, 5.0, weight_decay, batch_size)


BUGGY = [
    ("preprocess", variant(fill_first=True), "before standardising"),
    ("preprocess", variant(keep_id=True), "Id column is kept"),
    ("preprocess", variant(dummy_na=False), "dummy_na=True"),
    ("preprocess", variant(train_stats=True), "training set only"),
    ("preprocess", variant(fill=False), "not set to 0"),
    ("preprocess", preprocess_bool, "bool"),
    ("preprocess", preprocess_flat_labels, "(n, 1)"),
    ("preprocess", preprocess_separately, "together"),
    ("log_rmse", log_rmse_no_clamp, "no clamp"),
    ("log_rmse", log_rmse_no_log, "no log"),
    ("log_rmse", log_rmse_no_sqrt, "no sqrt"),
    ("log_rmse", log_rmse_tensor, ".item()"),
    ("get_k_fold_data", folds_keep_remainder, "should be dropped, not added"),
    ("get_k_fold_data", folds_remainder_in_train, "dropped, not kept for training"),
    ("get_k_fold_data", folds_one_based, "off by one"),
    ("get_k_fold_data", folds_swapped, "swapped"),
    ("k_fold", k_fold_reused, "fresh net"),
    ("k_fold", k_fold_sum, "sum over folds"),
    ("k_fold", k_fold_fixed_lr, "log-RMSE"),
]


def test_outcome_check_falls_back_to_the_synthetic_table(monkeypatch, tmp_path):
    """Without D2L's files (nothing cached, no shared copy) the bound is the synthetic one."""
    monkeypatch.setenv("GRADER_DATA_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("GRADER_SHARED_DATA", str(tmp_path / "none"))
    X, y, name = ref.house_data()
    assert name == "synthetic" and X.shape[0] == 1460
    v = hidden_verdict(CH, "k_fold", ref.k_fold)
    assert v.passed, v.feedback
    v = hidden_verdict(CH, "k_fold", k_fold_fixed_lr)
    assert not v.passed and "synthetic" in v.feedback
