"""``async-uploader completion SHELL`` and ``async-uploader man``: the shell's view of the parser.

Both are made from the argument parser itself, so they never drift from it: the completion scripts by shtab (a
small, maintained library that turns an argparse parser into bash, zsh and tcsh scripts; fish is written here
from the same parser), the man page by the roff writer below.
"""

from __future__ import annotations

import argparse
import datetime
import re
import sys
from collections.abc import Callable, Iterable

from .. import __version__
from ..core.errors import UsageError
from .common import EXIT_OK, PROG

__all__ = ["PLAIN_COMMANDS", "completion_script", "man_page"]

SHELLS = ("bash", "zsh", "fish")


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _help_of(parser: argparse.ArgumentParser, name: str) -> str:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                if choice.dest == name:
                    return choice.help or ""
    return ""


def _options(parser: argparse.ArgumentParser) -> Iterable[argparse.Action]:
    return (action for action in parser._actions if action.option_strings and action.help != argparse.SUPPRESS)


def _fish(parser: argparse.ArgumentParser) -> str:
    """A fish completion script: the commands, then each command's long options (with their help)."""
    commands = _subcommands(parser)
    lines = [f"# fish completion for {PROG}, made from its argument parser", f"complete -c {PROG} -f"]
    names = " ".join(commands)
    for name in commands:
        summary = _help_of(parser, name).replace("'", "\\'")
        lines.append(f"complete -c {PROG} -n 'not __fish_seen_subcommand_from {names}' -a {name} -d '{summary}'")
    for name, command in commands.items():
        for action in _options(command):
            for option in action.option_strings:
                if not option.startswith("--"):
                    continue
                text = (action.help or "").split(";")[0].replace("'", "\\'")[:80]
                wants = " -r" if action.nargs != 0 else ""
                lines.append(
                    f"complete -c {PROG} -n '__fish_seen_subcommand_from {name}' -l {option[2:]}{wants} -d '{text}'"
                )
    return "\n".join(lines) + "\n"


def completion_script(parser: argparse.ArgumentParser, shell: str) -> str:
    """The completion script of ``parser`` for ``shell`` (bash, zsh or fish)."""
    if shell == "fish":
        return _fish(parser)
    try:
        import shtab  # noqa: PLC0415 - only this command needs it
    except ImportError:
        raise UsageError(
            "completion scripts for bash and zsh need the shtab package, a dependency of async-uploader: "
            "reinstall it (pip install async-uploader)"
        ) from None
    script: str = shtab.complete(parser, shell=shell)
    return script


# -- the man page ----------------------------------------------------------------------------------------------


def _roff(text: str) -> str:
    """Text escaped for roff: backslashes, leading dots and quotes, dashes of options."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return re.sub(r"^([.'])", r"\\&\1", text, flags=re.MULTILINE)


def _usage(parser: argparse.ArgumentParser) -> str:
    return parser.format_usage().removeprefix("usage: ").rstrip()


def _option_lines(parser: argparse.ArgumentParser) -> list[str]:
    lines: list[str] = []
    for action in _options(parser):
        metavar = "" if action.nargs == 0 else f" {action.metavar or action.dest.upper()}"
        names = ", ".join(f"\\fB{_roff(option)}\\fR" for option in action.option_strings)
        help_text = (action.help or "").replace("%%", "%")
        if "%(default)" in help_text:
            help_text = help_text.replace("%(default)s", str(action.default))
        lines += [".TP", f"{names}{_roff(metavar)}", _roff(help_text)]
    return lines


def man_page(parser: argparse.ArgumentParser, today: datetime.date | None = None) -> str:
    """The man page (section 1, roff) of ``parser``: synopsis, every command with its options, exit codes."""
    today = today or datetime.date.today()
    lines = [
        f'.TH {PROG.upper()} 1 "{today.isoformat()}" "{PROG} {__version__}" "User Commands"',
        ".SH NAME",
        f"{_roff(PROG)} \\- {_roff(parser.description or '')}",
        ".SH SYNOPSIS",
        f".B {_roff(PROG)}",
        "COMMAND [OPTIONS]",
        ".SH COMMANDS",
    ]
    for name, command in _subcommands(parser).items():
        lines += [".SS " + _roff(f"{PROG} {name}"), _roff(command.description or _help_of(parser, name)), ".PP"]
        lines += [".nf", _roff(_usage(command)), ".fi"]
        lines += _option_lines(command)
        if command.epilog and command.epilog != parser.epilog:
            lines += [".PP", ".nf", _roff(command.epilog.strip()), ".fi"]
    lines += [".SH EXIT STATUS AND ENVIRONMENT", ".nf", _roff((parser.epilog or "").strip()), ".fi"]
    lines += [".SH SEE ALSO", "The README of the project, section \\(lqCommand line\\(rq."]
    return "\n".join(lines) + "\n"


def _cmd_completion(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    sys.stdout.write(completion_script(parser, args.shell))
    return EXIT_OK


def _cmd_man(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    sys.stdout.write(man_page(parser))
    return EXIT_OK


PLAIN_COMMANDS: dict[str, Callable[[argparse.Namespace, argparse.ArgumentParser], int]] = {
    "completion": _cmd_completion,
    "man": _cmd_man,
}
"""The commands that need no event loop and no service: name -> function(args, parser) -> exit code."""
