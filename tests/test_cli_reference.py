"""The README's CLI reference names every flag of every `fedmq` command (the guide's rule)."""

from __future__ import annotations

import argparse
from pathlib import Path

from fedmq.coordinator.cli import _parser

README = Path(__file__).resolve().parents[1] / "README.md"


def _flags(parser: argparse.ArgumentParser) -> dict[str, set[str]]:
    """Each command's long option strings, the top-level parser's under ''."""
    found: dict[str, set[str]] = {"": set()}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[name] = {o for a in sub._actions for o in a.option_strings if o.startswith("--")}
        else:
            found[""] |= {o for o in action.option_strings if o.startswith("--")}
    return found


def test_every_flag_of_every_command_is_in_the_readme() -> None:
    # Given the flags argparse knows for each fedmq command
    text = README.read_text(encoding="utf-8")
    # When each is looked up in the README
    missing = sorted(f"{command or 'fedmq'} {flag}" for command, flags in _flags(_parser()).items()
                     for flag in flags - {"--help"} if flag not in text)
    # Then none is missing
    assert not missing, f"flags missing from the README's CLI reference: {missing}"
