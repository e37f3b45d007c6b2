"""Our one UCR/UEA preset against aeon's MiniRocket on every classification set aeon bundles.

Both use the official TRAIN/TEST splits. Ours is exactly what a user runs:
``python main.py dataset.name=UEA dataset.params.uea_name=<set> seed=<s>`` (a fresh process per
run, ``device=cpu``, 2 threads), read back from the run's ``results.json``; 3 seeds by default.
MiniRocket is ``aeon.classification.convolution_based.MiniRocketClassifier(random_state=0)``;
sets of unequal length (which it rejects) are edge-padded to the longest series (each series'
last value repeated), and missing values are linearly interpolated.

    python benchmarks/bench_ucr.py [--seeds 0 1 2] [--sets GunPoint ArrowHead] [--skip-ours]

Prints a markdown table (accuracy per set, mean accuracy, mean rank, time) and writes
``benchmarks/results/bench_ucr.json``. About 15-30 minutes on an idle 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "bench_ucr.json"


def bundled_classification_sets() -> list[str]:
    """Names of the sets in aeon's data folder whose ``.ts`` header says ``@classLabel true``."""
    from ccnn.data.uea import bundled_dir

    names = []
    for d in sorted(p for p in bundled_dir().iterdir() if p.is_dir()):
        train = d / f"{d.name}_TRAIN.ts"
        if not (train.is_file() and (d / f"{d.name}_TEST.ts").is_file()):
            continue
        header = []
        with open(train, errors="replace") as f:
            for line in f:
                header.append(line.strip().lower())
                if header[-1].startswith("@data"):
                    break
        if any(line.startswith("@classlabel true") for line in header):
            names.append(d.name)
    return names


def interpolate_missing(series: np.ndarray) -> np.ndarray:
    """Linearly interpolate NaNs of ``(c, l)`` per channel (ends: nearest observed value)."""
    out = series.copy()
    for row in out:
        bad = np.isnan(row)
        if bad.any() and (~bad).any():
            idx = np.arange(len(row))
            row[bad] = np.interp(idx[bad], idx[~bad], row[~bad])
    return out


def edge_pad(series: list[np.ndarray], length: int) -> np.ndarray:
    """``(n, c, length)``: each series followed by its last value repeated."""
    return np.stack([np.pad(s, ((0, 0), (0, length - s.shape[1])), mode="edge") for s in series])


def minirocket(name: str) -> dict:
    from aeon.classification.convolution_based import MiniRocketClassifier

    from ccnn.data.base import DataOptions
    from ccnn.data.uea import locate, read_ts

    train_path, test_path = locate(DataOptions("UEA", download=False), name)
    (s_tr, y_tr), (s_te, y_te) = read_ts(train_path), read_ts(test_path)
    lengths = {s.shape[1] for s in s_tr + s_te}
    length = max(lengths)
    x_tr = edge_pad([interpolate_missing(s) for s in s_tr], length)
    x_te = edge_pad([interpolate_missing(s) for s in s_te], length)
    start = time.perf_counter()
    clf = MiniRocketClassifier(random_state=0)
    clf.fit(x_tr, y_tr)
    acc = float(np.mean(clf.predict(x_te) == y_te))
    return {
        "acc": acc,
        "time_s": round(time.perf_counter() - start, 2),
        "unequal_length": len(lengths) > 1,
        "train": len(s_tr),
        "test": len(s_te),
        "length": length,
        "channels": int(s_tr[0].shape[0]),
    }


def ours(name: str, seed: int, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as run_dir:
        cmd = [
            sys.executable,
            str(ROOT / "main.py"),
            "dataset.name=UEA",
            f"dataset.params.uea_name={name}",
            f"seed={seed}",
            "device=cpu",
            f"hydra.run.dir={run_dir}",
            *extra,
        ]
        env = dict(os.environ, OMP_NUM_THREADS="2", PYTHONWARNINGS="ignore")
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
        results = json.loads((Path(run_dir) / "results.json").read_text())
    return {
        "seed": seed,
        "acc": results["test"]["acc"],
        "epochs": results["epochs"],
        "params": results["params"],
        "train_time_s": results["wall_time_s"],
        "process_time_s": round(wall, 1),
    }


def ranks(a: float, b: float) -> tuple[float, float]:
    return (1.5, 1.5) if abs(a - b) < 1e-9 else ((1.0, 2.0) if a > b else (2.0, 1.0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sets", nargs="+", default=None)
    parser.add_argument("--skip-ours", action="store_true")
    parser.add_argument("--override", nargs="*", default=[], help="extra main.py overrides")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    sets = args.sets or bundled_classification_sets()
    rows, load = [], [round(v, 2) for v in os.getloadavg()]
    for name in sets:
        row = {"set": name, "minirocket": minirocket(name)}
        print(f"{name}: MiniRocket {row['minirocket']['acc']:.3f}", flush=True)
        if not args.skip_ours:
            row["ours"] = [ours(name, s, args.override) for s in args.seeds]
            accs = [r["acc"] for r in row["ours"]]
            row["ours_mean"] = statistics.mean(accs)
            row["ours_std"] = statistics.pstdev(accs)
            print(f"{name}: ours {accs} (mean {row['ours_mean']:.3f})", flush=True)
        rows.append(row)

    summary: dict = {
        "sets": len(rows),
        "minirocket_mean_acc": statistics.mean(r["minirocket"]["acc"] for r in rows),
        "minirocket_time_s": sum(r["minirocket"]["time_s"] for r in rows),
    }
    if not args.skip_ours:
        rk = [ranks(r["ours_mean"], r["minirocket"]["acc"]) for r in rows]
        summary.update(
            ours_mean_acc=statistics.mean(r["ours_mean"] for r in rows),
            ours_mean_rank=statistics.mean(a for a, _ in rk),
            minirocket_mean_rank=statistics.mean(b for _, b in rk),
            ours_mean_time_per_run_s=statistics.mean(
                o["train_time_s"] for r in rows for o in r["ours"]
            ),
            ours_max_time_per_run_s=max(o["train_time_s"] for r in rows for o in r["ours"]),
        )
    print("\n| set | train × length × channels | MiniRocket | ours (mean ± sd, 3 seeds) |")
    print("|---|---|---|---|")
    for r in rows:
        m = r["minirocket"]
        shape = (
            f"{m['train']} × {m['length']}{'*' if m['unequal_length'] else ''} × {m['channels']}"
        )
        ours_cell = f"{r['ours_mean']:.3f} ± {r['ours_std']:.3f}" if "ours" in r else "–"
        print(f"| {r['set']} | {shape} | {m['acc']:.3f} | {ours_cell} |")
    print(json.dumps(summary, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "command": " ".join(sys.argv),
        "load_average_at_start": load,
        "torch_threads": 2,
        "seeds": args.seeds,
        "summary": summary,
        "rows": rows,
    }
    args.out.write_text(json.dumps(record, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
