"""The FlexConv configuration schema (``run_experiment.py``, ``run_crossres.py``): every key
and default of the published FlexConv configuration (SPEC §3.5) as structured configs, plus our
additions (documented in :mod:`ccnn.apps.flexconv_config`, which checks a composed config and maps
it to library objects). Registered with Hydra's ConfigStore as ``flexconv_schema``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore


@dataclass
class NetConfig:
    type: str = ""
    no_hidden: int = -1
    no_blocks: int = -1
    dropout: float = 0.0
    dropout_in: float = 0.0
    norm: str = ""
    nonlinearity: str = "ReLU"
    block_width_factors: list[float] = field(default_factory=lambda: [0.0])


@dataclass
class RegularizeParams:
    res: int = 0
    res_offset: int = 0
    target: str = "gabor+mask"
    fn: str = "l2_relu"
    method: str = "together"
    factor: float = 0.001
    gauss_stddevs: float = 2.0
    gauss_factor: float = 0.5


@dataclass
class SRFConfig:
    scale: float = 0.0


@dataclass
class KernelConfig:
    type: str = ""
    dim_linear: int = 0
    no_hidden: int = -1
    no_layers: int = -1
    activ_function: str = ""
    norm: str = ""
    omega_0: float = 0.0
    learn_omega_0: bool = False
    weight_norm: bool = False
    steerable: bool = False
    init_spatial_value: float = 1.0
    bias_init: Any = None
    input_scale: float = 25.6
    sampling_rate_norm: float = 1.0
    regularize: bool = False
    regularize_params: RegularizeParams = field(default_factory=RegularizeParams)
    srf: SRFConfig = field(default_factory=SRFConfig)


@dataclass
class ConvConfig:
    type: str = ""
    use_fft: Any = "auto"  # published key: true forces FFT, false direct; ours: auto (by cost)
    bias: bool = True
    padding: str = "same"
    stride: int = 1
    horizon: Any = "same"
    cache: bool = False


@dataclass
class MaskConfig:
    use: bool = True
    type: str = ""
    temperature: float = 0.0
    init_value: float = 0.0
    dynamic_cropping: bool = True
    threshold: float = 0.1


@dataclass
class DatasetParams:
    root: str = ""
    in_ram: bool = False
    from_cache: bool = False
    permuted: bool = False
    noise_padded: bool = False
    memory_size: int = -1
    mfcc: bool = False
    drop_rate: float = 0.0
    seq_length: int = -1
    # our addition: random inputs with the dataset's exact shapes (no files needed)
    fake: bool = False


@dataclass
class CrossResConfig:
    resize: str = ""
    interpolation: str = "bilinear"
    resize_blur: bool = False
    resize_blur_sigma: float = 1.0
    blur: bool = False
    source_res: int = 0
    target_res: int = 0
    finetune_epochs: int = 100


@dataclass
class OptimizerParams:
    momentum: float = -1.0
    nesterov: bool = False


@dataclass
class SchedulerParams:
    decay_steps: Any = -1
    decay_factor: float = -1.0
    patience: int = -1
    warmup_epochs: float = -1


@dataclass
class TrainConfig:
    do: bool = True
    augment: Any = None
    report_top5_acc: bool = False
    epochs: int = -1
    batch_size: int = -1
    lr: float = 0.0
    omega_0_lr_factor: float = 1.0
    mask_params_lr_factor: float = 1.0
    weight_decay: float = 0.0
    mask_l2_norm: float = 0.0
    grad_clip: float = 0.0
    optimizer: str = "Adam"
    optimizer_params: OptimizerParams = field(default_factory=OptimizerParams)
    scheduler: str = ""
    scheduler_params: SchedulerParams = field(default_factory=SchedulerParams)
    # our additions: cap train/val/test batches per epoch (smoke runs); resume from a
    # checkpoint; stop at non-finite losses
    limit_batches: int = -1
    resume: str = ""
    nonfinite_patience: int = 0
    ema_decay: float = 0.0  # ours: > 0 evaluates and checkpoints an EMA of the weights


@dataclass
class TestConfig:
    before_train: bool = False


@dataclass
class WandbConfig:
    project: str = "flexconv"
    entity: str = ""
    dir: str = ""


@dataclass
class PretrainedParams:
    filepath: str = ""


@dataclass
class FlexConvConfig:
    net: NetConfig = field(default_factory=NetConfig)
    kernel: KernelConfig = field(default_factory=KernelConfig)
    conv: ConvConfig = field(default_factory=ConvConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    dataset: str = ""
    dataset_params: DatasetParams = field(default_factory=DatasetParams)
    cross_res: CrossResConfig = field(default_factory=CrossResConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    test: TestConfig = field(default_factory=TestConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    device: str = "auto"
    debug: bool = False
    pretrained: bool = False
    pretrained_params: PretrainedParams = field(default_factory=PretrainedParams)
    pretrained_strict: bool = True
    seed: int = 0
    deterministic: bool = False
    comment: str = ""
    summary: list[int] = field(default_factory=lambda: [0])
    summary_depth: int = 5


ConfigStore.instance().store(name="flexconv_schema", node=FlexConvConfig)
