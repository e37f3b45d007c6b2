"""``python run_experiment.py key=value ...`` and ``python run_crossres.py key=value ...`` — the
FlexConv paper's command lines (Hydra), on the shared library and training stack.

With no ``dataset`` and no ``experiment`` on the command line, the embedded experiment
``digits`` (``digits_crossres`` for run_crossres.py) runs: a small FlexNet on scikit-learn's
8x8 digits (real data, no download).
"""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ccnn.apps.common import (
    ConfigError,
    check_experiment,
    check_overrides,
    report_errors,
)
from ccnn.apps.flexconv_config import (
    build_datamodule,
    build_network,
    loss_terms,
    optim_settings,
    trainer_settings,
    validate,
    validate_with_meta,
    with_seed,
)
from ccnn.apps.flexconv_schema import FlexConvConfig
from ccnn.train.crossres import CrossResPlan
from ccnn.train.runner import RunPlan

CONFIG_MODULE = "ccnn.configs.flexconv"
DEFAULT_EXPERIMENT = {False: "digits", True: "digits_crossres"}


def _seed(seed: int) -> None:
    import lightning as L

    L.seed_everything(seed, workers=True, verbose=False)


def _module(cfg: DictConfig, network, meta):
    from ccnn.train.module import ClassificationModule

    optim, schedule = optim_settings(cfg)
    return ClassificationModule(
        network,
        meta.num_classes,
        optim,
        schedule,
        loss_terms=loss_terms(cfg),
        report_top5=cfg.train.report_top5_acc,
    )


def _prepare_network(cfg: DictConfig, meta):
    from ccnn.train.pretrained import load_pretrained
    from ccnn.train.summary import print_summary

    network = build_network(cfg, meta)
    if cfg.pretrained:
        load_pretrained(network, cfg.pretrained_params.filepath, strict=cfg.pretrained_strict)
    if list(cfg.summary) not in ([], [0]):
        try:
            print_summary(network, list(cfg.summary), depth=cfg.summary_depth)
        except (RuntimeError, ValueError) as err:
            raise ConfigError(
                f"summary={list(cfg.summary)} does not fit the network: {err}"
            ) from err
    return network


def plan(cfg: DictConfig, run_dir: str, crossres: bool = False) -> RunPlan:
    """Validate ``cfg`` (whose ``seed`` is concrete: :func:`with_seed`) and build the data
    module, network (pretrained weights loaded), training module and trainer settings of a run
    (``crossres``: its training stage at ``cross_res.source_res``); nothing is trained."""
    import ccnn.data  # noqa: F401  (registers the dataset families)

    validate(cfg, crossres=crossres)
    _seed(cfg.seed)  # the network's initialisation follows `seed` too
    datamodule = build_datamodule(cfg, resolution=cfg.cross_res.source_res if crossres else None)
    meta = datamodule.meta
    validate_with_meta(cfg, meta)
    network = _prepare_network(cfg, meta)
    return RunPlan(
        datamodule,
        _module(cfg, network, meta),
        trainer_settings(cfg, str(Path(run_dir) / "source") if crossres else run_dir),
        do_train=cfg.train.do,
        test_before_train=cfg.test.before_train,
    )


def plan_crossres(cfg: DictConfig, run_dir: str) -> CrossResPlan:
    """The whole of a ``run_crossres.py`` run, built and checked before anything trains."""
    from ccnn.data.resize import ResizedDataModule

    cr = cfg.cross_res
    source = plan(cfg, run_dir, crossres=True)
    finetune = None
    if cr.finetune_epochs > 0:
        finetune = trainer_settings(cfg, str(Path(run_dir) / "finetune"), cr.finetune_epochs)
    if isinstance(source.datamodule, ResizedDataModule):  # copies share the loaded data
        source.datamodule.setup()
        target = source.datamodule.at_resolution(cr.target_res)
    else:  # Imagenet-k: its own files at each resolution
        target = build_datamodule(cfg, resolution=cr.target_res)
    return CrossResPlan(source, target, cr.source_res, cr.target_res, finetune)


def run(cfg: DictConfig, run_dir: str | None = None) -> dict:
    """``run_experiment.py``: build data and network, train, test, write ``results.json``."""
    cfg = with_seed(cfg)
    run_dir = run_dir or _hydra_run_dir()
    p = plan(cfg, run_dir)
    results = p.fit_and_test(config=OmegaConf.to_container(cfg, resolve=True))
    test, val = results.get("test", {}), results.get("val", {})
    print(
        f"\n[flexconv] {cfg.dataset} | {cfg.net.type} {cfg.conv.type or ''} | params "
        f"{results['params']:,} | epochs {results.get('epochs')} | val acc "
        f"{val.get('acc', float('nan')):.4f} | test acc {test.get('acc', float('nan')):.4f} | "
        f"{results['wall_time_s']:.1f}s\n[flexconv] results in {Path(run_dir).resolve()}"
    )
    return results


def run_crossres(cfg: DictConfig, run_dir: str | None = None) -> dict:
    """``run_crossres.py``: :func:`ccnn.train.crossres.run_crossres` on the plan of ``cfg`` —
    train at ``cross_res.source_res``, evaluate at ``target_res`` without fine-tuning, fine-tune
    ``cross_res.finetune_epochs`` with a fresh optimiser; all figures in ``results.json``."""
    from ccnn.train.crossres import run_crossres as run_protocol
    from ccnn.train.runner import resolve_accelerator

    cfg = with_seed(cfg)
    run_dir = run_dir or _hydra_run_dir()
    results = run_protocol(
        plan_crossres(cfg, run_dir),
        run_dir,
        lambda network, meta: _module(cfg, network, meta),
        device="cuda" if resolve_accelerator(cfg.device) == "gpu" else "cpu",
        limit_batches=cfg.train.limit_batches,
        config=OmegaConf.to_container(cfg, resolve=True),
        after_source=lambda network: _write_frequency_report(
            network, cfg, Path(run_dir) / "frequency_report_source"
        ),
    )
    after = results["target_acc_after_finetune"]
    print(
        f"\n[crossres] {cfg.dataset} {cfg.net.type} {cfg.conv.type or ''} | params "
        f"{results['params']:,} | source {results['source_acc']:.4f} | target before "
        f"fine-tuning {results['target_acc_before_finetune']:.4f} "
        f"({results['change_before_finetune']:+.4f}) | after fine-tuning "
        f"{'n/a' if after is None else f'{after:.4f}'} | {results['wall_time_s']:.1f}s\n"
        f"[crossres] results in {Path(run_dir).resolve()}"
    )
    return results


def _write_frequency_report(network, cfg: DictConfig, stem: Path) -> None:
    """Maximum kernel frequency vs Nyquist per MAGNet/Gabor layer (JSON + PNG), if any."""
    from ccnn.files import write_json
    from ccnn.nn.aliasing import frequency_report, gabor_convs
    from ccnn.train.plots import plot_frequency_report

    if not gabor_convs(network):
        return
    report = frequency_report(network, gauss_stddevs=cfg.kernel.regularize_params.gauss_stddevs)
    write_json(stem.with_suffix(".json"), report)
    plot_frequency_report(report, stem.with_suffix(".png"))


def _hydra_run_dir() -> str:
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get().runtime.output_dir


def quote_unparsable(argv: list[str]) -> list[str]:
    """Quote ``key=value`` values that Hydra's override grammar cannot read unquoted.

    The published commands pass placeholders such as ``dataset_params.root=<link-to-data>``,
    which the published (argparse-free) code read as plain strings.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    out = []
    for arg in argv:
        if "=" in arg and not arg.startswith("-"):
            try:
                parser.parse_override(arg)
            except Exception:  # noqa: BLE001 - any grammar error: retry quoted
                key, value = arg.split("=", 1)
                if not (value[:1] in "'\"" and value[-1:] == value[:1]):
                    arg = f"{key}='" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
        out.append(arg)
    return out


def prepare_argv(argv: list[str], crossres: bool = False) -> list[str]:
    """Check keys of ``key=value`` arguments and add the default experiment if needed."""
    check_overrides(argv, FlexConvConfig)
    check_experiment(argv, CONFIG_MODULE)
    argv = quote_unparsable(argv)
    names_data = any(
        a.split("=", 1)[0].lstrip("+") in ("dataset", "experiment") for a in argv if "=" in a
    )
    if not names_data:  # Hydra flags (--cfg job, -m, --help) get the default too
        argv = [*argv, f"experiment={DEFAULT_EXPERIMENT[crossres]}"]
    return argv


def compose(overrides: list[str] | None = None, crossres: bool = False) -> DictConfig:
    """The composed config for command-line ``overrides`` (as the scripts would see them)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    overrides = prepare_argv(list(overrides or []), crossres)
    with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
        return hydra_compose("config", overrides=overrides)


def _launch(fn, crossres: bool) -> None:
    import hydra

    try:
        sys.argv = [sys.argv[0], *prepare_argv(sys.argv[1:], crossres)]
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)

    @hydra.main(config_path="../configs/flexconv", config_name="config", version_base="1.3")
    def _main(cfg: DictConfig) -> None:
        report_errors(fn)(cfg)

    _main()


def run_experiment_main() -> None:
    """Console script ``ccnn-run-experiment`` / ``python run_experiment.py``."""
    _launch(run, crossres=False)


def run_crossres_main() -> None:
    """Console script ``ccnn-run-crossres`` / ``python run_crossres.py``."""
    _launch(run_crossres, crossres=True)


if __name__ == "__main__":
    run_experiment_main()
