"""Every argument of ``train.py`` (the scattering app) does something or is refused.

For each flag of the parser the test runs a tiny real run (fake data, one batch per epoch) with
the flag changed and compares it with the same run without it: the network and run state built
at start (modules, initial weights, loaders, precision, memory format), what was trained (final
weights, per-epoch curves and results without their timings), what was printed (rates removed)
and which files were written. The flag passes if anything differs, or if the run is refused
with a one-line error (exit code 2) that names it.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

import option_walk
from ccnn.apps.scattering_main import build_parser, main, parse_config
from ccnn.files import load_torch
from ccnn.train.scattering import DistEnv, _Trainer

BASE = (
    "--fake-data --limit-batches 1 --lr-epochs 1 --epochs 1 --image-size 16 "
    "--global-batch-size 4 --fake-train-size 20 --fake-val-size 4 --workers 0 --print-freq 0 "
    "--n-blocks 2 --L 2 --kernel-size 3"
)
LONGER = "--lr-epochs 3 --epochs 2"  # flags that act over several epochs

# flag -> (the changed arguments, extra context arguments); flags not listed are flipped (store
# true) or given a generic other value
CASES: dict[str, tuple[str, str]] = {
    "--dataset": ("--dataset cifar100", ""),
    "--data-dir": ("--data-dir /tmp/ccnn-elsewhere", ""),
    "--train-size": ("--train-size 0.5", ""),
    "--workers": ("--workers 1", ""),
    "--image-size": ("--image-size 20", ""),
    "--fake-train-size": ("--fake-train-size 12", ""),
    "--fake-val-size": ("--fake-val-size 8", ""),
    "--mixing-horizon": ("--mixing-horizon 3", ""),
    "--modulus-type": ("--modulus-type phase_relu", ""),
    "--fuse": ("--fuse off", ""),
    "--kernel-size": ("--kernel-size 5", ""),
    "--patience": ("--patience 1", f"{LONGER} --lr-head 0"),  # no improvement: stops early
    "--print-freq": ("--print-freq 1", ""),
    "--limit-batches": ("--limit-batches 2", ""),
    "--stop-after-epochs": ("--stop-after-epochs 1", ""),
    "--resume": ("--resume", ""),
    "--l2-penalty": ("--l2-penalty 0.5", LONGER),  # zero gradient at θ = θ0: needs 2+ steps
}
WHERE = {"--save-dir": "where the run writes; every case here reads its results from there"}
"""Flags that place the run's files rather than change the run."""


def _flags() -> list[str]:
    return [
        max(a.option_strings, key=len)
        for a in build_parser()._actions
        if a.option_strings and a.dest != "help"
    ]


_TIMES = {"time", "train_time", "wall_time"}


def _untimed(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _untimed(v) for k, v in obj.items() if k not in _TIMES}
    if isinstance(obj, list):
        return [_untimed(v) for v in obj]
    return obj


def fingerprint(argv: list[str], save_dir: Path) -> dict[str, Any]:
    argv = [*argv, "--save-dir", str(save_dir)]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        main(argv)  # a user error: one line on stderr, SystemExit(2)
    start = _Trainer(parse_config(argv), DistEnv(0, 1, 0, torch.device("cpu")))
    weight = next(start.model.parameters())
    built = (
        str(start.model),
        option_walk.digest(start.model.state_dict().values()),
        weight.is_contiguous(memory_format=torch.channels_last) and weight.dim() == 4,
        repr(start.amp),
        start.batch,
        [len(start.data.train), len(start.data.val), start.data.num_classes],
        [getattr(loader, "num_workers", None) for loader in (start.train_loader, start.val_loader)],
    )
    results = json.loads((save_dir / "results.json").read_text())
    results.pop("config"), results.pop("content_sha256", None)
    last = sorted(save_dir.glob("phase_*_last.pt"))
    final = option_walk.digest(load_torch(last[-1])["model"].values()) if last else None
    return {
        "built": built,
        "results": _untimed(results),
        "final": final,
        "printed": re.sub(r"\d+ img/s", "N img/s", printed.getvalue()),
        "files": sorted(p.name for p in save_dir.iterdir()),
    }


_BEFORE: dict[str, dict[str, Any]] = {}


def test_cases_name_real_flags():
    assert set(CASES) | set(WHERE) <= set(_flags())


@pytest.mark.filterwarnings("ignore:mixing horizon")
@pytest.mark.parametrize("flag", [f for f in _flags() if f not in WHERE])
def test_every_flag_changes_the_run_or_is_refused(flag, tmp_path, capsys):
    action = next(a for a in build_parser()._actions if flag in a.option_strings)
    if flag in CASES:
        change, context = CASES[flag]
    else:
        context = ""
        default = getattr(parse_config(shlex.split(BASE)), action.dest)
        change = flag if action.nargs == 0 else f"{flag} {option_walk.other_value(default)}"
    base = shlex.split(f"{BASE} {context}")
    if context not in _BEFORE:
        _BEFORE[context] = fingerprint(base, tmp_path / "before")
    if action.nargs == 0 and flag in base:  # a switch the base run sets: leave it out
        changed = [a for a in base if a != flag]
    else:
        changed = [*base, *shlex.split(change)]
    try:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            after = fingerprint(changed, tmp_path / "after")
    except SystemExit as exit_:
        message = capsys.readouterr().err.strip()
        assert exit_.code == 2 and "\n" not in message, message
        assert flag in message or f"{action.dest}=" in message, message
        return
    if any(flag in str(w.message) for w in seen):  # said out loud: e.g. --data-dir with
        return  # --fake-data, which smoke-runs a paper command on fake data
    differs = [part for part in after if after[part] != _BEFORE[context][part]]
    assert differs, f"{change} changed nothing in the run (context {context!r})"
