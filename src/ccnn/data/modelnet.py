"""ModelNet10 / ModelNet40 (Wu et al., 3D ShapeNets, CVPR 2015) as point clouds with normals.

Files: the official Princeton zips, extracted under ``<root>``::

    <root>/ModelNet40.zip  ->  <root>/ModelNet40/<class>/{train,test}/<class>_0001.off
    <root>/ModelNet10.zip  ->  <root>/ModelNet10/<class>/{train,test}/<class>_0001.off

(folders starting with ``.`` or ``__`` — e.g. ``__MACOSX`` in ModelNet10.zip — are ignored;
classes are the sorted folder names: 40 resp. 10). Meshes are OFF files; some ModelNet files
have a malformed first line with the counts glued to the keyword (``OFF490 518 0``), which
:func:`parse_off` reads too. Polygons with more than three vertices are fan-triangulated.

Each mesh becomes ``num_nodes`` surface points (:func:`sample_surface`): triangles are chosen
with probability proportional to their area, points uniformly inside them (barycentric
``sqrt`` trick), and each point gets its triangle's unit normal. Clouds are centred at the mean of
their points and scaled into the unit sphere (max radius 1). Features per point, in this order:
``x, y, z, n_x, n_y, n_z`` → network input ``(6, num_nodes)``; the network reads positions from
channels 0-2.

* ``params.modelnet.modelnet_name``: ``"40"`` (default) or ``"10"``.
* ``params.modelnet.num_nodes``: points per cloud (``-1`` → ``params.num_nodes``, 1024).
* ``params.modelnet.resampling_factor`` (R): every TRAINING mesh is sampled R times with
  different seeds and all R clouds are stored (the train set has R × meshes examples; an epoch
  sees every training mesh R times). Validation and test meshes are sampled once.
* ``augment``: random jitter of the training positions, ``clip(0.01 N(0, 1), ±0.05)`` per
  coordinate (PointNet's), applied to whole batches on the training device; normals unchanged.
* Splits: ModelNet has no official validation split. We hold out 10 % of the official training
  meshes per class (stratified, seed ``opts.split_seed`` = 42) as validation — all R samplings
  of a held-out mesh leave the training set; test = the official test split.

Sampling is deterministic (mesh ``i`` of a split, sampling ``r``, uses seed ``(split, i, r)``)
and cached once per (name, num_nodes, R) in ``<root>/ModelNet{10,40}/processed/`` with
:func:`ccnn.data.cache.cached` (ModelNet40 at 512 points: ~150 MB for R=1). The first build
parses all 12,311 meshes (ModelNet40) with numpy and takes minutes; later runs load the cache.
``voxelize`` (a published option) is not implemented.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch.utils.data import TensorDataset

from ccnn.data.base import (
    DATASETS,
    DataConfigError,
    DataOptions,
    DatasetMeta,
    DatasetSplits,
    check_data_type,
    stratified_split,
)
from ccnn.data.cache import cached
from ccnn.data.download import RemoteFile, fetch, safe_extract

log = logging.getLogger(__name__)

CACHE_VERSION = "modelnet-v1"
VAL_FRACTION = 0.1
JITTER_SIGMA, JITTER_CLIP = 0.01, 0.05
DEFAULT_NUM_NODES = 1024

REMOTES = {
    "10": RemoteFile(
        "http://3dvision.princeton.edu/projects/2014/3DShapeNets/ModelNet10.zip", "ModelNet10.zip"
    ),
    "40": RemoteFile("http://modelnet.cs.princeton.edu/ModelNet40.zip", "ModelNet40.zip"),
}
NUM_CLASSES = {"10": 10, "40": 40}


# ------------------------------------------------------------------------------------------
# OFF meshes


def parse_off(text: str, source: str = "<string>") -> tuple[np.ndarray, np.ndarray]:
    """Vertices ``(v, 3)`` float64 and triangles ``(f, 3)`` int64 of an OFF file's text.

    Accepts the standard header (``OFF`` on its own line, then ``V F E``), the malformed
    ModelNet variant ``OFF490 518 0`` on one line, ``#`` comments and blank lines. Polygons
    with more than three vertices are fan-triangulated; faces with fewer are dropped.
    """
    lines = [ln.split("#", 1)[0].strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln]
    if not lines or not lines[0].startswith("OFF"):
        raise DataConfigError(f"{source} is not an OFF file (first line {lines[:1]})")
    rest = lines[0][3:].strip()
    body = lines[1:]
    if not rest:
        if not body:
            raise DataConfigError(f"{source}: OFF file without counts")
        rest, body = body[0], body[1:]
    try:
        n_vert, n_face = (int(t) for t in rest.split()[:2])
    except ValueError:
        raise DataConfigError(f"{source}: cannot read OFF counts from {rest!r}") from None
    if len(body) < n_vert + n_face:
        raise DataConfigError(
            f"{source}: OFF file declares {n_vert} vertices and {n_face} faces but has only "
            f"{len(body)} data lines (truncated?)"
        )
    verts = np.array(" ".join(body[:n_vert]).split(), dtype=np.float64).reshape(n_vert, -1)[:, :3]
    face_lines = body[n_vert : n_vert + n_face]
    tokens = " ".join(face_lines).split()
    faces = None
    if n_face and len(tokens) == 4 * n_face:  # fast path: all triangles
        table = np.array(tokens, dtype=np.int64).reshape(n_face, 4)
        if (table[:, 0] == 3).all():
            faces = table[:, 1:]
    if faces is None:
        tris: list[list[int]] = []
        for ln in face_lines:
            vals = [int(t) for t in ln.split()]
            count, idx = vals[0], vals[1 : 1 + vals[0]]
            for t in range(1, count - 1):
                tris.append([idx[0], idx[t], idx[t + 1]])
        faces = np.array(tris, dtype=np.int64).reshape(-1, 3)
    if faces.size and (faces.min() < 0 or faces.max() >= n_vert):
        raise DataConfigError(f"{source}: face index out of range (0..{n_vert - 1})")
    return verts, faces


def read_off(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """:func:`parse_off` of a file."""
    return parse_off(Path(path).read_text(errors="replace"), str(path))


def write_off(
    path: Path, verts: np.ndarray, faces: np.ndarray, *, glued_header: bool = False
) -> Path:
    """Write a triangle mesh as OFF (``glued_header``: the malformed ``OFF{V} {F} 0`` variant)."""
    head = (
        f"OFF{len(verts)} {len(faces)} 0" if glued_header else f"OFF\n{len(verts)} {len(faces)} 0"
    )
    lines = [head]
    lines += [" ".join(f"{v:.6f}" for v in row) for row in np.asarray(verts)]
    lines += ["3 " + " ".join(str(int(i)) for i in row) for row in np.asarray(faces)]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


# ------------------------------------------------------------------------------------------
# sampling


def sample_surface(
    verts: np.ndarray, faces: np.ndarray, num_points: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Area-weighted uniform surface samples and their (unit) face normals.

    Shapes: ``(v, 3)``, ``(f, 3) -> (num_points, 3), (num_points, 3)``.
    """
    tri = verts[faces]  # (f, 3, 3)
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])  # (f, 3)
    double_area = np.linalg.norm(cross, axis=1)  # (f,)
    total = double_area.sum()
    if not np.isfinite(total) or total <= 0:
        raise DataConfigError("mesh has no triangle with positive area")
    choice = rng.choice(len(faces), size=num_points, p=double_area / total)  # (m,)
    u, v = rng.random(num_points), rng.random(num_points)
    su = np.sqrt(u)
    w0, w1, w2 = 1 - su, su * (1 - v), su * v
    a, b, c = tri[choice, 0], tri[choice, 1], tri[choice, 2]
    points = w0[:, None] * a + w1[:, None] * b + w2[:, None] * c  # (m, 3)
    normals = cross[choice] / double_area[choice, None]  # (m, 3)
    return points, normals


def normalise_scale(points: np.ndarray) -> np.ndarray:
    """Centre at the mean and scale into the unit sphere (max radius 1)."""
    centred = points - points.mean(0, keepdims=True)
    radius = np.linalg.norm(centred, axis=1).max()
    return centred / radius if radius > 0 else centred


def mesh_to_cloud(verts, faces, num_points: int, seed: tuple[int, ...]) -> np.ndarray:
    """One sampled, normalised cloud with normals. Shapes: ``-> (6, num_points)`` float32."""
    rng = np.random.default_rng(list(seed))
    points, normals = sample_surface(verts, faces, num_points, rng)
    return np.concatenate([normalise_scale(points), normals], axis=1).T.astype(np.float32)


# ------------------------------------------------------------------------------------------
# the dataset family


def list_meshes(folder: Path) -> tuple[list[str], dict[str, list[tuple[Path, int]]]]:
    """Class names and ``split -> [(off file, class id)]`` of an extracted ModelNet folder."""
    classes = sorted(
        p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "__"))
    )
    files: dict[str, list[tuple[Path, int]]] = {"train": [], "test": []}
    for label, name in enumerate(classes):
        for split in files:
            for f in sorted((folder / name / split).glob("*.off")):
                if not f.name.startswith("."):
                    files[split].append((f, label))
    return classes, files


class PointJitter:
    """Batch transform: jitters positions (channels 0-2) of training batches when enabled.

    ``x[:, :3] += clip(sigma * N(0, 1), -clip, clip)``. Shapes: ``(b, 6, n) -> (b, 6, n)``.
    """

    def __init__(self, augment: bool, sigma: float = JITTER_SIGMA, clip: float = JITTER_CLIP):
        self.augment, self.sigma, self.clip = augment, sigma, clip

    def __call__(self, x: torch.Tensor, training: bool) -> torch.Tensor:
        x = x.float()
        if not (self.augment and training):
            return x
        noise = (self.sigma * torch.randn_like(x[:, :3])).clamp(-self.clip, self.clip)
        return torch.cat([x[:, :3] + noise, x[:, 3:]], dim=1)


def _options(opts: DataOptions) -> tuple[str, int, int]:
    mn = dict(opts.param("modelnet", {}) or {})
    name = str(mn.get("modelnet_name", "40"))
    if name not in NUM_CLASSES:
        raise DataConfigError(
            f"dataset.params.modelnet.modelnet_name must be '10' or '40', got {name!r}"
        )
    num_nodes = int(mn.get("num_nodes", -1))
    fallback = opts.param("num_nodes", DEFAULT_NUM_NODES)
    if num_nodes > 0 and fallback not in (None, DEFAULT_NUM_NODES):
        raise DataConfigError(
            f"dataset.params.num_nodes={fallback} and dataset.params.modelnet.num_nodes="
            f"{num_nodes} both set the points per cloud; keep one"
        )
    if num_nodes <= 0:
        num_nodes = int(opts.param("num_nodes", DEFAULT_NUM_NODES) or DEFAULT_NUM_NODES)
    resampling = int(mn.get("resampling_factor", 1))
    if resampling < 1:
        raise DataConfigError(
            f"dataset.params.modelnet.resampling_factor must be >= 1, got {resampling}"
        )
    if mn.get("voxelize"):
        raise DataConfigError(
            "dataset.params.modelnet.voxelize=True is not implemented; set it to False"
        )
    return name, num_nodes, resampling


@DATASETS.register("ModelNet", "ModelNet10", "ModelNet40")
class ModelNet:
    """ModelNet10/40 meshes as clouds of ``num_nodes`` points with normals; see the module doc."""

    params: ClassVar[tuple[str, ...]] = ("modelnet", "num_nodes")

    def meta(self, opts: DataOptions) -> DatasetMeta:
        check_data_type(opts, ("pointcloud",))
        name, num_nodes, _ = _options(opts)
        return DatasetMeta(
            in_channels=6,
            num_classes=NUM_CLASSES[name],
            data_dim=3,
            input_shape=(6, num_nodes),
            data_type="pointcloud",
            extra={"modelnet_name": name},
        )

    @staticmethod
    def folder(root: Path, name: str, download: bool) -> Path:
        """The extracted ``ModelNet{name}`` folder, fetching and extracting the zip if needed."""
        folder = root / f"ModelNet{name}"
        if not folder.is_dir():
            (archive,) = fetch(root, [REMOTES[name]], download=download, dataset=f"ModelNet{name}")
            safe_extract(archive, root)
            if not folder.is_dir():
                raise DataConfigError(
                    f"{archive} did not contain a ModelNet{name}/ folder; it is not the official "
                    f"archive ({REMOTES[name].url})."
                )
        return folder

    @classmethod
    def build(cls, folder: Path, num_nodes: int, resampling: int) -> dict[str, torch.Tensor]:
        """Sample every mesh: ``train_x (m R, 6, n)``, ``train_y``, ``train_mesh`` (mesh id),
        ``train_rep`` (sampling 0..R-1), and the same for ``test_*`` (R = 1)."""
        classes, files = list_meshes(folder)
        if not files["train"] or not files["test"]:
            raise DataConfigError(
                f"{folder} holds no <class>/train/*.off or <class>/test/*.off meshes; extract the "
                "official ModelNet zip there."
            )
        out: dict[str, torch.Tensor] = {}
        for split_id, split in enumerate(("train", "test")):
            reps = resampling if split == "train" else 1
            xs, ys, mesh, rep = [], [], [], []
            for i, (path, label) in enumerate(files[split]):
                verts, faces = read_off(path)
                for r in range(reps):
                    xs.append(mesh_to_cloud(verts, faces, num_nodes, (split_id, i, r)))
                    ys.append(label)
                    mesh.append(i)
                    rep.append(r)
            out[f"{split}_x"] = torch.from_numpy(np.stack(xs))
            out[f"{split}_y"] = torch.tensor(ys, dtype=torch.long)
            out[f"{split}_mesh"] = torch.tensor(mesh, dtype=torch.long)
            out[f"{split}_rep"] = torch.tensor(rep, dtype=torch.long)
        out["num_classes"] = torch.tensor(len(classes))
        return out

    def load(self, opts: DataOptions) -> DatasetSplits:
        meta = self.meta(opts)
        name, num_nodes, resampling = _options(opts)
        folder = self.folder(opts.root, name, opts.download)
        cache = folder / "processed" / f"points_{num_nodes}_r{resampling}.pt"
        data = cached(
            cache,
            f"{CACHE_VERSION}-{num_nodes}-{resampling}",
            lambda: self.build(folder, num_nodes, resampling),
        )
        if int(data["num_classes"]) != meta.num_classes:
            raise DataConfigError(
                f"{folder} has {int(data['num_classes'])} classes, ModelNet{name} has "
                f"{meta.num_classes}; check the extracted folder."
            )
        x, y, mesh = data["train_x"], data["train_y"], data["train_mesh"]
        first = data["train_rep"] == 0  # one row per training mesh, in mesh-id order
        mesh_labels = y[first]
        train_m, val_m = stratified_split(
            mesh_labels, (1 - VAL_FRACTION, VAL_FRACTION), seed=opts.split_seed
        )
        in_train = torch.isin(mesh, train_m)
        val_rows = first & torch.isin(mesh, val_m)
        return DatasetSplits(
            train=TensorDataset(x[in_train], y[in_train]),
            val=TensorDataset(x[val_rows], y[val_rows]),
            test=TensorDataset(data["test_x"], data["test_y"]),
            meta=meta,
            batch_transform=PointJitter(opts.augment),
        )
