"""python -m commkernels {info, bench, demo}"""

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
    demo = sub.add_parser("demo", help="decentralized, Byzantine-robust, compressed training of a MoE classifier "
                          "on scikit-learn's digits (all four families; needs the demo extra)")
    from .demo._cli import add_arguments as add_demo_arguments

    add_demo_arguments(demo)
    args = parser.parse_args(argv)
    if args.command == "info":
        from . import info
        from ._info import format_info

        print(format_info(info()))
        return 0
    if args.command == "demo":
        from .demo._cli import run as run_demo

        return run_demo(args)
    from .bench.cli import run

    return run(args)


if __name__ == "__main__":
    sys.exit(main())
