"""Download, verify and safely extract dataset files.

Shared by every dataset family:

* :func:`download_file` streams a URL to a temporary file next to the destination, checks the
  size announced by ``Content-Length`` and the checksum, and renames it into place atomically,
  so an interrupted or corrupt transfer never leaves a file that looks complete. Truncated or
  corrupt transfers are retried. Files with no published checksum must prove complete another
  way: an archive (``.zip``, ``.tar*``, ``.gz``) is read to the end, checking its CRCs
  (:func:`archive_is_complete`), and the SHA-256 of what was fetched is recorded beside it in
  ``<file>.sha256`` and verified on later runs.
* :func:`safe_extract` unpacks ``.tar``/``.tar.gz``/``.tgz``/``.zip``/``.gz`` archives and rejects
  members that would land outside the destination (absolute paths, ``..`` traversal, links
  pointing outside; CVE-2007-4559).
* :func:`fetch` returns local paths for a list of :class:`RemoteFile`, downloading what is missing
  when allowed. When a file can be neither found nor downloaded it raises
  :class:`DatasetNotFoundError`, whose message lists the URLs, the expected files and the
  directory to put them in.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import logging
import os
import shutil
import stat
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath

from ccnn.data.base import DataConfigError

log = logging.getLogger(__name__)

CHUNK = 1 << 20
RETRY_BACKOFF = 1.0
"""Seconds to wait before the second attempt (doubled for each further one)."""
USER_AGENT = "ccnn-dataset-downloader/0.1"


class DatasetNotFoundError(DataConfigError):
    """Dataset files are missing and could not be downloaded.

    The message names the URL(s), the expected files and the directory to put them in.
    """


class DownloadError(DataConfigError):
    """A download failed (after retries) or delivered a file with the wrong checksum.

    ``network`` is ``True`` when every attempt failed to reach the server or was cut off, i.e.
    no (complete) file was ever received.
    """

    def __init__(self, message: str, *, network: bool = False):
        super().__init__(message)
        self.network = network


@dataclass(frozen=True)
class RemoteFile:
    """A file of a dataset: where to get it and how to verify it.

    Attributes:
        url: primary download URL.
        filename: path of the file relative to the dataset directory passed to :func:`fetch`.
        md5, sha256: expected checksums (hex), when known.
        mirrors: further URLs tried in order when ``url`` fails.
    """

    url: str
    filename: str
    md5: str | None = None
    sha256: str | None = None
    mirrors: tuple[str, ...] = field(default=())

    @property
    def urls(self) -> tuple[str, ...]:
        return (self.url, *self.mirrors)


# --------------------------------------------------------------------------------------------
# checksums


def file_checksum(path: str | os.PathLike, algo: str = "sha256") -> str:
    """Hex digest of a file (``algo`` is any :mod:`hashlib` name, e.g. ``"md5"``)."""
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _expected(md5: str | None, sha256: str | None) -> list[tuple[str, str]]:
    out = []
    if sha256:
        out.append(("sha256", sha256.lower()))
    if md5:
        out.append(("md5", md5.lower()))
    return out


RECORD_SUFFIX = ".sha256"
"""Beside a download without a published checksum: ``<sha256>  <name>`` of what was fetched."""


def record_path(path: Path) -> Path:
    return path.with_name(path.name + RECORD_SUFFIX)


def write_record(path: Path, sha256: str) -> None:
    """Record the SHA-256 of ``path`` beside it (a read-only folder only logs a warning)."""
    try:
        record_path(path).write_text(f"{sha256}  {path.name}\n")
    except OSError as e:
        log.warning("Could not record the checksum of %s (%s)", path, e)


def recorded_sha256(path: Path) -> str | None:
    try:
        return record_path(path).read_text().split()[0].lower()
    except (OSError, IndexError):
        return None


def archive_is_complete(path: Path, name: str | None = None) -> bool:
    """Read an archive to the end, checking its CRCs: ``.zip`` (every member), ``.tar``,
    ``.tar.gz``/``.tgz`` and ``.gz``. ``True`` for other files (nothing to check). The format
    comes from ``name`` (default: the file's own name)."""
    name = (name or path.name).lower()
    try:
        if name.endswith(".zip"):
            with zipfile.ZipFile(path) as zf:
                return zf.testzip() is None
        if name.endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")):
            with tarfile.open(path) as tf:
                for member in tf:
                    if member.isfile():
                        with tf.extractfile(member) as f:
                            while f.read(CHUNK):
                                pass
            return True
        if name.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                while f.read(CHUNK):
                    pass
            return True
    except (OSError, EOFError, zipfile.BadZipFile, tarfile.TarError, ValueError):
        return False
    return True


def verify_file(path: Path, *, md5: str | None = None, sha256: str | None = None) -> bool:
    """``True`` when ``path`` exists and matches every given checksum.

    Without a published checksum the file must match the SHA-256 recorded when it was
    downloaded; a file with no record (copied in by hand, or left by an older version) must be a
    complete archive, and its SHA-256 is then recorded.
    """
    if not path.is_file():
        return False
    expected = _expected(md5, sha256)
    if expected:
        return all(file_checksum(path, algo) == want for algo, want in expected)
    recorded = recorded_sha256(path)
    if recorded is not None:
        return file_checksum(path) == recorded
    if not archive_is_complete(path):
        return False
    write_record(path, file_checksum(path))
    return True


# --------------------------------------------------------------------------------------------
# downloading


class _Truncated(Exception):
    pass


def _stream(url: str, tmp: Path, timeout: float, algos: list[str]) -> dict[str, str]:
    """Stream ``url`` into ``tmp``; returns digests. Raises on truncation/network errors."""
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    hashes = {a: hashlib.new(a) for a in algos}
    received = 0
    with urllib.request.urlopen(req, timeout=timeout) as resp, open(tmp, "wb") as out:
        length = resp.headers.get("Content-Length")
        expected_len = int(length) if length is not None and length.isdigit() else None
        while True:
            chunk = resp.read(CHUNK)
            if not chunk:
                break
            out.write(chunk)
            received += len(chunk)
            for h in hashes.values():
                h.update(chunk)
    if expected_len is not None and received != expected_len:
        raise _Truncated(f"received {received} of {expected_len} bytes (connection closed early)")
    return {a: h.hexdigest() for a, h in hashes.items()}


def download_file(
    url: str,
    dest: Path,
    *,
    md5: str | None = None,
    sha256: str | None = None,
    retries: int = 3,
    timeout: float = 60.0,
) -> Path:
    """Download ``url`` to ``dest`` atomically, verifying size and checksum.

    The data is streamed into a temporary file in ``dest``'s directory; the announced
    ``Content-Length`` and the given checksums are checked, and only then is the file renamed
    to ``dest`` (``os.replace``). Truncated transfers, network errors and checksum mismatches are
    retried ``retries`` times in total (HTTP 4xx errors are not retried).

    Raises:
        DownloadError: after the last attempt; the message names the URL and, for a checksum
            mismatch, the expected and actual checksums. No partial file is left behind.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    expected = _expected(md5, sha256)
    errors: list[str] = []
    network_only = True
    for attempt in range(max(1, retries)):
        if attempt:
            time.sleep(RETRY_BACKOFF * 2 ** (attempt - 1))
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            digests = _stream(url, tmp, timeout, sorted({"sha256", *(a for a, _ in expected)}))
            if not expected and not archive_is_complete(tmp, dest.name):
                raise _Truncated("the archive is incomplete or damaged (CRC/end-of-file check)")
            bad = [(a, want, digests[a]) for a, want in expected if digests[a] != want]
            if bad:
                network_only = False
                errors.append(
                    "checksum mismatch: "
                    + ", ".join(f"expected {a} {w}, got {g}" for a, w, g in bad)
                )
                continue
            os.replace(tmp, dest)
            if not expected:
                write_record(dest, digests["sha256"])
            return dest
        except urllib.error.HTTPError as e:
            errors.append(f"HTTP {e.code} {e.reason}")
            if 400 <= e.code < 500:
                break
        except (_Truncated, urllib.error.URLError, http.client.HTTPException, OSError) as e:
            reason = getattr(e, "reason", None) or e
            errors.append(f"{type(e).__name__}: {reason}")
        finally:
            tmp.unlink(missing_ok=True)
    detail = "; ".join(f"attempt {i + 1}: {msg}" for i, msg in enumerate(errors))
    raise DownloadError(f"Could not download {url} to {dest}: {detail}", network=network_only)


# --------------------------------------------------------------------------------------------
# extraction


def _is_unsafe_name(name: str) -> bool:
    if not name:
        return True
    if PurePosixPath(name).is_absolute() or PureWindowsPath(name).is_absolute():
        return True
    if PureWindowsPath(name).drive or name.startswith("\\"):
        return True
    parts = name.replace("\\", "/").split("/")
    return ".." in parts


def _inside(root: str, path: str) -> bool:
    return os.path.commonpath([root, path]) == root


def _check_tar_members(tar: tarfile.TarFile, root: str, archive: Path) -> list[tarfile.TarInfo]:
    members = tar.getmembers()
    for m in members:
        target = os.path.normpath(os.path.join(root, m.name))
        if _is_unsafe_name(m.name) or not _inside(root, target):
            raise DataConfigError(
                f"Refusing to extract {archive}: member {m.name!r} would be written outside "
                f"{root} (absolute path or '..' traversal)."
            )
        if m.issym() or m.islnk():
            link = m.linkname
            if m.issym():
                dest = os.path.normpath(os.path.join(os.path.dirname(target), link))
            else:  # hard links are relative to the archive root
                dest = os.path.normpath(os.path.join(root, link))
            if os.path.isabs(link) or not _inside(root, dest):
                raise DataConfigError(
                    f"Refusing to extract {archive}: link {m.name!r} -> {link!r} points outside "
                    f"{root}."
                )
        elif not (m.isfile() or m.isdir()):
            raise DataConfigError(
                f"Refusing to extract {archive}: member {m.name!r} is a device or FIFO."
            )
    return members


def _check_zip_members(zf: zipfile.ZipFile, root: str, archive: Path) -> None:
    for info in zf.infolist():
        target = os.path.normpath(os.path.join(root, info.filename))
        if _is_unsafe_name(info.filename) or not _inside(root, target):
            raise DataConfigError(
                f"Refusing to extract {archive}: member {info.filename!r} would be written "
                f"outside {root} (absolute path or '..' traversal)."
            )
        if stat.S_ISLNK(info.external_attr >> 16):
            raise DataConfigError(
                f"Refusing to extract {archive}: member {info.filename!r} is a symbolic link."
            )


def safe_extract(archive: Path, dest: Path) -> None:
    """Extract ``archive`` into ``dest``, rejecting members that would escape ``dest``.

    Supports ``.tar``, ``.tar.gz``/``.tgz``, ``.tar.bz2``, ``.tar.xz``, ``.zip`` and single-file
    ``.gz`` (written to ``dest / archive.stem``). All members are checked before anything is
    written.

    Raises:
        DataConfigError: a member has an absolute path, contains ``..``, is a link pointing
            outside ``dest`` (CVE-2007-4559), or is a device file; or the format is unknown.
    """
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    root = os.path.realpath(dest)
    name = archive.name.lower()
    try:
        if name.endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                _check_zip_members(zf, root, archive)
                zf.extractall(root)
        elif name.endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")):
            with tarfile.open(archive) as tar:
                members = _check_tar_members(tar, root, archive)
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(root, members=members, filter="data")
                else:  # pragma: no cover - Python without extraction filters
                    tar.extractall(root, members=members)
        elif name.endswith(".gz"):
            out = dest / archive.name[: -len(".gz")]
            fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".part", dir=dest)
            try:
                with gzip.open(archive, "rb") as src, os.fdopen(fd, "wb") as dst:
                    shutil.copyfileobj(src, dst, CHUNK)
                os.replace(tmp, out)
            finally:
                Path(tmp).unlink(missing_ok=True)
        else:
            raise DataConfigError(
                f"Don't know how to extract {archive}: expected .tar, .tar.gz, .tgz, .zip or .gz."
            )
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, gzip.BadGzipFile) as e:
        raise DataConfigError(
            f"Could not extract {archive}: {e}. The file is probably corrupt; delete it and "
            "download it again."
        ) from None


# --------------------------------------------------------------------------------------------
# fetch


def not_found_message(
    dataset: str,
    root: Path,
    files: Sequence[RemoteFile],
    reason: str,
    hint: str | None = None,
) -> str:
    """The user-facing message of :class:`DatasetNotFoundError`."""
    lines = [f"Dataset {dataset!r}: {reason}", f"Expected file(s) in {Path(root).resolve()}:"]
    for f in files:
        lines.append(f"  {f.filename}")
        for url in f.urls:
            lines.append(f"      from {url}")
        if f.md5 or f.sha256:
            lines.append(f"      ({'md5 ' + f.md5 if f.md5 else 'sha256 ' + str(f.sha256)})")
    lines.append(
        f"Download them (e.g. on a machine with internet access) and put them in {root}, "
        "or point dataset.data_dir (or $CCNN_DATA_DIR) at the directory holding them."
    )
    if hint:
        lines.append(hint)
    return "\n".join(lines)


def fetch(
    root: Path,
    files: Sequence[RemoteFile],
    *,
    download: bool,
    dataset: str,
    retries: int = 3,
    timeout: float = 60.0,
) -> list[Path]:
    """Local paths of ``files`` under ``root``, downloading missing ones when allowed.

    A present file is used as is when no checksum is known, or when it verifies; a present file
    with a wrong checksum counts as missing.

    Raises:
        DatasetNotFoundError: files are missing and ``download`` is ``False``, or no URL could be
            reached; the message lists URLs, expected files and ``root``.
        DownloadError: a server delivered files whose checksum is wrong on every mirror.
    """
    root = Path(root)
    paths = [root / f.filename for f in files]
    missing: list[tuple[RemoteFile, Path]] = []
    corrupt: list[str] = []
    for f, p in zip(files, paths):
        if p.is_file():
            if verify_file(p, md5=f.md5, sha256=f.sha256):
                continue
            corrupt.append(f.filename)
        missing.append((f, p))
    if not missing:
        return paths
    if not download:
        reason = "file(s) missing and downloading is disabled (dataset.download=false)."
        if corrupt:
            reason += f" Checksum mismatch (corrupt or incomplete): {', '.join(corrupt)}."
        raise DatasetNotFoundError(
            not_found_message(dataset, root, [f for f, _ in missing], reason)
        )
    for f, p in missing:
        errors: list[DownloadError] = []
        for url in f.urls:
            log.info("Downloading %s to %s", url, p)
            try:
                download_file(url, p, md5=f.md5, sha256=f.sha256, retries=retries, timeout=timeout)
                break
            except DownloadError as e:
                errors.append(e)
        else:
            detail = "\n".join(f"  {e}" for e in errors)
            if all(e.network for e in errors):
                raise DatasetNotFoundError(
                    not_found_message(
                        dataset,
                        root,
                        [f],
                        f"could not download {f.filename} (no network access?):\n{detail}",
                    )
                ) from None
            raise DownloadError(
                not_found_message(dataset, root, [f], f"download of {f.filename} failed:\n{detail}")
            ) from None
    return paths


def fetch_extracted(
    *,
    dataset: str,
    present: Callable[[], bool],
    archive_dir: Path,
    remote: RemoteFile,
    extract_to: Path,
    download: bool,
    expected: str,
) -> None:
    """Make sure an archive's extracted contents exist: use them, else fetch and extract.

    ``present()`` says whether the extracted files are already there. Otherwise the archive
    (``archive_dir / remote.filename``) is used if present, downloaded if allowed, and extracted
    with :func:`safe_extract` into ``extract_to``.

    Raises:
        DatasetNotFoundError: nothing found and downloading disabled or impossible, or the
            archive did not contain the expected layout (``expected`` describes it).
    """
    if present():
        return
    hint = f"Alternatively extract the archive yourself so that {expected} exists."
    if not download and not (archive_dir / remote.filename).is_file():
        reason = "files missing and downloading is disabled (dataset.download=false)."
        raise DatasetNotFoundError(not_found_message(dataset, archive_dir, [remote], reason, hint))
    try:
        [archive] = fetch(archive_dir, [remote], download=download, dataset=dataset)
    except DatasetNotFoundError as e:
        raise DatasetNotFoundError(f"{e}\n{hint}") from None
    safe_extract(archive, extract_to)
    if not present():
        raise DatasetNotFoundError(
            f"Dataset {dataset!r}: extracted {archive} into {extract_to}, but {expected} is still "
            "missing. The archive is not the expected release; delete it and download it again."
        )
