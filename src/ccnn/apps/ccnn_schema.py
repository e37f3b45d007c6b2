"""The CCNN configuration schema (``main.py``): every key and default of the published
``cfg/config.yaml`` as structured configs, with their published meaning, plus our additions
(documented in :mod:`ccnn.apps.ccnn_config`, which checks a composed config and maps it to library
objects). Registered with Hydra's ConfigStore as ``ccnn_schema``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore


@dataclass
class BlockConfig:
    type: str = "default"
    prenorm: bool = True


@dataclass
class NetConfig:
    type: str = ""
    no_hidden: int = -1
    no_blocks: int = -1
    no_stages: int = -1
    data_dim: int = 0
    dropout: float = 0.0
    dropout_in: float = 0.0
    dropout_type: str = "Dropout2d"
    norm: str = ""
    nonlinearity: str = ""
    block_width_factors: list[float] = field(default_factory=lambda: [0.0])
    block: BlockConfig = field(default_factory=BlockConfig)
    downsampling: list[int] = field(default_factory=list)
    downsampling_size: int = -1
    readout: str = "mean"
    embedding_dim: int = 0
    gap_weights: bool = True  # ours: weigh observations by the time they stand for
    observation_dropout: float = 0.0  # ours: hide random observed steps in training; -1 auto


@dataclass
class KernelConfig:
    type: str = ""
    no_hidden: int = -1
    no_layers: int = -1
    omega_0: float = 0.0
    omega_0_per_length: float = 0.0  # ours: omega_0 = this x the input length (0: omega_0)
    input_scale: float = 0.0
    bias: bool = True
    size: str = "same"
    chang_initialize: bool = True
    norm: str = "Identity"
    nonlinearity: str = "Identity"
    init_spatial_value: float = 1.0
    num_edges: int = -1
    bottleneck_factor: int = -1


@dataclass
class MaskConfig:
    type: str = ""
    init_value: float = -1.0
    init_steps: float = -1.0  # ours: initial sigma in grid steps of the input (not init_value)
    threshold: float = -1.0
    dynamic_cropping: bool = False
    temperature: float = 0.0
    learn_mean: bool = False


@dataclass
class ConvConfig:
    type: str = ""
    causal: bool = False
    use_fft: Any = "auto"  # published key: true forces FFT, false direct; ours: auto (by cost)
    bias: bool = True
    padding: str = "same"
    stride: int = 1
    cache: bool = False
    stem_type: str = ""  # ours: the stem's conv type ("" = conv.type)


@dataclass
class ModelNetConfig:
    num_nodes: int = -1
    resampling_factor: int = 1
    voxelize: bool = False
    voxel_scale: int = -1
    modelnet_name: str = "40"


@dataclass
class DatasetParams:
    permuted: bool = False
    noise_padded: bool = False
    grayscale: bool = False
    memory_size: int = -1
    mfcc: bool = False
    drop_rate: float = 0.0
    target_idx: int = 0
    num_nodes: int = 1024
    metric: str = "MAE"
    seq_length: int = -1
    resolution: int = 32
    modelnet: ModelNetConfig = field(default_factory=ModelNetConfig)
    # our additions (see the dataset modules): UEA/UCR set name and handling, LRA protocol
    uea_name: str = ""
    pad_mode: str = ""
    uea_split: str = ""
    normalize: str = ""
    val_fraction: float = -1.0
    lra_val: str = ""
    image_size: int = -1  # resize images (e.g. 256 for the published STL10 setting)


@dataclass
class DatasetConfig:
    name: str = ""
    data_dir: str = ""
    data_type: str = "default"
    augment: bool = False
    params: DatasetParams = field(default_factory=DatasetParams)
    fake: bool = False


@dataclass
class TrainConfig:
    do: bool = True
    mixed_precision: bool = False
    epochs: int = -1
    batch_size: int = -1
    grad_clip: float = 0.0
    max_epochs_no_improvement: int = 100
    track_grad_norm: int = -1
    accumulate_grad_steps: int = 1
    distributed: bool = False
    num_nodes: int = -1
    avail_gpus: int = -1
    limit_batches: int = -1
    resume: str = ""
    # ours: train for a number of optimiser steps instead of epochs, capped by a compute budget
    steps: int = -1
    position_budget: float = -1.0
    drop_last: bool = False  # ours: leave out the incomplete last training batch of an epoch
    nonfinite_patience: int = 0  # ours: non-finite losses in a row before stopping; -1 = never
    ema_decay: float = 0.0  # ours: > 0 evaluates and checkpoints an EMA of the weights


@dataclass
class OptimizerConfig:
    name: str = "Adam"
    lr: float = 0.0
    mask_lr_ratio: float = 1.0
    momentum: float = -1.0
    nesterov: bool = False
    weight_decay: float = 0.0
    weight_decay_type: str = "published"


@dataclass
class SchedulerConfig:
    name: str = ""
    decay_steps: Any = -1
    factor: float = -1.0
    patience: int = -1
    warmup_epochs: float = -1
    warmup_steps: int = -1  # ours: warm-up length in optimiser steps (wins over warmup_epochs)
    mode: str = "max"


@dataclass
class TestConfig:
    batch_size_multiplier: int = 1
    before_train: bool = False


@dataclass
class WandbConfig:
    project: str = "main"
    entity: str = "ccnn"


@dataclass
class PretrainedConfig:
    load: bool = False
    alias: str = "best"
    filename: str = ""


@dataclass
class CCNNConfig:
    device: str = "auto"
    debug: bool = True
    deterministic: bool = False
    no_workers: int = -1
    seed: int = 0
    comment: str = ""
    hooks_enabled: bool = False
    net: NetConfig = field(default_factory=NetConfig)
    kernel: KernelConfig = field(default_factory=KernelConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    conv: ConvConfig = field(default_factory=ConvConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    test: TestConfig = field(default_factory=TestConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    pretrained: PretrainedConfig = field(default_factory=PretrainedConfig)


ConfigStore.instance().store(name="ccnn_schema", node=CCNNConfig)
