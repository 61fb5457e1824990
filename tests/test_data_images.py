"""The image data layer: Fashion-MNIST's on-disk format, verified downloads, the offline
fallback."""

import gzip
import hashlib
import io
import struct

import pytest
import torch

from grader.data import DataUnavailable, download, images, load_images


def idx_bytes(array: torch.Tensor) -> bytes:
    head = struct.pack(">HBB", 0, 0x08, array.dim()) + struct.pack(f">{array.dim()}I", *array.shape)
    return gzip.compress(head + bytes(array.flatten().tolist()))


@pytest.fixture
def tiny_fashion(tmp_path, monkeypatch):
    """Tiny files in Fashion-MNIST's format, registered with their own MD5s."""
    g = torch.Generator().manual_seed(0)
    blobs = {
        "train_images": idx_bytes(torch.randint(0, 256, (6, 28, 28), generator=g, dtype=torch.uint8)),
        "train_labels": idx_bytes(torch.tensor([0, 1, 2, 3, 4, 9], dtype=torch.uint8)),
        "test_images": idx_bytes(torch.randint(0, 256, (2, 28, 28), generator=g, dtype=torch.uint8)),
        "test_labels": idx_bytes(torch.tensor([5, 6], dtype=torch.uint8)),
    }
    files = {k: (images.FASHION_FILES[k][0], hashlib.md5(b).hexdigest()) for k, b in blobs.items()}
    monkeypatch.setattr(images, "FASHION_FILES", files)
    images.fashion_mnist.cache_clear()
    yield tmp_path, blobs
    images.fashion_mnist.cache_clear()


def test_reads_cached_fashion_mnist(tiny_fashion):
    root, blobs = tiny_fashion
    (root / "FashionMNIST" / "raw").mkdir(parents=True)  # torchvision's cache layout
    for key, blob in blobs.items():
        (root / "FashionMNIST" / "raw" / images.FASHION_FILES[key][0]).write_bytes(blob)
    train_iter, test_iter = load_images(4, root=root, source="fashion_mnist", download=False)
    X, y = next(iter(test_iter))
    assert X.shape == (2, 1, 28, 28) and X.dtype == torch.float32 and y.tolist() == [5, 6]
    assert 0 <= X.min() and X.max() <= 1
    raw = images.read_idx(root / "FashionMNIST" / "raw" / images.FASHION_FILES["test_images"][0])
    torch.testing.assert_close(X[:, 0], raw.float() / 255)
    assert train_iter.dataset.name == "Fashion-MNIST" and len(train_iter.dataset) == 6
    assert train_iter.dataset.classes[9] == "ankle boot"


def test_downloads_verifies_and_caches(tiny_fashion, monkeypatch):
    root, blobs = tiny_fashion
    served = []

    def fake_urlopen(url, timeout):
        name = url.rsplit("/", 1)[1]
        key = next(k for k, (n, _) in images.FASHION_FILES.items() if n == name)
        served.append(name)
        return io.BytesIO(blobs[key])

    monkeypatch.setattr(download.urllib.request, "urlopen", fake_urlopen)
    train_iter, _ = load_images(2, root=root, source="fashion_mnist")
    assert len(served) == 4 and len(train_iter.dataset) == 6
    images.fashion_mnist.cache_clear()
    load_images(2, root=root, source="fashion_mnist")
    assert len(served) == 4, "cached files are not downloaded again"


def test_corrupt_download_is_rejected_and_not_kept(tiny_fashion, monkeypatch):
    root, _ = tiny_fashion
    monkeypatch.setattr(download.urllib.request, "urlopen",
                        lambda url, timeout: io.BytesIO(b"garbage"))
    with pytest.raises(DataUnavailable, match="checksum does not match"):
        load_images(2, root=root, source="fashion_mnist")
    assert not list((root / "fashion_mnist").glob("*")), "no partial or corrupt file left"


def test_offline_falls_back_to_digits_with_one_line(tmp_path, monkeypatch, capsys):
    def offline(url, timeout):
        raise download.urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(download.urllib.request, "urlopen", offline)
    images.fashion_mnist.cache_clear()
    train_iter, test_iter = load_images(64, root=tmp_path)
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "digits" in out[0]
    assert train_iter.dataset.name == "digits"
    assert len(train_iter.dataset) == 1433 and len(test_iter.dataset) == 364
    X, y = next(iter(train_iter))
    assert X.shape == (64, 1, 28, 28) and y.dtype == torch.int64
    assert sorted(set(test_iter.dataset.tensors[1].tolist())) == list(range(10))
    with pytest.raises(DataUnavailable, match="could not download"):
        images.fashion_mnist.cache_clear()
        load_images(8, root=tmp_path, source="fashion_mnist")


def test_options_and_errors():
    train_iter, _ = load_images(10, source="digits", train_size=100, resize=32)
    X, _ = next(iter(train_iter))
    assert X.shape == (10, 1, 32, 32) and len(train_iter.dataset) == 100
    assert train_iter.num_workers == 0
    with pytest.raises(ValueError, match="source must be"):
        load_images(10, source="mnist")
    with pytest.raises(ValueError, match="batch_size"):
        load_images(0)


def test_read_idx_rejects_bad_files(tmp_path):
    bad = tmp_path / "bad.gz"
    bad.write_bytes(gzip.compress(b"\x00\x00\x0d\x01" + b"\x00" * 8))
    with pytest.raises(ValueError, match="unsigned-byte"):
        images.read_idx(bad)
