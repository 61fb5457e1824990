"""Kaggle house prices (D2L 5.7): D2L's two CSV files, verified and cached, or a synthetic table.

`load_kaggle_house()` returns `(train_data, test_data)` DataFrames as in the Kaggle files: `Id`
first, 79 features, and (train only) `SalePrice` last. The files are looked for, in order, in
the cache directory (`root`, else GRADER_DATA_DIR, else ~/.cache/dl-foundations; see
`grader.data.download`), in a pre-filled shared cache (GRADER_SHARED_DATA, default
`../shared/data/` beside the repository; copied after its SHA-1 is verified), and then
downloaded from D2L's DATA_HUB with SHA-1 verification. `synthetic_house_data` makes a small
table of the same layout (numeric and text columns, missing values, categories seen only in the
test set) for offline runs and tests.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from grader.data.download import DataUnavailable, cache_dir, fetch, verified

DATA_URL = "http://d2l-data.s3-accelerate.amazonaws.com/"
# D2L's DATA_HUB entries 'kaggle_house_train' and 'kaggle_house_test'
FILES = {
    "train": ("kaggle_house_pred_train.csv", "585e9cc93e70b39160e7921475f9bcd7d31219ce"),
    "test": ("kaggle_house_pred_test.csv", "fa19780a7b011d9b009e8bff8e99922a8ee2eb90"),
}
SUBDIR = "kaggle_house"


def shared_dir() -> Path:
    """The pre-filled cache: GRADER_SHARED_DATA, else ../shared/data beside the repository."""
    env = os.environ.get("GRADER_SHARED_DATA")
    base = Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "data"
    return base / SUBDIR


def _copy_verified(src: Path, dest: Path, sha1: str) -> bool:
    if not verified(src, ("sha1", sha1)):
        return False
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".", suffix=".part")
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return True


def kaggle_house_files(root=None, download: bool = True, url: str = DATA_URL,
                       opener=None) -> tuple[Path, Path]:
    """Paths of the verified train and test CSV files, fetching them if needed.

    `opener(url, timeout=...)` replaces urllib's urlopen (tests pass a fake one).
    """
    folder = cache_dir(root) / SUBDIR
    paths = []
    for name, sha1 in FILES.values():
        path = folder / name
        if not verified(path, ("sha1", sha1)) and not _copy_verified(shared_dir() / name, path,
                                                                     sha1):
            if not download:
                raise DataUnavailable(
                    f"{name} is not cached in {folder}. Run load_kaggle_house() once with "
                    "internet access, or copy D2L's file there (or set GRADER_DATA_DIR to a "
                    "folder whose kaggle_house/ subfolder has it).")
            fetch(url + name, path, ("sha1", sha1), opener=opener, timeout=20)
        paths.append(path)
    return paths[0], paths[1]


def load_kaggle_house(root=None, source: str = "auto", download: bool = True, opener=None,
                      verbose: bool = True, url: str = DATA_URL
                      ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train_data, test_data). source: "kaggle" (D2L's files, or DataUnavailable), "synthetic",
    or "auto" (the files if cached or downloadable, else the synthetic table, announced)."""
    if source not in ("auto", "kaggle", "synthetic"):
        raise ValueError(f"source should be 'auto', 'kaggle' or 'synthetic', not {source!r}")
    if source != "synthetic":
        try:
            train_path, test_path = kaggle_house_files(root, download=download, url=url,
                                                       opener=opener)
            train, test = pd.read_csv(train_path), pd.read_csv(test_path)
            train.attrs["name"] = test.attrs["name"] = "kaggle_house"
            return train, test
        except DataUnavailable as exc:
            if source == "kaggle":
                raise
            if verbose:
                print("D2L's Kaggle house data is not cached and could not be downloaded; "
                      "using a synthetic table of the same layout instead (1460 + 1459 houses, "
                      f"35 features). Details: {exc}")
    return synthetic_house_data()


# --- a synthetic table with the Kaggle layout ------------------------------------------------

ZONING = {"RL": 0.0, "RM": -0.12, "FV": 0.08, "RH": -0.08, "C (all)": -0.4}
CONDITION = {"Normal": 0.0, "Abnorml": -0.12, "Partial": 0.08, "Family": -0.05,
             "Alloca": -0.03, "AdjLand": -0.1}
GARAGE = {"Attchd": 0.03, "Detchd": -0.04, "BuiltIn": 0.06, "CarPort": -0.1, "Basment": 0.0}
NEIGHBORHOODS = ["NAmes", "CollgCr", "OldTown", "Edwards", "Somerst", "Gilbert", "NridgHt",
                 "Sawyer", "NWAmes", "SawyerW", "BrkSide", "Crawfor", "Mitchel", "NoRidge",
                 "Timber", "IDOTRR", "ClearCr", "StoneBr", "SWISU", "MeadowV", "Blmngtn",
                 "BrDale", "Veenker", "NPkVill", "Blueste"]
SUBCLASS = [20, 30, 50, 60, 70, 80, 90, 120, 160, 190]
NOISE = 0.1  # standard deviation of the log-price noise: no model beats log-RMSE ~ 0.1


def _pick(rng, table: dict, n: int, p=None) -> np.ndarray:
    return rng.choice(np.array(list(table), dtype=object), size=n, p=p)


def synthetic_house_data(n_train: int = 1460, n_test: int = 1459,
                         seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A table of the Kaggle layout: Id, 35 of the real features (int, float, text; missing
    values in both parts; a category and missing values that occur only in the test part), and
    SalePrice, whose log is linear in the features plus N(0, 0.1^2) noise."""
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    qual = np.clip(np.round(rng.normal(6.1, 1.4, n)), 1, 10).astype(np.int64)
    area = np.round(1500 * np.exp(rng.normal(0, 0.33, n) + 0.08 * (qual - 6))).astype(np.int64)
    year = rng.integers(1880, 2011, n).astype(np.int64)
    lot = np.round(np.exp(rng.normal(9.2, 0.5, n))).astype(np.int64)
    frontage = np.round(np.clip(rng.normal(70, 24, n), 21, 300)).astype(np.float64)
    frontage[rng.random(n) < 0.18] = np.nan
    cars = rng.choice([0, 1, 2, 3], size=n, p=[0.06, 0.26, 0.56, 0.12]).astype(np.float64)
    garage = _pick(rng, GARAGE, n, [0.62, 0.28, 0.06, 0.02, 0.02])
    garage[cars == 0] = np.nan
    zoning = _pick(rng, ZONING, n, [0.78, 0.15, 0.04, 0.02, 0.01])
    street = rng.choice(np.array(["Pave", "Grvl"], dtype=object), size=n, p=[0.995, 0.005])
    condition = _pick(rng, CONDITION, n, [0.82, 0.07, 0.08, 0.015, 0.01, 0.005])
    subclass = rng.choice(SUBCLASS, size=n).astype(np.int64)
    hood = rng.integers(0, len(NEIGHBORHOODS), n)
    hood_effect = np.random.default_rng(12345).normal(0, 0.12, len(NEIGHBORHOODS))
    log_price = (12.0 + 0.11 * (qual - 6) + 0.4 * np.log(area / 1500) + 0.003 * (year - 1970)
                 + 0.08 * np.log(lot / 10000) + 0.05 * (cars - 1.8) + hood_effect[hood]
                 + np.array([ZONING[z] for z in zoning]) + np.array([CONDITION[c] for c in
                                                                      condition])
                 + np.array([0.0 if isinstance(g, float) else GARAGE[g] for g in garage])
                 + rng.normal(0, NOISE, n))
    grade = lambda shift, sd=1.0: np.array(["Fa", "TA", "Gd", "Ex"], dtype=object)[
        np.clip(np.round((qual - 5 + shift) / 2 + rng.normal(0, sd / 2, n)), 0, 3).astype(int)]
    floors = rng.random(n) < 0.45
    first = np.where(floors, 0.55, 1.0) * area
    fireplaces = rng.choice([0, 1, 2], size=n, p=[0.47, 0.45, 0.08]).astype(np.int64)
    extra = {
        "Neighborhood": np.array(NEIGHBORHOODS, dtype=object)[hood],
        "OverallCond": np.clip(np.round(rng.normal(5.6, 1.1, n)), 1, 9).astype(np.int64),
        "YearRemodAdd": np.minimum(2010, year + rng.integers(0, 40, n)).astype(np.int64),
        "HouseStyle": np.where(floors, "2Story", _pick(rng, {"1Story": 0, "1.5Fin": 0,
                                                             "SLvl": 0, "SFoyer": 0}, n,
                                                       [0.85, 0.08, 0.05, 0.02])),
        "ExterQual": grade(0.0), "Foundation": np.where(year > 1980, "PConc", _pick(
            rng, {"CBlock": 0, "BrkTil": 0, "Slab": 0, "Stone": 0}, n, [0.7, 0.2, 0.07, 0.03])),
        "BsmtQual": grade(0.5), "TotalBsmtSF": np.round(first * rng.uniform(0.6, 1.1, n)),
        "CentralAir": np.where(rng.random(n) < 0.93, "Y", "N"),
        "1stFlrSF": np.round(first).astype(np.int64),
        "2ndFlrSF": np.round(area - first).astype(np.int64),
        "FullBath": np.clip(np.round(area / 900 + rng.normal(0, 0.4, n)), 0, 3).astype(np.int64),
        "BedroomAbvGr": np.clip(np.round(area / 550 + rng.normal(0, 0.6, n)), 0, 8).astype(
            np.int64),
        "KitchenQual": grade(0.2), "TotRmsAbvGrd": np.clip(np.round(area / 250 + rng.normal(
            0, 0.8, n)), 2, 14).astype(np.int64),
        "Fireplaces": fireplaces, "FireplaceQu": grade(0.3),
        "GarageArea": np.round(cars * rng.normal(250, 40, n)),
        "PavedDrive": _pick(rng, {"Y": 0, "N": 0, "P": 0}, n, [0.92, 0.06, 0.02]),
        "WoodDeckSF": np.where(rng.random(n) < 0.5, 0, np.round(rng.exponential(150, n))).astype(
            np.int64),
        "OpenPorchSF": np.where(rng.random(n) < 0.45, 0, np.round(rng.exponential(70, n))
                                ).astype(np.int64),
        "MoSold": rng.integers(1, 13, n).astype(np.int64),
        "YrSold": rng.integers(2006, 2011, n).astype(np.int64),
        "SaleType": np.where(condition == "Partial", "New", _pick(
            rng, {"WD": 0, "COD": 0, "ConLD": 0}, n, [0.94, 0.04, 0.02])),
    }
    bsmt_missing = rng.random(n) < 0.025
    extra["BsmtQual"][bsmt_missing] = np.nan
    extra["TotalBsmtSF"][bsmt_missing] = 0.0
    extra["FireplaceQu"][fireplaces == 0] = np.nan
    extra["GarageArea"][cars == 0] = 0.0
    # only in the test part: a zoning category and missing values of numeric/text columns
    test = np.arange(n) >= n_train
    zoning[test & (rng.random(n) < 0.01)] = np.nan
    zoning[test & (rng.random(n) < 0.02)] = "A (agr)"
    cars[test & (rng.random(n) < 0.01)] = np.nan
    extra["KitchenQual"][test & (rng.random(n) < 0.005)] = np.nan
    extra["TotalBsmtSF"][test & (rng.random(n) < 0.005)] = np.nan
    df = pd.DataFrame({
        "Id": np.arange(1, n + 1, dtype=np.int64), "MSSubClass": subclass, "MSZoning": zoning,
        "LotFrontage": frontage, "LotArea": lot, "Street": street, "OverallQual": qual,
        "YearBuilt": year, "GrLivArea": area, "GarageType": garage, "GarageCars": cars,
        "SaleCondition": condition, **extra,
    })
    train = df.iloc[:n_train].reset_index(drop=True)
    train["SalePrice"] = np.round(np.exp(log_price[:n_train])).astype(np.int64)
    test_df = df.iloc[n_train:].reset_index(drop=True)
    train.attrs["name"] = test_df.attrs["name"] = "synthetic"
    return train, test_df

