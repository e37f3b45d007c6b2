"""Irregularly sampled series: kernels at the true time differences vs the published zero-fill +
mask channel vs MiniRocket on interpolated series, at 0/30/50/70 % of the steps dropped.

For each bundled set and drop rate, every series (TRAIN and TEST) loses the same seeded random
``round(rate * length)`` steps in all three methods (the loader's ``dataset.params.drop_rate``):

* **timestamps** (ours): ``python main.py dataset.name=UEA dataset.params.uea_name=<set>
  dataset.params.drop_rate=<r> dataset.params.pad_mode=timestamps`` — the kept observations with
  their original step indices; every continuous kernel is evaluated at the true time differences
  and unobserved steps never enter a statistic;
* **zero-fill + mask** (the published CKConv/FlexConv encoding): the same command with
  ``pad_mode=mask`` — zeros at dropped steps and an observation-mask input channel;
* **MiniRocket**: aeon's ``MiniRocketClassifier(random_state=0)`` on each series linearly
  interpolated over its kept steps (ends: nearest kept value).

    python benchmarks/bench_irregular.py [--sets GunPoint BasicMotions] [--rates 0 0.3 0.5 0.7]

Prints a markdown table and writes ``benchmarks/results/bench_irregular.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ucr import ROOT, interpolate_missing, ours  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "bench_irregular.json"


def interpolated(name: str, rate: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """TRAIN/TEST with the loader's dropped steps, each series interpolated over its kept steps."""
    from ccnn.data.base import DataOptions, load_splits

    params = {"uea_name": name, "drop_rate": rate, "pad_mode": "mask", "val_fraction": 0}
    splits = load_splits(DataOptions("UEA", data_type="sequence", params=params, download=False))

    def fill(ds) -> tuple[np.ndarray, np.ndarray]:
        x, y = (t.numpy() for t in ds.tensors[:2])
        if not splits.meta.extra["mask_channel"]:
            return x.astype(np.float64), y
        values, kept = x[:, :-1].astype(np.float64), x[:, -1] > 0
        values[np.broadcast_to(~kept[:, None], values.shape)] = np.nan
        return np.stack([interpolate_missing(v) for v in values]), y

    return (*fill(splits.train), *fill(splits.test))


def minirocket(name: str, rate: float) -> dict:
    from aeon.classification.convolution_based import MiniRocketClassifier

    x_tr, y_tr, x_te, y_te = interpolated(name, rate)
    start = time.perf_counter()
    clf = MiniRocketClassifier(random_state=0).fit(x_tr, y_tr)
    return {
        "acc": float(np.mean(clf.predict(x_te) == y_te)),
        "time_s": round(time.perf_counter() - start, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sets", nargs="+", default=["GunPoint", "BasicMotions"])
    parser.add_argument("--rates", type=float, nargs="+", default=[0.0, 0.3, 0.5, 0.7])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    rows, load = [], [round(v, 2) for v in os.getloadavg()]
    for name in args.sets:
        for rate in args.rates:
            row = {"set": name, "drop_rate": rate, "minirocket": minirocket(name, rate)}
            for method, mode in (("timestamps", "timestamps"), ("zero_fill_mask", "mask")):
                runs = [
                    ours(
                        name,
                        s,
                        [f"dataset.params.drop_rate={rate}", f"dataset.params.pad_mode={mode}"],
                    )
                    for s in args.seeds
                ]
                row[method] = {
                    "acc": float(np.mean([r["acc"] for r in runs])),
                    "runs": runs,
                }
            print(
                f"{name} drop {rate:.0%}: timestamps {row['timestamps']['acc']:.3f} | "
                f"zero-fill+mask {row['zero_fill_mask']['acc']:.3f} | "
                f"MiniRocket {row['minirocket']['acc']:.3f}",
                flush=True,
            )
            rows.append(row)

    print("\n| set | dropped | timestamps (ours) | zero-fill + mask (published) | MiniRocket |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['set']} | {r['drop_rate']:.0%} | {r['timestamps']['acc']:.3f} | "
            f"{r['zero_fill_mask']['acc']:.3f} | {r['minirocket']['acc']:.3f} |"
        )
    means = {
        m: float(np.mean([r[m]["acc"] for r in rows]))
        for m in ("timestamps", "zero_fill_mask", "minirocket")
    }
    print(json.dumps(means, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "command": " ".join(sys.argv),
                "load_average_at_start": load,
                "seeds": args.seeds,
                "mean_acc": means,
                "rows": rows,
            },
            indent=2,
        )
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
