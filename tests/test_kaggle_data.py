"""The house-price loader: verified downloads, the cache, the pre-filled shared cache, offline
behaviour, and the synthetic table. Nothing here needs the internet or the shared data."""

import hashlib
import io
import urllib.error

import pandas as pd
import pytest

from grader.data import kaggle_house as kh
from grader.data.download import DataUnavailable


@pytest.fixture
def fake_files(tmp_path, monkeypatch):
    """Two small CSVs of the Kaggle layout served from a folder, with their SHA-1 registered."""
    train, test = kh.synthetic_house_data(30, 20, seed=5)
    served = tmp_path / "served"
    served.mkdir()
    files = {}
    for key, df in (("train", train), ("test", test)):
        name = f"kaggle_house_pred_{key}.csv"
        df.to_csv(served / name, index=False)
        files[key] = (name, hashlib.sha1((served / name).read_bytes()).hexdigest())
    monkeypatch.setattr(kh, "FILES", files)
    monkeypatch.setenv("GRADER_DATA_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("GRADER_SHARED_DATA", str(tmp_path / "no-shared"))
    return served


def opener_for(folder, calls):
    def opener(url, timeout=None):
        calls.append(url)
        return io.BytesIO((folder / url.rsplit("/", 1)[-1]).read_bytes())
    return opener


def test_download_verifies_and_caches(fake_files, tmp_path):
    calls = []
    train, test = kh.load_kaggle_house(source="kaggle", opener=opener_for(fake_files, calls))
    assert len(calls) == 2 and calls[0].startswith(kh.DATA_URL)
    assert train.shape == (30, 37) and test.shape == (20, 36)
    assert (tmp_path / "cache" / "kaggle_house" / "kaggle_house_pred_train.csv").is_file()
    kh.load_kaggle_house(source="kaggle", opener=opener_for(fake_files, calls))
    assert len(calls) == 2, "a cached, verified file is not downloaded again"


def test_download_from_a_local_file_url(fake_files, tmp_path):
    root = tmp_path / "elsewhere"
    train, _ = kh.load_kaggle_house(root=root, source="kaggle", url=fake_files.as_uri() + "/")
    assert train.attrs["name"] == "kaggle_house" and len(train) == 30
    assert (root / "kaggle_house" / "kaggle_house_pred_test.csv").is_file()


def test_corrupt_download_is_rejected_and_not_kept(fake_files, tmp_path):
    def corrupt(url, timeout=None):
        return io.BytesIO(b"Id,SalePrice\n1,2\n")
    with pytest.raises(DataUnavailable, match="checksum"):
        kh.kaggle_house_files(opener=corrupt)
    assert not list((tmp_path / "cache" / "kaggle_house").glob("*.csv"))
    assert not list((tmp_path / "cache" / "kaggle_house").glob("*.part"))


def test_offline_and_not_cached(fake_files, capsys):
    def offline(url, timeout=None):
        raise urllib.error.URLError("Name or service not known")
    with pytest.raises(DataUnavailable, match="could not download .*Without internet"):
        kh.load_kaggle_house(source="kaggle", opener=offline)
    with pytest.raises(DataUnavailable, match="not cached"):
        kh.kaggle_house_files(download=False)
    train, test = kh.load_kaggle_house(opener=offline)  # "auto": the synthetic table, announced
    assert train.attrs["name"] == "synthetic" and len(train) == 1460 and len(test) == 1459
    assert "synthetic table" in capsys.readouterr().out


def test_shared_cache_is_copied_when_verified(fake_files, tmp_path, monkeypatch):
    shared = tmp_path / "shared"
    (shared / "kaggle_house").mkdir(parents=True)
    for name, _ in kh.FILES.values():
        (shared / "kaggle_house" / name).write_bytes((fake_files / name).read_bytes())
    monkeypatch.setenv("GRADER_SHARED_DATA", str(shared))
    train, _ = kh.load_kaggle_house(source="kaggle", download=False)
    assert len(train) == 30
    assert (tmp_path / "cache" / "kaggle_house" / "kaggle_house_pred_train.csv").is_file()


def test_corrupt_shared_copy_is_ignored(fake_files, tmp_path, monkeypatch):
    shared = tmp_path / "shared"
    (shared / "kaggle_house").mkdir(parents=True)
    for name, _ in kh.FILES.values():
        (shared / "kaggle_house" / name).write_text("not the file")
    monkeypatch.setenv("GRADER_SHARED_DATA", str(shared))
    with pytest.raises(DataUnavailable):
        kh.kaggle_house_files(download=False)
    calls = []
    kh.kaggle_house_files(opener=opener_for(fake_files, calls))
    assert len(calls) == 2


def test_synthetic_table_has_the_kaggle_layout():
    train, test = kh.synthetic_house_data(200, 150, seed=2)
    assert list(train.columns[[0, -1]]) == ["Id", "SalePrice"] and "SalePrice" not in test
    assert list(train.columns[:-1]) == list(test.columns)
    assert test["Id"].iloc[0] == 201
    text = train.select_dtypes(exclude="number").columns
    assert len(text) >= 10 and all(pd.api.types.is_string_dtype(train[c]) for c in text)
    assert train.isna().any().any() and test.isna().any().any()
    numeric_missing = test.select_dtypes("number").isna().any()
    assert numeric_missing.any(), "numeric columns with missing values"
    only_in_test = set(test["MSZoning"].dropna()) - set(train["MSZoning"].dropna())
    assert only_in_test, "a category that only the test part has"
    again, _ = kh.synthetic_house_data(200, 150, seed=2)
    pd.testing.assert_frame_equal(train, again)
    assert train["SalePrice"].between(2e4, 1e6).all()


@pytest.mark.skipif(not (kh.shared_dir() / kh.FILES["train"][0]).is_file(),
                    reason="no shared copy of D2L's files")
def test_shared_copy_is_d2ls_files(tmp_path):
    train, test = kh.load_kaggle_house(root=tmp_path, source="kaggle", download=False)
    assert train.shape == (1460, 81) and test.shape == (1459, 80)
