"""Helpers shared by the Hydra apps: command-line checks and clean error reporting."""

from __future__ import annotations

import dataclasses
import difflib
import sys
import warnings
from collections.abc import Callable, Iterable
from typing import Any, get_type_hints

from ccnn.errors import OptionError


class ConfigError(OptionError):
    """A configuration problem reported to the user without a stack trace."""


def schema_keys(schema: type, prefix: str = "") -> dict[str, bool]:
    """Dotted keys of a dataclass tree → whether the key is a leaf (False for sub-configs)."""
    keys: dict[str, bool] = {}
    hints = get_type_hints(schema)
    for f in dataclasses.fields(schema):
        key = f"{prefix}{f.name}"
        typ = hints.get(f.name)
        if dataclasses.is_dataclass(typ):
            keys[key] = False
            keys.update(schema_keys(typ, key + "."))
        else:
            keys[key] = True
    return keys


def check_overrides(
    args: Iterable[str], schema: type, groups: Iterable[str] = ("experiment",)
) -> None:
    """Fail early on ``key=value`` arguments whose key is not in ``schema``, naming the closest.

    Hydra's own overrides (``hydra.*``, ``+key``, ``~key``, ``--flags``) and config groups pass.
    """
    keys = schema_keys(schema)
    groups = set(groups)
    for arg in args:
        if arg.startswith("-") or "=" not in arg:
            continue
        key = arg.split("=", 1)[0].strip()
        if key.startswith(("+", "~", "hydra.")) or key in groups or key.startswith("hydra/"):
            continue
        if key in keys:
            continue
        close = difflib.get_close_matches(key, list(keys), n=1, cutoff=0.6)
        if not close:
            # a misspelt last component: compare within the same parent
            parent, _, leaf = key.rpartition(".")
            siblings = [k.rsplit(".", 1)[-1] for k in keys if k.rpartition(".")[0] == parent]
            near = difflib.get_close_matches(leaf, siblings, n=1, cutoff=0.5)
            close = [f"{parent}.{near[0]}" if parent else near[0]] if near else []
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"Unknown configuration key '{key}' in '{arg}'.{hint}")


EXIT_USER_ERROR = 2
"""Exit code for bad settings, bad or untrusted files: one line on stderr, nothing overwritten."""
EXIT_DIVERGED = 3
"""Exit code for a run stopped at a non-finite training loss."""


def select_options(
    kind: str,
    type_name: str,
    accepted: Iterable[str],
    wanted: dict[str, tuple[str | None, Any, bool]],
    compatibility: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The arguments of ``wanted`` that component ``kind=type_name`` takes.

    ``wanted`` maps an argument to ``(config key, value, set by the user)``. An argument the
    type does not take is dropped when the user left its key at the default, and otherwise
    rejected naming the key, the type and the options it takes — unless the key is in
    ``compatibility`` (published commands set it although it does nothing): then a warning
    says it is ignored, and why.
    """
    accepted = set(accepted)
    out: dict[str, Any] = {}
    for arg, (key, value, explicit) in wanted.items():
        if arg in accepted:
            out[arg] = value
        elif explicit and key is not None:
            if key in (compatibility or {}):
                warnings.warn(
                    f"{key}={value} is ignored with {kind}={type_name} "
                    f"({compatibility[key]}; accepted only for compatibility)",
                    stacklevel=2,
                )
                continue
            raise ConfigError(
                f"{key}={value} is not used by {kind}={type_name}, which takes "
                f"{sorted(accepted)}; remove {key} (or choose a {kind} that uses it)"
            )
    return out


def check_unused_keys(
    cfg: Any, schema: type, rejected: dict[str, str], compatibility: dict[str, str]
) -> None:
    """Keys of the published configuration that do nothing here, set to a non-default value:
    ``rejected`` ones are an error (no command needs them), ``compatibility`` ones (set by the
    published commands) a warning that they are ignored. Each maps the key to the reason."""
    from omegaconf import OmegaConf

    defaults = OmegaConf.structured(schema)
    for key, reason in {**rejected, **compatibility}.items():
        value = OmegaConf.select(cfg, key)
        if value == OmegaConf.select(defaults, key):
            continue
        if key in rejected:
            raise ConfigError(f"{key}={value} does nothing in ccnn ({reason}); remove it")
        warnings.warn(
            f"{key}={value} is accepted for compatibility with the published commands and "
            f"ignored ({reason})",
            stacklevel=2,
        )


def require_defaults(cfg: Any, schema: type, keys: Iterable[str], why: str) -> None:
    """Each of ``keys`` (dotted) left at its ``schema`` default, else a ConfigError
    ``"<key>=<value> <why>"`` — for options that mean something only together with another."""
    from omegaconf import OmegaConf

    defaults = OmegaConf.structured(schema)
    for key in keys:
        value = OmegaConf.select(cfg, key)
        if value != OmegaConf.select(defaults, key):
            raise ConfigError(f"{key}={value} {why}")


def check_dataset_params(
    prefix: str,
    dataset: str,
    family: Any,
    params: dict[str, Any],
    defaults: dict[str, Any],
    renamed: dict[str, str | None] | None = None,
) -> None:
    """Each dataset family reads only the parameters it declares (``family.params``); any other
    ``prefix.key`` set to a non-default value is an error naming the dataset and what it takes.

    ``renamed`` maps an app key to the family's name for it (``image_size`` -> ``resolution``;
    ``None``: the key means nothing for this family); a nested dict counts by its own name.
    """
    renamed = renamed or {}
    takes = set(getattr(family, "params", ()))
    for key, value in params.items():
        default = defaults.get(key)
        if key in defaults and value == default:
            continue
        if renamed.get(key, key) in takes:
            continue
        if isinstance(value, dict):  # name the first nested leaf that was changed
            key, value = next(
                (f"{key}.{k}", v) for k, v in value.items() if v != (default or {}).get(k)
            )
        app_name = {v: k for k, v in renamed.items() if v is not None}
        accepted = sorted(app_name.get(t, t) for t in takes)
        raise ConfigError(
            f"{prefix}.{key}={value} is not used by dataset {dataset}, which takes "
            f"{accepted or 'no dataset parameters'}; remove it"
        )


FFT_CHOICES = {True: True, False: False, "auto": None}
"""``conv.use_fft``: an explicit choice is honoured (true: FFT, false: direct); ``auto`` picks by
the measured cost rule (:func:`ccnn.nn.functional.conv_nd`)."""


def fft_choice(value: Any) -> bool | None:
    """``conv.use_fft`` → the layers' ``use_fft`` argument (True, False or None for auto)."""
    if isinstance(value, str) and value.lower() in ("true", "false"):
        value = value.lower() == "true"
    if isinstance(value, bool) or value == "auto":
        return FFT_CHOICES[value]
    raise ConfigError(f"conv.use_fft must be true, false or auto, got {value!r}")


def check_experiment(args: Iterable[str], package: str) -> None:
    """An ``experiment=<name>`` that is not a file in ``<package>/experiment`` is an error
    naming the closest experiments (Hydra's own message would blame a missing key instead)."""
    from importlib.resources import files

    for arg in args:
        key, _, name = arg.partition("=")
        if key.lstrip("+") != "experiment" or not name:
            continue
        folder = files(package) / "experiment"
        known = sorted(
            p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml")
        )
        if name in known:
            continue
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.4)
        close += [k for k in known if name.lower() in k.lower() and k not in close][:3]
        hint = f" Closest: {', '.join(close[:5])}." if close else ""
        raise ConfigError(
            f"Unknown experiment '{name}'.{hint} All {len(known)} experiments are the files in "
            f"{package.replace('.', '/')}/experiment/."
        )


def report_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``fn``; the project's user errors (:class:`ccnn.errors.OptionError`: settings,
    arguments, files) print one line and exit with code 2, a diverged run exits with code 3.
    Every other exception is a bug and keeps its traceback."""
    from ccnn.train.module import TrainingDiverged

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except TrainingDiverged as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(EXIT_DIVERGED)
        except OptionError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(EXIT_USER_ERROR)

    wrapper.__name__ = getattr(fn, "__name__", "wrapper")
    wrapper.__doc__ = fn.__doc__
    return wrapper
