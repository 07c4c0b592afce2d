#!/usr/bin/env python3
"""Summarise s2smux-load JSON lines (one per run) as a Markdown table:
median and min-max per figure, for each mode, and the gateway/direct and
gateway/haproxy ratios. The hop process's figures are gw_* for s2smuxd and
haproxy_* for HAProxy (mode haproxy); the table shows both as "hop"."""
import json
import statistics
import sys

FIGURES = [  # key, heading, format
    ("stanzas_per_s", "stanzas/s", "{:,.0f}"),
    ("mb_per_s", "MB/s", "{:.1f}"),
    ("p50_ms", "p50 ms", "{:.2f}"),
    ("p99_ms", "p99 ms", "{:.2f}"),
    ("p999_ms", "p99.9 ms", "{:.2f}"),
    ("gw_cpu_s", "hop CPU s", "{:.2f}"),
    ("stanzas_per_gw_cpu_s", "stanzas/hop-CPU-s", "{:,.0f}"),
    ("mb_per_gw_cpu_s", "MB/hop-CPU-s", "{:.1f}"),
    ("gw_rss_kb", "hop RSS MiB", None),
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
    for mode in ("direct", "gateway", "haproxy"):
        rs = [r[mode] for r in runs if mode in r and r[mode].get("ok")]
        if not rs:
            continue
        cells = []
        for key, _, fmt in FIGURES:
            k = key.replace("gw_", "haproxy_") if mode == "haproxy" else key
            vals = [x[k] for x in rs if k in x]
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
    hr = [r["ratio_gateway_haproxy"] for r in runs if "ratio_gateway_haproxy" in r]
    if hr:
        def med(key, fmt="{:.2f}x"):
            vals = [x[key] for x in hr if x.get(key) is not None]
            return cell(vals, fmt) if vals else "-"
        print("\ngateway/haproxy (median (min–max) over runs): "
              f"stanzas/s {med('stanzas_per_s')}, MB/s {med('mb_per_s')}; per hop CPU-second: "
              f"stanzas {med('stanzas_per_cpu_s')}, MB {med('mb_per_cpu_s')}; "
              f"p50 latency {med('p50')}, p99 latency {med('p99')}")
        met = sum(1 for x in hr if x.get("target_met"))
        met_cpu = sum(1 for x in hr if x.get("target_met_per_cpu_s"))
        print(f"target gateway >= 0.5x haproxy's byte rate: end to end met in {met} of {len(hr)} run(s), "
              f"per CPU-second met in {met_cpu} of {len(hr)}")
    skipped = {r["haproxy_skipped"] for r in runs if "haproxy_skipped" in r}
    for why in skipped:
        print(f"\nhaproxy skipped: {why}")
    if failed:
        for r in failed:
            for mode in ("direct", "gateway", "haproxy"):
                if mode in r and not r[mode].get("ok"):
                    print(f"FAILED {mode}: {r[mode].get('error')}")
        sys.exit(1)


if __name__ == "__main__":
    main(sys.argv[1])
