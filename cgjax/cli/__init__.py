"""The ``cgjax`` command line.

Each command group lives in its own module of this package and registers itself with
:func:`register` (``add_parser(subparsers)`` returning nothing; the parser's ``func`` default is
called with the parsed arguments). Errors a user can cause are :class:`cgjax.errors.CgjaxError`:
they are printed as one line on stderr and exit with status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from cgjax.errors import CgjaxError

# Modules that define ``add_parser(subparsers)``; each is imported lazily when the CLI starts.
COMMAND_MODULES = (
    "cgjax.cli.cohort",     # cgjax cohort synth|describe
    "cgjax.cli.models",     # cgjax train|impute|quickstart
    "cgjax.cli.evaluate",   # cgjax evaluate
    "cgjax.cli.prepare",    # cgjax prepare xena|matrices
    "cgjax.cli.info",       # cgjax info
)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, unless it is None or False (nothing to show) or the help text
    already states it."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default is None or action.default is False or "default" in text:
            return text
        return super()._get_help_string(action)


def _set_formatter(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = HelpFormatter
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for p in action.choices.values():
                _set_formatter(p)


def build_parser() -> argparse.ArgumentParser:
    from cgjax import __version__

    parser = argparse.ArgumentParser(prog="cgjax", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"cgjax {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:  # a command group not built yet
            if e.name == name:
                continue
            raise
        module.add_parser(sub)
    _set_formatter(parser)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except CgjaxError as e:
        print(f"cgjax {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cgjax {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
