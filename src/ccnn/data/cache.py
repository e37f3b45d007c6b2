"""A versioned on-disk cache for preprocessed dataset tensors.

``cached(path, version, build)`` returns the ``dict[str, Tensor]`` stored at ``path`` when it was
written with the same ``version`` string; otherwise (missing, other version, truncated or
unreadable file) it calls ``build()``, saves the result atomically (temporary file in the same
directory, then ``os.replace``) and returns it. Bump ``version`` whenever the preprocessing
changes. Files go through :mod:`ccnn.files`: loaded with ``weights_only=True`` (no arbitrary
code from a cache file) and verified against the SHA-256 recorded when they were written, so a
damaged cache is rebuilt instead of returning wrong tensors.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch

from ccnn.files import FileIntegrityError, load_torch, save_torch

log = logging.getLogger(__name__)

VERSION_KEY = "__cache_version__"


def _load(path: Path, version: str, mmap: bool) -> dict[str, torch.Tensor] | None:
    try:
        obj = load_torch(path, what="cache", mmap=mmap)
    except FileIntegrityError as e:  # any unreadable or damaged cache is rebuilt
        log.warning("%s; rebuilding it.", e)
        return None
    if obj.get(VERSION_KEY) != version:
        found = obj.get(VERSION_KEY)
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
    try:
        save_torch({**data, VERSION_KEY: version}, path)
    except OSError as e:
        log.warning("Could not write cache %s (%s); continuing without it.", path, e)
    return data
