#!/usr/bin/env python3
"""Plots of the benchmark results (called by scripts/bench.sh):
bench-results/latency_vs_rate.png from end_to_end_latency.json and
bench-results/cost_vs_tenants.png from scale.json. A missing result file
skips its plot."""

import json
import pathlib
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parent.parent / "bench-results"


def load(name):
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def latency_vs_rate(data):
    fig, ax = plt.subplots(figsize=(7, 4))
    for direction in sorted({r["direction"] for r in data["results"]}):
        rows = sorted(
            (r for r in data["results"] if r["direction"] == direction),
            key=lambda r: r["rate_commits_per_second"],
        )
        rates = [r["rate_commits_per_second"] for r in rows]
        for field, style in (("p50_ms_median", "o-"), ("p99_ms_median", "s--")):
            label = f"{direction.replace('_', ' ')} {field.split('_')[0]}"
            ax.plot(rates, [r[field] for r in rows], style, label=label)
    ax.set_xlabel("commits/s over 50 tenants")
    ax.set_ylabel("commit to row landed (ms)")
    ax.set_yscale("log")
    ax.set_title("End-to-end latency (median of runs)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / "latency_vs_rate.png", dpi=110)


def cost_vs_tenants(data):
    curve = data["curve"]
    tenants = [p["tenants"] for p in curve]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(tenants, [p["bridge_cpu_us_per_change"] for p in curve], "o-", label="bridge")
    if all("bridge_cpu_above_idle_us_per_change" in p for p in curve):
        ax.plot(tenants, [p["bridge_cpu_above_idle_us_per_change"] for p in curve], "o:", label="bridge, above idle")
    ax.plot(tenants, [p["postgres_cpu_us_per_change"] for p in curve], "s--", label="PostgreSQL")
    ax.set_xlabel("tenant databases in one process")
    ax.set_ylabel("CPU µs per change")
    ax.set_title("Cost per change as the fleet grows")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "cost_vs_tenants.png", dpi=110)


def main():
    done = []
    if (data := load("end_to_end_latency")) is not None:
        latency_vs_rate(data)
        done.append("latency_vs_rate.png")
    if (data := load("scale")) is not None:
        cost_vs_tenants(data)
        done.append("cost_vs_tenants.png")
    print("plots:", ", ".join(done) if done else "none (no results yet)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
