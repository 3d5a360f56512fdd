"""A key the program file no longer takes is refused with one sentence at its own line."""

from __future__ import annotations

import pytest

from campaigns.program import load_program
from core.errors import DefinitionError
from core.settings import DEFAULT_PROGRAM_FILE


def test_notify_downgrades_is_refused_with_what_to_do(tmp_path):
    text = DEFAULT_PROGRAM_FILE.read_text(encoding="utf-8")
    assert "notify_downgrades" not in text  # the shipped file no longer has it
    grace = next(line for line in text.splitlines() if line.startswith("  downgrade_grace_days:"))
    program = tmp_path / "program.yaml"
    program.write_text(text.replace(grace, f"{grace}\n  notify_downgrades: false", 1), encoding="utf-8")
    line = program.read_text(encoding="utf-8").splitlines().index("  notify_downgrades: false") + 1

    with pytest.raises(DefinitionError) as error:
        load_program(program)

    message = str(error.value)
    assert message.startswith(f"{program}, line {line}:"), message
    assert "notify_downgrades was never acted on" in message and "delete that line" in message
    assert "\n" not in message


def test_the_shipped_program_has_no_notify_downgrades():
    assert "notify_downgrades" not in load_program(DEFAULT_PROGRAM_FILE).tiers.model_dump()


def test_a_section_given_as_one_value_is_asked_for_as_a_mapping_without_a_class_name(tmp_path):
    text = DEFAULT_PROGRAM_FILE.read_text(encoding="utf-8")
    start = text.index("\nbrand:") + 1
    rest = text[start:].splitlines(keepends=True)
    end = next((i for i, line in enumerate(rest[1:], 1) if line.strip() and not line.startswith((" ", "#"))),
               len(rest))  # the section's end: the next top-level key, or the end of the file
    program = tmp_path / "program.yaml"
    program.write_text(text[:start] + "brand: Maison Lumière\n" + "".join(rest[end:]), encoding="utf-8")
    line = program.read_text(encoding="utf-8").splitlines().index("brand: Maison Lumière") + 1

    with pytest.raises(DefinitionError) as error:
        load_program(program)

    message = str(error.value)
    assert message.startswith(f"{program}, line {line}: 'brand' is wrong: it should be a mapping"), message
    assert "instance of" not in message and "Brand" not in message
