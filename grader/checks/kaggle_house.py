"""08_kaggle_house: the visible checks (worked examples) of each exercise.

Public: this module ships to students. Reference values come from `t.ref`, and what likely
mistakes produce from `t.likely`; the references and the hidden checks are the instructor's
(`grader.chapters.kaggle_house`). The helpers here are judge logic only (calls, shapes,
comparisons, messages). `get_k_fold_data` has the contract of 04's `k_fold_split` and is
judged by its check (`grader.checks.weight_decay`). The tables `preprocess` is given travel to
the student's kernel as DataFrames, the data `k_fold` trains on as tensors.
"""

from __future__ import annotations

import math

import pandas as pd
import torch

from grader.cases import gen
from grader.checks.weight_decay import visible_k_fold_split
from grader.feedback import Mismatch, expect_close, fmt_number, type_name
from grader.registry import Chapter
from grader.remote import Handle

CHAPTER = Chapter("08_kaggle_house", "Predicting house prices (capstone)")


def _type_of(x) -> str:
    return x.type_name if isinstance(x, Handle) else type_name(x)


# --- preprocess -------------------------------------------------------------------------------


def tiny_tables():
    """Five training and three test houses: text and numeric columns with missing values."""
    nan = math.nan
    train = pd.DataFrame({
        "Id": [1, 2, 3, 4, 5], "MSSubClass": [60, 20, 60, 70, 20],
        "MSZoning": ["RL", "RL", "RM", nan, "RL"], "LotFrontage": [65.0, 80.0, nan, 60.0, 84.0],
        "Street": ["Pave", "Pave", "Grvl", "Pave", "Pave"],
        "SalePrice": [208500, 181500, 223500, 140000, 250000]})
    test = pd.DataFrame({
        "Id": [6, 7, 8], "MSSubClass": [20, 190, 60], "MSZoning": ["RH", "RL", "FV"],
        "LotFrontage": [nan, 50.0, 70.0], "Street": ["Pave", "Grvl", "Pave"]})
    return train, test


def canonical(M: torch.Tensor) -> torch.Tensor:
    """The columns of M in an order that does not depend on how they were produced."""
    r = torch.randn(M.shape[0], generator=gen(0), dtype=torch.float64)
    key = r @ M + 1e-3 * M.sum(0)
    return M[:, torch.argsort(key)]


def _as_matrix(out, n_train, n_test):
    if not isinstance(out, tuple | list) or len(out) != 3:
        raise Mismatch("preprocess should return a triple (train_features, test_features, "
                       f"train_labels), but returned {_type_of(out)}"
                       + (f" of length {len(out)}" if isinstance(out, tuple | list) else ""))
    for name, x in zip(("train_features", "test_features", "train_labels"), out):
        if not isinstance(x, torch.Tensor):
            cause = ("\n  likely cause: a DataFrame or NumPy array returned; convert with "
                     "torch.tensor(df.values, dtype=torch.float32)")
            raise Mismatch(f"{name} should be a torch.Tensor, but is {_type_of(x)}{cause}")
        if x.dtype != torch.float32:
            cause = ("the one-hot columns are bool (pd.get_dummies): convert the DataFrame "
                     "with .astype('float32')" if x.dtype == torch.bool else
                     "create the tensor with dtype=torch.float32")
            raise Mismatch(f"{name} has dtype {x.dtype}, expected torch.float32\n"
                           f"  likely cause: {cause}")
    X_tr, X_te, y = out
    if tuple(y.shape) != (n_train, 1):
        raise Mismatch(f"train_labels has shape {tuple(y.shape)}, expected ({n_train}, 1)\n"
                       "  likely cause: labels not reshaped to (n, 1): .reshape(-1, 1)")
    if X_tr.dim() != 2 or X_te.dim() != 2 or X_tr.shape[0] != n_train or \
            X_te.shape[0] != n_test or X_tr.shape[1] != X_te.shape[1]:
        raise Mismatch(f"train_features has shape {tuple(X_tr.shape)} and test_features "
                       f"{tuple(X_te.shape)}; expected ({n_train}, p) and ({n_test}, p) with "
                       "the same columns\n  likely cause: train and test not preprocessed "
                       "together (concatenate their features first, split after)")
    return torch.cat([X_tr, X_te]).double(), y


def _matches(M, got, ref) -> bool:
    return (isinstance(ref, torch.Tensor) and ref.shape == M.shape
            and torch.allclose(got, canonical(torch.nan_to_num(ref, nan=1e6)), atol=1e-4,
                               rtol=1e-4))


def preprocess_case(t, fn, train, test, accepted, likely):
    """`accepted` {"labels": y, "features": [every accepted train + test feature matrix]};
    `likely` {cause: the feature matrix (train + test) that mistake gives, or None}."""
    n_train, n_test = len(train), len(test)
    what = f"preprocess(train_data {train.shape}, test_data {test.shape})"
    try:
        out = t.call(fn, train, test, what=what)
    except Mismatch as exc:
        text = str(exc)
        if "numpy.object_" in text or "numpy.bool" in text:
            text += ("\n  likely cause: pd.get_dummies gives bool columns, so the DataFrame's "
                     "values are objects that torch.tensor rejects: convert with "
                     ".astype('float32') first")
        elif "str" in text and "likely cause" not in text:
            text += ("\n  likely cause: a text column treated as numeric; pandas 3 gives text "
                     "the `str` dtype (not object): pick numeric columns with "
                     "select_dtypes(include='number')")
        raise Mismatch(text) from None
    M, y = _as_matrix(out, n_train, n_test)
    ref_y = accepted["labels"]
    if not torch.equal(y, ref_y):
        raise Mismatch(f"train_labels should be SalePrice as float32, (n, 1); received "
                       f"{fmt_number(y[0, 0].item())}... for {fmt_number(ref_y[0, 0].item())}...")
    got = canonical(torch.nan_to_num(M, nan=1e6))
    if any(_matches(M, got, ref) for ref in accepted["features"]):
        return
    cause = next((c for c, alt in (likely or {}).items() if _matches(M, got, alt)), None)
    p = accepted["features"][0].shape[1]
    if cause is None and M.shape[1] != p:
        cause = ("a column count that differs from one-hot encoding every text column (with a "
                 "missing-value column) plus every numeric column except Id")
    if cause is None and torch.isnan(M).any():
        cause = "NaN in the features: missing values must be set to 0"
    shown = f"\n  received {M.shape[1]} columns, expected {p}" if M.shape[1] != p else \
        "\n  the columns (in any order) differ from the expected ones"
    raise Mismatch(f"{what} returned wrong features.{shown}"
                   + (f"\n  likely cause: {cause}" if cause else ""))


@CHAPTER.visible("preprocess", points=3)
def visible_preprocess(t, fn):
    train, test = tiny_tables()
    with t.case("worked example: 5 training and 3 test houses, text and numeric columns with "
                "missing values"):
        preprocess_case(t, fn, train, test, t.ref("preprocess_accepted", train, test),
                        t.likely("preprocess", train, test))


# --- log_rmse --------------------------------------------------------------------------------


def log_rmse_case(t, fn, preds, labels, expected, likely):
    """`expected` the log-RMSE (computed in float64); `likely` {cause: what that mistake
    returns}."""
    what = f"log_rmse(preds {tuple(preds.shape)}, labels {tuple(labels.shape)})"
    got = t.call(fn, preds, labels, what=what)
    if isinstance(got, torch.Tensor):
        raise Mismatch(f"{what} should return a Python float, but returned {_type_of(got)}\n"
                       "  likely cause: the tensor's value not extracted with .item()")
    cause = None
    values = {c: v for c, v in (likely or {}).items() if isinstance(v, float)}
    if isinstance(got, float) and not math.isfinite(got):
        cause = next((c for c, v in values.items() if not math.isfinite(v)), None)
    elif isinstance(got, int | float) and not isinstance(got, bool):
        cause = next((c for c, v in values.items() if math.isfinite(v)
                      and abs(got - v) <= 1e-4 * abs(v) + 1e-6
                      and abs(v - expected) > 1e-4 * expected), None)
    expect_close(got, expected, what=what, atol=1e-5, rtol=1e-4,
                 inputs={"preds": preds, "labels": labels}, cause=cause)


@CHAPTER.visible("log_rmse", points=2)
def visible_log_rmse(t, fn):
    preds = torch.tensor([[-5.0], [150000.0], [90000.0], [310000.0]])
    labels = torch.tensor([[120000.0], [140000.0], [100000.0], [250000.0]])
    with t.case("worked example: four houses, one prediction negative"):
        log_rmse_case(t, fn, preds, labels, t.ref("log_rmse", preds, labels),
                      t.likely("log_rmse", preds, labels))


# --- get_k_fold_data: the contract of 04's k_fold_split, judged by the same check --------------

CHAPTER.visible("get_k_fold_data", points=2)(visible_k_fold_split)


# --- k_fold -------------------------------------------------------------------------------------


def pair_of_floats(out, what):
    if not isinstance(out, tuple | list) or len(out) != 2:
        raise Mismatch(f"{what} should return (mean train log_rmse, mean valid log_rmse), but "
                       f"returned {_type_of(out)}")
    vals = []
    for name, v in zip(("train", "valid"), out):
        if isinstance(v, torch.Tensor) and v.numel() == 1:
            v = v.item()
        if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v):
            raise Mismatch(f"{what}: the mean {name} log-RMSE should be a finite number, got "
                           f"{fmt_number(v) if isinstance(v, float) else _type_of(v)}")
        vals.append(float(v))
    return vals


def call_k_fold(t, fn, X, y, k, num_epochs, lr, weight_decay, batch_size, what):
    """The student's k_fold, in a kernel whose global random state is seeded (one call)."""
    t.build("seed_global", 0)
    return pair_of_floats(t.call(fn, k, X, y, num_epochs, lr, weight_decay, batch_size,
                                 what=what), what)


def k_fold_case(t, fn, X, y, k, num_epochs, lr, batch_size, label, expected, likely):
    """`expected` (train, valid) mean log-RMSE of the reference; `likely` {cause: the same for
    that mistake}: within 10% of the reference, or named."""
    what = f"k_fold({k}, X_train {tuple(X.shape)}, y_train, num_epochs={num_epochs}, lr={lr}, " \
           f"weight_decay=0, batch_size={batch_size})"
    got = call_k_fold(t, fn, X, y, k, num_epochs, lr, 0.0, batch_size, what)
    for j, name in enumerate(("train", "valid")):
        cause = next((c for c, v in (likely or {}).items()
                      if isinstance(v, tuple | list) and len(v) == 2
                      and abs(got[j] - v[j]) < 0.1 * v[j]
                      and abs(v[j] - expected[j]) > 0.2 * expected[j]), None)
        expect_close(got[j], expected[j], what=f"the mean {name} log-RMSE of {what} ({label})",
                     atol=0, rtol=0.1, cause=cause)


@CHAPTER.visible("k_fold", points=3)
def visible_k_fold(t, fn):
    with t.case("worked example: 240 synthetic houses, k = 3, 3 epochs, lr = 25, batch_size 64"):
        X, y = t.ref("house_features", 240, 10, 3)
        k_fold_case(t, fn, X, y, 3, 3, 25.0, 64, "synthetic houses",
                    t.ref("k_fold", 3, X, y, 3, 25.0, 0.0, 64),
                    t.likely("k_fold", 3, X, y, 3, 25.0, 0.0, 64))
