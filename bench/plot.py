"""Charts of the benchmarks' JSON results: matplotlib (Agg backend, no display), PNG files.

Usage::

    .venv/bin/python -m bench.plot bench/results/derive-latest.json       # -> derive-latest.png
    .venv/bin/python -m bench.plot bench/results/abuse-after.json -o /tmp/abuse.png
    .venv/bin/python -m bench.plot bench/results/abuse-after.json \\
        --compare bench/results/abuse-before.json -o bench/results/abuse-compare.png

Every chart is drawn from the already-parsed JSON document a benchmark wrote (its
``"benchmark"`` field picks the chart), so any committed result can be redrawn without running
the benchmark again. The benchmarks call :func:`chart_beside` after writing their JSON: it
writes ``<name>.png`` next to every ``<name>.json`` and only prints a line when matplotlib is
missing (``pip install -e '.[bench]'``) or the chart fails; the JSON is written first either way.

matplotlib is imported lazily, on the first chart, so that the benchmarks run without it.
Figures are built with the object-oriented API (:class:`matplotlib.figure.Figure`, no pyplot
state), and every ``*_figure`` function returns the figure unsaved, for the tests to inspect.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

Document = dict[str, Any]

INSTALL_HINT = "pip install -e '.[bench]'"
DPI = 100
BASELINE_COLOR = "tab:gray"
NOVAKMS_COLOR = "tab:blue"
BEFORE_COLOR = "tab:red"
AFTER_COLOR = "tab:green"


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed: no chart."""


def new_figure(width: float, height: float) -> Figure:
    """An empty figure on the Agg backend; :class:`PlotUnavailable` without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise PlotUnavailable(f"matplotlib is not installed: no chart ({INSTALL_HINT})") from exc
    return Figure(figsize=(width, height), dpi=DPI)


def save(fig: Figure, paths: Iterable[Path]) -> list[Path]:
    """Lay out ``fig`` and write it as PNG to every path (parents created); returns them."""
    fig.tight_layout()
    written = []
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png", dpi=DPI)
        written.append(path)
    return written


def _grouped_bars(
    ax: Axes,
    labels: Sequence[str],
    series: Sequence[tuple[str, Sequence[float], dict[str, Any]]],
    *,
    width: float = 0.8,
) -> list[list[float]]:
    """One bar group per label, one bar per series (name, values, bar keyword arguments).

    Returns each series' bar positions (for annotations).
    """
    step = width / len(series)
    positions = []
    for index, (name, values, style) in enumerate(series):
        offset = (index - (len(series) - 1) / 2) * step
        xs = [p + offset for p in range(len(labels))]
        ax.bar(xs, values, step, label=name, **style)
        positions.append(xs)
    ax.set_xticks(list(range(len(labels))), labels)
    return positions


def _positive(values: Iterable[float]) -> list[float]:
    """Values for a log axis: zero or negative (nothing measured) becomes NaN (no bar)."""
    return [v if v > 0 else math.nan for v in values]


# --- derive (bench_derive.py) -----------------------------------------------------------------

#: Colours of the novakms targets after the first (``--also`` checkouts), in order.
EXTRA_COLORS = ("tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink")
#: The server-CPU goal of issue 15 at 64 in flight, drawn on the ratio panel.
CPU_RATIO_GOAL = 1.7


def _ratio_of(real: Document, echo: Document, key: str) -> float | None:
    a, b = real.get(key), echo.get(key)
    return a / b if a is not None and b else None


def derive_scenarios(document: Document) -> list[Document]:
    """The scenarios of a derive result as ``{name, kind, targets: {label: figures}, ratio}``.

    Results of format 2 (``"format": 2``) are already shaped so; older ones (``baseline`` and
    ``novakms`` per scenario, the handshake apart) are converted, their ratios recomputed from
    the figures where they lack them.
    """
    if document.get("format", 1) >= 2:
        return list(document["scenarios"])
    old = [dict(s, kind="closed") for s in document["scenarios"]]
    if document.get("handshake"):
        old.append(dict(document["handshake"], name="handshake", kind="handshake"))
    converted = []
    for s in old:
        echo, real = s["baseline"], s["novakms"]
        ratio = dict(s.get("ratio") or {})
        for name, key in (
            ("throughput", "per_second"),
            ("p50", "p50_ms"),
            ("p99", "p99_ms"),
            ("server_cpu_per_op", "server_cpu_us_per_op"),
        ):
            if ratio.get(name) is None:
                ratio[name] = _ratio_of(real, echo, key)
        converted.append(
            {
                "name": s["name"],
                "kind": s["kind"],
                "targets": {"echo": echo, "novakms": real},
                "ratio": {"novakms": ratio},
            }
        )
    return converted


def _target_colors(labels: Sequence[str]) -> dict[str, str]:
    colors = {"echo": BASELINE_COLOR}
    extra = iter(EXTRA_COLORS * 4)
    for label in labels:
        if label not in colors:
            colors[label] = NOVAKMS_COLOR if label == "novakms" else next(extra)
    return colors


def derive_figure(document: Document) -> Figure:
    """Per scenario: throughput, p50 / p99, and server CPU per request over the echo's.

    Every target of the run (the echo, ``novakms``, each ``--also`` checkout) side by side;
    the handshake scenario (connections, not requests) only on the CPU-ratio panel.
    """
    scenarios = derive_scenarios(document)
    labels = list(scenarios[0]["targets"])
    kms = [label for label in labels if label != "echo"]
    colors = _target_colors(labels)
    requests = [s for s in scenarios if s.get("kind") != "handshake"]
    names = [s["name"] for s in requests]
    fig = new_figure(17, 4.6)
    throughput, latency, cpu = fig.subplots(1, 3)
    positions = _grouped_bars(
        throughput,
        names,
        [
            (
                "echo baseline" if label == "echo" else label,
                [s["targets"][label]["per_second"] for s in requests],
                {"color": colors[label]},
            )
            for label in labels
        ],
    )
    for label, xs in zip(labels, positions, strict=True):
        if label == "echo":
            continue
        for x, s in zip(xs, requests, strict=True):
            value = (s.get("ratio") or {}).get(label, {}).get("throughput")
            if value is not None:
                throughput.annotate(
                    f"x{value:.2f}",
                    (x, s["targets"][label]["per_second"]),
                    ha="center",
                    va="bottom",
                    fontsize=7,
                )
    throughput.set_ylabel("requests / s")
    throughput.set_xlabel("scenario (c = in flight, x = connections; open50: fixed rate)")
    throughput.set_title("throughput (ratio = target / echo)")
    throughput.legend(fontsize=8)
    series = []
    for label in labels:
        for name, alpha in (("p50", 0.55), ("p99", 1.0)):
            series.append(
                (
                    f"{label} {name}",
                    _positive(s["targets"][label][f"{name}_ms"] for s in requests),
                    {"color": colors[label], "alpha": alpha},
                )
            )
    _grouped_bars(latency, names, series)
    latency.set_yscale("log")
    latency.set_ylabel("latency per request, ms (log)")
    latency.set_xlabel("scenario")
    latency.set_title("latency p50 / p99")
    latency.legend(fontsize=7, ncols=2)
    all_names = [s["name"] for s in scenarios]

    def cpu_ratio(s: Document, label: str) -> float:
        value = (s.get("ratio") or {}).get(label, {}).get("server_cpu_per_op")
        return math.nan if value is None else float(value)

    ratio_series = [
        (label, [cpu_ratio(s, label) for s in scenarios], {"color": colors[label]}) for label in kms
    ]
    for (_, values, _), xs in zip(
        ratio_series, _grouped_bars(cpu, all_names, ratio_series), strict=True
    ):
        for x, value in zip(xs, values, strict=True):
            if not math.isnan(value):
                cpu.annotate(f"x{value:.1f}", (x, value), ha="center", va="bottom", fontsize=7)
    cpu.axhline(1.0, color=BASELINE_COLOR, linewidth=1, label="echo (= 1)")
    cpu.axhline(
        CPU_RATIO_GOAL,
        color="black",
        linestyle="--",
        linewidth=1,
        label=f"goal x{CPU_RATIO_GOAL:g} (64 in flight)",
    )
    cpu.set_ylabel("server CPU per request / echo's")
    cpu.set_xlabel("scenario (handshake: per new connection)")
    cpu.set_title("server CPU ratio (the headline)")
    cpu.legend(fontsize=8)
    commit = str((document.get("git") or {}).get("commit") or "")[:10]
    fig.suptitle(f"novakms vs echo baseline  {document.get('timestamp', '')}  {commit}")
    return fig


# --- cluster (bench_cluster.py) ---------------------------------------------------------------


def cluster_figure(document: Document, *, bins: int = 50) -> Figure:
    """Replication lag A -> B: histogram and CDF of the per-key lags (``lag.lags_ms``)."""
    lag = document.get("lag")
    if not lag:
        raise ValueError("no replication lag test in this result (run without --skip-lag)")
    if "lags_ms" not in lag:
        raise ValueError(
            "this result has no per-key lags (lag.lags_ms): it predates them; rerun "
            "bench/bench_cluster.py"
        )
    lags = sorted(float(v) for v in lag["lags_ms"])
    if not lags:
        raise ValueError("no key arrived on node B: no lag to draw")
    fig = new_figure(11, 4.2)
    hist, cdf = fig.subplots(1, 2)
    hist.hist(lags, bins=bins, color=NOVAKMS_COLOR)
    hist.set_xlabel("lag, ms (put returned on A -> first read on B)")
    hist.set_ylabel("keys")
    hist.set_title(f"histogram ({len(lags):,} keys, {bins} bins)")
    fractions = [(i + 1) / len(lags) for i in range(len(lags))]
    cdf.plot(lags, fractions, color=NOVAKMS_COLOR, label="lag CDF")
    for name, style in (("p50", "--"), ("p99", ":")):
        value = lag.get(f"lag_{name}_ms")
        if value is not None:
            for ax in (hist, cdf):
                ax.axvline(value, color="black", linestyle=style, linewidth=1)
            cdf.annotate(f" {name} {value:.1f} ms", (value, 0.05), fontsize=8)
    cdf.set_ylim(0, 1.0)
    cdf.set_xlabel("lag, ms")
    cdf.set_ylabel("fraction of keys readable on B")
    cdf.set_title("cumulative distribution")
    cdf.grid(alpha=0.3)
    fig.suptitle(
        f"novakms replication lag, {lag.get('nodes', 3)} nodes: "
        f"{lag.get('target_rate', 0):.0f} writes/s for {lag.get('duration_s', 0):.0f} s, "
        f"missing {lag.get('missing_after_10s', 0)}"
    )
    return fig


# --- cluster client (bench_cluster_client.py) -------------------------------------------------


def cluster_client_figure(document: Document) -> Figure:
    """Derive throughput per concurrency: one node's Client vs the 3-node ClusterClient."""
    results = document["results"]
    labels = [str(s["concurrency"]) for s in results["single"]]
    fig = new_figure(6, 4)
    ax = fig.subplots()
    _grouped_bars(
        ax,
        labels,
        [
            ("single node (Client)", [s["per_second"] for s in results["single"]], {}),
            ("cluster of 3 (ClusterClient)", [c["per_second"] for c in results["cluster"]], {}),
        ],
        width=0.76,
    )
    ax.set_xlabel("concurrent tasks (one client process)")
    ax.set_ylabel("derive / s")
    ax.set_title("novakms: derive throughput, single node vs cluster client")
    ax.legend()
    return fig


# --- scaling (bench_scaling.py) ---------------------------------------------------------------


def scaling_figure(document: Document) -> Figure:
    """Per scenario, one bar per run (worker count): derive/s (left), the workers' CPU (right)."""
    scenarios = document["scenarios"]
    labels = [s["name"] for s in scenarios]
    counts = [r["workers"] for r in scenarios[0]["results"]]
    repeated = len(set(counts)) < len(counts)  # interleaved runs (--workers 1 2 1 2)
    fig = new_figure(11, 4.2)
    left, right = fig.subplots(1, 2)
    for ax, key, scale in ((left, "per_second", 1.0), (right, "server_cpu_share", 100.0)):
        _grouped_bars(
            ax,
            labels,
            [
                (
                    f"{count} worker{'s' if count > 1 else ''}"
                    + (f", run {i + 1}" if repeated else ""),
                    [(s["results"][i][key] or 0.0) * scale for s in scenarios],
                    {},
                )
                for i, count in enumerate(counts)
            ],
        )
        ax.legend()
    left.set_ylabel("derive / s (all clients)")
    left.set_title("throughput")
    right.axhline(100, color=BASELINE_COLOR, linestyle="--", linewidth=1)
    right.set_ylabel("server CPU, % of one core (all workers)")
    right.set_title("server CPU (dashed: one core)")
    fig.suptitle(
        f"novakms --reuse-port workers; load from {document['settings']['clients']} client "
        f"processes on the same {document['machine']['nproc']} cores"
    )
    return fig


# --- rolling restarts (bench_rolling.py) ------------------------------------------------------


def rolling_figure(document: Document) -> Figure:
    """Per restart (round:port), stacked: wait-safe, SIGTERM -> exited, restart -> serving."""
    steps = document["run"]["steps"]
    labels = [f"r{s['round']}:{s['address'].rsplit(':', 1)[1]}" for s in steps]
    safe = [s["until_safe_s"] + s["safe_s"] for s in steps]
    exit_ = [s["exit_s"] for s in steps]
    serving = [s["serving_s"] for s in steps]
    fig = new_figure(max(6, len(steps) * 0.8), 4)
    ax = fig.subplots()
    ax.bar(labels, safe, label="wait-safe")
    ax.bar(labels, exit_, bottom=safe, label="SIGTERM → exited")
    below = [a + b for a, b in zip(safe, exit_, strict=True)]
    ax.bar(labels, serving, bottom=below, label="restart → serving")
    ax.set_ylabel("seconds")
    ax.set_title("novakms rolling restart: time per node (round:port)")
    ax.legend()
    return fig


# --- abuse (bench_abuse.py) -------------------------------------------------------------------


def _abuse_goals(document: Document) -> tuple[float | None, float | None]:
    """The p99 and max latency goals (ms) of a run: 5 x its idle p99, and 1,000 ms."""
    goals = document.get("goals") or {}
    idle = document.get("idle_p99_ms")
    factor = goals.get("p99_factor_of_idle")
    p99 = idle * factor if idle and factor else None
    return p99, goals.get("max_ms")


def _goal_lines(ax: Axes, document: Document) -> None:
    p99_goal, max_goal = _abuse_goals(document)
    if p99_goal is not None:
        ax.axhline(
            p99_goal,
            color="black",
            linestyle="--",
            linewidth=1,
            label=f"p99 goal ({p99_goal:.0f} ms)",
        )
    if max_goal is not None:
        ax.axhline(
            max_goal,
            color="black",
            linestyle=":",
            linewidth=1,
            label=f"max goal ({max_goal:.0f} ms)",
        )


def _phase_ticks(
    ax: Axes, names: Sequence[str], notes: Sequence[str], failed: Sequence[bool]
) -> None:
    """Phase names as x tick labels with a note line under each; red where a goal failed."""
    ax.set_xticks(
        list(range(len(names))),
        [f"{name}\n{note}" for name, note in zip(names, notes, strict=True)],
        fontsize=7,
        rotation=15,
        ha="right",
        rotation_mode="anchor",
    )
    for tick, bad in zip(ax.get_xticklabels(), failed, strict=True):
        if bad:
            tick.set_color("tab:red")


def abuse_figure(document: Document) -> Figure:
    """Per source mode, per attack phase: the victim's p50 / p99 / max derive latency."""
    modes = document["modes"]
    fig = new_figure(12, 3.8 * len(modes))
    axes = fig.subplots(len(modes), 1, squeeze=False)[:, 0]
    for ax, mode in zip(axes, modes, strict=True):
        rows = mode["phases"]
        labels = [row["phase"] for row in rows]
        _grouped_bars(
            ax,
            labels,
            [
                (name, _positive(row["victim"][f"{name}_ms"] for row in rows), {"color": color})
                for name, color in (("p50", "tab:blue"), ("p99", "tab:orange"), ("max", "tab:red"))
            ],
        )
        _goal_lines(ax, document)
        _phase_ticks(
            ax,
            labels,
            [
                f"{r['victim']['ok']}/{r['victim']['planned']} ok"
                + ("" if r.get("pass", True) else " FAIL " + ",".join(r.get("failed", [])))
                for r in rows
            ],
            [r.get("pass") is False for r in rows],
        )
        ax.set_yscale("log")
        ax.set_ylabel("victim derive latency, ms (log)")
        ax.set_title(
            f"attackers from {mode.get('source', '?')} ({mode['mode']}); "
            "under each phase: victim calls answered / scheduled, failed goals"
        )
        ax.legend(fontsize=8, loc="upper right", ncols=5)
    commit = str((document.get("git") or {}).get("commit") or "")[:10]
    fig.suptitle(
        f"novakms under attack: a legitimate app's derive latency (100/s, open loop)  "
        f"{document.get('timestamp', '')}  {commit}"
    )
    return fig


def abuse_compare_figure(before: Document, after: Document) -> Figure:
    """Per source mode and phase present in both runs: victim p99 and node RSS growth."""
    pairs = []
    for mode in after["modes"]:
        old = {
            row["phase"]: row
            for other in before.get("modes", [])
            if other["mode"] == mode["mode"]
            for row in other["phases"]
        }
        rows = [(old[row["phase"]], row) for row in mode["phases"] if row["phase"] in old]
        if rows:
            pairs.append((mode, rows))
    if not pairs:
        raise ValueError("the two abuse results have no phase in common")

    def label(document: Document, fallback: str) -> str:
        commit = str((document.get("git") or {}).get("commit") or "")[:7]
        return f"{fallback} ({commit})" if commit else fallback

    names = (label(before, "before"), label(after, "after"))
    fig = new_figure(12, 3.4 * 2 * len(pairs))
    axes = fig.subplots(2 * len(pairs), 1, squeeze=False)[:, 0]
    grid = [(axes[2 * i], axes[2 * i + 1]) for i in range(len(pairs))]
    for (latency, memory), (mode, rows) in zip(grid, pairs, strict=True):
        labels = [new["phase"] for _, new in rows]
        _grouped_bars(
            latency,
            labels,
            [
                (
                    names[0],
                    _positive(old["victim"]["p99_ms"] for old, _ in rows),
                    {"color": BEFORE_COLOR},
                ),
                (
                    names[1],
                    _positive(new["victim"]["p99_ms"] for _, new in rows),
                    {"color": AFTER_COLOR},
                ),
            ],
        )
        _goal_lines(latency, after)
        notes = [
            f"ok {old['victim']['ok']}→{new['victim']['ok']}, "
            + "→".join("PASS" if r.get("pass") else "FAIL" for r in (old, new))
            for old, new in rows
        ]
        failed = [new.get("pass") is False for _, new in rows]
        _phase_ticks(latency, labels, notes, failed)
        latency.set_yscale("log")
        latency.set_ylabel("victim p99, ms (log)")
        latency.set_title(f"victim p99 during the attack ({mode['mode']} source)")
        latency.legend(fontsize=7, loc="upper right", ncols=2)
        _grouped_bars(
            memory,
            labels,
            [
                (names[0], [old["rss_growth_mib"] for old, _ in rows], {"color": BEFORE_COLOR}),
                (names[1], [new["rss_growth_mib"] for _, new in rows], {"color": AFTER_COLOR}),
            ],
        )
        rss_goal = (after.get("goals") or {}).get("rss_growth_mib")
        if rss_goal is not None:
            memory.axhline(
                rss_goal,
                color="black",
                linestyle="--",
                linewidth=1,
                label=f"goal ({rss_goal:.0f} MiB)",
            )
        memory.set_ylabel("node RSS growth, MiB")
        memory.set_title(f"node memory growth ({mode['mode']} source)")
        _phase_ticks(
            memory,
            labels,
            [f"+{old['rss_growth_mib']:.0f}→+{new['rss_growth_mib']:.0f} MiB" for old, new in rows],
            ["rss" in new.get("failed", []) for _, new in rows],
        )
        memory.legend(fontsize=7)
    fig.suptitle(
        f"novakms abuse benchmark: before ({before.get('timestamp', '?')}) → "
        f"after ({after.get('timestamp', '?')})\n"
        "under each phase: victim calls answered and verdict, before → after"
    )
    return fig


# --- dispatch ---------------------------------------------------------------------------------

#: The chart of each benchmark, by the JSON's ``"benchmark"`` field.
FIGURES: dict[str, Callable[[Document], Figure]] = {
    "derive": derive_figure,
    "cluster": cluster_figure,
    "cluster-client": cluster_client_figure,
    "rolling": rolling_figure,
    "scaling": scaling_figure,
    "abuse": abuse_figure,
}


def figure_for(document: Document, *, before: Document | None = None) -> Figure:
    """The chart of ``document`` (chosen by its ``benchmark``); with ``before``, a comparison."""
    kind = document.get("benchmark")
    if before is not None:
        if kind != "abuse" or before.get("benchmark") != "abuse":
            raise ValueError("--compare: only two abuse results can be compared")
        return abuse_compare_figure(before, document)
    draw = FIGURES.get(str(kind))
    if draw is None:
        raise ValueError(f"no chart for benchmark {kind!r} (known: {', '.join(FIGURES)})")
    return draw(document)


def draw(document: Document, *paths: Path, before: Document | None = None) -> list[Path]:
    """Draw ``document``'s chart into every path (PNG). Raises :class:`PlotUnavailable`."""
    return save(figure_for(document, before=before), paths)


def chart_beside(
    document: Document, json_paths: Iterable[Path], *, before: Document | None = None
) -> list[Path]:
    """For the benchmarks: the chart as ``X.png`` beside every ``X.json`` written.

    Never raises: without matplotlib, or if the chart fails, it prints why on stderr and
    returns ``[]`` (the JSON is already written; ``python -m bench.plot`` redraws it).
    """
    targets = [Path(p).with_suffix(".png") for p in json_paths]
    try:
        written = draw(document, *targets, before=before)
    except PlotUnavailable as exc:
        print(f"{exc}", file=sys.stderr, flush=True)
        return []
    except Exception as exc:  # a chart must not lose the benchmark's exit code
        print(f"no chart: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return []
    print(f"chart: {', '.join(str(p) for p in written)}", file=sys.stderr, flush=True)
    return written


def write_with_charts(document: Document, directory: Path, name: str, stamp: str) -> Path:
    """``<name>-<stamp>.json`` and ``<name>-latest.json`` in ``directory``, each with its chart
    (:func:`chart_beside`); returns the first."""
    directory.mkdir(parents=True, exist_ok=True)
    text = json.dumps(document, indent=2) + "\n"
    paths = [directory / f"{name}-{stamp}.json", directory / f"{name}-latest.json"]
    for path in paths:
        path.write_text(text)
    chart_beside(document, paths)
    return paths[0]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.plot FILE.json [FILE.json ...] [-o OUT.png] [--compare BEFORE.json]``."""
    import json

    parser = argparse.ArgumentParser(
        prog="python -m bench.plot",
        description="Draw a benchmark's JSON result (bench/results/*.json) as a PNG.",
    )
    parser.add_argument("files", nargs="+", type=Path, help="result JSON file(s)")
    parser.add_argument(
        "-o", "--output", type=Path, help="the PNG (one input only; default: beside the JSON)"
    )
    parser.add_argument(
        "--compare",
        type=Path,
        metavar="BEFORE.json",
        help="abuse only: draw BEFORE -> FILE (victim p99 and RSS growth per phase)",
    )
    args = parser.parse_args(argv)
    if args.output is not None and len(args.files) != 1:
        parser.error("-o/--output takes exactly one input file")
    before = json.loads(args.compare.read_text()) if args.compare is not None else None
    status = 0
    for path in args.files:
        out = args.output or path.with_suffix(".png")
        try:
            draw(json.loads(path.read_text()), out, before=before)
        except PlotUnavailable as exc:
            print(exc, file=sys.stderr)
            return 2
        except (ValueError, KeyError, TypeError) as exc:
            print(f"{path}: {type(exc).__name__}: {exc}", file=sys.stderr)
            status = 1
            continue
        print(out)
    return status


if __name__ == "__main__":
    sys.exit(main())
