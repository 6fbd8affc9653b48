"""The README documents every study-file key and every registered schedule, optimizer and
dataset (so adding a registry entry without documenting it fails here)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tuner.config import SECTIONS
from tuner.datasets import DATASETS
from tuner.schedules import SCHEDULES
from tuner.space import OPTIMIZERS

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_readme_opens_with_the_two_setup_commands() -> None:
    head = README[:800]
    assert "make tune" in head and "make test" in head


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_every_key_is_documented(section: str) -> None:
    part = README.split(f"**`[{section}]`**", 1)
    assert len(part) == 2, f"[{section}] is not documented"
    table = part[1].split("\n\n", 2)[1]
    for f in dataclasses.fields(SECTIONS[section]):
        if f.metadata.get("internal"):  # filled in by tuner, not a study-file key
            continue
        assert f"| `{f.name}` |" in table, f"[{section}] {f.name} is not documented"


def test_every_registry_entry_is_documented() -> None:
    for name in [*SCHEDULES, *OPTIMIZERS, *DATASETS]:
        assert f"| `{name}` |" in README, name
