"""README's client section and the client's help agree (issue 17): every example command line
parses with the client's own parser, and every command, action and option of the parser is in
the section."""
from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

from xpresso_env.client.parser import build_parser

ROOT = Path(__file__).resolve().parents[2]


def _section() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("\n## The xpresso client\n")
    return readme[start:readme.index("\n## ", start + 1)]


def _examples(section: str) -> list[list[str]]:
    """The `xpresso ...` command lines of the section's shell block."""
    block = section[section.index("```sh\n") + 6:]
    block = block[:block.index("```")]
    commands = []
    for line in block.splitlines():
        line = line.split("  #")[0].split(" # ")[0]
        line = re.sub(r'eval "\$\((.*)\)"', r"\1", line)
        for part in re.split(r"&&|\|", line):
            words = shlex.split(part)
            if words and words[0] == "xpresso":
                commands.append(words[1:])
    return commands


def _tree(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*path, name), sub
                yield from _tree(sub, (*path, name))


def test_every_example_parses():
    examples = _examples(_section())
    assert len(examples) >= 14
    parser = build_parser()
    for words in examples:
        try:
            parser.parse_args(words)
        except SystemExit:
            raise AssertionError(f"README's `xpresso {' '.join(words)}` does not parse") from None


def test_every_command_action_and_option_is_in_the_section():
    section = _section()
    for path, sub in _tree(build_parser()):
        if len(path) == 1:
            assert f"xpresso {path[0]}" in section or f"`{path[0]}" in section, path
        else:
            assert re.search(rf"\b{re.escape(path[-1])}\b", section), path
        if path[-1] in ("add", "edit"):
            continue  # a record's fields, one option each: `xpresso harnesses add --help`
        for action in sub._actions:
            for option in action.option_strings:
                if option.startswith("--") and option != "--help":
                    assert option in section, (path, option)
