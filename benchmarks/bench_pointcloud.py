"""Point-cloud CCNN benchmarks (CPU): kNN strategies and the CCNN-4,110 forward+backward.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_pointcloud.py [--threads 1] [--quick]

Writes ``benchmarks/results/bench_pointcloud.json``:

* ``knn``: median time of three kNN strategies on (b, n) clouds with k neighbours —
  ``matmul_topk`` (|p|^2 + |q|^2 - 2 p.q, then topk; what :func:`ccnn.nn.pointconv.knn` does),
  the same in chunks of 256 query points, and ``cdist_sort`` (``torch.cdist`` + full argsort;
  the reference).
* ``ccnn_4_110``: forward+backward of the published ModelNet40 CCNN-4,110 (hidden 140, 4 blocks,
  MAGNet 32 x 3, K = 256) on 512-point clouds. The paper's step is a batch of 16 clouds split
  into 4 accumulation steps of 4 (``train.batch_size=16 train.accumulate_grad_steps=4``). Memory
  grows linearly with the micro-batch (~5 GB per cloud), so on this CPU we time micro-batches of
  ``--micro-batch`` clouds (default 1) and report the time of a 16-cloud step as
  ``16 / micro_batch`` micro-steps. Peak memory: growth of the process's peak resident set size
  over the RSS before the first step (Linux ``ru_maxrss``; torch's CPU allocator returns memory to
  the OS, so this is the step's peak working set). A 16-cloud micro-batch would need ~16x it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import time
from pathlib import Path

import torch

from ccnn.models.pointcloud import PointCCNN
from ccnn.nn.pointconv import knn, knn_reference

RESULTS = Path(__file__).parent / "results" / "bench_pointcloud.json"


def timeit(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench_knn(quick: bool) -> list[dict]:
    rows = []
    cases = (
        [(16, 512, 256), (16, 1024, 32)]
        if quick
        else [(16, 512, 256), (16, 512, 64), (16, 1024, 32), (4, 4096, 32), (1, 16384, 16)]
    )
    for b, n, k in cases:
        pos = torch.rand(b, n, 3)
        row = {"b": b, "n": n, "k": k}
        row["matmul_topk_s"] = timeit(lambda p=pos, k=k, n=n: knn(p, k, chunk_size=n), 3)
        row["matmul_topk_chunked256_s"] = timeit(lambda p=pos, k=k: knn(p, k, chunk_size=256), 3)
        if n <= 4096:
            row["cdist_sort_s"] = timeit(lambda p=pos, k=k: knn_reference(p, k), 3)
        rows.append(row)
        print("knn", row)
    return rows


def ccnn_4_110() -> PointCCNN:
    return PointCCNN(
        6,
        40,
        140,
        4,
        conv_type="SeparablePointFlexConv",
        conv_kwargs={
            "num_neighbours": 256,
            "kernel_kwargs": {"hidden_channels": 32, "num_layers": 3, "omega_0": 500.0},
            "mask_kwargs": {"init_value": 0.075},
        },
    )


def bench_model(micro_batch: int, num_points: int, repeats: int) -> dict:
    torch.manual_seed(0)
    net = ccnn_4_110()
    x = torch.randn(micro_batch, 6, num_points)
    y = torch.randint(40, (micro_batch,))

    def step():
        net.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(net(x), y).backward()

    baseline = _rss_bytes()
    seconds = timeit(step, repeats)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - baseline
    return {
        "micro_batch": micro_batch,
        "num_points": num_points,
        "neighbours": 256,
        "params": sum(p.numel() for p in net.parameters()),
        "fwd_bwd_s_per_micro_batch": seconds,
        "fwd_bwd_s_per_16_clouds": seconds * 16 / micro_batch,
        "peak_memory_gb_per_micro_batch": peak / 1e9,
    }


def _rss_bytes() -> int:
    """Current resident set size (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _previous_knn() -> list[dict]:
    return json.loads(RESULTS.read_text())["knn"] if RESULTS.is_file() else []


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--micro-batch", type=int, default=1)
    parser.add_argument("--skip-knn", action="store_true", help="keep the stored kNN results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = {
        "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{args.threads} thread(s)",
        "knn": _previous_knn() if args.skip_knn else bench_knn(args.quick),
        "ccnn_4_110": bench_model(args.micro_batch, 512, 1 if args.quick else 2),
    }
    print(json.dumps(results["ccnn_4_110"], indent=2))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
