"""ccnn — convolutional networks with structured kernels.

Layers (``ccnn.nn``): CKConv, FlexConv and their separable variants with continuous kernels
(MAGNet, Gabor, Fourier, SIREN, RFNet, MLP kernel networks), Gaussian masks with dynamic
cropping, fast N-D FFT convolution, and a resolution API. Models (``ccnn.models``): CCNN and
the paper variants. Apps: ``main.py`` (CCNN), ``run_experiment.py``/``run_crossres.py``
(FlexConv), ``train.py`` (learnable scattering). ``ccnn.TimeSeriesClassifier`` classifies series
given as arrays (unequal lengths, missing values, timestamps) with the UEA preset;
``ccnn.load_run(run_dir)`` returns a trained model from an app's run directory.
"""

from ccnn.models import CCNN, create_model, list_models
from ccnn.nn import (
    CKConv,
    Conv,
    FlexConv,
    SeparableCKConv,
    SeparableConv,
    SeparableFlexConv,
    at_resolution,
    set_resolution,
)

__version__ = "0.1.0"


def __getattr__(name: str):
    # The array API needs the config/training stack (Hydra, Lightning): import it on first use.
    if name == "TimeSeriesClassifier":
        from ccnn.apps.timeseries import TimeSeriesClassifier

        return TimeSeriesClassifier
    if name in ("load_run", "Run"):
        from ccnn.apps import runs

        return getattr(runs, name)
    raise AttributeError(f"module 'ccnn' has no attribute {name!r}")


__all__ = [
    "CCNN",
    "CKConv",
    "Conv",
    "FlexConv",
    "Run",
    "SeparableCKConv",
    "SeparableConv",
    "SeparableFlexConv",
    "TimeSeriesClassifier",
    "__version__",
    "at_resolution",
    "create_model",
    "list_models",
    "load_run",
    "set_resolution",
]
