"""Image classification data for chapters 02, 03, 05 and 09.

Fashion-MNIST as D2L uses it (28x28 grey images of 10 kinds of clothing), downloaded once with
MD5 checks into the cache directory (a torchvision-style cache, `<root>/FashionMNIST/raw/`, is
used too). When it is not cached and cannot be downloaded (offline, CI), the embedded default is
scikit-learn's handwritten digits: 1797 real 8x8 images that ship inside the scikit-learn
package, upscaled to 28x28 so that every model works unchanged. The choice is announced in one
line.
"""

from __future__ import annotations

import functools
import gzip
import struct
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils import data

from grader.data.download import DataUnavailable, cache_dir, fetch, verified

FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
# (file, md5) as torchvision registers them
FASHION_FILES = {
    "train_images": ("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
    "train_labels": ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
    "test_images": ("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
    "test_labels": ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
}
FASHION_CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                   "sneaker", "bag", "ankle boot"]
DIGIT_CLASSES = [str(i) for i in range(10)]


class ImageDataset(data.TensorDataset):
    """(X, y) pairs with the data set's `name` and `classes` (class names by label)."""

    def __init__(self, X: torch.Tensor, y: torch.Tensor, name: str, classes: list[str]):
        super().__init__(X, y)
        self.name, self.classes = name, classes


def read_idx(path: Path) -> torch.Tensor:
    """Read an IDX file (the MNIST format; gzipped or not) into a uint8 tensor."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4:
        raise ValueError(f"{path}: not an IDX file (too short)")
    zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    shape = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    body = raw[4 + 4 * ndim:]
    if len(body) != int(torch.tensor(shape).prod()):
        raise ValueError(f"{path}: {len(body)} bytes of data for shape {shape}")
    return torch.frombuffer(bytearray(body), dtype=torch.uint8).reshape(shape)


def _fashion_file(root: Path, key: str, download: bool) -> Path:
    name, md5 = FASHION_FILES[key]
    for candidate in (root / "fashion_mnist" / name, root / "FashionMNIST" / "raw" / name):
        if verified(candidate, ("md5", md5)):
            return candidate
    if not download:
        raise DataUnavailable("Fashion-MNIST is not cached")
    return fetch(FASHION_URL + name, root / "fashion_mnist" / name, ("md5", md5), timeout=20)


@functools.lru_cache(maxsize=4)
def fashion_mnist(root: Path, download: bool = True):
    """((X_train, y_train), (X_test, y_test)): X float32 (n, 1, 28, 28) in [0, 1], y int64."""
    parts = {key: read_idx(_fashion_file(root, key, download)) for key in FASHION_FILES}
    out = []
    for split in ("train", "test"):
        X = parts[f"{split}_images"].to(torch.float32).unsqueeze(1) / 255
        y = parts[f"{split}_labels"].to(torch.int64)
        if len(X) != len(y):
            raise ValueError(f"Fashion-MNIST {split}: {len(X)} images but {len(y)} labels")
        out.append((X, y))
    return tuple(out)


@functools.lru_cache(maxsize=1)
def digits():
    """scikit-learn's 8x8 digits, upscaled to 28x28; a stratified 80/20 split (1433/364)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    X = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16
    X = F.interpolate(X, size=(28, 28), mode="bilinear", align_corners=False).clamp(0, 1)
    y = torch.tensor(d.target, dtype=torch.int64)
    test = torch.zeros(len(y), dtype=torch.bool)
    for c in range(10):  # every fifth image of each class is a test image
        idx = (y == c).nonzero().flatten()
        test[idx[::5]] = True
    return (X[~test], y[~test]), (X[test], y[test])


def load_images(batch_size: int, resize: int | None = None, root=None, source: str = "auto",
                train_size: int | None = None, download: bool = True, verbose: bool = True):
    """Training and test DataLoaders of (X float32 (B, 1, 28, 28) in [0, 1], y int64 (B,)).

    source: "auto" (Fashion-MNIST if cached or downloadable, else the digits), "fashion_mnist"
    or "digits". resize: side length to resize images to. train_size: use only that many
    training examples (the first ones). Loading runs in the main process (num_workers=0): the
    data sit in memory, and worker processes only cost time on small machines.
    """
    if source not in ("auto", "fashion_mnist", "digits"):
        raise ValueError(f"source must be 'auto', 'fashion_mnist' or 'digits', not {source!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, not {batch_size!r}")
    name, classes = "Fashion-MNIST", FASHION_CLASSES
    if source == "digits":
        train, test = digits()
        name, classes = "digits", DIGIT_CLASSES
    else:
        try:
            train, test = fashion_mnist(cache_dir(root), download)
        except (DataUnavailable, ValueError) as exc:
            if source == "fashion_mnist":
                raise DataUnavailable(f"Fashion-MNIST: {exc}") from None
            train, test = digits()
            name, classes = "digits", DIGIT_CLASSES
            if verbose:
                print("Fashion-MNIST is not available (offline and not cached); using "
                      "scikit-learn's handwritten digits instead (1797 real 8x8 images "
                      "upscaled to 28x28, 10 classes). To get Fashion-MNIST, run this cell "
                      "once with internet access (it downloads about 30 MB into "
                      f"{cache_dir(root) / 'fashion_mnist'}), or copy the four .gz files of "
                      "https://github.com/zalandoresearch/fashion-mnist (data/fashion/) "
                      "there, or set GRADER_DATA_DIR to a folder whose fashion_mnist/ has them.")
    if train_size is not None:
        train = (train[0][:train_size], train[1][:train_size])
    if resize:
        train = (F.interpolate(train[0], size=(resize, resize), mode="bilinear"), train[1])
        test = (F.interpolate(test[0], size=(resize, resize), mode="bilinear"), test[1])
    train_set = ImageDataset(*train, name, classes)
    test_set = ImageDataset(*test, name, classes)
    return (data.DataLoader(train_set, batch_size, shuffle=True, num_workers=0),
            data.DataLoader(test_set, batch_size, shuffle=False, num_workers=0))
