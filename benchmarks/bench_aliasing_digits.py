"""Evidence for FlexConv's anti-aliasing regulariser on real data (scikit-learn's 8x8 digits).

Trains the small digits FlexNet (experiment ``digits_crossres``: FlexNet-3, MAGNet FlexConvs,
horizon 9) at 8x8 twice — without and with ``kernel.regularize=True`` (gabor+mask, together,
factor 0.1) — and evaluates each at 16x16 (inputs upsampled bilinearly, kernels resampled on the
denser grid, no fine-tuning) through ``run_crossres.py``'s own code path. Reports the test
accuracy at 8x8, at 16x16, and the drop, for both, over several seeds.

    OMP_NUM_THREADS=1 python benchmarks/bench_aliasing_digits.py [--seeds 0 1] [--epochs 15]

Writes ``benchmarks/results/bench_aliasing_digits.json``. A few minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "results" / "bench_aliasing_digits.json"


def one_run(regularize: bool, seed: int, epochs: int, run_dir: str, input_scale: float) -> dict:
    from ccnn.apps.flexconv_main import compose, run_crossres
    from ccnn.nn.aliasing import frequency_report

    overrides = [
        "experiment=digits_crossres",
        "device=cpu",
        f"seed={seed}",
        f"train.epochs={epochs}",
        f"kernel.regularize={regularize}",
        "cross_res.finetune_epochs=0",
        f"kernel.input_scale={input_scale}",
    ]
    cfg = compose(overrides, crossres=True)
    start = time.time()
    results = run_crossres(cfg, run_dir=run_dir)
    # maximum kernel frequencies of the trained network vs the Nyquist frequency at 8x8
    import torch

    from ccnn.apps.flexconv_config import build_datamodule, build_network

    dm = build_datamodule(cfg, resolution=cfg.cross_res.source_res)
    net = build_network(cfg, dm.meta)
    net.load_state_dict(torch.load(Path(run_dir) / "source_network.pt", weights_only=True))
    report = frequency_report(net, gauss_stddevs=cfg.kernel.regularize_params.gauss_stddevs)
    over = [r for r in report if not r["ok"]]
    return {
        "seed": seed,
        "input_scale": input_scale,
        "regularize": regularize,
        "acc_8": results["source_acc"],
        "acc_16_before_finetune": results["target_acc_before_finetune"],
        "change": results["change_before_finetune"],
        "layers_above_nyquist_at_8": len(over),
        "layers": len(report),
        "f_max_over_nyquist_at_8": [round(r["f_max"] / r["f_nyquist"], 3) for r in report],
        "wall_time_s": round(time.time() - start, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument(
        "--input-scales",
        type=float,
        nargs="+",
        default=[2.0, 8.0, 25.6],
        help="kernel.input_scale values (MAGNet initial frequencies; 25.6 is the paper's)",
    )
    args = parser.parse_args()
    import torch

    torch.set_num_threads(max(1, torch.get_num_threads()))
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for scale in args.input_scales:
            for seed in args.seeds:
                for regularize in (False, True):
                    run_dir = str(Path(tmp) / f"s{scale}_reg{int(regularize)}_seed{seed}")
                    runs.append(one_run(regularize, seed, args.epochs, run_dir, scale))
                    print(json.dumps(runs[-1]), flush=True)
    summary = {}
    for scale in args.input_scales:
        for regularize in (False, True):
            rs = [r for r in runs if r["regularize"] == regularize and r["input_scale"] == scale]
            key = f"input_scale={scale} " + ("regularized" if regularize else "unregularized")
            summary[key] = {
                "acc_8_mean": statistics.mean(r["acc_8"] for r in rs),
                "acc_16_mean": statistics.mean(r["acc_16_before_finetune"] for r in rs),
                "change_mean": statistics.mean(r["change"] for r in rs),
                "changes": [r["change"] for r in rs],
            }
    result = {
        "benchmark": "FlexNet-3 on sklearn digits: train 8x8, test 16x16 (bilinear upsampling) "
        "without fine-tuning; accuracies are test-split fractions",
        "experiment": "digits_crossres (run_crossres.py code path), cross_res.finetune_epochs=0",
        "epochs": args.epochs,
        "seeds": args.seeds,
        "input_scales": args.input_scales,
        "summary": summary,
        "runs": runs,
        "torch_threads": torch.get_num_threads(),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    print(f"-> {OUT}")


if __name__ == "__main__":
    main()
