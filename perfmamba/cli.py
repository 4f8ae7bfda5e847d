"""`perfmamba` command line: each subcommand parses its arguments, calls one public function, prints the result."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

Handler = Callable[[argparse.Namespace], int]
_HANDLERS: dict[str, Handler] = {}


def _command(name: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        _HANDLERS[name] = fn
        return fn

    return register


# info ---------------------------------------------------------------------------------------------------
def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="versions, devices and which kernel backends are available (and why not)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


@_command("info")
def _info(args: argparse.Namespace) -> int:
    from perfmamba.results import environment

    env = environment()
    if args.json:
        print(json.dumps(env, indent=2))
        return 0
    backends = env.pop("backends")
    width = max(map(len, env))
    for key, value in env.items():
        print(f"{key:<{width}}  {value}")
    print("\nkernel backends:")
    for op, status in backends.items():
        print(f"  {op:<24} " + "; ".join(f"{name}: {state}" for name, state in status.items()))
    return 0


_ADDERS = [_add_info]


def build_parser() -> argparse.ArgumentParser:
    from perfmamba import __version__

    parser = argparse.ArgumentParser(
        prog="perfmamba",
        description="Profile, prune and benchmark selective state space models (Mamba-1 / Mamba-2).",
    )
    parser.add_argument("--version", action="version", version=f"perfmamba {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in _ADDERS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _HANDLERS[args.command](args)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        # Bad input is the user's to fix: one clear line, no traceback.
        print(f"perfmamba {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
