"""Files ccnn writes and later reads back: checkpoints, caches, results.

Every such file is

* **written atomically** — a temporary file in the same folder, ``fsync``, then ``os.replace``,
  so an interrupted run (``kill -9``, a full disk) leaves the previous file intact;
* **readable by the team** — created with the user's umask (normally ``0644``), not the
  ``0600`` of a bare temporary file;
* **verified on load** — torch files carry a SHA-256 of their content under :data:`DIGEST_KEY`
  and JSON files under ``"content_sha256"``; a mismatch means the file was damaged or edited;
* **loaded safely** — ``torch.load(..., weights_only=True)``: only tensors and plain data, never
  objects whose unpickling could run code.

Every failure to read a file is a :class:`FileIntegrityError` whose message is one line naming
the file, what is wrong and what to do.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import struct
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ccnn.errors import OptionError

DIGEST_KEY = "ccnn_content_sha256"
"""Key under which :func:`save_torch` stores the digest of the rest of the dictionary."""
JSON_DIGEST_KEY = "content_sha256"


class FileIntegrityError(OptionError):
    """A file cannot be trusted or read; the message says which file, why, and what to do."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write) -> None:
    """Call ``write(tmp_path)``, then move the finished file onto ``path`` with the umask's mode."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


# -- content digests ---------------------------------------------------------------------------


def content_digest(obj: Any) -> str:
    """SHA-256 over a canonical walk of ``obj``: tensors by dtype, shape and raw bytes; dicts in
    their order; lists/tuples; and the ``repr`` of every other leaf. Independent of how the
    object is serialised, so it can be checked after ``torch.load``."""
    h = hashlib.sha256()
    _feed(h, obj)
    return h.hexdigest()


def _feed(h, obj: Any) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous().reshape(-1)
        h.update(f"T{t.dtype}{tuple(obj.shape)}".encode())
        if t.numel():
            h.update(t.view(torch.uint8).numpy().data)
    elif isinstance(obj, Mapping):
        h.update(f"D{len(obj)}".encode())
        for k, v in obj.items():
            _feed(h, k)
            _feed(h, v)
    elif isinstance(obj, list | tuple):
        h.update(f"{type(obj).__name__[0]}{len(obj)}".encode())
        for v in obj:
            _feed(h, v)
    else:
        text = repr(obj).encode()
        h.update(struct.pack("<Q", len(text)) + text)


# -- torch files -------------------------------------------------------------------------------


def save_torch(obj: Mapping[str, Any], path: str | os.PathLike) -> None:
    """``torch.save`` a dictionary atomically, with its content digest under :data:`DIGEST_KEY`."""
    data = {k: v for k, v in obj.items() if k != DIGEST_KEY}
    data[DIGEST_KEY] = content_digest(data)
    atomic_write(path, lambda tmp: torch.save(data, tmp))


def load_torch(
    path: str | os.PathLike,
    *,
    what: str = "checkpoint",
    require_digest: bool = True,
    map_location: Any = "cpu",
    mmap: bool = False,
) -> dict[str, Any]:
    """Load a dictionary saved by :func:`save_torch` (or any torch file of plain data).

    Args:
        path: the file.
        what: how the file is named in error messages ("checkpoint", "cache", ...).
        require_digest: refuse files without a ccnn digest (files that ccnn did not write). Pass
            ``False`` for files made elsewhere (published checkpoints); their digest is still
            verified when they have one.
        map_location, mmap: as for ``torch.load``.

    Returns the dictionary without the digest entry. Raises :class:`FileIntegrityError`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileIntegrityError(f"{what} {path} does not exist; check the path")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        if "unsupported global" in str(err).lower():
            raise FileIntegrityError(
                f"{what} {path} holds Python objects that could run code when loaded "
                f"({_culprit(err)}); ccnn loads only tensors and plain data — do not use this "
                "file unless you trust and re-save its tensors"
            ) from None
        raise _unreadable(what, path, err) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as err:
        raise _unreadable(what, path, err) from None
    if not isinstance(obj, dict):
        raise FileIntegrityError(
            f"{what} {path} holds a {type(obj).__name__}, not a dictionary; it is not a ccnn {what}"
        )
    stored = obj.pop(DIGEST_KEY, None)
    if stored is None:
        if require_digest:
            raise FileIntegrityError(
                f"{what} {path} has no ccnn content digest: it was not written by ccnn (or by a "
                "version before 0.2); start a fresh run or load its weights with "
                "pretrained.load=true"
            )
        return obj
    if stored != content_digest(obj):
        raise FileIntegrityError(
            f"{what} {path} is corrupt: its content does not match the SHA-256 recorded when it "
            "was written (the file was damaged or edited); delete it and use an earlier "
            f"{what} or start a fresh run"
        )
    return obj


def _unreadable(what: str, path: Path, err: BaseException) -> FileIntegrityError:
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return FileIntegrityError(
        f"{what} {path} cannot be read ({first[:160]}): it is truncated or not a PyTorch file; "
        f"delete it and use an earlier {what} or start a fresh run"
    )


def _culprit(err: BaseException) -> str:
    for line in str(err).splitlines():
        at = line.lower().find("unsupported global")
        if at >= 0:
            return line[at:].split(". ")[0].rstrip(".")[:160]
    return "unsupported global"


# -- JSON files --------------------------------------------------------------------------------


def _json_default(o: Any) -> Any:
    if torch.is_tensor(o):
        return o.item() if o.numel() == 1 else o.tolist()
    return str(o)


def _canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, default=_json_default).encode()


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically; a JSON object gets ``"content_sha256"`` of the
    rest (verified by :func:`read_json`); other values (lists of records) are written as is."""
    if not isinstance(obj, Mapping):
        text = json.dumps(json.loads(_canonical_json(obj)), indent=2)
        atomic_write_bytes(path, (text + "\n").encode())
        return
    data = json.loads(_canonical_json({k: v for k, v in obj.items() if k != JSON_DIGEST_KEY}))
    data = {k: data[k] for k in obj if k in data}  # keep the caller's key order for readers
    data[JSON_DIGEST_KEY] = hashlib.sha256(_canonical_json(data)).hexdigest()
    atomic_write_bytes(path, (json.dumps(data, indent=2) + "\n").encode())


def read_json(path: str | os.PathLike, *, what: str = "results file") -> dict[str, Any]:
    """Read a JSON object written by :func:`write_json`, verifying its digest when present."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileIntegrityError(f"{what} {path} does not exist; check the path") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise FileIntegrityError(
            f"{what} {path} is not valid JSON ({err}); it is truncated or damaged"
        ) from None
    if not isinstance(data, dict):
        raise FileIntegrityError(f"{what} {path} does not hold a JSON object")
    stored = data.pop(JSON_DIGEST_KEY, None)
    if stored is not None and stored != hashlib.sha256(_canonical_json(data)).hexdigest():
        raise FileIntegrityError(
            f"{what} {path} is corrupt: its content does not match the SHA-256 recorded when it "
            "was written (the file was damaged or edited)"
        )
    return data
