"""bench/plot.py: every chart kind drawn from a small JSON document, written as a valid PNG.

The abuse charts use the committed results (bench/results/abuse-after.json, -before.json), and
so does the derive chart of a result written before format 2 (derive-2026-12-03.json); the
others minimal documents shaped like their benchmark's output. Skipped without matplotlib (the
``bench`` extra).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import pytest

pytest.importorskip("matplotlib")

from matplotlib.axes import Axes
from matplotlib.container import BarContainer
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from bench import plot

RESULTS = Path(__file__).resolve().parent.parent / "bench" / "results"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert len(data) > 1000
    assert data.startswith(PNG_SIGNATURE)
    assert data[12:16] == b"IHDR"


def floats(data: object) -> list[float]:
    """A line's x or y data (a numpy array or a list) as floats."""
    return [float(v) for v in cast(Sequence[float], data)]


def bar_series(ax: Axes) -> list[list[float]]:
    """The heights of every bar series (one BarContainer per ``ax.bar`` call) of ``ax``."""
    return [
        [bar.get_height() for bar in container]
        for container in ax.containers
        if isinstance(container, BarContainer)
    ]


def figures(document: dict[str, Any], tmp_path: Path, **kw: Any) -> tuple[Figure, Path]:
    """The chart's figure, and the PNG that plot.draw writes for the same document."""
    fig = plot.figure_for(document, **kw)
    out = tmp_path / "chart.png"
    assert plot.draw(document, out, **kw) == [out]
    assert_png(out)
    return fig, out


def figures_of(per_second: float, cpu_us: float) -> dict[str, Any]:
    return {
        "per_second": per_second,
        "p50_ms": 1000 / per_second,
        "p99_ms": 3000 / per_second,
        "server_cpu_us_per_op": cpu_us,
    }


def scenario_of(name: str, kind: str, **targets: tuple[float, float]) -> dict[str, Any]:
    """A format-2 scenario: per target (per_second, server CPU us/op), ratios to the echo."""
    figures = {label: figures_of(*values) for label, values in targets.items()}
    echo = figures["echo"]
    return {
        "name": name,
        "kind": kind,
        "targets": figures,
        "ratio": {
            label: {
                "throughput": fig["per_second"] / echo["per_second"],
                "server_cpu_per_op": fig["server_cpu_us_per_op"] / echo["server_cpu_us_per_op"],
            }
            for label, fig in figures.items()
            if label != "echo"
        },
    }


def derive_document(**also: Mapping[str, tuple[float, float]]) -> dict[str, Any]:
    """A derive result as bench_derive.py writes it (format 2), ``also`` targets added."""

    def targets(name: str, echo: tuple[float, float], kms: tuple[float, float]) -> Any:
        return {"echo": echo, "novakms": kms, **{label: v[name] for label, v in also.items()}}

    rows = [
        ("c1", "closed", (6378, 77), (3152, 201)),
        ("c64", "closed", (10509, 55), (7170, 135)),
        ("c64x8", "closed", (15181, 37), (7897, 126)),
        ("kv-c64", "closed", (11000, 50), (8000, 110)),
        ("handshake", "handshake", (4982, 153), (654, 1011)),
        ("open50", "open", (3948, 60), (3948, 150)),
    ]
    return {
        "benchmark": "derive",
        "format": 2,
        "timestamp": "2026-12-03T17:00:19Z",
        "git": {"commit": "952b7366dee862351ce674673a1418a7911386d5"},
        "scenarios": [
            scenario_of(name, kind, **targets(name, echo, kms)) for name, kind, echo, kms in rows
        ],
    }


def cluster_document() -> dict[str, Any]:
    lags = [20.0 + (i % 40) + (i % 7) * 0.5 for i in range(300)]
    return {
        "benchmark": "cluster",
        "lag": {
            "nodes": 3,
            "target_rate": 200.0,
            "duration_s": 1.5,
            "missing_after_10s": 0,
            "lag_p50_ms": 40.0,
            "lag_p99_ms": 62.0,
            "lags_ms": lags,
        },
    }


def test_derive_chart_throughput_latency_and_server_cpu_ratio(tmp_path: Path) -> None:
    fig, _ = figures(derive_document(), tmp_path)
    throughput, latency, cpu = fig.axes
    # the handshake (connections, not requests) is only on the CPU-ratio panel
    requests = ["c1", "c64", "c64x8", "kv-c64", "open50"]
    assert bar_series(throughput) == [
        [6378, 10509, 15181, 11000, 3948],
        [3152, 7170, 7897, 8000, 3948],
    ]
    assert [t.get_text() for t in throughput.get_xticklabels()] == requests
    assert [t.get_text() for t in throughput.texts] == [
        "x0.49",
        "x0.68",
        "x0.52",
        "x0.73",
        "x1.00",
    ]
    series = bar_series(latency)
    assert len(series) == 4  # echo p50, echo p99, novakms p50, novakms p99
    assert all(len(s) == 5 for s in series)
    assert series[3] == pytest.approx([3000 / v for v in (3152, 7170, 7897, 8000, 3948)])
    assert latency.get_yscale() == "log"
    legend = latency.get_legend()
    assert legend is not None
    labels = [t.get_text() for t in legend.get_texts()]
    assert labels == ["echo p50", "echo p99", "novakms p50", "novakms p99"]
    (ratios,) = bar_series(cpu)
    assert ratios == pytest.approx([201 / 77, 135 / 55, 126 / 37, 110 / 50, 1011 / 153, 2.5])
    assert [t.get_text() for t in cpu.get_xticklabels()] == [*requests[:4], "handshake", "open50"]
    lines = sorted(floats(line.get_ydata())[0] for line in cpu.get_lines())
    assert lines == [1.0, 1.7]  # the echo and the goal


def test_derive_chart_with_another_checkout(tmp_path: Path) -> None:
    before = {
        name: (per_second, cpu)
        for name, per_second, cpu in (
            ("c1", 3000, 250),
            ("c64", 6000, 160),
            ("c64x8", 6500, 150),
            ("kv-c64", 7000, 130),
            ("handshake", 600, 1100),
            ("open50", 3948, 170),
        )
    }
    fig, _ = figures(derive_document(before=before), tmp_path)
    throughput, latency, cpu = fig.axes
    assert len(bar_series(throughput)) == 3  # echo, novakms, before
    assert bar_series(throughput)[2] == [3000, 6000, 6500, 7000, 3948]
    assert len(bar_series(latency)) == 6
    legend = throughput.get_legend()
    assert legend is not None
    assert [t.get_text() for t in legend.get_texts()] == ["echo baseline", "novakms", "before"]
    novakms, old = bar_series(cpu)
    assert old == pytest.approx([250 / 77, 160 / 55, 150 / 37, 130 / 50, 1100 / 153, 170 / 60])
    assert novakms[0] == pytest.approx(201 / 77)


def test_derive_chart_of_a_result_before_format_2(tmp_path: Path) -> None:
    """The committed result of 2026-12-03 (baseline / novakms per scenario) still draws."""
    document = json.loads((RESULTS / "derive-2026-12-03.json").read_text())
    fig, _ = figures(document, tmp_path)
    throughput, _, cpu = fig.axes
    echo, real = bar_series(throughput)
    assert echo == [s["baseline"]["per_second"] for s in document["scenarios"]]
    assert real == [s["novakms"]["per_second"] for s in document["scenarios"]]
    (ratios,) = bar_series(cpu)
    expected = [s["ratio"]["server_cpu_per_op"] for s in document["scenarios"]]
    assert ratios == pytest.approx([*expected, document["handshake"]["ratio"]["server_cpu_per_op"]])


def test_derive_benchmark_writes_a_png_beside_each_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bench import bench_derive

    monkeypatch.setattr(bench_derive, "RESULTS_DIR", tmp_path)
    path = bench_derive.write_results(derive_document(), "20261203T170019Z")
    assert path == tmp_path / "derive-20261203T170019Z.json"
    assert json.loads(path.read_text()) == derive_document()
    assert_png(tmp_path / "derive-20261203T170019Z.png")
    assert_png(tmp_path / "derive-latest.png")


def test_cluster_chart_lag_histogram_and_cdf(tmp_path: Path) -> None:
    document = cluster_document()
    fig, _ = figures(document, tmp_path)
    hist, cdf = fig.axes
    bins = [p for p in hist.patches if isinstance(p, Rectangle)]
    assert len(bins) == len(hist.patches) == 50
    assert sum(p.get_height() for p in bins) == 300  # every key in one bin
    curve = cdf.get_lines()[0]
    xs, ys = floats(curve.get_xdata()), floats(curve.get_ydata())
    assert len(xs) == 300
    assert list(xs) == sorted(xs)
    assert ys[-1] == 1.0
    assert len(cdf.get_lines()) == 3  # the CDF, p50 and p99


def test_cluster_chart_needs_the_per_key_lags(tmp_path: Path) -> None:
    old = cluster_document()
    del old["lag"]["lags_ms"]
    with pytest.raises(ValueError, match="lags_ms"):
        plot.figure_for(old)
    # a benchmark's call never raises: it says why and writes nothing
    assert plot.chart_beside(old, [tmp_path / "cluster-latest.json"]) == []
    assert not (tmp_path / "cluster-latest.png").exists()


def test_cluster_client_chart(tmp_path: Path) -> None:
    document = {
        "benchmark": "cluster-client",
        "results": {
            "single": [
                {"concurrency": 8, "per_second": 3000},
                {"concurrency": 64, "per_second": 5000},
            ],
            "cluster": [
                {"concurrency": 8, "per_second": 4000},
                {"concurrency": 64, "per_second": 9000},
            ],
        },
    }
    fig, _ = figures(document, tmp_path)
    (ax,) = fig.axes
    assert bar_series(ax) == [[3000, 5000], [4000, 9000]]


def test_scaling_chart_throughput_and_server_cpu_per_worker_count(tmp_path: Path) -> None:
    def row(workers: int, per_second: float, cpu: float | None) -> dict[str, Any]:
        return {"workers": workers, "per_second": per_second, "server_cpu_share": cpu}

    document = {
        "benchmark": "scaling",
        "settings": {"clients": 2},
        "machine": {"nproc": 2},
        "scenarios": [
            {"name": "c64x8", "results": [row(1, 1000, 0.5), row(2, 1500, 1.5)]},
            {"name": "fresh16", "results": [row(1, 200, 0.75), row(2, 300, None)]},
        ],
    }
    fig, _ = figures(document, tmp_path)
    left, right = fig.axes
    assert bar_series(left) == [[1000, 200], [1500, 300]]
    assert bar_series(right) == [[50, 75], [150, 0]]  # % of one core; unknown CPU: no bar


def test_rolling_chart_from_the_committed_result(tmp_path: Path) -> None:
    document = json.loads((RESULTS / "rolling-after.json").read_text())
    steps = document["run"]["steps"]
    fig, _ = figures(document, tmp_path)
    (ax,) = fig.axes
    series = bar_series(ax)
    assert len(series) == 3  # wait-safe, SIGTERM -> exited, restart -> serving (stacked)
    assert series[2] == pytest.approx([s["serving_s"] for s in steps])


def test_abuse_chart_from_the_committed_result(tmp_path: Path) -> None:
    document = json.loads((RESULTS / "abuse-after.json").read_text())
    fig, _ = figures(document, tmp_path)
    assert len(fig.axes) == len(document["modes"]) == 2
    for ax, mode in zip(fig.axes, document["modes"], strict=True):
        series = bar_series(ax)
        assert len(series) == 3  # p50, p99, max
        assert series[1] == pytest.approx([row["victim"]["p99_ms"] for row in mode["phases"]])
        ticks = [t.get_text().split("\n")[0] for t in ax.get_xticklabels()]
        assert ticks == [row["phase"] for row in mode["phases"]]
        # the goals: 5 x idle p99 and 1 s
        goals = sorted(floats(line.get_ydata())[0] for line in ax.get_lines())
        assert goals == pytest.approx([document["idle_p99_ms"] * 5, 1000.0])
    # the only phase that failed (5a, shared source) is marked
    shared = [t for t in fig.axes[1].get_xticklabels() if "FAIL" in t.get_text()]
    assert [t.get_text().split("\n")[0] for t in shared] == ["5a-handshake-flood"]


def test_abuse_comparison_before_after(tmp_path: Path) -> None:
    before = json.loads((RESULTS / "abuse-before.json").read_text())
    after = json.loads((RESULTS / "abuse-after.json").read_text())
    fig, _ = figures(after, tmp_path, before=before)
    assert len(fig.axes) == 4  # per source mode: victim p99, RSS growth
    separate_p99, separate_rss = fig.axes[:2]
    assert [len(s) for s in bar_series(separate_p99)] == [9, 9]  # before, after
    rss_before, rss_after = bar_series(separate_rss)
    assert max(rss_before) > 500 > 64 > max(rss_after)
    with pytest.raises(ValueError, match="abuse"):
        plot.figure_for(derive_document(), before=before)


def test_cli_redraws_beside_the_json_or_into_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "derive-latest.json"
    source.write_text(json.dumps(derive_document()))
    assert plot.main([str(source)]) == 0
    assert_png(tmp_path / "derive-latest.png")
    out = tmp_path / "sub" / "compare.png"
    after = RESULTS / "abuse-after.json"
    assert (
        plot.main([str(after), "-o", str(out), "--compare", str(RESULTS / "abuse-before.json")])
        == 0
    )
    assert_png(out)
    unknown = tmp_path / "store-latest.json"
    unknown.write_text(json.dumps({"benchmark": "store"}))
    assert plot.main([str(unknown)]) == 1
    assert "no chart for benchmark 'store'" in capsys.readouterr().err


def test_without_matplotlib_a_clear_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.raises(plot.PlotUnavailable, match=r"pip install -e '\.\[bench\]'"):
        plot.figure_for(derive_document())
    assert plot.chart_beside(derive_document(), [tmp_path / "derive-latest.json"]) == []
    assert "matplotlib is not installed" in capsys.readouterr().err
    assert not (tmp_path / "derive-latest.png").exists()
