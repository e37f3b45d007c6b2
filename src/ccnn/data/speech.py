"""Google Speech Commands v0.02 (Warden 2018, arXiv:1804.03209), as used by CKConv/FlexConv/CCNN.

Ten keyword classes, in the published order ``yes no up down left right on off stop go``
(class ids 0..9). Only clips of exactly 16,000 samples (one second at 16 kHz) are kept:
34,975 clips in the real release. Audio is 16-bit PCM read with :mod:`wave` and scaled by
``1 / 2**15``.

Splits: a stratified random 70/15/15 train/val/test split seeded with ``opts.split_seed``. The
published CCNN (following Kidger et al. 2020, arXiv:2005.08926) used such a split instead of the
official ``validation_list.txt`` / ``testing_list.txt``; we do the same, so numbers are
comparable with the papers but not with the official Speech Commands protocol.

Inputs (``b`` batch, ``c`` channels, ``l`` time steps):

* raw (``params.mfcc=False``): ``(1, 16000)``;
* ``params.mfcc=True``: 20 MFCCs × 161 frames ``(20, 161)``, see :func:`mfcc` for the formula
  (torchaudio's ``MFCC(n_mfcc=20, log_mels=True, melkwargs={n_fft: 200, n_mels: 64})``);
* ``params.drop_rate=r > 0``: a fixed (seeded) random set of ``round(r * l)`` time steps of each
  example is dropped — set to zero after normalisation — and a mask channel (1 = observed,
  0 = dropped) is appended: ``(c + 1, l)``. ``0 < r < 1`` is a fraction; ``1 <= r < 100`` is read
  as a percentage (the published configs wrote ``drop_rate=30`` for 30 %).

Every channel is standardised with the mean/std of the TRAINING split (computed over examples and
time). Normalisation runs in the batch transform on the training device; raw audio is stored as
``int16`` (1.1 GB for the full set), MFCCs as ``float32``.

Files: ``<root>/SpeechCommands/speech_commands_v0.02/<word>/<clip>.wav`` (the official tarball
extracted; ``validation_list.txt`` / ``testing_list.txt`` are not needed). The audio and the
MFCCs are cached under ``<root>/SpeechCommands/processed/`` (rebuilt when stale or corrupt).
"""

from __future__ import annotations

import math
import wave
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch.utils.data import Dataset

from ccnn.data.base import (
    DATASETS,
    DataConfigError,
    DataOptions,
    DatasetMeta,
    DatasetSplits,
    check_data_type,
    drop_fraction,
    drop_mask,
    example_seed,
    stratified_split,
)
from ccnn.data.cache import cached
from ccnn.data.download import (
    DatasetNotFoundError,
    RemoteFile,
    fetch_extracted,
)

CLASSES = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
SAMPLE_RATE = 16_000
NUM_SAMPLES = 16_000
URL = "http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz"
SHA256 = "af14739ee7dc311471de98f5f9d2c9191b18aedfe957f4a6ff791c709868ff58"
ARCHIVE = "speech_commands_v0.02.tar.gz"
SUBDIR = "speech_commands_v0.02"

# MFCC settings of the published code (torchaudio defaults otherwise)
N_MFCC, N_FFT, HOP_LENGTH, N_MELS, LOG_OFFSET = 20, 200, 100, 64, 1e-6
MFCC_FRAMES = 1 + NUM_SAMPLES // HOP_LENGTH  # 161 (centred frames)

RAW_CACHE_VERSION = f"speechcommands-raw-v1:classes={','.join(CLASSES)}:len={NUM_SAMPLES}"
MFCC_CACHE_VERSION = (
    f"speechcommands-mfcc-v1:n_mfcc={N_MFCC}:n_fft={N_FFT}:hop={HOP_LENGTH}:n_mels={N_MELS}:"
    f"sr={SAMPLE_RATE}:log_offset={LOG_OFFSET}:window=hann-periodic:mel=htk:dct=ortho"
)


class NormalizeSequence:
    """Batch transform: scale, standardise per channel, zero dropped steps (mask last channel).

    ``x`` is ``(b, c, l)`` or, with ``mask_channel``, ``(b, c + 1, l)`` whose last channel is the
    observation mask (1/0); features are ``(x / scale - mean) / std`` and multiplied by the mask.
    """

    def __init__(
        self, mean: torch.Tensor, std: torch.Tensor, scale: float = 1.0, mask_channel: bool = False
    ):
        self.mean = mean.float().view(1, -1, 1)
        self.std = std.float().clamp_min(1e-8).view(1, -1, 1)
        self.scale, self.mask_channel = scale, mask_channel

    def __call__(self, x: torch.Tensor, training: bool) -> torch.Tensor:
        x = x.float()
        feats = x[:, :-1] if self.mask_channel else x
        feats = (feats / self.scale - self.mean.to(x.device)) / self.std.to(x.device)
        if self.mask_channel:
            mask = x[:, -1:]
            return torch.cat([feats * mask, mask], dim=1)  # (b, c + 1, l)
        return feats


class IndexedSequenceDataset(Dataset):
    """``(x[i], y[i])`` for ``i`` in ``indices``, optionally with a seeded drop-mask channel.

    ``x`` is the full ``(n, c, l)`` tensor (not copied per split). With ``drop_rate > 0`` the
    returned input is ``(c + 1, l)``: the features (dropped steps still present; the batch
    transform zeroes them after normalisation) and the mask (1 observed, 0 dropped), in ``x``'s
    dtype. The mask of example ``i`` depends only on ``(seed, i)``.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        indices: torch.Tensor,
        drop_rate: float = 0.0,
        seed: int = 0,
    ):
        self.x, self.y, self.indices = x, y, indices
        self.drop_rate, self.seed = drop_rate, seed

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        j = int(self.indices[i])
        x = self.x[j]
        if self.drop_rate > 0:
            keep = drop_mask(x.shape[-1], self.drop_rate, example_seed(self.seed, j))
            x = torch.cat([x, keep.to(x.dtype).unsqueeze(0)], dim=0)  # (c + 1, l)
        return x, self.y[j]


def channel_stats(
    x: torch.Tensor, indices: torch.Tensor, scale: float = 1.0, chunk: int = 512
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of ``x[indices] / scale`` over examples and time."""
    c = x.shape[1]
    total = torch.zeros(c, dtype=torch.float64)
    total_sq = torch.zeros(c, dtype=torch.float64)
    count = 0
    for start in range(0, len(indices), chunk):
        xb = x[indices[start : start + chunk]].float() / scale  # (b, c, l)
        total += xb.sum(dim=(0, 2)).double()  # pairwise float32 sums per chunk
        total_sq += (xb * xb).sum(dim=(0, 2)).double()
        count += xb.shape[0] * xb.shape[2]
    mean = total / count
    var = (total_sq / count - mean * mean).clamp_min(0.0) * count / max(count - 1, 1)
    return mean.float(), var.sqrt().float()


# ----------------------------------------------------------------------------------------------
# MFCC in plain torch


def hz_to_mel(f: torch.Tensor | float) -> torch.Tensor:
    """HTK mel scale: ``2595 * log10(1 + f / 700)``."""
    return 2595.0 * torch.log10(1.0 + torch.as_tensor(f, dtype=torch.float64) / 700.0)


def mel_to_hz(m: torch.Tensor) -> torch.Tensor:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def mel_filterbank(
    n_freqs: int, n_mels: int, sample_rate: int, f_min: float = 0.0, f_max: float | None = None
) -> torch.Tensor:
    """Triangular HTK mel filters without area normalisation, ``(n_freqs, n_mels)``.

    Filter ``m`` rises linearly from ``f[m]`` to ``f[m+1]`` and falls to ``f[m+2]``, where
    ``f = mel_to_hz(linspace(mel(f_min), mel(f_max), n_mels + 2))``; FFT bin ``k`` sits at
    ``k * (sample_rate / 2) / (n_freqs - 1)`` Hz. (With n_fft 200 some low filters fall between
    FFT bins and are all zero, as in torchaudio.)
    """
    f_max = sample_rate / 2 if f_max is None else f_max
    freqs = torch.linspace(0, sample_rate // 2, n_freqs, dtype=torch.float64)  # (f,)
    m_pts = torch.linspace(
        float(hz_to_mel(f_min)), float(hz_to_mel(f_max)), n_mels + 2, dtype=torch.float64
    )
    f_pts = mel_to_hz(m_pts)  # (m + 2,)
    f_diff = f_pts[1:] - f_pts[:-1]  # (m + 1,)
    slopes = f_pts[None, :] - freqs[:, None]  # (f, m + 2)
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    return torch.clamp(torch.minimum(down, up), min=0.0).float()  # (f, m)


def dct_matrix(n_mfcc: int, n_mels: int) -> torch.Tensor:
    """Orthonormal DCT-II basis ``(n_mels, n_mfcc)``: ``mfcc = log_mel @ D``.

    ``D[n, k] = sqrt(2 / N) * cos(pi / N * (n + 0.5) * k)``, with ``k = 0`` scaled by
    ``1 / sqrt(2)``.
    """
    n = torch.arange(n_mels, dtype=torch.float64)
    k = torch.arange(n_mfcc, dtype=torch.float64)[:, None]
    dct = torch.cos(math.pi / n_mels * (n + 0.5) * k)  # (k, n)
    dct[0] *= 1.0 / math.sqrt(2.0)
    dct *= math.sqrt(2.0 / n_mels)
    return dct.t().float()


def log_mel_spectrogram(
    audio: torch.Tensor,
    sample_rate: int = SAMPLE_RATE,
    n_fft: int = N_FFT,
    hop_length: int = HOP_LENGTH,
    n_mels: int = N_MELS,
    log_offset: float = LOG_OFFSET,
) -> torch.Tensor:
    """``log(mel_power + log_offset)``, ``(b, n) -> (b, n_mels, 1 + n // hop_length)``.

    Power spectrogram: ``|STFT|^2`` with a periodic Hann window of length ``n_fft``, hop
    ``hop_length``, centred frames (the signal is reflect-padded by ``n_fft // 2`` on both
    sides), one-sided, unnormalised; then the mel filters of :func:`mel_filterbank`.
    """
    window = torch.hann_window(n_fft, periodic=True, dtype=audio.dtype, device=audio.device)
    spec = torch.stft(
        audio,
        n_fft,
        hop_length=hop_length,
        win_length=n_fft,
        window=window,
        center=True,
        pad_mode="reflect",
        normalized=False,
        onesided=True,
        return_complex=True,
    )  # (b, f, t)
    power = spec.real**2 + spec.imag**2
    fb = mel_filterbank(n_fft // 2 + 1, n_mels, sample_rate).to(power)  # (f, m)
    mel = torch.einsum("bft,fm->bmt", power, fb)  # (b, m, t)
    return torch.log(mel + log_offset)


def mfcc(
    audio: torch.Tensor,
    sample_rate: int = SAMPLE_RATE,
    n_mfcc: int = N_MFCC,
    n_fft: int = N_FFT,
    hop_length: int = HOP_LENGTH,
    n_mels: int = N_MELS,
    log_offset: float = LOG_OFFSET,
) -> torch.Tensor:
    """MFCCs from log-mels, ``(b, n) -> (b, n_mfcc, 1 + n // hop_length)``.

    ``mfcc[k, t] = sum_m D[m, k] * log(sum_f |STFT[f, t]|^2 * M[f, m] + 1e-6)`` with the
    orthonormal DCT-II ``D`` (:func:`dct_matrix`) and the HTK mel filters ``M``
    (:func:`mel_filterbank`); see :func:`log_mel_spectrogram`. Equals torchaudio's
    ``MFCC(sample_rate, n_mfcc=20, log_mels=True, melkwargs={"n_fft": 200, "n_mels": 64})``
    (hop = n_fft // 2 = 100, f_min 0, f_max sr / 2), which the published code used:
    a 16,000-sample clip gives ``(20, 161)``.
    """
    log_mel = log_mel_spectrogram(audio, sample_rate, n_fft, hop_length, n_mels, log_offset)
    dct = dct_matrix(n_mfcc, n_mels).to(log_mel)  # (m, k)
    return torch.einsum("bmt,mk->bkt", log_mel, dct)  # (b, k, t)


# ----------------------------------------------------------------------------------------------
# files


def read_wav_int16(path: Path, expected_frames: int | None = None) -> np.ndarray | None:
    """Mono 16-bit PCM samples of a wav file; ``None`` if it has not ``expected_frames`` frames."""
    try:
        with wave.open(str(path), "rb") as w:
            if w.getnchannels() != 1 or w.getsampwidth() != 2:
                raise DataConfigError(
                    f"{path}: expected mono 16-bit PCM audio, got {w.getnchannels()} channel(s) "
                    f"of {8 * w.getsampwidth()} bits."
                )
            n = w.getnframes()
            if expected_frames is not None and n != expected_frames:
                return None
            return np.frombuffer(w.readframes(n), dtype="<i2").copy()
    except (wave.Error, EOFError) as e:
        raise DataConfigError(
            f"{path} is not a valid wav file ({e}); re-extract the dataset."
        ) from None


def dataset_dir(root: Path) -> Path:
    return Path(root) / "SpeechCommands" / SUBDIR


def _ensure_files(opts: DataOptions) -> Path:
    base = dataset_dir(opts.root)
    fetch_extracted(
        dataset="SpeechCommands",
        present=lambda: all((base / w).is_dir() for w in CLASSES),
        archive_dir=Path(opts.root) / "SpeechCommands",
        remote=RemoteFile(URL, ARCHIVE, sha256=SHA256),
        extract_to=base,
        download=opts.download,
        expected=f"{base}/<word>/*.wav for the words {', '.join(CLASSES)}",
    )
    return base


def _build_raw(base: Path) -> dict[str, torch.Tensor]:
    audio, labels = [], []
    for label, word in enumerate(CLASSES):
        for path in sorted((base / word).glob("*.wav")):
            samples = read_wav_int16(path, NUM_SAMPLES)
            if samples is not None:
                audio.append(samples)
                labels.append(label)
    if not audio:
        raise DatasetNotFoundError(
            f"Dataset 'SpeechCommands': no clips of {NUM_SAMPLES} samples found under {base}."
        )
    return {
        "audio": torch.from_numpy(np.stack(audio)),  # (n, 16000) int16
        "labels": torch.tensor(labels, dtype=torch.long),
    }


def load_audio(opts: DataOptions) -> dict[str, torch.Tensor]:
    """``{"audio": (n, 16000) int16, "labels": (n,)}`` (cached)."""
    base = _ensure_files(opts)
    path = Path(opts.root) / "SpeechCommands" / "processed" / "raw.pt"
    return cached(path, RAW_CACHE_VERSION, lambda: _build_raw(base), mmap=True)


def _build_mfcc(opts: DataOptions, chunk: int = 1024) -> dict[str, torch.Tensor]:
    raw = load_audio(opts)
    feats = [
        mfcc(raw["audio"][i : i + chunk].float() / 2**15)
        for i in range(0, len(raw["audio"]), chunk)
    ]
    return {"features": torch.cat(feats), "labels": raw["labels"]}  # (n, 20, 161)


def load_mfcc(opts: DataOptions) -> dict[str, torch.Tensor]:
    """``{"features": (n, 20, 161) float32, "labels": (n,)}`` (cached)."""
    _ensure_files(opts)
    path = Path(opts.root) / "SpeechCommands" / "processed" / "mfcc.pt"
    return cached(path, MFCC_CACHE_VERSION, lambda: _build_mfcc(opts))


# ----------------------------------------------------------------------------------------------
# family


@DATASETS.register("SpeechCommands", "speech_commands")
class SpeechCommands:
    """Speech Commands v0.02, 10 keywords; raw audio or MFCCs; optional dropped time steps.

    Params: ``mfcc`` (bool), ``drop_rate`` (fraction, or percentage if >= 1).
    """

    params: ClassVar[tuple[str, ...]] = ("mfcc", "drop_rate")

    @classmethod
    def meta(cls, opts: DataOptions) -> DatasetMeta:
        check_data_type(opts, ("default", "sequence"))
        rate = drop_fraction(opts)
        use_mfcc = bool(opts.param("mfcc", False))
        c, l = (N_MFCC, MFCC_FRAMES) if use_mfcc else (1, NUM_SAMPLES)
        c += int(rate > 0)
        extra = {
            "classes": list(CLASSES),
            "mask_channel": rate > 0,
            "drop_rate": rate,
            "sample_rate": SAMPLE_RATE,
        }
        return DatasetMeta(c, len(CLASSES), 1, (c, l), opts.data_type, extra)

    @classmethod
    def load(cls, opts: DataOptions) -> DatasetSplits:
        meta = cls.meta(opts)
        rate = meta.extra["drop_rate"]
        if opts.param("mfcc", False):
            data = load_mfcc(opts)
            x, scale = data["features"], 1.0  # (n, 20, 161)
        else:
            data = load_audio(opts)
            x, scale = data["audio"].unsqueeze(1), float(2**15)  # (n, 1, 16000) int16
        y = data["labels"]
        train, val, test = stratified_split(y, (0.7, 0.15, 0.15), seed=opts.split_seed)
        mean, std = channel_stats(x, train, scale)
        transform = NormalizeSequence(mean, std, scale, mask_channel=rate > 0)
        make = lambda idx: IndexedSequenceDataset(x, y, idx, rate, seed=opts.split_seed)  # noqa: E731
        return DatasetSplits(
            train=make(train),
            val=make(val),
            test=make(test),
            meta=meta,
            batch_transform=transform,
        )
