"""Generate named experiments and the test list of paper command lines from a seed document.

    python scripts/make_experiments.py ccnn ../shared/seeds/000_412cd7be3415edb6.txt
    python scripts/make_experiments.py flexconv ../shared/seeds/001_0bc0262977616d9b.txt

Writes ``src/ccnn/configs/<app>/experiment/<name>.yaml`` (only the leaves each command sets)
and ``tests/seeds/<app>_commands.json`` (name -> verbatim arguments).
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = {"ccnn": ("main.py",), "flexconv": ("run_experiment.py", "run_crossres.py")}


def slug(title: str) -> str:
    s = title.lower().replace("ccnn-", "ccnn_").replace(",", "_")
    s = re.sub(r"[^a-z0-9_]+", "_", s)
    return re.sub(r"_+", "_", s).strip("_")


FLEXCONV_TITLE_WORDS = (
    # (pattern, replacement) applied in order to the lower-cased FlexConv command titles
    (r"\(pintea et al\.? 2021\)", ""),
    (r"\.\s.*$", ""),  # drop trailing sentences ("This model was run on ...")
    (r"\(aka [^)]*\)", ""),
    (r"flexnet-(\d+)", r"flexnet\1"),
    (r"resnet-(\d+)", r"resnet\1"),
    (r"with convolutions \(`k\s*=\s*(\d+)`\)", r"conv k\1"),
    (r"with n-jet layers", "srf"),
    (r"with siren kernels and without flexconv mask", "ckcnn siren"),
    (r"with magnet kernels and without flexconv mask", "ckcnn magnet"),
    (r"with aliasing regularization without flexconv mask", "reg gabor"),
    (r"with aliasing regularization with flexconv mask", "reg gabor mask"),
    (r"without aliasing regularization", "noreg"),
    (r"with mfn-gabor kernels", "gabor"),
    (r"with siren kernels", "siren"),
)


def flexconv_name(section: str, title: str, script: str) -> str:
    """Short experiment names for the FlexConv commands, e.g. ``cifar10_flexnet7_conv_k3`` and
    ``crossres_cifar10_flexnet7_reg_gabor_mask`` (section = dataset, title = model)."""
    data = section.split("(")[0].lower().replace("imagenet-k", "imagenet_k")
    data = re.sub(r"[^a-z0-9_]+", "", data)
    model = title.lower()
    for pattern, repl in FLEXCONV_TITLE_WORDS:
        model = re.sub(pattern, repl, model)
    prefix = "crossres_" if script == "run_crossres.py" else ""
    return prefix + slug(f"{data} {model}")


def parse(text: str, app: str) -> list[tuple[str, str, list[str]]]:
    """(name, script, args) for every fenced command in ``text``."""
    out, seen = [], {}
    title, section = "", ""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        if line.startswith("#"):
            section = line.lstrip("#").strip()
        elif line.startswith("**") and line.rstrip(":").endswith("**"):
            title = line.strip("*: ")
        elif line and not line.startswith("```") and not line.startswith("|"):
            if app == "flexconv" and not line.startswith(("python", "[")):
                title = line.split("[[")[0].strip().rstrip(".").rstrip(":")
        if line.startswith("```"):
            i += 1
            block = []
            while i < len(lines) and not lines[i].strip().startswith("```"):
                block.append(lines[i].strip())
                i += 1
            cmd = " ".join(b for b in block if b)
            if not cmd:
                i += 1
                continue
            args = shlex.split(cmd)
            script = SCRIPTS[app][0]
            if args and args[0] == "python":
                script, args = args[1], args[2:]
            name = slug(title)
            if app == "flexconv":
                name = flexconv_name(section, title, script)
            if name in seen:
                seen[name] += 1
                suffix = re.sub(r"[^a-z0-9]+", "", section.split(":")[0].lower())
                name = f"{name}_{suffix or seen[name]}"
            else:
                seen[name] = 1
            out.append((name, script, args))
        i += 1
    return out


def to_tree(args: list[str]) -> dict:
    tree: dict = {}
    for arg in args:
        key, value = arg.split("=", 1)
        node = tree
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = yaml.safe_load(value) if value != "" else ""
    return tree


def main(app: str, seed: str) -> None:
    commands = parse(Path(seed).read_text(), app)
    exp_dir = ROOT / "src" / "ccnn" / "configs" / app / "experiment"
    exp_dir.mkdir(parents=True, exist_ok=True)
    listing = {}
    for name, script, args in commands:
        listing[name] = {"script": script, "args": args}
        body = yaml.safe_dump(to_tree(args), sort_keys=True, default_flow_style=None)
        header = (
            "# @package _global_\n"
            f"# Generated from the paper's command ({script}); see scripts/make_experiments.py\n"
        )
        (exp_dir / f"{name}.yaml").write_text(header + body)
    out = ROOT / "tests" / "seeds" / f"{app}_commands.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(listing, indent=1) + "\n")
    print(f"{len(commands)} commands -> {exp_dir} and {out}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
