"""Verified, cached downloads.

The cache directory is, in order: the `root` argument, the GRADER_DATA_DIR environment variable,
`~/.cache/dl-foundations`. A file is downloaded to a temporary name, its checksum verified, and
only then renamed into place, so an interrupted download never leaves a corrupt file behind.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path


class DataUnavailable(RuntimeError):
    """A data set is neither cached nor downloadable; the message says what to do."""


def cache_dir(root: str | os.PathLike | None = None) -> Path:
    path = Path(root or os.environ.get("GRADER_DATA_DIR") or Path.home() / ".cache" / "dl-foundations")
    path.mkdir(parents=True, exist_ok=True)
    return path


def file_hash(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verified(path: Path, checksum: tuple[str, str] | None) -> bool:
    """True when `path` exists and matches `checksum` = (algorithm, hex digest)."""
    if not path.is_file():
        return False
    return checksum is None or file_hash(path, checksum[0]) == checksum[1]


def fetch(url: str, path: Path, checksum: tuple[str, str] | None, timeout: float = 30,
          opener=None) -> Path:
    """Return `path`, downloading `url` there first unless a verified copy exists."""
    if verified(path, checksum):
        return path
    opener = opener or urllib.request.urlopen
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, opener(url, timeout=timeout) as response:
            shutil.copyfileobj(response, out)
        if not verified(Path(tmp), checksum):
            raise DataUnavailable(f"{url} was downloaded but its {checksum[0]} checksum does not "
                                  f"match; the file is corrupt or has changed. Try again later.")
        os.replace(tmp, path)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DataUnavailable(f"could not download {url} ({reason}). Without internet, put the "
                              f"file at {path} (or set GRADER_DATA_DIR to a folder that has it)."
                              ) from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path
