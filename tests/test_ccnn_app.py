"""The CCNN app: every paper command composes, builds the published network and smoke-runs;
configuration errors are clear; optimiser groups and schedules are right; training learns."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import ccnn.data  # noqa: F401
from ccnn.apps.ccnn_config import build_datamodule, build_network, optim_settings
from ccnn.apps.ccnn_main import compose, run
from ccnn.apps.common import ConfigError
from ccnn.train.module import ClassificationModule
from ccnn.train.optim import ScheduleSettings, lr_lambda
from conftest import seed_commands

COMMANDS = seed_commands("ccnn")
GRID_COMMANDS = {k: v for k, v in COMMANDS.items() if "modelnet" not in k}
ROOT = Path(__file__).resolve().parents[1]

# Published parameter counts (verified on the published code; SPEC §1.5).
PUBLISHED = {
    "smnist_ccnn_4_140": 198_769,
    "smnist_ccnn_6_380": 1_993_091,
    "cifar10_ccnn_4_140": 201_042,
    "cifar10_ccnn_6_380": 1_999_366,
}


def magnet_body(d: int, h: int, layers: int = 3) -> int:
    """MAGNet parameters without the output layer: (L+1) Gabor filters (mu, gamma, linear d->h)
    and L hidden h->h linears."""
    return (layers + 1) * (h * d + h * d + h * d + h) + layers * (h * h + h)


def separable_flexconv(c_in: int, c_out: int, d: int, h: int, learn_mean: bool) -> int:
    return magnet_body(d, h) + (h + 1) * c_in + d * (1 + learn_mean) + c_in + c_in * c_out + c_out


def ccnn_count(
    in_ch: int, out: int, d: int, hidden: int, blocks: int, kh: int, learn_mean=False
) -> int:
    """Independent derivation of a CCNN's parameter count (SeparableFlexConv, S4, BatchNorm)."""
    bn = 2 * hidden
    stem = separable_flexconv(in_ch, hidden, d, kh, learn_mean) + bn
    block = bn + separable_flexconv(hidden, hidden, d, kh, learn_mean) + hidden * hidden + hidden
    return stem + blocks * block + bn + (hidden + 1) * out


def fake_args(args: list[str], *extra: str) -> list[str]:
    args = [
        a for a in args if not a.startswith(("device=", "train.batch_size=", "train.distributed="))
    ]
    acc = next(
        (int(a.split("=")[1]) for a in args if a.startswith("train.accumulate_grad_steps=")), 1
    )
    return [*args, "device=cpu", "dataset.fake=true", f"train.batch_size={2 * acc}", *extra]


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


@pytest.mark.parametrize("name", list(COMMANDS))
def test_named_experiment_equals_verbatim_command(name):
    verbatim = compose(COMMANDS[name]["args"])
    named = compose([f"experiment={name}"])
    assert OmegaConf.to_container(verbatim) == OmegaConf.to_container(named)


@pytest.mark.parametrize("name", list(GRID_COMMANDS))
def test_paper_command_builds_published_network(name):
    cfg = compose(fake_args(COMMANDS[name]["args"]))
    dm = build_datamodule(cfg)
    net = build_network(cfg, dm.meta)
    meta = dm.meta
    out = 1 if meta.num_classes == 2 else meta.num_classes
    expected = ccnn_count(
        meta.in_channels,
        out,
        meta.data_dim,
        cfg.net.no_hidden,
        cfg.net.no_blocks,
        cfg.kernel.no_hidden,
        cfg.mask.learn_mean,
    )
    assert n_params(net) == expected
    if name in PUBLISHED:
        assert n_params(net) == PUBLISHED[name]


def test_derivation_matches_published_counts():
    assert ccnn_count(1, 10, 1, 140, 4, 32) == 198_769
    assert ccnn_count(1, 10, 1, 380, 6, 64) == 1_993_091
    assert ccnn_count(3, 10, 2, 140, 4, 32) == 201_042
    assert ccnn_count(3, 10, 2, 380, 6, 64) == 1_999_366


@pytest.mark.parametrize("name", list(GRID_COMMANDS))
def test_paper_command_smoke_runs_on_fake_data(name, tmp_path):
    cfg = compose(fake_args(COMMANDS[name]["args"], "train.limit_batches=2", "train.epochs=1"))
    results = run(cfg, run_dir=str(tmp_path))
    assert results["params"] > 0
    assert 0.0 <= results["test"]["acc"] <= 1.0
    saved = json.loads((tmp_path / "results.json").read_text())
    assert {"params", "val", "test", "epochs", "wall_time_s", "config"} <= set(saved)


def test_digits_main_job_learns_and_checkpoint_reloads_identically(tmp_path):
    cfg = compose(["train.epochs=6", "device=cpu"])
    results = run(cfg, run_dir=str(tmp_path))
    assert results["test"]["acc"] > 0.6, results  # chance is 0.1
    assert (tmp_path / "checkpoints" / "best.ckpt").exists()
    assert (tmp_path / "kernels" / "kernels_final.png").exists()
    # reload the best checkpoint into a fresh network: identical predictions
    dm = build_datamodule(cfg)
    dm.setup()
    x, _ = next(iter(dm.test_dataloader()))
    x = dm.splits.batch_transform(x, False)
    ckpt = torch.load(results["best_checkpoint"], weights_only=False)
    nets = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        net = build_network(cfg, dm.meta)
        module = ClassificationModule(net, 10)
        module.load_state_dict(ckpt["state_dict"])
        nets.append(net.eval())
    with torch.no_grad():
        assert torch.equal(nets[0](x), nets[1](x))


def test_mask_group_is_non_empty_and_uses_the_ratio():
    cfg = compose(fake_args(COMMANDS["cifar10_ccnn_4_140"]["args"]))
    dm = build_datamodule(cfg)
    net = build_network(cfg, dm.meta)
    optim, _ = optim_settings(cfg)
    from ccnn.train.optim import build_optimizer

    opt = build_optimizer(net, optim)
    groups = {g["name"]: g for g in opt.param_groups}
    assert len(groups["mask"]["params"]) == 5  # one sigma per SeparableFlexConv
    assert groups["mask"]["lr"] == pytest.approx(0.02 * 0.1)
    assert groups["default"]["lr"] == pytest.approx(0.02)
    assert all(g["weight_decay"] == 0.0 for g in opt.param_groups)  # published decay is a loss term


def test_cosine_schedule_warmup_boundaries():
    f = lr_lambda(
        ScheduleSettings(name="cosine", warmup_epochs=2), steps_per_epoch=10, total_epochs=12
    )
    assert f(0) == pytest.approx(1e-8)
    assert f(10) == pytest.approx(0.5, rel=1e-6)
    assert f(20) == pytest.approx(1.0)
    assert f(70) == pytest.approx(0.5)
    assert f(120) == pytest.approx(0.0, abs=1e-12)
    m = lr_lambda(ScheduleSettings(name="multistep", decay_steps=[3], factor=0.1), 10, 5)
    assert m(29) == 1.0 and m(30) == pytest.approx(0.1)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["dataset.name=CIFAR10", "conv.causal=true"],
            "conv.causal=True is only valid for 1D data",
        ),
        (
            ["scheduler.name=plateau", "scheduler.warmup_epochs=5", "scheduler.factor=0.5"],
            "plateau cannot be combined with warm-up",
        ),
        (["train.batch_size=10", "train.accumulate_grad_steps=3"], "must be divisible by"),
        (["conv.type=FlexiConv"], "Unknown conv type 'FlexiConv'"),
        (["kernel.type=Siren2"], "Supported kernel types"),
        (["mask.type=sigmoid"], "Supported mask types: gaussian"),
    ],
)
def test_invalid_configurations_fail_before_work(overrides, message, tmp_path):
    base = (
        ["dataset.fake=true", "device=cpu", "dataset.data_type=default"]
        if "CIFAR10" in overrides[0]
        else ["device=cpu"]
    )
    cfg = compose(
        [*COMMANDS["cifar10_ccnn_4_140"]["args"][:0], "experiment=digits", *base, *overrides]
    )
    with pytest.raises((ConfigError, KeyError, ValueError), match=message):
        run(cfg, run_dir=str(tmp_path))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_device_cuda_without_gpu_and_distributed_are_clear_errors(tmp_path):
    for overrides, message in (
        (["device=cuda"], "no CUDA GPU is available"),
        (["device=cuda", "train.distributed=true"], "no CUDA GPU is available"),
    ):
        with pytest.raises(ValueError, match=message):
            run(compose(overrides), run_dir=str(tmp_path))


def test_misspelt_key_names_the_closest_valid_key():
    with pytest.raises(ConfigError, match="Did you mean 'net.no_hidden'"):
        compose(["net.no_hiden=10"])
    with pytest.raises(ConfigError, match="Did you mean 'optimizer.mask_lr_ratio'"):
        compose(["optimizer.mask_lr_rate=1"])


def test_command_line_errors_exit_cleanly_without_traceback():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "net.no_hiden=3"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 2
    assert "Did you mean 'net.no_hidden'" in proc.stderr and "Traceback" not in proc.stderr


def test_interrupted_run_resumes_from_last_checkpoint(tmp_path):
    first = run(
        compose(["train.epochs=1", "device=cpu", "train.limit_batches=3"]),
        run_dir=str(tmp_path / "a"),
    )
    last = tmp_path / "a" / "checkpoints" / "last.ckpt"
    assert first["epochs"] == 1 and last.exists()
    resumed = run(
        compose(["train.epochs=2", "device=cpu", "train.limit_batches=3", f"train.resume={last}"]),
        run_dir=str(tmp_path / "b"),
    )
    assert resumed["epochs"] == 2
    state = torch.load(tmp_path / "b" / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["global_step"] == 6  # 3 steps from the first run + 3 after resuming
    # killed after the last epoch but before testing: resuming only tests
    again = run(
        compose(["train.epochs=1", "device=cpu", "train.limit_batches=3", f"train.resume={last}"]),
        run_dir=str(tmp_path / "c"),
    )
    assert again["epochs"] == 1 and again["test"] == first["test"]
    with pytest.raises(ValueError, match="already completed 2 epochs but this run has only 1"):
        run(
            compose(
                [
                    "train.epochs=1",
                    "device=cpu",
                    f"train.resume={tmp_path / 'b' / 'checkpoints' / 'last.ckpt'}",
                ]
            ),
            run_dir=str(tmp_path / "d"),
        )


def test_pretrained_evaluation_only_and_mismatch_message(tmp_path):
    trained = run(
        compose(["train.epochs=1", "device=cpu", "train.limit_batches=4"]),
        run_dir=str(tmp_path / "t"),
    )
    best = trained["best_checkpoint"]
    evaluated = run(
        compose(
            [
                "device=cpu",
                "train.do=false",
                "train.limit_batches=4",
                "pretrained.load=true",
                f"pretrained.filename={best}",
            ]
        ),
        run_dir=str(tmp_path / "e"),
    )
    assert evaluated["epochs"] == 0
    assert evaluated["val"] == pytest.approx(trained["val"], abs=1e-6)
    assert evaluated["test"] == pytest.approx(trained["test"], abs=1e-6)
    with pytest.raises(ValueError, match="with net.no_hidden=32; this run has net.no_hidden=8"):
        run(
            compose(
                [
                    "device=cpu",
                    "train.do=false",
                    "net.no_hidden=8",
                    "pretrained.load=true",
                    f"pretrained.filename={best}",
                ]
            ),
            run_dir=str(tmp_path / "m"),
        )


def test_mixed_precision_and_kernel_hooks_run(tmp_path):
    results = run(
        compose(
            [
                "device=cpu",
                "train.epochs=1",
                "train.limit_batches=2",
                "train.mixed_precision=true",
                "hooks_enabled=true",
            ]
        ),
        run_dir=str(tmp_path),
    )
    assert torch.isfinite(torch.tensor(results["test"]["loss"]))
    assert (tmp_path / "kernels" / "kernels_epoch000.png").exists()


def test_simulated_ddp_on_cpu(tmp_path):
    results = run(
        compose(
            [
                "device=cpu",
                "train.epochs=1",
                "train.limit_batches=2",
                "train.distributed=true",
                "train.avail_gpus=2",
            ]
        ),
        run_dir=str(tmp_path),
    )
    assert results["epochs"] == 1 and (tmp_path / "results.json").exists()


def test_uea_time_series_by_epochs_through_main(tmp_path):
    results = run(
        compose(
            [
                "experiment=uea_basicmotions",
                "device=cpu",
                "train.steps=-1",
                "train.position_budget=-1",
                "train.epochs=40",
            ]
        ),
        run_dir=str(tmp_path),
    )
    assert results["epochs"] == 40
    assert results["test"]["acc"] >= 0.7  # 4 classes: chance is 0.25


def test_epochs_and_steps_together_are_rejected():
    from ccnn.apps.ccnn_config import validate

    with pytest.raises(ConfigError, match="train.steps=-1"):
        validate(compose(["experiment=uea_basicmotions", "train.epochs=20"]))


def test_distributed_needs_two_gpus(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match="needs at least 2 GPUs, found 1"):
        run(compose(["device=cuda", "train.distributed=true"]), run_dir=str(tmp_path))


def test_test_before_train_is_reported(tmp_path):
    results = run(
        compose(
            ["device=cpu", "train.epochs=1", "train.limit_batches=2", "test.before_train=true"]
        ),
        run_dir=str(tmp_path),
    )
    assert "acc" in results["test_before_train"]


def test_cosine_floor_is_absolute_per_group():
    f = lr_lambda(ScheduleSettings(name="cosine", eta_min=1e-6), 10, 2, base_lr=1e-3)
    assert f(20) == pytest.approx(1e-3)  # 1e-6 / 1e-3
    assert f(0) == pytest.approx(1.0)


def test_seed_fixes_initial_weights(tmp_path):
    cfg = compose(["device=cpu", "train.epochs=1", "train.limit_batches=1", "seed=3"])
    a = run(cfg, run_dir=str(tmp_path / "a"))
    b = run(cfg, run_dir=str(tmp_path / "b"))
    assert a["test"] == b["test"] and a["val"] == b["val"]


def test_learned_token_embedding_option_for_lra_text(tmp_path):
    args = fake_args(COMMANDS["text_ccnn_4_140"]["args"], "train.limit_batches=1", "train.epochs=1")
    cfg = compose([*args, "net.embedding_dim=8"])
    dm = build_datamodule(cfg)
    net = build_network(cfg, dm.meta)
    assert net.embedding.num_embeddings == dm.meta.extra["vocab_size"]
    assert run(cfg, run_dir=str(tmp_path))["params"] == n_params(net)


def test_only_the_projects_user_errors_become_one_line():
    """A ValueError raised by a bug inside ccnn keeps its traceback; OptionError subclasses
    (settings, data, files, registries) are one line and exit code 2."""
    from ccnn.apps.common import report_errors
    from ccnn.errors import OptionError
    from ccnn.registry import RegistryError

    scope = {"__name__": "ccnn.somewhere"}
    exec("def bug():\n    raise ValueError('internal bug')", scope)  # looks like ccnn code
    with pytest.raises(ValueError, match="internal bug"):
        report_errors(scope["bug"])()
    for err in (ConfigError("fix a"), OptionError("fix b"), RegistryError("fix c")):

        def user(err=err):
            raise err

        with pytest.raises(SystemExit) as exit_:
            report_errors(user)()
        assert exit_.value.code == 2


@pytest.mark.parametrize("value, want", [("true", True), ("false", False), ("auto", None)])
def test_use_fft_keeps_its_published_meaning(value, want):
    """conv.use_fft=true forces FFT in every conv, false forces direct; auto is the cost rule."""
    from ccnn.nn import ContinuousConv

    cfg = compose(["experiment=digits", f"conv.use_fft={value}"])
    net = build_network(cfg, build_datamodule(cfg).meta)
    convs = [m for m in net.modules() if isinstance(m, ContinuousConv)]
    assert convs and all(m.use_fft is want for m in convs)


def test_use_fft_rejects_other_values():
    with pytest.raises(ValueError, match="conv.use_fft must be true, false or auto"):
        run(compose(["conv.use_fft=sometimes", "device=cpu"]), run_dir="unused")
