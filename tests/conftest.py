from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

SEEDS_DIR = Path(__file__).parent / "seeds"


def seed_commands(app: str) -> dict[str, dict]:
    """The paper's command lines (name -> {"script", "args"}), stored verbatim in tests/seeds/."""
    return json.loads((SEEDS_DIR / f"{app}_commands.json").read_text())


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield
