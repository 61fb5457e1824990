"""Data sets used by the chapters: images (Fashion-MNIST, or an embedded fallback) and the
Kaggle house prices. Downloads are verified and cached (see `download.cache_dir`)."""

from grader.data.download import DataUnavailable, cache_dir
from grader.data.images import load_images

__all__ = ["DataUnavailable", "cache_dir", "load_images"]
