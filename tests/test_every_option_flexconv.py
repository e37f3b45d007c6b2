"""Every leaf of the FlexConv configuration schema does something or is refused.

As ``tests/test_every_option.py`` for the CCNN app: for each key of ``FlexConvConfig`` the test
sets another valid value in a context where the key applies and builds the run exactly as
``run_experiment.py`` does (:func:`ccnn.apps.flexconv_main.plan`) — or, for ``cross_res.*``,
as ``run_crossres.py`` does (:func:`ccnn.apps.flexconv_main.plan_crossres`: the training stage,
the target-resolution data and the fine-tuning settings). The key passes if the run changes or
is refused at start with an option error; keys accepted for compatibility must warn.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
from typing import Any

import pytest

import option_walk
from ccnn.apps import flexconv_config
from ccnn.apps.common import schema_keys
from ccnn.apps.flexconv_main import compose, plan, plan_crossres
from ccnn.apps.flexconv_schema import FlexConvConfig

DIGITS = ["experiment=digits", "device=cpu"]  # the embedded default: real data, a small FlexNet
FAKE = ["dataset_params.fake=true", "device=cpu", "train.batch_size=4"]
CROSSRES = ["experiment=digits_crossres", "device=cpu"]
FILES = [  # small MNIST files in the real format
    "experiment=digits",
    "dataset=sMNIST",
    "dataset_params.root={data}",
    "train.batch_size=4",
    "device=cpu",
]

# key -> (another valid value, the context in which the key applies); other keys get a generic
# other value in the DIGITS context
REG = [*DIGITS, "kernel.regularize=true"]
SGD = ["train.optimizer=SGD", "train.optimizer_params.momentum=0.9"]
CASES: dict[str, tuple[Any, list[str]]] = {
    "net.type": ("TCN", DIGITS),  # images: refused
    "net.norm": ("LayerNorm", DIGITS),
    "net.nonlinearity": ("GELU", DIGITS),
    "net.block_width_factors": ("[1.0,1,2.0,2]", DIGITS),
    "kernel.type": ("Gabor", DIGITS),
    "kernel.activ_function": ("Sine", [*DIGITS, "kernel.type=MLP"]),
    "kernel.norm": ("BatchNorm", [*DIGITS, "kernel.type=MLP"]),
    "kernel.bias_init": ("zeros", DIGITS),
    "kernel.regularize_params.res": (16, REG),
    "kernel.regularize_params.res_offset": (2, REG),
    "kernel.regularize_params.target": ("gabor", REG),
    "kernel.regularize_params.fn": ("l2", REG),
    "kernel.regularize_params.method": ("summed", REG),
    "kernel.regularize_params.factor": (0.01, REG),
    "kernel.regularize_params.gauss_stddevs": (3.0, REG),
    "kernel.regularize_params.gauss_factor": (0.25, REG),
    "kernel.srf.scale": (2.0, [*DIGITS, "conv.type=SRF"]),
    "conv.type": ("CKConv", DIGITS),
    "conv.use_fft": ("true", DIGITS),
    "conv.padding": ("valid", DIGITS),
    "conv.horizon": (5, DIGITS),
    "mask.type": ("sigmoid", DIGITS),
    "dataset": ("MNIST", [*FAKE, "experiment=digits"]),
    "dataset_params.root": ("/tmp/ccnn-elsewhere", DIGITS),
    "dataset_params.permuted": (True, FILES),
    "dataset_params.noise_padded": (True, [*FAKE, "experiment=digits", "dataset=sCIFAR10"]),
    "dataset_params.memory_size": (10, DIGITS),
    "dataset_params.mfcc": (True, [*FAKE, "experiment=digits", "dataset=SpeechCommands"]),
    "dataset_params.drop_rate": (0.3, [*FAKE, "experiment=digits", "dataset=CharTrajectories"]),
    "dataset_params.seq_length": (100, DIGITS),
    "cross_res.resize": ("bilinear", CROSSRES),
    "cross_res.interpolation": ("nearest", CROSSRES),
    "train.augment": ("resnet", DIGITS),
    "train.optimizer": ("SGD", DIGITS),
    "train.optimizer_params.momentum": (0.5, [*DIGITS, *SGD]),
    "train.optimizer_params.nesterov": (True, [*DIGITS, *SGD]),
    "train.scheduler": ("multistep", [*DIGITS, "train.scheduler_params.decay_factor=0.5"]),
    "train.scheduler_params.decay_steps": (
        5,
        [*DIGITS, "train.scheduler=multistep", "train.scheduler_params.decay_factor=0.5"],
    ),
    "train.resume": ("/nonexistent/last.ckpt", DIGITS),
    "wandb.project": ("other", [*DIGITS, "debug=false"]),
    "wandb.entity": ("other", [*DIGITS, "debug=false"]),
    "wandb.dir": ("/tmp/ccnn-wandb", [*DIGITS, "debug=false"]),
    "device": ("cuda", DIGITS),
    "pretrained_params.filepath": ("/nonexistent/model.pt", DIGITS),
    "summary": ("[1,1,8,8]", DIGITS),
}
LABELS = {"comment": "a free-text note, stored with the run's config and results"}
"""Keys that label a run and are not meant to change it."""


def _leaves() -> list[str]:
    return [k for k, leaf in schema_keys(FlexConvConfig).items() if leaf]


def fingerprint(args: list[str], tmp_path) -> dict[str, Any]:
    """What a run built from ``args`` would be, in comparable values (cross-resolution runs:
    also the target data and the fine-tuning settings)."""
    crossres = any(a.startswith("cross_res.") or a == CROSSRES[0] for a in args)
    cfg = flexconv_config.with_seed(compose(args, crossres=crossres))
    printed = io.StringIO()  # what the run prints before training (summary=[...] tables)
    with contextlib.redirect_stdout(printed):
        p = plan_crossres(cfg, str(tmp_path)) if crossres else plan(cfg, str(tmp_path))
    if not crossres:
        return {**option_walk.fingerprint(p), "printed": printed.getvalue()}
    parts = {**option_walk.fingerprint(p.source), "printed": printed.getvalue()}
    parts["crossres"] = (
        p.scale,
        repr(p.target.meta),
        [option_walk.digest(b) for b in option_walk.first_batches(p.target)],
        None if p.finetune is None else {**dataclasses.asdict(p.finetune), "run_dir": None},
    )
    return parts


_BEFORE: dict[tuple[str, ...], dict[str, Any]] = {}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from data_fixtures import write_mnist

    root = tmp_path_factory.mktemp("data")
    write_mnist(root / "MNIST" / "raw")
    return root


def test_cases_name_real_keys():
    assert set(CASES) <= set(_leaves()) and set(LABELS) <= set(_leaves())


@pytest.mark.parametrize("key", [k for k in _leaves() if k not in LABELS])
def test_every_key_changes_the_run_or_is_refused(key, tmp_path, data_dir, monkeypatch):
    from ccnn.data import vision

    # fixture MNIST files are not the released ones: no md5 for files already present
    monkeypatch.setattr(vision.MNIST, "resources", dict.fromkeys(vision.MNIST.resources))
    default_context = CROSSRES if key.startswith("cross_res.") else DIGITS
    value, context = CASES.get(key, (None, default_context))
    option_walk.walk_key(
        key,
        (value, [arg.format(data=data_dir) for arg in context]),
        lambda args: compose(args, crossres=args == CROSSRES),
        lambda args, name: fingerprint(args, tmp_path / name),
        _BEFORE,
        flexconv_config,
    )
