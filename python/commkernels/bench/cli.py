"""``python -m commkernels bench``: the options and the run. Imports torch only when it runs."""

from __future__ import annotations

import argparse
import importlib.util
import sys

from .registry import FAMILIES


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(float(s)) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes like 1e6,1e7, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected positive sizes, got {text!r}")
    return sizes


def _positive(text: str) -> int:
    value = int(float(text))
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--family", action="append", choices=FAMILIES,
                        help="run only this family (repeatable; default: all)")
    parser.add_argument("--quick", action="store_true", help="smaller sizes (no d = 1e8), shorter timing")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="default: cpu")
    parser.add_argument("--json", metavar="PATH", help="save every number (machine, probe, raw samples) as JSON")
    parser.add_argument("--plot", metavar="PATH", help="draw the results (needs matplotlib)")
    parser.add_argument("--markdown", action="store_true", help="print the machine line and a markdown table")
    parser.add_argument("--from-json", metavar="PATH", help="run nothing: show the results saved in PATH")
    parser.add_argument("--repeat", metavar="N", type=_positive,
                        help="exactly N timed calls per function (default: until ~0.5 s, 0.1 s with --quick)")
    parser.add_argument("--threads", metavar="N", type=_positive,
                        help="CPU threads for commkernels and torch alike (default: as started)")
    parser.add_argument("--sizes", metavar="D,D,...", type=_sizes,
                        help="vector sizes instead of the defaults (1e6,1e7,1e8; 1e6,1e7 with --quick)")
    parser.add_argument("--probe-size", metavar="N", type=_positive, default=1 << 27,
                        help="float32 elements per array of the bandwidth probe (default: 2^27)")


def _error(message: str) -> int:
    print(f"python -m commkernels bench: error: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    from . import report

    if args.plot and importlib.util.find_spec("matplotlib") is None:
        return _error("--plot needs matplotlib: pip install matplotlib (or commkernels[plot])")
    if args.from_json:
        try:
            results = report.load_json(args.from_json)
        except (OSError, ValueError) as error:
            return _error(f"--from-json: {error}")
    else:
        if importlib.util.find_spec("torch") is None:
            return _error("the benchmarks need torch: pip install torch")
        from . import harness

        try:
            harness.check_device(args.device)
        except RuntimeError as error:
            return _error(str(error))
        results = harness.run_cases(families=args.family, device=args.device, quick=args.quick, sizes=args.sizes,
                                    repeat=args.repeat, threads=args.threads, probe_elements=args.probe_size)
        if args.json:
            report.save_json(results, args.json)
    print(report.markdown(results) if args.markdown else report.text(results))
    if args.plot:
        report.plot(results, args.plot)
    return 0
