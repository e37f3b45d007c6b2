"""The one UCR/UEA preset: ``main.py dataset.name=UEA`` works alone, trains for steps within a
budget on the whole TRAIN split and tests the final model; the array API uses the same preset."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ccnn.apps.ccnn_config import build_network, training_epochs
from ccnn.apps.ccnn_main import compose, prepare_argv, run
from ccnn.apps.common import ConfigError
from ccnn.data.base import DatasetMeta
from ccnn.train.optim import ScheduleSettings, lr_lambda
from sequence_fixtures import write_uea


@pytest.mark.parametrize(
    "argv, added",
    [
        (["dataset.name=UEA", "dataset.params.uea_name=GunPoint"], ["experiment=uea"]),
        (["dataset.name=UCR", "dataset.params.uea_name=GunPoint"], ["experiment=uea"]),
        (["train.epochs=2"], ["experiment=digits"]),
        (["--cfg", "job"], ["experiment=digits"]),  # Hydra flags keep the default experiment
        (["-m", "train.epochs=1"], ["experiment=digits"]),
        (["dataset.name=MNIST"], []),
        (["experiment=digits", "dataset.name=UEA"], []),
    ],
)
def test_dataset_family_presets(argv, added):
    assert prepare_argv(argv) == [*argv, *added]


def test_experiment_typo_names_the_closest():
    with pytest.raises(ValueError, match="Unknown experiment 'smnist'. Closest: smnist_ccnn"):
        prepare_argv(["experiment=smnist"])


def test_preset_composes_for_any_set_and_builds_from_the_data():
    cfg = compose(["dataset.name=UEA", "dataset.params.uea_name=JapaneseVowels"])
    assert cfg.conv.causal is False and cfg.dataset.params.val_fraction == 0
    assert cfg.train.steps > 0 and cfg.train.position_budget > 0
    meta = DatasetMeta(12, 9, 1, (12, 29), "sequence")
    net = build_network(cfg, meta)
    assert net.stem.in_channels == 12 and net.out_linear.out_features == 9
    assert type(net.stem).__name__ == cfg.conv.stem_type


@pytest.mark.parametrize(
    "n_train, length, steps, budget, limit, drop_last, expected",
    [
        (36, 251, 1000, 1e7, -1, False, 500),  # batches of 32 + 4: 2 an epoch -> 500 epochs
        (36, 251, 1000, 1e7, -1, True, 1000),  # the batch of 4 left out: 1 an epoch
        (200, 427, 1000, 1e7, -1, False, 104),  # budget: 1e7 // (32*427) = 731 steps; 7 a epoch
        (200, 427, 1000, 1e7, -1, True, 122),  # 731 / 6 = 121.8
        (100, 1460, 1000, 1e7, -1, False, 54),  # 1e7 // (32*1460) = 214 steps / 4 = 53.5
        (20, 24, 1000, 1e7, -1, True, 1000),  # one batch of all 20 series an epoch
        (1000, 1500, 1000, 1e7, -1, False, 6),  # 208 steps / 32 batches = 6.5
        (36, 251, 1000, -1, 1, False, 1000),  # limit_batches=1: one step an epoch
    ],
)
def test_training_epochs_from_steps_and_budget(
    n_train, length, steps, budget, limit, drop_last, expected
):
    cfg = compose(
        [
            "dataset.name=UEA",
            "train.batch_size=32",
            f"train.steps={steps}",
            f"train.position_budget={budget}",
            f"train.limit_batches={limit}",
            f"train.drop_last={drop_last}",
        ]
    )
    assert training_epochs(cfg, n_train, length) == expected


def test_epochs_without_steps_are_epochs():
    cfg = compose(["train.epochs=7"])
    assert training_epochs(cfg, 10_000, 64) == 7


def test_warmup_in_steps():
    s = ScheduleSettings(name="cosine", warmup_steps=10, warmup_epochs=5)
    f = lr_lambda(s, steps_per_epoch=100, total_epochs=1)
    assert f(5) == pytest.approx(0.5, abs=1e-7) and f(10) == pytest.approx(1.0)
    assert f(55) == pytest.approx(0.5)  # cosine half-way through the 90 steps after warm-up


def test_plateau_needs_validation(tmp_path):
    write_uea(tmp_path, "Toy")
    cfg = compose(
        [
            "dataset.name=UEA",
            "dataset.params.uea_name=Toy",
            f"dataset.data_dir={tmp_path}",
            "scheduler.name=plateau",
            "scheduler.warmup_steps=-1",
            "scheduler.factor=0.5",
        ]
    )
    with pytest.raises(ConfigError, match="validation split"):
        run(cfg, run_dir=str(tmp_path / "run"))


def test_stem_type_must_match_the_conv_family():
    with pytest.raises(ConfigError, match="both be continuous"):
        from ccnn.apps.ccnn_config import validate

        validate(compose(["dataset.name=UEA", "conv.stem_type=Conv"]))


def test_preset_trains_on_unequal_lengths_and_tests_the_final_model(tmp_path):
    write_uea(tmp_path, "Toy", n_train=30, n_test=12, min_len=5, max_len=20)
    cfg = compose(
        [
            "dataset.name=UEA",
            "dataset.params.uea_name=Toy",
            f"dataset.data_dir={tmp_path}",
            "device=cpu",
            "train.steps=40",
        ]
    )
    results = run(cfg, run_dir=str(tmp_path / "run"))
    assert results["val"] == {} and results["best_checkpoint"] is None
    assert results["epochs"] == 40  # 30 series, batch 32: one step an epoch (nothing dropped)
    assert results["test"]["acc"] >= 0.9  # classes differ by their mean: an easy task
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()
    assert not (tmp_path / "run" / "checkpoints" / "best.ckpt").exists()


def test_preset_on_real_bundled_data_learns(tmp_path):
    pytest.importorskip("aeon")
    results = run(
        compose(
            [
                "dataset.name=UEA",
                "dataset.params.uea_name=BasicMotions",
                "device=cpu",
                "train.steps=120",
            ]
        ),
        run_dir=str(tmp_path),
    )
    assert results["test"]["acc"] >= 0.9  # 4 classes: chance 0.25; MiniRocket 1.0


# ---------------------------------------------------------------------------------------------
# the array API


def shapes_problem(n, seed, unequal=False):
    """Class 0: a sine, class 1: a square wave, random phase/length; 1 channel."""
    rng = np.random.default_rng(seed)
    series, labels = [], []
    for i in range(n):
        length = int(rng.integers(40, 81)) if unequal else 64
        t = np.arange(length) / 8.0 + rng.uniform(0, 6.3)
        s = np.sin(t) if i % 2 == 0 else np.sign(np.sin(t))
        series.append(s + 0.1 * rng.standard_normal(length))
        labels.append("sine" if i % 2 == 0 else "square")
    return series, np.array(labels)


STEPS = ["train.steps=80", "scheduler.warmup_steps=10"]


def test_classifier_from_arrays_equal_unequal_and_timestamps():
    from ccnn import TimeSeriesClassifier

    x, y = shapes_problem(40, 0)
    xt, yt = shapes_problem(40, 1)
    clf = TimeSeriesClassifier(overrides=STEPS).fit(np.stack(x), y)
    assert clf.score(np.stack(xt), yt) >= 0.9
    assert set(clf.predict(np.stack(xt))) <= {"sine", "square"}

    xu, yu = shapes_problem(40, 0, unequal=True)
    clf = TimeSeriesClassifier(overrides=STEPS).fit(xu, yu)
    xtu, ytu = shapes_problem(20, 1, unequal=True)
    assert clf.score(xtu, ytu) >= 0.9
    # padding never changes a prediction: alone vs in a batch with longer series
    alone = clf.decision_function([xtu[0]])
    together = clf.decision_function(xtu)[:1]
    np.testing.assert_allclose(alone, together, rtol=1e-5, atol=1e-6)

    rng = np.random.default_rng(2)
    keep = [np.sort(rng.choice(64, 40, replace=False)) for _ in x]
    times = [k * 0.5 for k in keep]  # seconds; the unit becomes the median gap (0.5 s)
    clf = TimeSeriesClassifier(overrides=STEPS).fit([s[k] for s, k in zip(x, keep)], y, times=times)
    assert clf.time_unit_ == pytest.approx(0.5)
    keep_t = [np.sort(rng.choice(64, 40, replace=False)) for _ in xt]
    acc = clf.score([s[k] for s, k in zip(xt, keep_t)], yt, times=[k * 0.5 for k in keep_t])
    assert acc >= 0.85


def test_classifier_errors():
    from ccnn import TimeSeriesClassifier

    with pytest.raises(ValueError, match="two classes"):
        TimeSeriesClassifier().fit(np.zeros((4, 10)), ["a"] * 4)
    with pytest.raises(RuntimeError, match="fit"):
        TimeSeriesClassifier().predict(np.zeros((4, 10)))
    with pytest.raises(ValueError, match="labels for"):
        TimeSeriesClassifier().fit(np.zeros((4, 10)), ["a", "b"])
    assert torch.get_num_threads() >= 1


def test_drop_last_leaves_out_the_incomplete_training_batch_only():
    from torch.utils.data import TensorDataset

    from ccnn.data.base import DatasetSplits
    from ccnn.data.datamodule import CCNNDataModule

    def loader_sizes(n, batch):
        ds = TensorDataset(torch.zeros(n, 1, 4), torch.zeros(n, dtype=torch.long))
        meta = DatasetMeta(1, 2, 1, (1, 4), "sequence")
        dm = CCNNDataModule(None, batch, splits=DatasetSplits(ds, ds, ds, meta), drop_last=True)
        return [len(b[0]) for b in dm.train_dataloader()], [len(b[0]) for b in dm.val_dataloader()]

    assert loader_sizes(36, 32) == ([32], [32, 4])
    assert loader_sizes(20, 32) == ([20], [20])  # smaller than a batch: nothing is dropped
