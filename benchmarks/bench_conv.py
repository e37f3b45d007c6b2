"""Benchmark: FFT vs direct convolution on CPU (forward + backward). Not a test.

Legend: b batch · c channels · k kernel extent · l length.

1. Depthwise causal 1D conv, b·c = 8·140 = 1120 rows, k = l ∈ {1024, 4096, 16000}:
   ``fft_conv`` (fast lengths, hand-written backward) vs ``F.conv1d(groups=c)`` vs a naive FFT
   conv (rfft at length l + k - 1, autograd backward).
2. Depthwise "same" 2D conv on 8×140×32×32, k ∈ {3, 7, 15, 33}: direct, FFT and
   ``conv_nd(use_fft=None)``.

Run: ``.venv/bin/python benchmarks/bench_conv.py`` (writes ``benchmarks/results/bench_conv.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from ccnn.nn.functional import conv_nd, direct_conv, estimate_costs, fft_conv, prefer_fft

RESULTS = Path(__file__).parent / "results" / "bench_conv.json"


def timeit(fn: Callable[[], None], reps: int, warmup: int = 1) -> float:
    """Median seconds of ``reps`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def fwd_bwd(conv: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x, w) -> Callable[[], None]:
    def run() -> None:
        x.grad = w.grad = None
        y = conv(x, w)
        y.backward(torch.ones_like(y))

    return run


def naive_fft_causal(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Textbook FFT conv: rfft at l + k - 1 (no fast length), autograd backward.

    Shapes: ``x (b, c, l)``, ``w (c, 1, k)`` -> ``(b, c, l)`` (causal correlation).
    """
    l, k = x.shape[-1], w.shape[-1]
    n = l + k - 1
    spec = torch.fft.rfft(x, n=n) * torch.fft.rfft(w.flip(-1)[:, 0], n=n)
    return torch.fft.irfft(spec, n=n)[..., :l]


def direct_causal(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return F.conv1d(F.pad(x, (w.shape[-1] - 1, 0)), w, groups=x.shape[1])


def bench_1d(lengths: list[int], b: int, c: int, reps: int) -> list[dict]:
    rows = []
    for l in lengths:
        g = torch.Generator().manual_seed(l)
        x = torch.randn(b, c, l, generator=g).requires_grad_()
        w = (torch.randn(c, 1, l, generator=g) / l**0.5).requires_grad_()
        # sanity: all three agree
        with torch.no_grad():
            ref = fft_conv(x[:1, :4], w[:4], causal=True, separable=True)
            assert torch.allclose(naive_fft_causal(x[:1, :4], w[:4]), ref, atol=1e-3)
            assert torch.allclose(direct_causal(x[:1, :4], w[:4]), ref, atol=1e-3)
        ours = timeit(fwd_bwd(lambda a, v: fft_conv(a, v, causal=True, separable=True), x, w), reps)
        naive = timeit(fwd_bwd(naive_fft_causal, x, w), reps)
        # direct: O(l·k) per row; at long l time a subset of channels once and scale linearly
        sub_c = c if l <= 1024 else (c if l <= 4096 else max(1, c // 40))
        xs = x[: 1 if sub_c < c else b, :sub_c].detach().requires_grad_()
        ws = w[:sub_c].detach().requires_grad_()
        d_reps = reps if l <= 1024 else 1
        t_sub = timeit(fwd_bwd(direct_causal, xs, ws), d_reps, warmup=1 if l <= 1024 else 0)
        scale = (b * c) / (xs.shape[0] * sub_c)
        direct = t_sub * scale
        row = dict(
            l=l, k=l, rows=b * c, ours_s=ours, naive_fft_s=naive, direct_s=direct,
            direct_timed_rows=xs.shape[0] * sub_c, direct_reps=d_reps,
            direct_extrapolated=scale != 1,
            speedup_vs_naive=naive / ours, speedup_vs_direct=direct / ours,
        )  # fmt: skip
        rows.append(row)
        note = f" (extrapolated from {row['direct_timed_rows']} rows)" if scale != 1 else ""
        print(
            f"1D l=k={l:6d}: ours {ours * 1e3:9.1f} ms | naive FFT {naive * 1e3:9.1f} ms "
            f"({naive / ours:5.1f}x) | direct {direct * 1e3:10.1f} ms ({direct / ours:7.1f}x)"
            + note,
            flush=True,
        )
    return rows


def bench_2d(ks: list[int], shape: tuple[int, int, int, int], reps: int) -> list[dict]:
    rows = []
    b, c, h, w_ = shape
    for k in ks:
        g = torch.Generator().manual_seed(k)
        x = torch.randn(b, c, h, w_, generator=g).requires_grad_()
        w = (torch.randn(c, 1, k, k, generator=g) / k).requires_grad_()
        fns = {
            "direct": lambda a, v: direct_conv(a, v, separable=True),
            "fft": lambda a, v: fft_conv(a, v, separable=True),
            "auto": lambda a, v: conv_nd(a, v, separable=True, use_fft=None),
        }
        # interleave the repetitions so that load changes hit all three alike
        ts: dict[str, list[float]] = {name: [] for name in fns}
        for f in fns.values():
            fwd_bwd(f, x, w)()
        for _ in range(reps):
            for name, f in fns.items():
                ts[name].append(timeit(fwd_bwd(f, x, w), 1, warmup=0))
        t = {name: statistics.median(v) for name, v in ts.items()}
        best = min(t["direct"], t["fft"])
        choice = "fft" if prefer_fft(x.shape, w.shape, True, "cpu") else "direct"
        est_d, est_f = estimate_costs(x.shape, w.shape, True, "cpu")
        row = dict(
            k=k, shape=list(shape), direct_s=t["direct"], fft_s=t["fft"], auto_s=t["auto"],
            auto_choice=choice, auto_over_best=t["auto"] / best,
            auto_picks_faster=(choice == "fft") == (t["fft"] < t["direct"]),
            model_direct_s=est_d, model_fft_s=est_f,
        )  # fmt: skip
        rows.append(row)
        print(
            f"2D k={k:2d}: direct {t['direct'] * 1e3:7.1f} ms | fft {t['fft'] * 1e3:7.1f} ms | "
            f"auto ({choice:6s}) {t['auto'] * 1e3:7.1f} ms = {t['auto'] / best:4.2f}x best "
            f"| model {est_d * 1e3:.1f} / {est_f * 1e3:.1f} ms",
            flush=True,
        )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--lengths", type=int, nargs="*", default=[1024, 4096, 16000])
    p.add_argument("--ks", type=int, nargs="*", default=[3, 7, 15, 33])
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.time()
    load = os.getloadavg()
    print(f"torch {torch.__version__}, {args.threads} threads, load avg {load}", flush=True)
    res_1d = bench_1d(args.lengths, 8, 140, args.reps)
    res_2d = bench_2d(args.ks, (8, 140, 32, 32), args.reps)
    out = dict(
        machine=dict(
            cpu=platform.processor() or platform.machine(), cores=os.cpu_count(),
            threads=args.threads, torch=torch.__version__, python=platform.python_version(),
            mkl=torch.backends.mkl.is_available(), load_avg_start=load,
            load_avg_end=os.getloadavg(),
        ),
        reps=args.reps, timing="median of reps after warm-up; forward + backward",
        conv1d_depthwise_causal=res_1d, conv2d_depthwise_same=res_2d,
        wall_s=time.time() - t0,
    )  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out} in {time.time() - t0:.0f} s; load avg at end {os.getloadavg()}")


if __name__ == "__main__":
    main()
