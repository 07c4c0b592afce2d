#!/usr/bin/python3
"""A deliberately altered capture fails replay with a readable diff.

Takes a capture of the corpus (tests/captures) holding a SASL <success/>,
checks it replays as recorded, then alters what the gateway wrote (a
<success/> becomes a <failure/>), what the peer sent (a stream header names
another host), and the format version, and checks each outcome: exit 1 with
the input's line and a '-'/'+' diff, exit 1 naming the unexpected callback,
exit 2 with the version in the message.

Usage: test_altered.py S2SMUX_REPLAY CAPTURE_DIR
"""
import subprocess
import sys
import tempfile
from pathlib import Path

replay, capdir = sys.argv[1], Path(sys.argv[2])
SUCCESS = "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>"
failures = 0


def check(label, ok, detail=""):
    global failures
    print(f"{'ok  ' if ok else 'FAIL'} {label}")
    if not ok:
        failures += 1
        print("     " + detail.replace("\n", "\n     "))


def run(text):
    with tempfile.NamedTemporaryFile("w", suffix=".cap", delete=False) as f:
        f.write(text)
    r = subprocess.run([replay, f.name], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60)
    Path(f.name).unlink()
    return r.returncode, r.stdout


def first_line(lines, pred):
    for i, line in enumerate(lines):
        if pred(line):
            return i
    return None


source = next((p for p in sorted(capdir.glob("*.cap"))
               if any(l.startswith("> ") and SUCCESS in l for l in p.read_text().splitlines())), None)
if source is None:
    print(f"FAIL no capture in {capdir} holds a SASL <success/>")
    sys.exit(1)
text = source.read_text()
lines = text.split("\n")
print(f"# altering {source.name}")

rc, out = run(text)
check("the unaltered capture replays (exit 0)", rc == 0 and " 0 failed" in out, out)

# 1. What the gateway wrote: <success/> becomes <failure/>.
i = first_line(lines, lambda l: l.startswith("> ") and SUCCESS in l)
stream = lines[i].split(" ")[2]
bad = lines[:]
bad[i] = bad[i].replace(SUCCESS, "<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><not-authorized/></failure>", 1)
rc, out = run("\n".join(bad))
check("altered output: exit 1", rc == 1, out)
check("altered output: the stream and the input line are named",
      f"stream {stream} " in out and "output differs after the input at line" in out, out)
check("altered output: '-' is the altered recording, '+' what the core wrote",
      "  - <failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>" in out and f"  + {SUCCESS}" in out, out)
check("altered output: last line is the summary", out.strip().splitlines()[-1].endswith("1 failed, 0 skipped")
      or " 1 failed" in out.strip().splitlines()[-1], out)

# 2. What the peer sent: its first header names a host the gateway does not serve.
j = first_line(lines, lambda l: l.startswith(f"< ") and l.split(" ")[2] == stream and " to='" in l)
bad = lines[:]
to = bad[j].split(" to='", 1)[1].split("'", 1)[0]
bad[j] = bad[j].replace(f" to='{to}'", " to='not-served.example'", 1)
rc, out = run("\n".join(bad))
check("altered input: exit 1", rc == 1, out)
check("altered input: the replay says where the core went another way",
      "the session made the" in out or "output differs" in out, out)

# 3. A format version this build does not read.
rc, out = run(text.replace("s2smux-capture 1 ", "s2smux-capture 9 ", 1))
check("unknown format version: exit 2 with the version named", rc == 2 and "version 9" in out, out)

print(f"{4 + 2 + 1 + 1 - failures} passed, {failures} failed")
sys.exit(1 if failures else 0)
