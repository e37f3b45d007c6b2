"""Tests for the shared download / extraction / cache helpers (``ccnn.data.download``, ``.cache``).

Downloads run against an HTTP server on 127.0.0.1 that can truncate or corrupt its answers.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import zipfile
from pathlib import Path

import pytest
import torch

from ccnn.data import download as dl
from ccnn.data.base import DataConfigError
from ccnn.data.cache import cached
from ccnn.data.download import (
    DatasetNotFoundError,
    DownloadError,
    RemoteFile,
    download_file,
    fetch,
    file_checksum,
    safe_extract,
)
from data_fixtures import closed_port, local_http_server

PAYLOAD = bytes(range(256)) * 64  # 16 KiB
MD5 = hashlib.md5(PAYLOAD).hexdigest()
SHA = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch):
    monkeypatch.setattr(dl, "RETRY_BACKOFF", 0.0)


def _leftovers(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


# -------------------------------------------------------------------------------- checksums


@pytest.mark.parametrize("algo,want", [("md5", MD5), ("sha256", SHA)])
def test_file_checksum(tmp_path, algo, want):
    p = tmp_path / "f"
    p.write_bytes(PAYLOAD)
    assert file_checksum(p, algo) == want


# -------------------------------------------------------------------------------- download


@pytest.mark.parametrize("kw", [{"md5": MD5}, {"sha256": SHA}, {}])
def test_download_success(tmp_path, kw):
    with local_http_server() as srv:
        url = srv.add("data.bin", PAYLOAD)
        out = download_file(url, tmp_path / "sub" / "data.bin", **kw)
    assert out.read_bytes() == PAYLOAD
    record = [] if kw else ["data.bin.sha256"]  # recorded only without a published checksum
    assert _leftovers(tmp_path / "sub") == ["data.bin", *record]


def test_download_checksum_mismatch_raises_and_leaves_nothing(tmp_path):
    with local_http_server() as srv:
        url = srv.add("data.bin", PAYLOAD, corrupt=True)
        with pytest.raises(DownloadError) as err:
            download_file(url, tmp_path / "data.bin", md5=MD5, retries=3)
        assert srv.routes["/data.bin"].hits == 3
    msg = str(err.value)
    assert url in msg and MD5 in msg and "checksum mismatch" in msg
    assert not err.value.network
    assert _leftovers(tmp_path) == []


def test_download_truncated_is_retried(tmp_path):
    with local_http_server() as srv:
        url = srv.add("data.bin", PAYLOAD, truncate_first=1)
        out = download_file(url, tmp_path / "data.bin", retries=3)  # no checksum: size check
        assert srv.routes["/data.bin"].hits == 2
    assert out.read_bytes() == PAYLOAD
    # no published checksum: the SHA-256 of what was fetched is recorded beside it
    assert _leftovers(tmp_path) == ["data.bin", "data.bin.sha256"]
    assert (tmp_path / "data.bin.sha256").read_text() == f"{SHA}  data.bin\n"


def test_download_always_truncated_fails(tmp_path):
    with local_http_server() as srv:
        url = srv.add("data.bin", PAYLOAD, truncate_first=10)
        with pytest.raises(DownloadError, match="closed early") as err:
            download_file(url, tmp_path / "data.bin", sha256=SHA, retries=2)
    assert err.value.network
    assert _leftovers(tmp_path) == []


def test_download_404_not_retried(tmp_path):
    with local_http_server() as srv:
        with pytest.raises(DownloadError, match="HTTP 404"):
            download_file(f"{srv.base_url}/missing", tmp_path / "x", retries=3)


# -------------------------------------------------------------------------------- fetch


def test_fetch_downloads_then_reuses(tmp_path):
    with local_http_server() as srv:
        url = srv.add("a.bin", PAYLOAD)
        files = [RemoteFile(url, "a.bin", md5=MD5)]
        (p,) = fetch(tmp_path, files, download=True, dataset="Toy")
        assert p == tmp_path / "a.bin" and p.read_bytes() == PAYLOAD
        fetch(tmp_path, files, download=True, dataset="Toy")
        assert srv.routes["/a.bin"].hits == 1  # present and verified: not downloaded again


def test_fetch_uses_mirror_when_primary_unreachable(tmp_path):
    dead = f"http://127.0.0.1:{closed_port()}/a.bin"
    with local_http_server() as srv:
        url = srv.add("a.bin", PAYLOAD)
        (p,) = fetch(
            tmp_path,
            [RemoteFile(dead, "a.bin", md5=MD5, mirrors=(url,))],
            download=True,
            dataset="Toy",
        )
    assert p.read_bytes() == PAYLOAD


def test_fetch_offline_unreachable(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}/a.bin"
    with pytest.raises(DatasetNotFoundError) as err:
        fetch(tmp_path / "root", [RemoteFile(url, "a.bin")], download=True, dataset="Toy")
    msg = str(err.value)
    assert url in msg and "a.bin" in msg and str((tmp_path / "root").resolve()) in msg
    assert "Traceback" not in msg


def test_fetch_download_disabled(tmp_path):
    files = [RemoteFile("http://example.invalid/a.bin", "a.bin"), RemoteFile("u2", "b/c.bin")]
    with pytest.raises(DatasetNotFoundError) as err:
        fetch(tmp_path, files, download=False, dataset="Toy")
    msg = str(err.value)
    for s in ("Toy", "http://example.invalid/a.bin", "a.bin", "b/c.bin", str(tmp_path)):
        assert s in msg
    assert "download=false" in msg
    assert isinstance(err.value, DataConfigError)


def test_fetch_corrupt_local_file_redownloaded(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"garbage")
    with local_http_server() as srv:
        url = srv.add("a.bin", PAYLOAD)
        (p,) = fetch(tmp_path, [RemoteFile(url, "a.bin", sha256=SHA)], download=True, dataset="T")
    assert p.read_bytes() == PAYLOAD
    with pytest.raises(DatasetNotFoundError, match="Checksum mismatch"):
        (tmp_path / "a.bin").write_bytes(b"garbage")
        fetch(tmp_path, [RemoteFile(url, "a.bin", sha256=SHA)], download=False, dataset="T")


def test_fetch_bad_checksum_everywhere_is_download_error(tmp_path):
    with local_http_server() as srv:
        url = srv.add("a.bin", PAYLOAD, corrupt=True)
        with pytest.raises(DownloadError) as err:
            fetch(tmp_path, [RemoteFile(url, "a.bin", md5=MD5)], download=True, dataset="T")
    assert not isinstance(err.value, DatasetNotFoundError)
    assert MD5 in str(err.value)
    assert _leftovers(tmp_path) == []


# -------------------------------------------------------------------------------- extraction


def _tar(path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]], mode="w:gz") -> Path:
    with tarfile.open(path, mode) as tar:
        for m in members:
            if isinstance(m, tarfile.TarInfo):
                tar.addfile(m)
            else:
                info = tarfile.TarInfo(m[0])
                info.size = len(m[1])
                tar.addfile(info, io.BytesIO(m[1]))
    return path


def _link(name: str, target: str, kind=tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


@pytest.mark.parametrize("suffix,mode", [(".tar.gz", "w:gz"), (".tgz", "w:gz"), (".tar", "w")])
def test_safe_extract_tar(tmp_path, suffix, mode):
    arc = _tar(tmp_path / f"a{suffix}", [("d/x.txt", b"hi"), _link("d/l", "x.txt")], mode)
    safe_extract(arc, tmp_path / "out")
    assert (tmp_path / "out/d/x.txt").read_bytes() == b"hi"
    assert (tmp_path / "out/d/l").read_bytes() == b"hi"


@pytest.mark.parametrize(
    "member",
    [
        ("../evil", b"x"),
        ("d/../../evil", b"x"),
        ("/tmp/abs_evil", b"x"),
        _link("d/l", "../../outside"),
        _link("l", "/etc/passwd"),
        _link("h", "../outside", tarfile.LNKTYPE),
    ],
    ids=["dotdot", "nested-dotdot", "absolute", "symlink-out", "symlink-abs", "hardlink-out"],
)
def test_safe_extract_rejects_malicious_tar(tmp_path, member):
    arc = _tar(tmp_path / "evil.tar.gz", [("ok.txt", b"ok"), member])
    with pytest.raises(DataConfigError, match="Refusing to extract"):
        safe_extract(arc, tmp_path / "out")
    assert not (tmp_path / "evil").exists()
    assert not (tmp_path / "out" / "ok.txt").exists()  # checked before anything is written


def test_safe_extract_zip(tmp_path):
    arc = tmp_path / "a.zip"
    with zipfile.ZipFile(arc, "w") as zf:
        zf.writestr("d/x.txt", "hi")
    safe_extract(arc, tmp_path / "out")
    assert (tmp_path / "out/d/x.txt").read_text() == "hi"


@pytest.mark.parametrize("name", ["../evil.txt", "/abs.txt"])
def test_safe_extract_rejects_malicious_zip(tmp_path, name):
    arc = tmp_path / "a.zip"
    with zipfile.ZipFile(arc, "w") as zf:
        zf.writestr(zipfile.ZipInfo(name), "x")
    with pytest.raises(DataConfigError, match="Refusing to extract"):
        safe_extract(arc, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()


def test_safe_extract_gz_and_corrupt(tmp_path):
    import gzip

    arc = tmp_path / "f.bin.gz"
    arc.write_bytes(gzip.compress(PAYLOAD))
    safe_extract(arc, tmp_path / "out")
    assert (tmp_path / "out/f.bin").read_bytes() == PAYLOAD
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"not an archive")
    with pytest.raises(DataConfigError, match="corrupt"):
        safe_extract(bad, tmp_path / "out2")


# -------------------------------------------------------------------------------- cache


def test_cached_build_reuse_version_and_corruption(tmp_path):
    path = tmp_path / "c" / "cache.pt"
    calls = []

    def build():
        calls.append(1)
        return {"x": torch.arange(5), "y": torch.ones(2, 3)}

    a = cached(path, "v1", build)
    b = cached(path, "v1", build)
    assert len(calls) == 1 and torch.equal(a["x"], b["x"]) and set(b) == {"x", "y"}
    cached(path, "v2", build)  # stale version: rebuilt
    assert len(calls) == 2
    path.write_bytes(path.read_bytes()[:50])  # truncated file: rebuilt
    c = cached(path, "v2", build)
    assert len(calls) == 3 and torch.equal(c["y"], torch.ones(2, 3))
    m = cached(path, "v2", build, mmap=True)
    assert len(calls) == 3 and torch.equal(m["x"], torch.arange(5))
    assert sorted(p.name for p in path.parent.iterdir()) == ["cache.pt"]


def test_cached_rejects_non_tensor_build(tmp_path):
    with pytest.raises(TypeError):
        cached(tmp_path / "c.pt", "v", lambda: {"x": [1, 2]})


# ------------------------------------------------------------ no published checksum


def _zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("set/a_TRAIN.ts", PAYLOAD * 4)
        zf.writestr("set/a_TEST.ts", PAYLOAD[::-1] * 4)
    return buf.getvalue()


def _tgz_bytes() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        info = tarfile.TarInfo("data/x.bin")
        info.size = len(PAYLOAD)
        tf.addfile(info, io.BytesIO(PAYLOAD))
    return buf.getvalue()


@pytest.mark.parametrize("name, body", [("a.zip", _zip_bytes()), ("a.tar.gz", _tgz_bytes())])
def test_cut_transfer_without_length_or_checksum_is_not_taken_as_complete(tmp_path, name, body):
    with local_http_server() as srv:
        url = srv.add(name, body, truncate_first=1, no_length=True)
        out = download_file(url, tmp_path / name, retries=2)
        assert srv.routes[f"/{name}"].hits == 2  # the cut first answer was rejected
    assert out.read_bytes() == body
    assert dl.recorded_sha256(out) == hashlib.sha256(body).hexdigest()


@pytest.mark.parametrize("name, body", [("a.zip", _zip_bytes()), ("a.tar.gz", _tgz_bytes())])
def test_partial_file_in_place_is_fetched_again(tmp_path, name, body):
    """A partial archive left by an older version (no record) fails the archive check; a
    recorded file that changed fails its recorded SHA-256."""
    with local_http_server() as srv:
        url = srv.add(name, body)
        files = [RemoteFile(url, name)]
        (tmp_path / name).write_bytes(body[: len(body) // 2])
        (p,) = fetch(tmp_path, files, download=True, dataset="Toy")
        assert p.read_bytes() == body and srv.routes[f"/{name}"].hits == 1
        fetch(tmp_path, files, download=True, dataset="Toy")
        assert srv.routes[f"/{name}"].hits == 1  # recorded and verified: reused
        data = bytearray(p.read_bytes())
        data[len(data) // 2] ^= 0xFF
        p.write_bytes(bytes(data))
        fetch(tmp_path, files, download=True, dataset="Toy")
        assert srv.routes[f"/{name}"].hits == 2 and p.read_bytes() == body


def test_complete_archive_copied_in_by_hand_is_accepted_and_recorded(tmp_path):
    body = _zip_bytes()
    (tmp_path / "a.zip").write_bytes(body)
    (p,) = fetch(
        tmp_path, [RemoteFile("http://127.0.0.1:9/a.zip", "a.zip")], download=False, dataset="Toy"
    )
    assert dl.recorded_sha256(p) == hashlib.sha256(body).hexdigest()
