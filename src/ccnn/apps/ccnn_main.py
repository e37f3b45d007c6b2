"""``python main.py key=value ...`` — the CCNN paper's command line (Hydra).

With no ``dataset.name`` and no ``experiment`` on the command line, the embedded default
experiment ``digits`` runs (scikit-learn's handwritten digits; no download). With
``dataset.name=UEA`` (or ``UCR``) and no experiment, the one time-series preset ``uea`` runs, so
``python main.py dataset.name=UEA dataset.params.uea_name=<set>`` works for any UCR/UEA set.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from ccnn.apps.ccnn_config import (
    build_datamodule,
    build_network,
    optim_settings,
    trainer_settings,
    training_epochs,
    validate,
    validate_with_meta,
)
from ccnn.apps.ccnn_schema import CCNNConfig
from ccnn.apps.common import (
    ConfigError,
    check_experiment,
    check_overrides,
    report_errors,
)
from ccnn.train.runner import RunPlan

DEFAULT_EXPERIMENT = "digits"
DATASET_PRESETS = {"UEA": "uea", "UCR": "uea"}
"""Experiment applied when ``dataset.name`` names one of these families and no experiment is
given, so ``python main.py dataset.name=UEA dataset.params.uea_name=<set>`` works alone."""


def plan(cfg: DictConfig, run_dir: str) -> RunPlan:
    """Validate ``cfg`` and build the data module, network (pretrained weights loaded), training
    module and trainer settings of a run; nothing is trained or written."""
    import ccnn.data  # noqa: F401  (registers the dataset families)
    from ccnn.train.module import ClassificationModule
    from ccnn.train.pretrained import load_pretrained
    from ccnn.train.runner import resolve_accelerator

    validate(cfg)
    resolve_accelerator(cfg.device)  # device=cuda without a GPU: refused before any work
    datamodule = build_datamodule(cfg)
    meta = datamodule.meta
    validate_with_meta(cfg, meta)
    L.seed_everything(cfg.seed, workers=True, verbose=False)  # also fixes the initial weights
    network = build_network(cfg, meta)
    if cfg.pretrained.load:
        load_pretrained(
            network,
            cfg.pretrained.filename,
            alias=cfg.pretrained.alias,
            config=OmegaConf.to_container(cfg, resolve=True),
        )
    optim, schedule = optim_settings(cfg)
    module = ClassificationModule(
        network, meta.num_classes, optim, schedule, track_grad_norm=cfg.train.track_grad_norm
    )
    settings = trainer_settings(cfg, run_dir)
    if cfg.train.steps > 0 or _no_validation(cfg):
        datamodule.setup()
        splits = datamodule.splits
        settings.epochs = training_epochs(cfg, len(splits.train), meta.input_shape[-1])
        if len(splits.val) == 0:
            _require_no_val_monitor(cfg)
            settings.monitor = ""
    return RunPlan(datamodule, module, settings, cfg.train.do, cfg.test.before_train)


def run(cfg: DictConfig, run_dir: str | None = None) -> dict:
    """Build data, network and trainer from ``cfg``; train, test, write ``results.json``."""
    run_dir = run_dir or HydraConfig.get().runtime.output_dir
    p = plan(cfg, run_dir)
    results = p.fit_and_test(config=OmegaConf.to_container(cfg, resolve=True))
    _print_summary(cfg, results, run_dir)
    return results


def _no_validation(cfg: DictConfig) -> bool:
    """``dataset.params.val_fraction=0``: train on the whole training split, test the end."""
    return cfg.dataset.params.val_fraction == 0


def _require_no_val_monitor(cfg: DictConfig) -> None:
    if cfg.scheduler.name == "plateau":
        raise ConfigError(
            "scheduler.name=plateau needs a validation split; set dataset.params.val_fraction "
            "> 0 or use scheduler.name=cosine"
        )


def compose(overrides: list[str] | None = None) -> DictConfig:
    """The composed config for command-line ``overrides`` (as ``main.py`` would see them)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    overrides = prepare_argv(list(overrides or []))
    with initialize_config_module("ccnn.configs.ccnn", version_base="1.3"):
        return hydra_compose("config", overrides=overrides)


def _print_summary(cfg: DictConfig, results: dict, run_dir: str) -> None:
    test = results.get("test", {})
    val = results.get("val", {})
    val_text = f"val acc {val['acc']:.4f}" if "acc" in val else "no validation split"
    print(
        f"\n[ccnn] {cfg.dataset.name} ({cfg.dataset.data_type}) | params {results['params']:,} | "
        f"epochs {results.get('epochs')} | {val_text} | "
        f"test acc {test.get('acc', float('nan')):.4f} | {results['wall_time_s']:.1f}s\n"
        f"[ccnn] results, checkpoints and kernel plots in {Path(run_dir).resolve()}"
    )


@hydra.main(config_path="../configs/ccnn", config_name="config", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    report_errors(run)(cfg)


def prepare_argv(argv: list[str]) -> list[str]:
    """Check keys of ``key=value`` arguments and add the default experiment if needed."""
    check_overrides(argv, CCNNConfig)
    check_experiment(argv, "ccnn.configs.ccnn")
    given = dict(a.split("=", 1) for a in argv if "=" in a and not a.startswith("-"))
    given = {k.lstrip("+"): v for k, v in given.items()}
    if "experiment" in given:  # Hydra flags (--cfg job, -m, --help) get the default too
        return argv
    if "dataset.name" not in given:
        return [*argv, f"experiment={DEFAULT_EXPERIMENT}"]
    preset = DATASET_PRESETS.get(given["dataset.name"])
    return [*argv, f"experiment={preset}"] if preset else argv


def main() -> None:
    try:
        sys.argv = [sys.argv[0], *prepare_argv(sys.argv[1:])]
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    _hydra_main()


if __name__ == "__main__":
    main()
