"""Trustworthy runs: files load safely and are verified, bad files are one line (exit 2),
``kill -9`` + resume is bit-identical, a diverged run stops, files follow the umask."""

from __future__ import annotations

import os
import pickle
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ccnn.data.cache import cached
from ccnn.data.datamodule import EpochShuffle
from ccnn.files import (
    DIGEST_KEY,
    FileIntegrityError,
    content_digest,
    load_torch,
    read_json,
    save_torch,
    write_json,
)

ROOT = Path(__file__).resolve().parents[1]
APPS = {"main.py": "train.epochs", "run_experiment.py": "train.epochs"}
QUICK = ["train.limit_batches=6", "deterministic=true", "device=cpu", "experiment=digits"]


def app(script: str, run_dir: Path, *args: str, wait: bool = True):
    cmd = [sys.executable, str(ROOT / script), *QUICK, f"hydra.run.dir={run_dir}", *args]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    if not wait:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def one_error_line(stderr: str) -> str:
    """The single ``error: ...`` line of a failed run (and no traceback)."""
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr
    return errors[0]


def weights(ckpt: Path) -> dict[str, torch.Tensor]:
    return torch.load(ckpt, weights_only=True)["state_dict"]


class Evil:
    """Unpickling this runs ``touch <marker>``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# -- safe, verified files ----------------------------------------------------------------------


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "epoch": 0, "x": Evil(marker)}, evil)
    with pytest.raises(FileIntegrityError, match="could run code"):
        load_torch(evil)
    assert not marker.exists()
    # through the command line: one line, exit 2, nothing executed
    proc = app("main.py", tmp_path / "run", "train.epochs=2", f"train.resume={evil}")
    assert proc.returncode == 2, proc.stderr
    assert not marker.exists()
    assert "could run code" in one_error_line(proc.stderr)


def test_digest_detects_every_kind_of_change(tmp_path):
    obj = {"w": torch.arange(6.0).reshape(2, 3), "n": 3, "tag": "a", "nested": {"l": [1, 2.5]}}
    path = tmp_path / "f.pt"
    save_torch(obj, path)
    back = load_torch(path)
    assert back.keys() == obj.keys() and torch.equal(back["w"], obj["w"])
    assert torch.load(path, weights_only=True)[DIGEST_KEY] == content_digest(obj)
    for change in (
        {"w": torch.arange(6.0).reshape(3, 2)},  # same bytes, other shape
        {"w": torch.arange(6).reshape(2, 3)},  # other dtype
        {"n": 4},
        {"nested": {"l": [1, 2.5000001]}},
    ):
        assert content_digest({**obj, **change}) != content_digest(obj)


def flip_bytes(path: Path, n: int, seed: int = 0) -> None:
    data = bytearray(path.read_bytes())
    rng = random.Random(seed)
    # flip bytes inside the tensor payload (the zip's data records), not only its directory
    for i in rng.sample(range(len(data) // 4, len(data) // 2), n):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda p: flip_bytes(p, 100), "corrupt|cannot be read"),
        (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "cannot be read"),
        (lambda p: p.write_text("not a checkpoint\n"), "cannot be read"),
        (lambda p: torch.save({"a": torch.zeros(2)}, p), "no ccnn content digest"),
    ],
    ids=["flipped", "truncated", "text", "foreign"],
)
def test_damaged_files_are_one_line_errors(tmp_path, damage, message):
    path = tmp_path / "c.ckpt"
    save_torch({"state_dict": {"w": torch.randn(64, 64)}, "epoch": 0}, path)
    damage(path)
    with pytest.raises(FileIntegrityError, match=message) as err:
        load_torch(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_damaged_cache_is_rebuilt_not_returned(tmp_path):
    path = tmp_path / "cache.pt"
    build = lambda: {"x": torch.arange(4096.0)}  # noqa: E731
    cached(path, "v1", build)
    flip_bytes(path, 20)
    calls = []

    def rebuild():
        calls.append(1)
        return build()

    assert torch.equal(cached(path, "v1", rebuild)["x"], torch.arange(4096.0))
    assert calls == [1]


def test_json_results_are_verified(tmp_path):
    path = tmp_path / "results.json"
    write_json(path, {"test": {"acc": 0.5}, "params": 10})
    assert read_json(path) == {"test": {"acc": 0.5}, "params": 10}
    path.write_text(path.read_text().replace("0.5", "0.9"))
    with pytest.raises(FileIntegrityError, match="corrupt"):
        read_json(path)


def test_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        save_torch({"a": torch.zeros(1)}, tmp_path / "a.pt")
        write_json(tmp_path / "r.json", {"a": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "a.pt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "r.json").stat().st_mode & 0o777 == 0o644


# -- the command line --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("finished")
    proc = app("main.py", run, "train.epochs=2")
    assert proc.returncode == 0, proc.stderr
    return run


def test_resume_from_a_damaged_checkpoint_is_one_line_and_writes_nothing(finished_run, tmp_path):
    bad = tmp_path / "last.ckpt"
    bad.write_bytes((finished_run / "checkpoints" / "last.ckpt").read_bytes())
    flip_bytes(bad, 100)
    before = bad.read_bytes()
    proc = app("main.py", tmp_path / "run", "train.epochs=3", f"train.resume={bad}")
    assert proc.returncode == 2
    assert str(bad) in one_error_line(proc.stderr)
    assert bad.read_bytes() == before
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_resume_with_another_network_names_the_option(finished_run, tmp_path):
    ckpt = finished_run / "checkpoints" / "last.ckpt"
    proc = app(
        "main.py", tmp_path / "run", "train.epochs=3", "net.no_hidden=16", f"train.resume={ckpt}"
    )
    assert proc.returncode == 2
    line = one_error_line(proc.stderr)
    assert "net.no_hidden=32" in line and "net.no_hidden=16" in line


def test_diverged_run_stops_and_says_why(tmp_path):
    proc = app("main.py", tmp_path, "train.epochs=3", "optimizer.lr=1e8")
    assert proc.returncode == 3, proc.stderr
    line = one_error_line(proc.stderr)
    assert "diverged" in line and "epoch 0" in line and "1e+08" in line
    assert not (tmp_path / "results.json").exists()
    off = app(
        "main.py",
        tmp_path / "off",
        "train.epochs=1",
        "optimizer.lr=1e8",
        "train.nonfinite_patience=-1",
    )
    assert off.returncode == 0


@pytest.mark.parametrize(
    "script, extra",
    [(s, []) for s in APPS] + [("main.py", ["train.ema_decay=0.9"])],
    ids=[*APPS, "main.py-ema"],
)
def test_kill_9_then_resume_is_bit_identical(script, extra, tmp_path):
    epochs = 4
    whole = tmp_path / "whole"
    proc = app(script, whole, f"train.epochs={epochs}", *extra)
    assert proc.returncode == 0, proc.stderr
    rng = random.Random(script)
    part = tmp_path / "part"
    last = part / "checkpoints" / "last.ckpt"
    kill_after = rng.randrange(epochs - 2)  # epochs completed before the kill
    child = app(script, part, f"train.epochs={epochs}", *extra, wait=False)
    deadline = time.time() + 300
    while time.time() < deadline:
        if last.exists() and torch.load(last, weights_only=True)["epoch"] >= kill_after:
            break
        time.sleep(0.01)
    time.sleep(rng.uniform(0.0, 0.2))
    assert child.poll() is None, "the run finished before it could be killed"
    child.kill()  # SIGKILL
    child.wait()
    resumed = app(script, part, f"train.epochs={epochs}", *extra, f"train.resume={last}")
    assert resumed.returncode == 0, resumed.stderr
    for key in ("state_dict", "ccnn_raw_state_dict") if extra else ("state_dict",):
        a = torch.load(whole / "checkpoints" / "last.ckpt", weights_only=True)[key]
        b = torch.load(last, weights_only=True)[key]
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (key, k)
    assert read_json(whole / "results.json")["test"] == read_json(part / "results.json")["test"]
    assert (whole / "logs" / "metrics.csv").read_text() == (
        part / "logs" / "metrics.csv"
    ).read_text()


def test_epoch_order_depends_only_on_seed_and_epoch():
    a, b = EpochShuffle(50, seed=3), EpochShuffle(50, seed=3)
    orders = [list(a) for _ in range(3)]
    b.set_epoch(2)
    assert list(b) == orders[2] and orders[0] != orders[1]
    assert sorted(orders[0]) == list(range(50))
    assert list(EpochShuffle(50, seed=4)) != orders[0]


def test_pickled_checkpoint_objects_do_not_load_anywhere(tmp_path):
    """pretrained.load and the data cache refuse pickled objects too."""
    from ccnn.train.pretrained import load_pretrained

    marker = tmp_path / "pwned"
    path = tmp_path / "w.pt"
    with open(path, "wb") as f:
        torch.save({"state_dict": Evil(marker)}, f, pickle_module=pickle)
    with pytest.raises(FileIntegrityError):
        load_pretrained(torch.nn.Linear(2, 2), str(path))
    cached(path, "v", lambda: {"x": torch.zeros(1)})  # rebuilt, never unpickled
    assert not marker.exists()


# -- train.py ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    from test_scattering_train import make_image_tree

    return make_image_tree(tmp_path_factory.mktemp("images"), n_train=8)


def scattering(save_dir: Path, images: Path, *extra: str, wait: bool = True):
    cmd = [
        sys.executable,
        str(ROOT / "train.py"),
        *f"--dataset imagenet --data-dir {images} --n-blocks 2 --L 2 --kernel-size 3 "
        "--lowpass-last --workers 0 --print-freq 0 --image-size 16 --global-batch-size 4 "
        f"--lr-epochs 3 --epochs 3 --save-dir {save_dir}".split(),
        *extra,
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    if not wait:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def test_train_py_kill_9_then_resume_is_bit_identical(tmp_path, images):
    assert scattering(tmp_path / "whole", images).returncode == 0
    part = tmp_path / "part"
    child = scattering(part, images, wait=False)
    deadline = time.time() + 300
    while not (part / "phase_a_last.pt").exists() and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(random.Random(1).uniform(0.0, 0.3))
    assert child.poll() is None, "the run finished before it could be killed"
    child.kill()
    child.wait()
    resumed = scattering(part, images, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    for name in ("phase_b_last.pt", "phase_b_best.pt"):
        a = load_torch(tmp_path / "whole" / name)["model"]
        b = load_torch(part / name)["model"]
        assert all(torch.equal(a[k], b[k]) for k in a), name
    whole, again = read_json(tmp_path / "whole" / "results.json"), read_json(part / "results.json")
    assert untimed(whole["curves"]) == untimed(again["curves"])
    assert untimed(whole["results"]) == untimed(again["results"])


def untimed(doc):
    """A results document without its wall-clock times (everything else must be equal)."""
    if isinstance(doc, dict):
        return {
            k: untimed(v) for k, v in doc.items() if k not in ("time", "train_time", "wall_time")
        }
    if isinstance(doc, list):
        return [untimed(v) for v in doc]
    return doc


def test_train_py_resume_refuses_changed_settings(tmp_path, images):
    save = tmp_path / "run"
    assert scattering(save, images, "--stop-after-epochs", "1").returncode == 0
    before = (save / "phase_a_last.pt").read_bytes()
    proc = scattering(save, images, "--resume", "--epochs", "5", "--lr-head", "0.5")
    assert proc.returncode == 2
    line = one_error_line(proc.stderr)
    assert "--epochs 5 (checkpoint: 3)" in line and "--lr-head 0.5 (checkpoint: 0.001)" in line
    assert (save / "phase_a_last.pt").read_bytes() == before
    # a damaged checkpoint: one line, exit 2, the file left as it is
    flip_bytes(save / "phase_a_last.pt", 100)
    damaged = (save / "phase_a_last.pt").read_bytes()
    proc = scattering(save, images, "--resume")
    assert proc.returncode == 2 and "phase_a_last.pt" in one_error_line(proc.stderr)
    assert (save / "phase_a_last.pt").read_bytes() == damaged


@pytest.mark.parametrize(
    "args, message",
    [
        (["--epochs", "0"], "--epochs"),
        (["--global-batch-size", "0"], "--global-batch-size"),
        (["--epochs", "abc"], "invalid int value"),
        (["--kernel-size", "4"], "odd"),
    ],
)
def test_train_py_bad_arguments_are_one_line(tmp_path, images, args, message):
    proc = scattering(tmp_path, images, *args)
    assert proc.returncode == 2 and message in one_error_line(proc.stderr)


def test_train_py_missing_data_is_one_line(tmp_path):
    proc = scattering(tmp_path / "run", tmp_path / "nowhere")
    assert proc.returncode == 2 and "does not exist" in one_error_line(proc.stderr)


# -- several processes -------------------------------------------------------------------------


def test_processes_share_each_global_batch():
    one = list(EpochShuffle(23, seed=5, batch=8))
    shares = [list(EpochShuffle(23, seed=5, rank=r, world=2, batch=4)) for r in range(2)]
    # global batch k = the single-process batch k; rank r holds its r-th contiguous half
    for k in range(2):
        assert shares[0][4 * k : 4 * k + 4] + shares[1][4 * k : 4 * k + 4] == one[8 * k : 8 * k + 8]
    # the tail of 7 cannot be shared evenly by 2 processes: left out, same step count
    assert len(shares[0]) == len(shares[1]) == 8


def test_two_processes_train_like_one_with_the_same_global_batch(tmp_path):
    """``train.batch_size`` is the global batch; BatchNorm uses global statistics (on CPU).
    SGD, not Adam: Adam's normalisation turns float-rounding differences in tiny gradients into
    lr-sized steps, which would hide what this test checks."""
    args = ["train.epochs=2", "net.dropout=0", "optimizer.name=SGD", "optimizer.lr=0.05"]
    one = app("main.py", tmp_path / "one", *args)
    two = app("main.py", tmp_path / "two", *args, "train.distributed=true")
    assert one.returncode == 0 and two.returncode == 0, two.stderr
    a = weights(tmp_path / "one" / "checkpoints" / "last.ckpt")
    b = weights(tmp_path / "two" / "checkpoints" / "last.ckpt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k].double(), b[k].double(), atol=1e-5, rtol=0), k
    ckpt = lambda run: torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)  # noqa: E731
    assert ckpt(tmp_path / "one")["global_step"] == ckpt(tmp_path / "two")["global_step"] == 12


# -- a trained model back from its run directory -----------------------------------------------


@pytest.mark.parametrize("script", list(APPS))
def test_load_run_reproduces_the_reported_test_accuracy(script, tmp_path):
    import ccnn

    proc = app(script, tmp_path, "train.epochs=2")
    assert proc.returncode == 0, proc.stderr
    run = ccnn.load_run(tmp_path)
    reported = read_json(tmp_path / "results.json")
    assert run.app == script and not run.model.training
    assert run.checkpoint.name == "best.ckpt"
    assert run.evaluate("test") == reported["test"]
    assert run.evaluate("val") == reported["val"]
    x, y = next(iter(run.datamodule().test_dataloader()))[:2]
    assert run.logits(x).shape == (len(x), run.meta.num_classes)
    # Lightning's own route: the module rebuilt from the configuration in the checkpoint
    import lightning as L

    from ccnn.train.module import ClassificationModule

    module = ClassificationModule.load_from_checkpoint(run.checkpoint)
    for name, value in run.model.state_dict().items():
        assert torch.equal(module.network.state_dict()[name], value), name
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    out = trainer.test(module, datamodule=run.datamodule(), verbose=False)[0]
    assert {k.split("/", 1)[1]: float(v) for k, v in out.items()} == reported["test"]


# -- published keys that do nothing here -------------------------------------------------------


def _other_value(default):
    if isinstance(default, bool):
        return str(not default).lower()
    if isinstance(default, int | float):
        return str(default + 7)
    return "other"


def _unused_key_cases():
    from omegaconf import OmegaConf

    from ccnn.apps import ccnn_config, ccnn_schema, flexconv_config, flexconv_schema

    for mod, schema, appname in (
        (ccnn_config, ccnn_schema.CCNNConfig, "ccnn"),
        (flexconv_config, flexconv_schema.FlexConvConfig, "flexconv"),
    ):
        defaults = OmegaConf.structured(schema)
        for table, kind in ((mod.UNUSED_KEYS, "error"), (mod.COMPATIBILITY_KEYS, "warning")):
            for key in table:
                yield appname, key, _other_value(OmegaConf.select(defaults, key)), kind


@pytest.mark.parametrize("appname, key, value, kind", list(_unused_key_cases()))
def test_published_keys_that_do_nothing_are_rejected_or_warned(appname, key, value, kind):
    import warnings

    from ccnn.apps import ccnn_config, ccnn_main, flexconv_config, flexconv_main

    compose = ccnn_main.compose if appname == "ccnn" else flexconv_main.compose
    validate = ccnn_config.validate if appname == "ccnn" else flexconv_config.validate
    cfg = compose([f"{key}={value}"])
    if kind == "error":
        with pytest.raises(ValueError, match=f"{key}=.* does nothing in ccnn"):
            validate(cfg)
    else:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            validate(cfg)
        assert any(
            "accepted for compatibility" in str(w.message) and key in str(w.message) for w in seen
        )


def test_omega_0_lr_factor_needs_a_learnable_omega_0():
    from ccnn.apps.flexconv_config import validate
    from ccnn.apps.flexconv_main import compose

    with pytest.raises(ValueError, match="needs a learnable omega_0"):
        validate(compose(["train.omega_0_lr_factor=0.5"]))


@pytest.mark.parametrize(
    "appname, args, message",
    [
        (
            "ccnn",
            ["kernel.norm=BatchNorm"],
            "kernel.norm=BatchNorm is not used by kernel.type=MAGNet",
        ),
        ("ccnn", ["kernel.nonlinearity=ReLU"], "kernel.nonlinearity=ReLU is not used by"),
        ("ccnn", ["kernel.input_scale=3.0"], "kernel.input_scale=3.0 is not used by"),
        ("ccnn", ["kernel.type=MLP", "kernel.omega_0=5"], "kernel.omega_0=5.0 is not used by"),
        ("flexconv", ["kernel.learn_omega_0=true"], "kernel.learn_omega_0=True is not used by"),
        ("flexconv", ["kernel.omega_0=7"], "kernel.omega_0=7.0 is not used by kernel.type=MAGNet"),
    ],
)
def test_kernel_options_a_type_does_not_use_are_errors(appname, args, message):
    from ccnn.apps import ccnn_config, ccnn_main, flexconv_config, flexconv_main

    if appname == "ccnn":
        cfg = ccnn_main.compose(args)
        build = ccnn_config.build_network
        meta = ccnn_config.build_datamodule(cfg).meta
    else:
        cfg = flexconv_main.compose(args)
        build = flexconv_config.build_network
        meta = flexconv_config.build_datamodule(cfg).meta
    with pytest.raises(ValueError, match=message):
        build(cfg, meta)


def test_weight_average_is_evaluated_and_checkpointed(tmp_path):
    """train.ema_decay: checkpoints hold the averaged weights as the model (what was tested and
    what load_run returns) and the raw weights beside them; a decay near 0 follows the raw
    weights, a decay of 0.9 does not."""
    import ccnn

    for decay, near in (("1e-9", True), ("0.9", False)):
        run = tmp_path / decay
        proc = app("main.py", run, "train.epochs=2", f"train.ema_decay={decay}")
        assert proc.returncode == 0, proc.stderr
        ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
        ema, raw = ckpt["state_dict"], ckpt["ccnn_raw_state_dict"]
        assert ema.keys() == raw.keys() and ckpt["ccnn_ema_updates"] == 12
        floats = [k for k in ema if ema[k].is_floating_point() and "running" not in k]
        close = all(torch.allclose(ema[k], raw[k], atol=1e-5) for k in floats)
        assert close is near
        loaded = ccnn.load_run(run)
        assert loaded.evaluate("test") == read_json(run / "results.json")["test"]
    with pytest.raises(ValueError, match="train.ema_decay must be in"):
        from ccnn.apps.ccnn_config import validate
        from ccnn.apps.ccnn_main import compose

        validate(compose(["train.ema_decay=1.5"]))
