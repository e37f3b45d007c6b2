"""A versioned on-disk cache for preprocessed dataset tensors.

``cached(path, version, build)`` returns the ``dict[str, Tensor]`` stored at ``path`` when it was
written with the same ``version`` string; otherwise (missing, other version, truncated or
unreadable file) it calls ``build()``, saves the result atomically (temporary file in the same
directory, then ``os.replace``) and returns it. Bump ``version`` whenever the preprocessing
changes. Files are loaded with ``weights_only=True`` (no arbitrary code from a cache file).
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

log = logging.getLogger(__name__)

VERSION_KEY = "__cache_version__"


def _load(path: Path, version: str, mmap: bool) -> dict[str, torch.Tensor] | None:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:  # any unreadable cache is rebuilt
        log.warning("Cache %s is unreadable (%s); rebuilding it.", path, e)
        return None
    if not isinstance(obj, dict) or obj.get(VERSION_KEY) != version:
        found = obj.get(VERSION_KEY) if isinstance(obj, dict) else None
        log.info("Cache %s has version %r, need %r; rebuilding it.", path, found, version)
        return None
    data = {k: v for k, v in obj.items() if k != VERSION_KEY}
    if not all(isinstance(v, torch.Tensor) for v in data.values()):
        log.warning("Cache %s holds non-tensor entries; rebuilding it.", path)
        return None
    return data


def cached(
    path: Path,
    version: str,
    build: Callable[[], dict[str, torch.Tensor]],
    *,
    mmap: bool = False,
) -> dict[str, torch.Tensor]:
    """Load ``path`` if it was saved with ``version``; else ``build()``, save and return it.

    Args:
        path: cache file (its directory is created when missing).
        version: any string; a cache saved with another string is rebuilt.
        build: returns the tensors to cache.
        mmap: memory-map the tensors of an existing cache instead of reading them into RAM
            (useful for multi-GB datasets such as downsampled ImageNet).

    A cache that cannot be written (read-only directory, full disk) only logs a warning.
    """
    path = Path(path)
    if path.is_file():
        data = _load(path, version, mmap)
        if data is not None:
            return data
    data = build()
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in data.items()
    ):
        raise TypeError("cached(): build() must return a dict[str, torch.Tensor]")
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        torch.save({**data, VERSION_KEY: version}, tmp)
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        log.warning("Could not write cache %s (%s); continuing without it.", path, e)
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
    return data
