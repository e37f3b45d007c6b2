"""Evaluate a trained network at another input resolution (SPEC §1.7; FlexConv §3.3).

The continuous kernels of every :class:`~ccnn.nn.conv.ContinuousConv` in a model are sampled on
a grid that spans the same extent with ``scale`` times as many steps, and rescaled by the
ratio of grid steps so responses to resampled signals are preserved::

    net = ccnn.create_model(...); train at 16x16
    ccnn.nn.set_resolution(net, 2.0)          # now evaluate on 32x32 inputs
    with ccnn.nn.at_resolution(net, 2.0): ... # or temporarily

Every submodule with a ``set_resolution(scale)`` method takes part (continuous-kernel convs,
N-Jet/SRF layers, ...). Discrete layers (``Conv``, CIFAR ResNets) are left unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from torch import nn


def resolution_layers(model: nn.Module) -> list[nn.Module]:
    """Every submodule of ``model`` (itself included) that has a ``set_resolution`` method."""
    return [m for m in model.modules() if callable(getattr(m, "set_resolution", None))]


def set_resolution(model: nn.Module, scale: float | Sequence[float] | None) -> int:
    """Set the resolution scale of every continuous kernel in ``model``; returns how many.

    ``scale`` = target resolution / training resolution (e.g. 2.0 for 16 -> 32); ``None``
    or 1 restores the training grid.
    """
    layers = resolution_layers(model)
    for layer in layers:
        layer.set_resolution(scale)
    return len(layers)


def _set(layer: nn.Module, scale, rescale_amplitude: bool) -> None:
    if rescale_amplitude:
        layer.set_resolution(scale)
    else:
        layer.set_resolution(scale, rescale_amplitude=False)


@contextmanager
def at_resolution(
    model: nn.Module, scale: float | Sequence[float], rescale_amplitude: bool = True
) -> Iterator[nn.Module]:
    """Temporarily evaluate ``model`` at ``scale`` times its training resolution.

    ``rescale_amplitude=False`` samples the kernels on the finer grid without rescaling their
    values — for sparse observations placed on a finer grid, where each still counts once
    (:func:`ccnn.nn.masking.to_grid`); layers that cannot do this raise ``ValueError``.
    """
    layers = resolution_layers(model)
    previous = [
        (getattr(layer, "_resolution_scale", None), getattr(layer, "_rescale_amplitude", True))
        for layer in layers
    ]
    try:
        for layer in layers:
            _set(layer, scale, rescale_amplitude)
        yield model
    finally:
        for layer, (prev, amplitude) in zip(layers, previous):
            _set(layer, prev, amplitude)
