#!/usr/bin/env python3
"""Summarise s2smux-load --topology mux JSON lines (one per run, from one or
more files) as Markdown: per phase median (min-max) of latency percentiles
and CPU, then the adds.

    python3 bench/summarize_mux.py run1.txt [run2.txt ...]
"""
import json
import statistics
import sys

import summarize  # bench/summarize.py: median (min-max) cells


def cell(vals, fmt):
    return summarize.cell([v for v in vals if v is not None], fmt)


def main(paths):
    runs = []
    for path in paths:
        for line in open(path):
            line = line.strip()
            if line.startswith("{"):
                runs.append(json.loads(line))
    ok = [r for r in runs if r.get("ok")]
    print(f"\n{len(ok)} of {len(runs)} run(s) ok", end="")
    bad = [r.get("error", "?") for r in runs if not r.get("ok")]
    print(f"; failures: {bad}" if bad else "")
    if not ok:
        return 1
    print(f"load average (1/5/15 min) at the start of each run: {', '.join(r['loadavg'][0] for r in ok)}")
    rates = [r["rate"] for r in ok]
    print(f"capacity (closed loop): {cell([r['capacity'] for r in ok], '{:,.0f}')} stanzas/s; "
          f"rate: {cell(rates, '{:,.0f}')} stanzas/s"
          + (" (closed loop)" if all(x == 0 for x in rates) else ""))
    print()
    print("| phase | seconds | stanzas | p50 ms | p99 ms | p99.9 ms | max ms | gateway A CPU % | gateway B CPU % | tool CPU % | other CPU % |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    names = [p["phase"] for p in ok[0]["phases"]]
    for i, name in enumerate(names):
        ph = [r["phases"][i] for r in ok]
        pct = lambda k: [100 * p[k] / p["seconds"] if p["seconds"] else None for p in ph]
        print(f"| {name} | {cell([p['seconds'] for p in ph], '{:.1f}')} | {cell([p['stanzas'] for p in ph], '{:,.0f}')} "
              f"| {cell([p['p50_ms'] for p in ph], '{:.2f}')} | {cell([p['p99_ms'] for p in ph], '{:.2f}')} "
              f"| {cell([p['p999_ms'] for p in ph], '{:.2f}')} | {cell([p['max_ms'] for p in ph], '{:.1f}')} "
              f"| {cell(pct('gw_a_cpu_s'), '{:.0f}')} | {cell(pct('gw_b_cpu_s'), '{:.0f}')} "
              f"| {cell(pct('tool_cpu_s'), '{:.0f}')} | {cell(pct('other_cpu_s'), '{:.0f}')} |")
    print()
    per_run = ", ".join("{:.2f}".format(r["ratio_p99_adds_idle"]) for r in ok)
    print(f"- p99 adds / idle: {cell([r['ratio_p99_adds_idle'] for r in ok], '{:.2f}')} "
          f"(per run: {per_run}); "
          f"p99 after / idle: {cell([r['ratio_p99_after_idle'] for r in ok], '{:.2f}')}")
    print(f"- adds: {cell([r['adds_ok'] for r in ok], '{:,.0f}')} of {ok[0]['adds']} accepted "
          f"(gateway B mux.peer_adds_ok: {cell([r['b_peer_adds_ok'] for r in ok], '{:,.0f}')}); add phase "
          f"{cell([r['add_phase_s'] for r in ok], '{:.2f}')} s, {cell([r['adds_per_s'] for r in ok], '{:.0f}')} adds/s; "
          f"answers every {cell([r['add_gap_p50_ms'] for r in ok], '{:.2f}')} ms (p50), "
          f"p99 {cell([r['add_gap_p99_ms'] for r in ok], '{:.1f}')} ms, max {cell([r['add_gap_max_ms'] for r in ok], '{:.1f}')} ms")
    print(f"- stanzas per run: {cell([r['stanzas'] for r in ok], '{:,.0f}')}, all received in order and intact; "
          f"saturated runs: {sum(1 for r in ok if r.get('saturated'))}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
