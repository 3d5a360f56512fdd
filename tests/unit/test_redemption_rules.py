"""The program file's ``redemption`` keys: the smallest redemption and its step, each refusal one sentence."""

from __future__ import annotations

import pytest

from campaigns.program import load_program
from core.errors import DefinitionError
from core.settings import DEFAULT_PROGRAM_FILE


def test_the_shipped_program_redeems_from_100_points_by_100():
    rules = load_program(DEFAULT_PROGRAM_FILE).redemption
    assert (rules.minimum, rules.step) == (100, 100)
    assert rules.problem(300) is None
    assert rules.problem(50) == "A redemption takes at least 100 points; ask for 100 or more."
    assert rules.problem(250) == "A redemption takes a multiple of 100 points; 250 is not one."


@pytest.mark.parametrize(("keys", "words"), [
    ("  minimum: 150\n  step: 100", "redemption minimum 150 is not a multiple of step 100"),
    ("  minimum: 100\n  step: 0", "greater than or equal to 1"),
])
def test_a_bad_redemption_section_is_one_sentence_with_its_line(tmp_path, keys, words):
    path = tmp_path / "program.yaml"
    text = DEFAULT_PROGRAM_FILE.read_text()
    path.write_text(text.replace("  minimum: 100                  # the fewest points one redemption takes\n"
                                 "  step: 100                     # and always a multiple of this (100, 200, 300...)",
                                 keys))
    with pytest.raises(DefinitionError) as error:
        load_program(path)
    assert words in str(error.value) and str(error.value).startswith(f"{path}, line ")
