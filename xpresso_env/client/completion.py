"""`xpresso completion bash|zsh`: a completion script made from the client's own parser, so it
never lists a command or option the client does not have.

The script knows, for each command path (``""``, ``"harnesses"``, ``"harnesses list"``...), the
words that may follow it (subcommands, or a positional's fixed choices) and its options. zsh runs
the same function through its ``bashcompinit`` layer.
"""
from __future__ import annotations

import argparse
from typing import Iterator

SHELLS = ("bash", "zsh")


def _paths(parser: argparse.ArgumentParser, path: str = "") -> Iterator[tuple[str, list[str], list[str]]]:
    """(command path, words that may follow, options) for the parser and every subparser."""
    words: list[str] = []
    options: list[str] = []
    children: list[tuple[str, argparse.ArgumentParser]] = []
    for action in parser._actions:  # argparse has no public walk of its parsers
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                words.append(name)
                children.append((name, sub))
        elif action.option_strings:
            options.extend(o for o in action.option_strings if o.startswith("--") or len(action.option_strings) == 1)
        elif action.choices:
            words.extend(str(c) for c in action.choices)
    yield path, words, sorted(set(options))
    for name, sub in children:
        yield from _paths(sub, f"{path} {name}".strip())


def _case(pairs: list[tuple[str, list[str]]]) -> str:
    lines = [f'        "{key}") echo "{" ".join(values)}" ;;' for key, values in pairs if values]
    return "\n".join(lines)


def bash_script(parser: argparse.ArgumentParser, prog: str = "xpresso") -> str:
    table = list(_paths(parser))
    fn = "_" + prog.replace("-", "_")
    return f"""# {prog} completion for bash: eval "$({prog} completion bash)" (e.g. in ~/.bashrc)
{fn}_words() {{
    case "$1" in
{_case([(path, words) for path, words, _ in table])}
    esac
}}
{fn}_options() {{
    case "$1" in
{_case([(path, options) for path, _, options in table])}
    esac
}}
{fn}() {{
    [[ -n "${{ZSH_VERSION:-}}" ]] && setopt localoptions ksharrays shwordsplit  # bash's arrays and splitting
    local cur="${{COMP_WORDS[COMP_CWORD]}}" path="" word next i
    for ((i = 1; i < COMP_CWORD; i++)); do
        word="${{COMP_WORDS[i]}}"
        [[ "$word" == -* ]] && continue
        next="${{path:+$path }}$word"
        # a word that names a deeper command moves down; anything else (an option's value,
        # a NAME or an id) leaves the path where it is
        if [[ " $({fn}_words "$path") " == *" $word "* ]] && [[ -n "$({fn}_words "$next")$({fn}_options "$next")" ]]; then
            path="$next"
        fi
    done
    # filtered here, not by compgen: zsh's compgen (bashcompinit) leaves that to zsh
    COMPREPLY=()
    if [[ "$cur" == -* ]]; then next="$({fn}_options "$path")"; else next="$({fn}_words "$path")"; fi
    for word in $(echo "$next"); do
        [[ "$word" == "$cur"* ]] && COMPREPLY+=("$word")
    done
    return 0
}}
complete -F {fn} {prog}
"""


def zsh_script(parser: argparse.ArgumentParser, prog: str = "xpresso") -> str:
    return (f"#compdef {prog}\n"
            f"# {prog} completion for zsh: eval \"$({prog} completion zsh)\" (e.g. in ~/.zshrc, after compinit)\n"
            "autoload -U +X compinit && { (( $+functions[compdef] )) || compinit }\n"
            "autoload -U +X bashcompinit && bashcompinit\n"
            + bash_script(parser, prog).split("\n", 1)[1])


def script(shell: str, parser: argparse.ArgumentParser) -> str:
    return bash_script(parser) if shell == "bash" else zsh_script(parser)
