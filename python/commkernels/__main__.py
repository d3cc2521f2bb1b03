"""python -m commkernels {info, bench}"""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m commkernels")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="version, compiled backends, build flags")
    bench = sub.add_parser("bench", help="microbenchmarks against the best baseline, same data, same process")
    from .bench.cli import add_arguments

    add_arguments(bench)
    args = parser.parse_args(argv)
    if args.command == "info":
        from . import info
        from ._info import format_info

        print(format_info(info()))
        return 0
    from .bench.cli import run

    return run(args)


if __name__ == "__main__":
    sys.exit(main())
