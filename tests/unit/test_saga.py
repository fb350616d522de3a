"""The saga table (models/saga.py) covers every internal step, and the README shows it."""

from __future__ import annotations

import typing
from pathlib import Path

from models import saga, steps

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_internal_step_has_its_place_in_a_saga() -> None:
    kinds = set(typing.get_args(steps.OwnerStep))
    listed = {each.step for table in saga.SAGAS.values() for each in table if each.step is not None}
    assert listed == kinds


def test_the_readme_shows_the_saga_tables_as_they_are() -> None:
    assert saga.render() in README.read_text(), "README.md: paste models.saga.render() in its place"
