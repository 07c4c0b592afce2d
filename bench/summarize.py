#!/usr/bin/env python3
"""Summarise s2smux-load JSON lines (one per run) as a Markdown table:
median and min-max per figure, for each mode, and the gateway/direct ratio."""
import json
import statistics
import sys

FIGURES = [  # key, heading, format
    ("stanzas_per_s", "stanzas/s", "{:,.0f}"),
    ("mb_per_s", "MB/s", "{:.1f}"),
    ("p50_ms", "p50 ms", "{:.2f}"),
    ("p99_ms", "p99 ms", "{:.2f}"),
    ("p999_ms", "p99.9 ms", "{:.2f}"),
    ("gw_cpu_s", "gw CPU s", "{:.2f}"),
    ("stanzas_per_gw_cpu_s", "stanzas/gw-CPU-s", "{:,.0f}"),
    ("gw_rss_kb", "gw RSS MiB", None),
    ("tool_cpu_s", "tool CPU s", "{:.2f}"),
    ("other_cpu_s", "other CPU s", "{:.2f}"),
]


def cell(vals, fmt):
    if not vals:
        return "-"
    med = statistics.median(vals)
    if len(vals) == 1 or min(vals) == max(vals):
        return fmt.format(med)
    return f"{fmt.format(med)} ({fmt.format(min(vals))}–{fmt.format(max(vals))})"


def main(path):
    runs = [json.loads(line) for line in open(path) if line.startswith("{")]
    if not runs:
        sys.exit("no runs")
    failed = [r for r in runs if not r.get("ok")]
    r0 = runs[0]
    print(f"\n{len(runs)} run(s), {r0['stanzas']} stanzas per mode, window {r0['window']}, "
          f"inner hop {'STARTTLS' if r0['inner_tls'] else 'plaintext'}, {'ASCII' if r0.get('ascii') else 'UTF-8'} text; "
          f"{len(failed)} failed run(s)\n")
    print("| mode | " + " | ".join(h for _, h, _ in FIGURES) + " |")
    print("|---" * (len(FIGURES) + 1) + "|")
    for mode in ("direct", "gateway"):
        rs = [r[mode] for r in runs if mode in r and r[mode].get("ok")]
        if not rs:
            continue
        cells = []
        for key, _, fmt in FIGURES:
            vals = [x[key] for x in rs if key in x]
            if key == "gw_rss_kb":
                vals, fmt = [v / 1024 for v in vals], "{:.1f}"
            cells.append(cell(vals, fmt))
        print(f"| {mode} | " + " | ".join(cells) + " |")
    ratios = [r["ratio_gateway_direct"] for r in runs if "ratio_gateway_direct" in r]
    if ratios:
        print("\ngateway/direct (median over runs): throughput "
              f"{statistics.median(x['throughput'] for x in ratios):.2f}x, "
              f"p50 latency {statistics.median(x['p50'] for x in ratios):.2f}x, "
              f"p99 latency {statistics.median(x['p99'] for x in ratios):.2f}x")
    if failed:
        for r in failed:
            for mode in ("direct", "gateway"):
                if mode in r and not r[mode].get("ok"):
                    print(f"FAILED {mode}: {r[mode].get('error')}")
        sys.exit(1)


if __name__ == "__main__":
    main(sys.argv[1])
