"""The walk over every configuration key shared by the apps' option tests.

A run is reduced to comparable values (:func:`fingerprint`): the network (modules, initial
weights, trainable names, logits of a copy in train and eval mode, the loss terms on that
copy), the optimiser/schedule settings, the trainer settings, the data (meta, loaders, the
first batches after the batch transform) and what the run will do. :func:`check_key` sets one
key to another value and requires that fingerprint to change, or the run to be refused at start
with an option error; keys accepted only for compatibility must warn, keys that mean nothing
must be refused.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
from omegaconf import OmegaConf

from ccnn.errors import OptionError


def other_value(value: Any) -> Any:
    """A generic different valid value for a bool or number."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 3 if value > 0 else 1
    if isinstance(value, float):
        return value * 0.5 if value > 0 else 0.25
    raise AssertionError(f"no generic other value for {value!r}: add the key to CASES")


def digest(tensors) -> str:
    h = hashlib.sha256()
    for t in tensors:
        if isinstance(t, torch.Tensor):
            h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _outputs(network, batch, loss_terms) -> tuple[str, list[str]]:
    """Logits of a copy of the network (train mode, then eval mode) on the first two examples
    of ``batch``, and the values of the loss terms after the training-mode forward."""
    net = copy.deepcopy(network)
    x, extra = batch[0][:2], [e[:2] for e in batch[2:]]  # two examples: cheap, still exact
    names = ("mask", "times")
    out, terms = [], []
    with torch.no_grad():
        for mode in (True, False):
            torch.manual_seed(0)
            out.append(net.train(mode)(x, **dict(zip(names, extra))))
            if mode:
                terms = [f"{name} {weight} {digest([fn(net)])}" for name, weight, fn in loss_terms]
    return digest(out), terms


def first_batches(dm) -> list:
    """The first training and test batches of data module ``dm``, after its batch transform
    (as the training step applies it, augmentation included)."""
    dm.setup()
    torch.manual_seed(0)
    batches = [next(iter(loader())) for loader in (dm.train_dataloader, dm.test_dataloader)]
    transform = dm.splits.batch_transform
    if transform is not None:
        torch.manual_seed(0)
        batches = [(transform(b[0], i == 0), *b[1:]) for i, b in enumerate(batches)]
    return batches


def fingerprint(p) -> dict[str, Any]:
    """What the run planned in ``p`` (a :class:`ccnn.apps.common.RunPlan`) would be, in
    comparable values."""
    from ccnn.train.runner import resolve_accelerator

    network = p.module.network
    settings = dataclasses.asdict(p.settings)
    settings.pop("run_dir")
    settings["device"] = resolve_accelerator(settings["device"])
    if settings["logger"] != "wandb":
        settings.pop("wandb")
    dm = p.datamodule
    batches = first_batches(dm)
    logits, terms = _outputs(network, batches[0], p.module.loss_terms)
    return {
        "network": (
            str(network),
            digest(network.state_dict().values()),
            [name for name, q in network.named_parameters() if q.requires_grad],
            logits,
        ),
        "module": (
            repr(p.module.optim),
            repr(p.module.schedule),
            p.module.track_grad_norm,
            getattr(p.module, "report_top5", None),
            terms,
        ),
        "trainer": settings,
        "data": (
            repr(dm.meta),
            dm.batch_size,
            dm.test_batch_size,
            dm.num_workers,
            dm.drop_last,
            dm.seed,
            [len(s) for s in (dm.splits.train, dm.splits.val, dm.splits.test)],
            [digest(b) for b in batches],
        ),
        "flow": (p.do_train, p.test_before_train),
    }


def check_key(
    key: str,
    value: Any,
    context: list[str],
    build: Callable[[list[str]], dict[str, Any]],
    before: dict[str, Any],
    config_module: Any,
) -> None:
    """Require ``key=value`` on top of ``context`` to change ``build(args)`` (a dict of
    comparable parts) from ``before``, or to be refused with an option error that names it."""
    value = str(value).lower() if isinstance(value, bool) else value
    changed = [*context, f"{key}={value}"]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        try:
            after = build(changed)
        except OptionError as err:  # refused at start, with a message
            assert key in str(err) or str(value) in str(err), err
            assert key not in config_module.COMPATIBILITY_KEYS
            return
    if key in config_module.UNUSED_KEYS:
        pytest.fail(f"{key} means nothing here and must be refused")
    if key in config_module.COMPATIBILITY_KEYS:
        assert any("accepted for compatibility" in str(w.message) for w in seen)
        return
    differs = [part for part in after if after[part] != before[part]]
    assert differs, f"{key}={value} changed nothing in the run (context {context})"


def walk_key(
    key: str,
    case: tuple[Any, list[str]] | None,
    compose: Callable[[list[str]], Any],
    build: Callable[[list[str], str], dict[str, Any]],
    cache: dict[tuple[str, ...], dict[str, Any]],
    config_module: Any,
) -> None:
    """:func:`check_key` for ``key`` with ``case = (value, context)`` (``value`` None: a generic
    other value of the key in ``context``); ``build(args, name)`` fingerprints a run, and the
    context's own fingerprint is computed once per context (``cache``)."""
    value, context = case
    if value is None:
        value = other_value(OmegaConf.select(compose(context), key))
    if tuple(context) not in cache:  # the context itself must build
        cache[tuple(context)] = build(context, "before")
    check_key(
        key,
        value,
        context,
        lambda args: build(args, "after"),
        cache[tuple(context)],
        config_module,
    )
