"""The command line: ``python -m fcnlib COMMAND`` (or ``fcnlib COMMAND`` once installed).

Each command is one ``_add_*`` function that registers its subparser and sets ``run``, the
function that carries it out; add a command by appending its ``_add_*`` to ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path


def _download(args: argparse.Namespace) -> None:
    from fcnlib import download

    fetch = {"camvid": download.download_camvid, "voc": download.download_voc}[args.dataset]
    folder = fetch(args.root)
    print(f"{args.dataset} is ready and verified in {folder}")


def _add_download(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "download",
        help="download a dataset into the data root and verify it",
        description="Download a dataset, verify it and unpack it where fcnlib.data reads it. "
        "An interrupted download resumes when the command is run again.",
    )
    parser.add_argument(
        "dataset", choices=["camvid", "voc"], help="camvid, or voc (VOC 2012 + SBD)"
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=None,
        help="folder to put it in (default: $FCNLIB_DATA_ROOT, else the repository's data/)",
    )
    parser.set_defaults(run=_download)


COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_add_download]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every command in ``COMMANDS`` registered."""
    parser = argparse.ArgumentParser(
        prog="fcnlib", description="Fully Convolutional Networks: the book's command line."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; bad input prints one line on stderr and returns 2."""
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except (OSError, ValueError) as error:
        print(f"fcnlib {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fcnlib {args.command}: interrupted; run it again to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
