"""The metaplast command line: one module per command group, each importing what its command
needs only when the command runs, so that ``metaplast --help`` answers at once."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from metaplast.cli import board, session, transfer, unit
from metaplast.cli.options import flag

DESCRIPTION = (
    "metaplast: metaplastic on-chip learning with memristors. Train through the digital unit "
    "(in process, on a board or a simulated board, with a crossbar model), build its gateware "
    "and bitstreams, serve simulated boards, and simulate ex-situ transfers onto crossbars."
)

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "train": session.run_train,
    "sweep": session.run_sweep,
    "gateware": unit.run_gateware,
    "build": unit.run_build,
    "board-sim": board.run_board_sim,
    "info": board.run_info,
    "link-faults": board.run_link_faults,
    "transfer": transfer.run_transfer,
    "evaluate": session.run_evaluate,
    "summary": session.run_summary,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="metaplast", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)
    session.add_train(sub)
    session.add_sweep(sub)
    unit.add_gateware(sub)
    unit.add_build(sub)
    board.add_board(sub)
    board.add_link_faults(sub)
    transfer.add_transfer(sub)
    session.add_evaluate(sub)
    session.add_summary(sub)
    return parser


def _flags(parser: argparse.ArgumentParser, command: str) -> dict[str, str]:
    """A command's options by the configuration field each sets (``from_run``: ``--from``)."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {a.dest: a.option_strings[-1] for a in sub.choices[command]._actions if a.option_strings}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from metaplast.errors import ConfigError
    from metaplast.host.datasets import DatasetError
    from metaplast.host.link import LinkError

    try:
        return COMMANDS[args.command](args)
    except ConfigError as exc:
        flags = _flags(parser, args.command)
        message = exc.naming(lambda field: flags.get(field, flag(field)))
        print(f"metaplast {args.command}: error: {message}", file=sys.stderr)
        return 2
    except (DatasetError, LinkError) as exc:
        print(f"metaplast {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a path that cannot be written, a port that is not there
        print(f"metaplast {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "interrupted; the last finished epoch is in the checkpoint (use --resume)",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
