#!/usr/bin/python3
"""Prometheus metrics: `s2smuxctl metrics` and the [metrics] listen HTTP endpoint.

Two clouds of three domains (Prosody A a/a2/a3.test behind s2smuxd A, Prosody
B b/b2/b3.test behind s2smuxd B), one multiplexed stream between the
gateways. Gateway A serves metrics on 127.0.0.1, gateway B on [::1].

Checks: both sources parse with prometheus_client; every family is
documented in s2smuxd(8); the counters match the traffic (N messages A -> B
raise stanzas routed by exactly N on both gateways and the stanzas on the
mux stream by N, two adds accepted each way, three names multiplexed each
way, bytes counted, histograms consistent); HTTP answers 404, 405 and 400;
a non-loopback [metrics] listen is refused by `s2smuxd -t`; a gateway with
an idle metrics connection open stops cleanly; counters keep the counts of
a closed mux stream.

Run by hand: /usr/bin/python3 tests/interop/test_metrics.py [--keep] [-v]
"""

import copy
import re
import socket
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from harness import REPO_ROOT
from harness.gateway import S2smuxd
from harness.ports import free_port
from harness.prosody import Prosody
from harness.runner import run
from harness.scenarios import check_message

N = 10  # messages counted exactly


def parse(text):
    """{family name: type}, {(sample name, sorted labels): value}."""
    types, samples = {}, {}
    for fam in text_string_to_metric_families(text):
        types[fam.name] = fam.type
        for s in fam.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return types, samples


def v(samples, name, **labels):
    key = (name, tuple(sorted(labels.items())))
    assert key in samples, f"no sample {name}{labels}"
    return samples[key]


def expect(samples, name, want, **labels):
    got = v(samples, name, **labels)
    assert got == want, f"{name}{labels} = {got:g}, expected {want:g}"


def ctl_metrics(gw):
    text = "\n".join(gw.ctl_ok("metrics")) + "\n"
    return text, parse(text)


def http_get(url, method="GET"):
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


def raw_http(port, data, host="127.0.0.1"):
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(4096):
            out += chunk
    return out.decode(errors="replace")


def check_histograms(types, samples):
    for fam, typ in types.items():
        if typ != "histogram":
            continue
        buckets = sorted(((float(dict(k[1])["le"]), val) for k, val in samples.items() if k[0] == fam + "_bucket"))
        assert buckets and buckets[-1][0] == float("inf"), f"{fam}: no +Inf bucket"
        counts = [c for _, c in buckets]
        assert counts == sorted(counts), f"{fam}: buckets not cumulative: {counts}"
        assert counts[-1] == v(samples, fam + "_count"), f"{fam}: +Inf bucket != _count"
        assert v(samples, fam + "_sum") >= 0


def main(t):
    pki = t.pki()
    a_doms, b_doms = ["a.test", "a2.test", "a3.test"], ["b.test", "b2.test", "b3.test"]
    a_s2s, b_s2s, a_outer, b_outer = free_port(), free_port(), free_port(), free_port()
    a_http, b_http = free_port(), free_port()
    certs = {d: pki.issue(d) for d in a_doms + b_doms}

    def gateway(name, doms, s2s, outer, peer_outer, metrics):
        cfg = S2smuxd.fronting_config(
            domains=doms, certs=[certs[d] for d in doms], ca_file=pki.ca_file, upstream=f"127.0.0.1:{s2s}",
            outer=f"127.0.0.1:{outer}", routes=[{"domain": "*.test", "address": f"127.0.0.1:{peer_outer}"}],
            log_level="info")
        cfg["metrics"] = {"listen": metrics}
        return S2smuxd(t.dir, name=name, config=cfg)

    gwa = gateway("s2smuxd-a", a_doms, a_s2s, a_outer, b_outer, f"127.0.0.1:{a_http}")
    gwb = gateway("s2smuxd-b", b_doms, b_s2s, b_outer, a_outer, f"[::1]:{b_http}")

    with t.check("-t refuses a non-loopback [metrics] listen, naming the key"):
        bad = copy.deepcopy(gwa.config)
        bad["metrics"]["listen"] = "0.0.0.0:9100"
        gwc = S2smuxd(t.dir, name="s2smuxd-bad", config=bad)
        r = gwc.check_config()
        assert r.returncode == 1, f"exit {r.returncode}: {r.stdout}"
        assert "[metrics] listen" in r.stdout and "loopback" in r.stdout, r.stdout
        t.note(r.stdout.strip())

    pa = Prosody(t.dir, "prosody-a", a_doms, pki=pki, s2s_port=a_s2s, certs={d: certs[d] for d in a_doms},
                 gateway=f"127.0.0.1:{gwa.inner_port}", s2s_secure_auth=False, users={"u": "pw"})
    pb = Prosody(t.dir, "prosody-b", b_doms, pki=pki, s2s_port=b_s2s, certs={d: certs[d] for d in b_doms},
                 gateway=f"127.0.0.1:{gwb.inner_port}", s2s_secure_auth=False, users={"u": "pw"})
    with t.check("two gateways and two Prosody servers started", fatal=True):
        for s in (gwa, gwb, pa, pb):
            t.start(s)

    with t.check("the gateways log where they serve metrics"):
        assert f"serving Prometheus metrics on http://127.0.0.1:{a_http}/metrics" in gwa.log_text()
        assert f"serving Prometheus metrics on http://[::1]:{b_http}/metrics" in gwb.log_text()

    cl = t.clients()
    with t.check("six users logged in", fatal=True):
        users = {d: cl.connect(f"u@{d}", "pw", pa.c2s_port if d.startswith("a") else pb.c2s_port)
                 for d in a_doms + b_doms}
    check_message(t, cl, users["a.test"], users["b.test"])
    check_message(t, cl, users["b.test"], users["a.test"])

    with t.check("metrics from s2smuxctl parse, every family documented in s2smuxd(8)", fatal=True):
        text, (types, before_a) = ctl_metrics(gwa)
        _, (_, before_b) = ctl_metrics(gwb)
        man = (REPO_ROOT / "man" / "s2smuxd.8.scd").read_text()
        for fam, typ in types.items():
            shown = fam + "_total" if typ == "counter" else fam
            assert shown.startswith("s2smux_"), shown
            assert shown in man, f"{shown} is not documented in man/s2smuxd.8.scd"
        assert len(types) >= 25, f"only {len(types)} families"
        t.note(f"{len(types)} families, {len(text.splitlines())} lines")

    with t.check("multiplexing figures: 2 adds accepted each way, 3 names each way, one mux stream"):
        cl.wait_for(lambda: v(ctl_metrics(gwa)[1][1], "s2smux_mux_adds_accepted_total", side="peer") == 2
                    and v(ctl_metrics(gwb)[1][1], "s2smux_mux_adds_accepted_total", side="peer") == 2,
                    10, "both gateways accepted two adds")
        for gw in (gwa, gwb):
            _, (_, s) = ctl_metrics(gw)
            for side in ("local", "peer"):
                assert v(s, "s2smux_mux_adds_accepted_total", side=side) == 2, (gw.name, side)
                assert v(s, "s2smux_mux_domains", side=side) == 3, (gw.name, side)
                assert v(s, "s2smux_mux_adds_failed_total", side=side, reason="untrusted") == 0
            assert v(s, "s2smux_mux_adds_failed_total", side="local", reason="timeout") == 0
            assert v(s, "s2smux_mux_streams") == 1
            assert v(s, "s2smux_mux_streams_enabled_total") == 1
            assert v(s, "s2smux_local_domains") == 3
            assert v(s, "s2smux_mux_add_round_trip_seconds_count") == 2, gw.name
            assert v(s, "s2smux_mux_verify_seconds_count") == 2, gw.name
            assert v(s, "s2smux_mux_verifications_pending") == 0
            assert v(s, "s2smux_tls_verify_seconds_count") >= 1

    # N messages a2.test -> b2.test, all delivered.
    bodies = [f"metrics {i}" for i in range(N)]
    with t.check(f"{N} messages a2.test -> b2.test delivered"):
        for b in bodies:
            users["a2.test"].send_message("u@b2.test", b)
        cl.wait_for(lambda: all(users["b2.test"].has_body(b) for b in bodies), 15, f"{N} messages delivered")
        cl.sleep(0.5)

    with t.check(f"counters rose by exactly {N} on both gateways"):
        _, (_, after_a) = ctl_metrics(gwa)
        _, (_, after_b) = ctl_metrics(gwb)

        def delta(before, after, name, **labels):
            d = v(after, name, **labels) - v(before, name, **labels)
            t.note(f"{name}{labels}: +{d:g}")
            return d
        assert delta(before_a, after_a, "s2smux_stanzas_routed_total") == N
        assert delta(before_b, after_b, "s2smux_stanzas_routed_total") == N
        # A: from Prosody on an inner stream, out on the mux stream A opened.
        assert delta(before_a, after_a, "s2smux_stream_stanzas_total", kind="inner-in", direction="in") == N
        assert delta(before_a, after_a, "s2smux_stream_stanzas_total", kind="outer-out", direction="out") == N
        # B: in on the mux stream, out to its Prosody.
        assert delta(before_b, after_b, "s2smux_stream_stanzas_total", kind="outer-in", direction="in") == N
        assert delta(before_b, after_b, "s2smux_stream_stanzas_total", kind="upstream-out", direction="out") == N
        assert delta(before_a, after_a, "s2smux_stream_bytes_total", kind="outer-out", direction="out") > 0
        assert delta(before_b, after_b, "s2smux_stream_bytes_total", kind="outer-in", direction="in") > 0
        for s in (after_a, after_b):
            expect(s, "s2smux_stanzas_dropped_total", 0)
            expect(s, "s2smux_stanzas_bounced_total", 0, condition="remote-server-timeout")
            expect(s, "s2smux_queued_stanzas", 0)
            # Everything that waited for a stream was sent: one wait observed each.
            expect(s, "s2smux_queue_wait_seconds_count", v(s, "s2smux_stanzas_queued_total"))
            expect(s, "s2smux_mux_refused_stanzas_total", 0, direction="in", reason="from-not-multiplexed")
        expect(after_a, "s2smux_streams", 1, kind="outer-out", state="ready")
        expect(after_b, "s2smux_streams", 1, kind="outer-in", state="ready")
        expect(after_a, "s2smux_tls_handshakes_total", 1, kind="outer-out", result="ok")
        expect(after_a, "s2smux_tls_handshakes_total", 0, kind="outer-out", result="failed")
        expect(after_b, "s2smux_tls_handshakes_total", 1, kind="outer-in", result="ok")
        assert v(after_a, "s2smux_stanzas_queued_total") >= 1  # the first message waited for the stream

    with t.check("histograms: cumulative buckets, +Inf == _count"):
        for gw in (gwa, gwb):
            types, s = ctl_metrics(gw)[1]
            check_histograms(types, s)

    with t.check("HTTP GET /metrics on 127.0.0.1 and [::1]: 200, text format 0.0.4, same counters as s2smuxctl"):
        for gw, url in ((gwa, f"http://127.0.0.1:{a_http}/metrics"), (gwb, f"http://[::1]:{b_http}/metrics")):
            status, headers, body = http_get(url)
            assert status == 200, status
            assert headers.get("Content-Type") == "text/plain; version=0.0.4; charset=utf-8", headers
            assert headers.get("Connection") == "close", headers
            types, s = parse(body)
            _, (_, via_ctl) = ctl_metrics(gw)
            for name in ("s2smux_stanzas_routed_total", "s2smux_mux_adds_accepted_total"):
                labels = {"side": "peer"} if "adds" in name else {}
                assert v(s, name, **labels) == v(via_ctl, name, **labels), name
            check_histograms(types, s)
        status, headers, body = http_get(f"http://127.0.0.1:{a_http}/metrics", method="HEAD")
        assert status == 200 and body == "" and int(headers["Content-Length"]) > 1000, (status, headers)

    with t.check("HTTP errors: 404 other path, 405 other method, 400 garbage"):
        status, _, _ = http_get(f"http://127.0.0.1:{a_http}/")
        assert status == 404, status
        status, _, _ = http_get(f"http://127.0.0.1:{a_http}/metrics/x")
        assert status == 404, status
        status, headers, _ = http_get(f"http://127.0.0.1:{a_http}/metrics", method="POST")
        assert status == 405 and headers.get("Allow") == "GET, HEAD", (status, headers)
        out = raw_http(a_http, b"\x16\x03\x01 hello\r\n\r\n")
        assert out.startswith("HTTP/1.1 400 Bad Request\r\n"), out[:80]
        out = raw_http(a_http, b"GET /metrics HTTP/1.0\r\n\r\n")
        assert out.startswith("HTTP/1.0 200 OK\r\n") and "s2smux_stanzas_routed_total" in out, out[:80]

    with t.check("counters survive the mux stream closing (s2smuxd B stopped)"):
        _, (_, live) = ctl_metrics(gwa)
        gwb.stop()
        cl.wait_for(lambda: v(ctl_metrics(gwa)[1][1], "s2smux_mux_streams") == 0, 15, "A sees the mux stream close")
        _, (_, closed) = ctl_metrics(gwa)
        expect(closed, "s2smux_mux_domains", 0, side="peer")
        for name, labels in (("s2smux_stream_stanzas_total", {"kind": "outer-out", "direction": "out"}),
                             ("s2smux_stream_stanzas_total", {"kind": "outer-out", "direction": "in"}),
                             ("s2smux_mux_adds_accepted_total", {"side": "local"}),
                             ("s2smux_mux_adds_accepted_total", {"side": "peer"}),
                             ("s2smux_mux_add_round_trip_seconds_count", {}),
                             ("s2smux_stanzas_routed_total", {})):
            expect(closed, name, v(live, name, **labels), **labels)
        assert v(closed, "s2smux_stream_bytes_total", kind="outer-out", direction="in") >= \
            v(live, "s2smux_stream_bytes_total", kind="outer-out", direction="in")

    with t.check("s2smuxd A stops cleanly with an idle metrics connection open"):
        idle = socket.create_connection(("127.0.0.1", a_http), timeout=5)
        idle.sendall(b"GET /metr")
        cl.sleep(0.2)
        gwa.stop()
        problem = gwa.post_mortem()
        idle.close()
        assert problem is None, problem
        assert re.search(r"stopped serving metrics", gwa.log_text()), "no stop line"


if __name__ == "__main__":
    run(main, timeout=120)
