"""Results out: the table (text or markdown), the machine line, JSON and the plot. No torch needed, so a
saved JSON can be shown again anywhere (``--from-json PATH [--markdown] [--plot PATH]``)."""

from __future__ import annotations

import json
import math
import re
import textwrap

HEADERS = ("ours ms", "baseline", "baseline ms", "speed-up", "floor", "GB/s", "of probe", "others")


def _num(value: float) -> str:
    """Three significant digits (two below 0.1), never in exponent notation."""
    if value == 0 or abs(value) >= 100:
        return f"{value:.0f}"
    digits = 2 - math.floor(math.log10(abs(value))) - (abs(value) < 0.1)
    return f"{value:.{digits}f}"


def _bytes(n: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{_num(n / scale)} {unit}"
    return f"{n:.0f} B"


def _percent(fraction: float) -> str:
    return f"{_num(100 * fraction)}%"


def _others(case: dict) -> str:
    """How much CPU other processes took while the case ran, in CPUs (0.5: half a core); '?' if unknown."""
    if case.get("others_cpu_s") is None or not case.get("wall_s"):
        return "?"
    return f"{case['others_cpu_s'] / case['wall_s']:.2f}"


def rows(results: dict) -> tuple[list[str], list[list[str]]]:
    """The table's header and rows: family, kernel, the cases' parameter columns, then HEADERS."""
    cases = results["cases"]
    param_names = list(dict.fromkeys(name for case in cases for name in case["columns"]))
    header = ["family", "kernel", *param_names, *HEADERS]
    body = []
    for case in cases:
        best = next(b for b in case["baselines"] if b["name"] == case["best_baseline"])
        body.append([case["family"], case["kernel"], *(case["columns"].get(name, "") for name in param_names),
                     _num(case["ours"]["median_ms"]), best["name"], _num(best["median_ms"]),
                     f"{_num(case['speedup'])}x", _bytes(case["floor_bytes"]), _num(case["gbps"]),
                     _percent(case["fraction_of_probe"]), _others(case)])
    return header, body


def table(results: dict, markdown: bool = False) -> str:
    header, body = rows(results)
    text_columns = len(header) - len(HEADERS)  # family, kernel, parameters: left-aligned, as is "baseline"
    left = [i < text_columns or header[i] == "baseline" for i in range(len(header))]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join(":--" if l else "--:" for l in left) + "|"]
        cell = lambda text: text.replace("|", "\\|")  # noqa: E731  (a | inside a cell would split it)
        return "\n".join(lines + ["| " + " | ".join(map(cell, row)) + " |" for row in body])
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    fmt = lambda row: "  ".join(c.ljust(w) if l else c.rjust(w) for c, w, l in zip(row, widths, left))  # noqa: E731
    return "\n".join([fmt(header), "  ".join("-" * w for w in widths), *map(fmt, body)])


def _count(n: int) -> str:
    return f"2^{n.bit_length() - 1}" if n & (n - 1) == 0 else str(n)


def _git(machine: dict) -> str:
    commit = (machine.get("source") or {}).get("git")
    return f"git {commit}, " if commit else ""


def machine_line(results: dict) -> str:
    m, probe, cpu = results["machine"], results["probe"], results["machine"]["commkernels"]["cpu"]
    threads = m["threads"]
    where = m["gpu"]["name"] if m.get("gpu") else f"{m['cpu_model']}, {m['usable_cpus']} CPUs"
    parts = [
        where,
        f"{m['memory_gib']} GiB RAM" if m.get("memory_gib") else None,
        f"threads: commkernels {threads['commkernels']}, torch {threads['torch']}",
        f"commkernels {m['commkernels']['version']} ({_git(m)}{cpu.get('compiler')}, {cpu.get('build_type')})",
        f"torch {m['torch']}, numpy {m['numpy']}, Python {m['python']}",
        f"probe {probe['gbps']:.1f} GB/s (STREAM triad, {_count(probe['elements'])} float32 per array, "
        f"best of {probe['runs']})",
        m["date"],
    ]
    return "; ".join(p for p in parts if p)


def markdown(results: dict) -> str:
    s = results["settings"]
    run = f"device {s['device']}{', quick' if s['quick'] else ''}, {s['elapsed_s']} s"
    if s.get("others_cpu_s") is not None:
        run += f", other processes used {s['others_cpu_s'] / s['elapsed_s']:.0%} of a CPU meanwhile"
    return f"Machine: {machine_line(results)}. Run: {run}.\n\n{table(results, markdown=True)}"


def text(results: dict) -> str:
    return f"Machine: {machine_line(results)}\n\n{table(results)}"


def save_json(results: dict, path) -> None:
    text = json.dumps(results, indent=1)
    text = re.sub(r"\[[-+\d\s.,e]*\]", lambda m: " ".join(m.group(0).split()), text)  # number lists on one line
    with open(path, "w") as f:
        f.write(text + "\n")


def load_json(path) -> dict:
    with open(path) as f:
        return json.load(f)


def plot(results: dict, path) -> None:
    """Per kernel: time against d (ours solid, best baseline dashed) and ours as a fraction of the probe."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    groups: dict[tuple, dict[str, list]] = {}
    for case in results["cases"]:
        series = " ".join(v for k, v in case["columns"].items() if k not in ("d", "k"))  # a line along d
        groups.setdefault((case["family"], case["kernel"]), {}).setdefault(series, []).append(case)
    fig, axes = plt.subplots(len(groups), 2, figsize=(12, 3.4 * len(groups)), squeeze=False)
    for (family, kernel), (ax_time, ax_bw) in zip(groups, axes):
        for n, (series, cases) in enumerate(groups[(family, kernel)].items()):
            cases = sorted(cases, key=lambda c: c["params"]["d"])
            d = [c["params"]["d"] for c in cases]
            color = f"C{n}"
            ax_time.plot(d, [c["ours"]["median_ms"] for c in cases], "o-", color=color, label=f"ours {series}")
            best = [next(b for b in c["baselines"] if b["name"] == c["best_baseline"])["median_ms"] for c in cases]
            ax_time.plot(d, best, "s--", color=color, alpha=0.6, label=f"best baseline {series}")
            ax_bw.plot(d, [100 * c["fraction_of_probe"] for c in cases], "o-", color=color, label=series)
        ax_time.set(xscale="log", yscale="log", xlabel="d", ylabel="median ms", title=f"{family}.{kernel}: time")
        ax_bw.set(xscale="log", yscale="log", xlabel="d", ylabel="% of probe bandwidth",
                  title=f"{family}.{kernel}: floor bytes / time, vs probe")
        ax_time.legend(fontsize=7)
        ax_bw.legend(fontsize=7)
        for ax in (ax_time, ax_bw):
            ax.grid(True, which="both", alpha=0.3)
            ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1, 2, 5)))
            ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    fig.suptitle(textwrap.fill(machine_line(results), 160), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
