#!/usr/bin/python3
"""Seeds for fuzz_session from the capture corpus (tests/captures/*.cap).

Each complete stream of a capture becomes one fuzz_session input: the
configuration byte from its S record, then what the peer sent, one read per
'<' record, with the daemon's calls that fuzz_session can express as events
(timer, EOF, dialback answers, closes, stanzas sent) between the reads. The
format is fuzz_session.cc's: reads separated by 0x01, the byte after a 0x01
is the event.

Usage: captures_to_seeds.py OUT_DIR CAPTURE...
"""
import hashlib
import re
import sys
from pathlib import Path

ESC = re.compile(rb"\\x([0-9a-fA-F]{2})")


def unescape(s: bytes) -> bytes:
    return ESC.sub(lambda m: bytes([int(m.group(1), 16)]), s)


def cfg_byte(tokens: dict) -> int:
    b = 0
    if tokens.get("role") == "initiator":
        b |= 0x01
    b |= {"required": 0, "optional": 1, "disabled": 2}.get(tokens.get("tls", "required"), 0) << 1
    if tokens.get("use_dialback", "1") == "0" and tokens.get("offer_dialback", "1") == "0":
        b |= 0x08
    b |= 0x20  # the peer's certificate verifies (as in the recorded runs)
    if tokens.get("offer_mux") == "1" or tokens.get("want_mux") == "1":
        b |= 0x80
    return b


EVENTS = {b"timer": b"t", b"eof": b"x", b"send-stanza": b"s", b"db-verify": b"d"}


def seeds(path: Path):
    streams: dict[bytes, dict] = {}
    for line in path.read_bytes().split(b"\n"):
        parts = line.split(b" ", 3)
        if len(parts) < 4 or parts[0] not in (b"S", b"<", b"!"):
            continue
        kind, sid, rest = parts[0], parts[2], parts[3]
        if kind == b"S":
            toks = dict(t.split(b"=", 1) for t in rest.split(b" ") if b"=" in t)
            toks = {k.decode(): unescape(v).decode("utf-8", "replace") for k, v in toks.items()}
            if toks.get("partial") != "1":
                streams[sid] = {"cfg": cfg_byte(toks), "parts": []}
        elif sid in streams:
            s = streams[sid]
            if kind == b"<":
                s["parts"].append(unescape(rest))
            else:
                name = rest.split(b" ", 1)[0]
                if name == b"dialback-result":
                    ev = b"v" if b" valid " in rest else b"i"
                elif name == b"close":
                    ev = b"C" if b" " in rest else b"c"
                else:
                    ev = EVENTS.get(name)
                if ev and s["parts"]:
                    s["parts"][-1] += b"\x01" + ev
    for s in streams.values():
        if s["parts"]:
            # A read may hold 0x01 only where we put it: XML never carries it.
            yield bytes([s["cfg"]]) + b"\x01Z".join(s["parts"])


def main():
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    for cap in sys.argv[2:]:
        for seed in seeds(Path(cap)):
            (out / f"capture-{hashlib.sha1(seed).hexdigest()[:16]}").write_bytes(seed)
            n += 1
    print(f"{n} seeds from {len(sys.argv) - 2} captures")


if __name__ == "__main__":
    main()
