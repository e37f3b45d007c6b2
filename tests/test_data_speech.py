"""Speech Commands loader: fixture wav tree, splits, normalisation, MFCC, drop mask, caching."""

from __future__ import annotations

import math
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from ccnn.data import speech
from ccnn.data.base import DataConfigError, DataOptions, get_meta, load_splits
from ccnn.data.download import DatasetNotFoundError
from sequence_fixtures import SPEECH_WORDS, serve_directory, speech_clip, write_speech_commands

PER_CLASS = 20


@pytest.fixture(scope="module")
def sc_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sc")
    write_speech_commands(root, per_class=PER_CLASS, short_per_class=2)
    return root


def opts(root: Path, **params) -> DataOptions:
    return DataOptions("SpeechCommands", data_dir=str(root), params=params, download=False)


def stack(ds) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*[ds[i] for i in range(len(ds))])
    return torch.stack(xs), torch.stack(ys)


# ---------------------------------------------------------------------------------------------
# meta


@pytest.mark.parametrize(
    "params, shape",
    [
        ({}, (1, 16000)),
        ({"mfcc": True}, (20, 161)),
        ({"drop_rate": 0.3}, (2, 16000)),
        ({"mfcc": True, "drop_rate": 50}, (21, 161)),
    ],
)
def test_meta_without_files(tmp_path, params, shape):
    meta = get_meta(opts(tmp_path / "nothing", **params))
    assert meta.input_shape == shape and meta.in_channels == shape[0]
    assert meta.num_classes == 10 and meta.data_dim == 1
    assert not (tmp_path / "nothing").exists()


@pytest.mark.parametrize("rate", [-0.1, 100, "a lot"])
def test_bad_drop_rate(tmp_path, rate):
    with pytest.raises(DataConfigError, match="drop_rate"):
        get_meta(opts(tmp_path, drop_rate=rate))


def test_drop_rate_percent_and_fraction(tmp_path):
    assert get_meta(opts(tmp_path, drop_rate=30)).extra["drop_rate"] == pytest.approx(0.3)
    assert get_meta(opts(tmp_path, drop_rate=0.3)).extra["drop_rate"] == pytest.approx(0.3)


def test_missing_files(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="speech_commands_v0.02.tar.gz"):
        load_splits(opts(tmp_path))


# ---------------------------------------------------------------------------------------------
# raw audio


def test_raw_splits_labels_normalisation(sc_root):
    splits = load_splits(opts(sc_root))
    n = [len(splits.train), len(splits.val), len(splits.test)]
    assert sum(n) == 10 * PER_CLASS  # short clips, 'bed' and background noise are excluded
    assert n == [14 * 10, 3 * 10, 3 * 10]  # stratified 70/15/15
    x, y = stack(splits.train)
    assert x.shape == (140, 1, 16000) and x.dtype == torch.int16
    assert torch.bincount(y, minlength=10).tolist() == [14] * 10
    # class ids follow the published word order
    ds = splits.train
    j = int(ds.indices[0])
    label = int(ds.y[j])
    word_index = j - label * PER_CLASS
    expected = torch.from_numpy(speech_clip(label, word_index))
    assert SPEECH_WORDS[label] == speech.CLASSES[label]
    assert torch.equal(ds[0][0][0], expected)
    # normalised with training statistics: mean 0, std 1 on the training split
    z = splits.batch_transform(x, True)
    assert z.dtype == torch.float32
    assert abs(z.mean().item()) < 1e-4 and z.std().item() == pytest.approx(1.0, abs=1e-3)
    # audio / 2**15 before standardising
    raw = x.double() / 2**15
    assert torch.allclose(z.double(), (raw - raw.mean()) / raw.std(), atol=1e-4)


def test_splits_disjoint_and_reproducible(sc_root):
    a = load_splits(opts(sc_root))
    b = load_splits(opts(sc_root))
    c = load_splits(
        DataOptions("SpeechCommands", data_dir=str(sc_root), split_seed=7, download=False)
    )
    idx = [set(s.indices.tolist()) for s in (a.train, a.val, a.test)]
    assert not (idx[0] & idx[1] or idx[0] & idx[2] or idx[1] & idx[2])
    assert all(
        torch.equal(s.indices, t.indices)
        for s, t in zip((a.train, a.val, a.test), (b.train, b.val, b.test))
    )
    assert not torch.equal(a.val.indices, c.val.indices)


# ---------------------------------------------------------------------------------------------
# MFCC


def numpy_mfcc(x: np.ndarray, sr=16000, n_fft=200, hop=100, n_mels=64, n_mfcc=20) -> np.ndarray:
    """Direct numpy implementation of the documented formula (loops, no torch)."""
    xp = np.pad(x, n_fft // 2, mode="reflect")
    frames = 1 + (len(xp) - n_fft) // hop
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    power = np.stack(
        [np.abs(np.fft.rfft(xp[t * hop : t * hop + n_fft] * window)) ** 2 for t in range(frames)]
    )  # (t, f)
    mel = lambda f: 2595 * np.log10(1 + f / 700)  # noqa: E731
    inv = lambda m: 700 * (10 ** (m / 2595) - 1)  # noqa: E731
    edges = inv(np.linspace(mel(0.0), mel(sr / 2), n_mels + 2))
    bins = np.linspace(0, sr // 2, n_fft // 2 + 1)
    fb = np.zeros((len(bins), n_mels))
    for m in range(n_mels):
        lo, mid, hi = edges[m], edges[m + 1], edges[m + 2]
        for k, f in enumerate(bins):
            if lo <= f <= mid:
                fb[k, m] = (f - lo) / (mid - lo)
            elif mid < f <= hi:
                fb[k, m] = (hi - f) / (hi - mid)
    log_mel = np.log(power @ fb + 1e-6)  # (t, m)
    out = np.zeros((n_mfcc, frames))
    for k in range(n_mfcc):
        scale = math.sqrt(1 / n_mels) if k == 0 else math.sqrt(2 / n_mels)
        basis = np.cos(np.pi * k * (2 * np.arange(n_mels) + 1) / (2 * n_mels))
        out[k] = scale * log_mel @ basis
    return out


def test_mfcc_matches_numpy_reference():
    rng = np.random.default_rng(0)
    x = 0.1 * rng.standard_normal(16000) + 0.3 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)
    ours = speech.mfcc(torch.tensor(x[None], dtype=torch.float64))[0].numpy()
    ref = numpy_mfcc(x)
    assert ours.shape == ref.shape == (20, 161)
    np.testing.assert_allclose(ours, ref, rtol=1e-3, atol=1e-3)


def test_pure_tone_lands_in_its_mel_bin():
    f_tone = 2000.0  # exactly FFT bin 25 (80 Hz bins)
    x = torch.sin(2 * math.pi * f_tone * torch.arange(16000, dtype=torch.float64) / 16000)
    log_mel = speech.log_mel_spectrogram(x[None])[0].mean(-1)  # (64,)
    fb = speech.mel_filterbank(101, 64, 16000)
    assert int(log_mel.argmax()) == int(fb[25].argmax())
    centre = speech.mel_to_hz(torch.linspace(0, float(speech.hz_to_mel(8000.0)), 66))[1:-1]
    assert abs(float(centre[log_mel.argmax()]) - f_tone) < 100
    assert log_mel.max() - log_mel[-1] > 10  # far bins hold (almost) nothing


def test_mfcc_dataset(sc_root):
    splits = load_splits(opts(sc_root, mfcc=True))
    x, y = stack(splits.train)
    assert x.shape == (140, 20, 161) and x.dtype == torch.float32
    z = splits.batch_transform(x, False)
    mean, std = z.mean(dim=(0, 2)), z.std(dim=(0, 2))
    assert torch.allclose(mean, torch.zeros(20), atol=1e-4)
    assert torch.allclose(std, torch.ones(20), atol=1e-3)
    # features = MFCC of audio / 2**15
    audio = speech.load_audio(opts(sc_root))["audio"]
    j = int(splits.train.indices[0])
    assert torch.allclose(x[0], speech.mfcc(audio[j : j + 1].float() / 2**15)[0], atol=1e-4)


def test_drop_rate_mask_channel(sc_root):
    splits = load_splits(opts(sc_root, mfcc=True, drop_rate=0.5))
    x, _ = stack(splits.val)
    assert x.shape == (30, 21, 161)
    mask = x[:, -1]
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    assert torch.all((mask == 0).sum(-1) == round(0.5 * 161))
    z = splits.batch_transform(x, False)
    assert z.shape == x.shape
    assert torch.all(z[:, :-1][mask[:, None].expand(-1, 20, -1) == 0] == 0)
    assert torch.equal(z[:, -1], mask)
    # the dropped steps of an example are fixed (same on every access and load)
    again = load_splits(opts(sc_root, mfcc=True, drop_rate=0.5))
    assert torch.equal(again.val[3][0][-1], splits.val[3][0][-1])
    assert not torch.equal(splits.val[3][0][-1], splits.val[4][0][-1])
    raw = load_splits(opts(sc_root, drop_rate=30))
    assert raw.train[0][0].shape == (2, 16000)
    assert int((raw.train[0][0][-1] == 0).sum()) == 4800


# ---------------------------------------------------------------------------------------------
# caching and downloading


def test_cache_rebuilt_when_stale_or_corrupt(tmp_path, monkeypatch):
    write_speech_commands(tmp_path, per_class=2, short_per_class=0)
    calls = []
    build = speech._build_raw
    monkeypatch.setattr(speech, "_build_raw", lambda base: calls.append(1) or build(base))
    first = speech.load_audio(opts(tmp_path))
    speech.load_audio(opts(tmp_path))
    assert len(calls) == 1  # second load from the cache
    monkeypatch.setattr(speech, "RAW_CACHE_VERSION", "something-else")
    speech.load_audio(opts(tmp_path))
    assert len(calls) == 2  # stale version → rebuilt
    cache = tmp_path / "SpeechCommands" / "processed" / "raw.pt"
    cache.write_bytes(b"not a torch file")
    again = speech.load_audio(opts(tmp_path))
    assert len(calls) == 3 and torch.equal(again["audio"], first["audio"])
    # MFCC cache version carries the feature parameters
    assert "n_fft=200" in speech.MFCC_CACHE_VERSION and "n_mels=64" in speech.MFCC_CACHE_VERSION


def test_download_from_local_server(tmp_path, monkeypatch):
    src = tmp_path / "src"
    base = write_speech_commands(src, per_class=2, short_per_class=0)
    served = tmp_path / "served"
    served.mkdir()
    with tarfile.open(served / speech.ARCHIVE, "w:gz") as tar:
        for p in sorted(base.iterdir()):
            tar.add(p, arcname=p.name)  # the official tarball has no top-level folder
    shutil.rmtree(src)
    data = tmp_path / "data"
    monkeypatch.setattr(speech, "SHA256", None)
    with serve_directory(served) as url:
        monkeypatch.setattr(speech, "URL", f"{url}/{speech.ARCHIVE}")
        o = DataOptions("SpeechCommands", data_dir=str(data), download=True)
        splits = load_splits(o)
    assert len(splits.train) + len(splits.val) + len(splits.test) == 20
    assert (data / "SpeechCommands" / "speech_commands_v0.02" / "yes").is_dir()
