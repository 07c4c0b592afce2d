#!/usr/bin/python3
"""Standard S2S baseline: Prosody <-> Prosody, directly and through the gateways.

Three modes on the same N x M domain pairs and the same stanzas (issue 8):

  prosody-direct    Prosody A (a1..aN.test) <==standard S2S==> Prosody B (b1..bM.test)
                    STARTTLS + SASL EXTERNAL (s2s_secure_auth = true, test PKI
                    certificates), one stream per domain pair and direction
  gateway-standard  Prosody A - s2smuxd A ==standard S2S== s2smuxd B - Prosody B
                    ([mux] enabled = false)
  gateway-mux       the same with multiplexing (daemon default)

One user u@DOMAIN per domain, logged in over a raw c2s socket (SASL PLAIN on
loopback; bench/c2s_flood.py). Per mode:
  1. setup: one message per pair and direction (2 x N x M): opens the streams;
  2. measured: K more per pair and direction (2 x N x M x K), at most
     --window in flight; stanzas/s, p50/p99 latency and the CPU seconds of
     every server (/proc/PID/stat) and of this tool are from this phase.
Every message must arrive once, at the right user, from the right sender
(else the mode is not ok: exit status 1). Connections: ESTABLISHED TCP
connections server <-> server (direct) or gateway <-> gateway, and each
Prosody <-> its gateway, from the kernel's table after each phase (max).

    /usr/bin/python3 bench/clouds_bench.py [--local 20 --remote 20] [--messages-per-pair 10]
        [--modes prosody-direct,gateway-standard,gateway-mux] [--json FILE] [--quick] [--keep]

Table on stdout, progress on stderr. Exit status 0 when every mode that ran
delivered everything, 1 otherwise, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "interop"))
sys.path.insert(0, str(HERE))

from c2s_flood import BODY_SIZES, C2sSession, Flood  # noqa: E402
from harness import proc  # noqa: E402
from harness.certs import Pki  # noqa: E402
from harness.clouds import DirectClouds, TwoClouds  # noqa: E402
from harness.conntable import connections_between  # noqa: E402
from harness.fdlimit import cpu_seconds, raise_nofile  # noqa: E402

MODES = ("prosody-direct", "gateway-standard", "gateway-mux")
HELP_SIZES = """\
How far it runs on the shared 2-core Debian 12 VM (RLIMIT_NOFILE hard limit
20,000; bench/RESULTS.md, "Standard S2S baseline"): 20x20 (default, about
0.5-2 minutes for the three modes), 50x50 (K = 2, 5 min) and 70x70 (K = 1,
8 min) run in every mode; 90x90 (K = 1) runs in prosody-direct and
gateway-mux (4-5 min each), while gateway-standard fails there ("too many
open files" in both gateways, 3,448 messages bounced). Every mode keeps one
standard stream per domain pair and direction on each Prosody (to the other
Prosody, or to and from its gateway): about 2 x N x M sockets per Prosody;
a gateway in standard mode holds about 3 x N x M (inner, outer, upstream).
So beyond about 6,000 pairs (78x78) gateway-standard runs out of
descriptors, beyond about 9,500 pairs (97x97) every mode does: 100x100 does
not fit on this machine.
"""


def say(msg: str) -> None:
    print(f"[clouds-bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def spread(n: int, m: int) -> list[tuple[int, int]]:
    """Pairs diagonal by diagonal: consecutive messages have different
    senders and recipients (no one stream takes the whole window)."""
    return sorted(((i, j) for i in range(n) for j in range(m)), key=lambda p: ((p[1] - p[0]) % m, p[0]))


def build(mode: str, tmp: Path, pki: Pki, n: int, m: int, s2smuxd: str | None):
    if mode == "prosody-direct":
        return DirectClouds(tmp, pki, n, m)
    return TwoClouds(tmp, pki, n, m, mux=(mode == "gateway-mux"), gateway_binary=s2smuxd)


def count_connections(c) -> tuple[int, int]:
    """(server<->server or gateway<->gateway, Prosody<->own gateway)."""
    if isinstance(c, DirectClouds):
        return len(connections_between(c.pa, c.pb)), 0
    return (len(connections_between(c.gwa, c.gwb)),
            len(connections_between(c.pa, c.gwa)) + len(connections_between(c.pb, c.gwb)))


def cpu_of(servers) -> dict[str, float]:
    return {s.name: cpu_seconds(s.proc.pid) or 0.0 for s in servers}


def run_mode(mode: str, args, tmp: Path, pki: Pki) -> dict:
    n, m, k = args.local, args.remote, args.messages_per_pair
    out: dict = {"mode": mode, "ok": False, "connections": 0, "stanzas": 0, "seconds": 0.0,
                 "stanzas_per_s": 0.0, "p50_ms": 0.0, "p99_ms": 0.0}
    t0 = time.monotonic()
    c = build(mode, tmp / mode, pki, n, m, args.s2smuxd)
    say(f"{mode}: {n + m} certificates issued in {time.monotonic() - t0:.1f} s; starting servers")
    flood = None
    conns = [0, 0]

    def sample_connections():
        s2s, local = count_connections(c)
        conns[0], conns[1] = max(conns[0], s2s), max(conns[1], local)
        out.update(connections=conns[0], prosody_gateway_connections=conns[1])

    try:
        for s in c.servers():
            s.start(timeout=60)
        sessions = [C2sSession.login(j, pw, port) for j, pw, port in c.accounts()]
        say(f"{mode}: {len(sessions)} users logged in")
        flood = Flood(sessions, window=args.window)
        pairs = spread(n, m)
        one_round = [x for i, j in pairs for x in ((i, n + j), (n + j, i))]
        def progress(done, total):
            say(f"{mode}: {done}/{total} delivered")

        # The first message goes alone, so that the gateways' first stream
        # exists before the rest (else both may open one at once).
        say(f"{mode}: setup: {len(one_round)} messages, one per pair and direction")
        t0 = time.monotonic()
        for part in (one_round[:1], one_round[1:]):
            setup = flood.run(part, deadline=args.deadline or 60 + len(part) / 50, progress=progress)
            if not setup.ok:
                raise RuntimeError(f"setup phase: {setup.problems()}")
        out["setup_seconds"] = round(time.monotonic() - t0, 3)
        sample_connections()
        plan = one_round * k
        say(f"{mode}: measured: {len(plan)} messages ({k} per pair and direction, window {args.window})")
        servers = c.servers()
        cpu0 = cpu_of(servers)
        res = flood.run(plan, deadline=args.deadline or 60 + len(plan) / 200, progress=progress)
        cpu1 = cpu_of(servers)
        sample_connections()
        cpu = {name: round(cpu1[name] - cpu0[name], 2) for name in cpu0}
        server_cpu = sum(cpu.values())
        out.update(
            stanzas=res.planned, delivered=res.delivered, seconds=round(res.seconds, 3),
            stanzas_per_s=round(res.delivered / res.seconds, 1),
            p50_ms=round(res.p50_ms, 2), p99_ms=round(res.p99_ms, 2),
            bytes_sent=res.bytes_sent, cpu_s=cpu, server_cpu_s=round(server_cpu, 2),
            stanzas_per_server_cpu_s=round(res.delivered / server_cpu, 1) if server_cpu else None,
            tool_cpu_s=round(res.tool_cpu_s, 2),
            lost=len(res.missing), bounced=len(res.bounced), misrouted=len(res.misrouted),
            duplicates=res.duplicates)
        if isinstance(c, DirectClouds):
            out["sasl_external_accepted"] = sum(p.log_text().count("Accepting SASL EXTERNAL identity")
                                                for p in (c.pa, c.pb))
        else:
            gw_cpu = cpu[c.gwa.name] + cpu[c.gwb.name]
            out["gateway_cpu_s"] = round(gw_cpu, 2)
            out["stanzas_per_gateway_cpu_s"] = round(res.delivered / gw_cpu, 1) if gw_cpu else None
            out["mux_enabled_logged"] = sum(g.log_text().count("multiplexing enabled")
                                            for g in (c.gwa, c.gwb))
        if not res.ok:
            raise RuntimeError(f"measured phase: {res.problems()}")
        out["ok"] = True
        say(f"{mode}: ok: {out['stanzas_per_s']:,.0f} stanzas/s, {conns[0]} connections")
    except Exception as e:  # noqa: BLE001 - a failed mode is reported, the others still run
        out["error"] = f"{type(e).__name__}: {e}"
        try:
            sample_connections()   # what was open when it failed
        except Exception:  # noqa: BLE001 - servers may be gone
            pass
        say(f"{mode}: FAILED: {out['error']}")
    finally:
        if flood:
            flood.close()
        c.stop()
        for g in [s for s in c.servers() if hasattr(s, "post_mortem")]:
            pm = g.post_mortem()
            if pm:
                out.setdefault("warnings", []).append(f"{g.name}: {pm}")
    return out


def ratio(a, b) -> str:
    return f"{a / b:.3g}x" if a and b else "-"


def table(result: dict) -> str:
    rows = ["| mode | ok | S2S TCP conns | Prosody-gw conns | setup s | stanzas | s | stanzas/s | "
            "p50 ms | p99 ms | lost | server CPU s | stanzas per server CPU-s | per gateway CPU-s | tool CPU s |",
            "|" + "---|" * 15]
    for r in result["modes"]:
        cpu = ", ".join(f"{k} {v:.2f}" for k, v in (r.get("cpu_s") or {}).items())
        tool = r.get("tool_cpu_s")
        tool_s = f"{tool:.2f} ({100 * tool / r['seconds']:.0f}% of wall)" if tool is not None and r["seconds"] else "-"
        per_cpu, per_gw = r.get("stanzas_per_server_cpu_s"), r.get("stanzas_per_gateway_cpu_s")
        rows.append(" | ".join([
            f"| {r['mode']}", "yes" if r["ok"] else "NO", f"{r['connections']:,}",
            f"{r.get('prosody_gateway_connections', 0):,}", f"{r.get('setup_seconds', 0):.2f}",
            f"{r['stanzas']:,}", f"{r['seconds']:.2f}", f"{r['stanzas_per_s']:,.0f}",
            f"{r['p50_ms']:.1f}", f"{r['p99_ms']:.1f}", str(r.get("lost", "-")),
            f"{r.get('server_cpu_s', 0):.2f} ({cpu})" if cpu else "-",
            f"{per_cpu:,.0f}" if per_cpu else "-", f"{per_gw:,.0f}" if per_gw else "-", tool_s]) + " |")
    lines = rows
    base = next((r for r in result["modes"] if r["mode"] == "prosody-direct" and r["ok"]), None)
    if base:
        lines += ["", "| vs prosody-direct | S2S TCP conns | stanzas/s | stanzas per server CPU-s | p99 |",
                  "|---|---|---|---|---|"]
        for r in result["modes"]:
            if r["mode"] != "prosody-direct" and r["ok"]:
                lines.append(f"| {r['mode']} | {ratio(r['connections'], base['connections'])} | "
                             f"{ratio(r['stanzas_per_s'], base['stanzas_per_s'])} | "
                             f"{ratio(r.get('stanzas_per_server_cpu_s'), base.get('stanzas_per_server_cpu_s'))} | "
                             f"{ratio(r['p99_ms'], base['p99_ms'])} |")
    for r in result["modes"]:
        if not r["ok"]:
            lines.append(f"{r['mode']}: {r.get('error', 'failed')}")
        for w in r.get("warnings", []):
            lines.append(f"{r['mode']}: warning: {w}")
    return "\n".join(lines)


def ratios(modes: list[dict]) -> dict:
    base = next((r for r in modes if r["mode"] == "prosody-direct" and r["ok"]), None)
    out = {}
    for r in modes:
        if base and r["ok"] and r is not base:
            out[f"{r['mode']}/prosody-direct"] = {
                "connections": round(r["connections"] / base["connections"], 4) if base["connections"] else None,
                "stanzas_per_s": round(r["stanzas_per_s"] / base["stanzas_per_s"], 3),
            }
    return out


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="Standard S2S baseline (issue 8): direct Prosody <-> Prosody, the gateways "
                    "in standard mode, and multiplexed, on the same N x M domain pairs.",
        epilog=HELP_SIZES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--local", type=int, metavar="N", help="domains of cloud A (default 20)")
    p.add_argument("--remote", type=int, metavar="M", help="domains of cloud B (default 20)")
    p.add_argument("--messages-per-pair", type=int, metavar="K",
                   help="measured messages per domain pair AND direction (default 10)")
    p.add_argument("--window", type=int, default=500, help="messages in flight at most (default 500)")
    p.add_argument("--modes", default=",".join(MODES), help=f"comma-separated subset of {','.join(MODES)}")
    p.add_argument("--quick", action="store_true",
                   help="defaults N = M = 3, K = 5 (CI smoke test, < 60 s)")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON ('-': stdout, after the table)")
    p.add_argument("--keep", action="store_true", help="keep the run directory (configs, logs)")
    p.add_argument("--deadline", type=float, help="seconds per phase (default: scaled to its size)")
    p.add_argument("--s2smuxd", help="the daemon (default $S2SMUXD, else build/s2smuxd)")
    a = p.parse_args(argv)
    for name, full, quick in (("local", 20, 3), ("remote", 20, 3), ("messages_per_pair", 10, 5)):
        if getattr(a, name) is None:
            setattr(a, name, quick if a.quick else full)
    a.modes = [x.strip() for x in a.modes.split(",") if x.strip()]
    bad = [x for x in a.modes if x not in MODES]
    if bad or not a.modes:
        p.error(f"--modes: unknown {', '.join(bad) or '(empty)'}; choose from {', '.join(MODES)}")
    if min(a.local, a.remote, a.messages_per_pair, a.window) < 1:
        p.error("--local, --remote, --messages-per-pair and --window must be >= 1")
    return a


def main(argv=None) -> int:
    args = parse_args(argv)
    n, m = args.local, args.remote
    # Direct: each Prosody holds 2 sockets per pair (one stream per direction);
    # standard gateways: inner + outer + upstream per pair and direction.
    old, soft, hard = raise_nofile(6 * n * m + 1024)
    say(f"RLIMIT_NOFILE soft {old} -> {soft} (hard {hard}); {n}x{m} pairs, modes {', '.join(args.modes)}")
    tmp = Path(tempfile.mkdtemp(prefix="clouds-bench-"))
    result: dict = {"pairs": n * m, "local": n, "remote": m, "messages_per_pair": args.messages_per_pair,
                    "directions": "both", "window": args.window,
                    "body_bytes": list(BODY_SIZES), "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "modes": []}
    try:
        pki = Pki(tmp / "pki")
        for mode in args.modes:
            result["modes"].append(run_mode(mode, args, tmp, pki))
    finally:
        proc.stop_all()
    result["ratios"] = ratios(result["modes"])
    ok = all(r["ok"] for r in result["modes"])
    print(f"{n} x {m} domain pairs, {args.messages_per_pair} measured messages per pair and direction "
          f"(both directions), bodies {'/'.join(map(str, BODY_SIZES))} B, window {args.window}")
    print(table(result))
    if args.json:
        text = json.dumps(result, indent=1)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
    if args.keep or not ok:
        say(f"run directory kept: {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
