"""Reading Prosody 0.12 logs: lines, S2S sessions, how each was secured."""

from __future__ import annotations

import re
from dataclasses import dataclass, field


# -- log analysis -----------------------------------------------------------------
#
# Prosody 0.12 file log lines (timestamps = true) look like
#   "Nov 23 15:44:08 s2sin563e67fd7ff0\tinfo\tStream encrypted (TLSv1.3 with TLS_AES_128_GCM_SHA256)"
# i.e. DATE SOURCE<TAB>LEVEL<TAB>MESSAGE; a message may span several lines.
# Each S2S session logs under its own source name "s2sin<hex>" / "s2sout<hex>".


_LINE = re.compile(r"^(\w{3} +\d+ \d\d:\d\d:\d\d) (\S+)\t(\w+)\t(.*)$")


@dataclass
class LogLine:
    time: str
    source: str
    level: str
    message: str

    def __str__(self):
        return f"{self.time} {self.source}\t{self.level}\t{self.message}"


def parse_log(text: str) -> list[LogLine]:
    lines: list[LogLine] = []
    for raw in text.splitlines():
        m = _LINE.match(raw)
        if m:
            lines.append(LogLine(*m.groups()))
        elif lines:
            lines[-1].message += "\n" + raw
    return lines


@dataclass
class S2sSession:
    """Everything one Prosody S2S session logged."""
    source: str                       # "s2sin55c5c7cedcb0"
    lines: list[LogLine] = field(default_factory=list)

    @property
    def direction(self) -> str:
        return "incoming" if self.source.startswith("s2sin") else "outgoing"

    def find(self, pattern: str) -> LogLine | None:
        rx = re.compile(pattern)
        return next((l for l in self.lines if rx.search(l.message)), None)

    def completed(self) -> list[tuple[str, str]]:
        """(from, to) pairs of "<Direction> s2s connection FROM->TO complete"."""
        out = []
        for l in self.lines:
            m = re.match(r"(?:Incoming|Outgoing) s2s connection (\S+)->(\S+) complete$", l.message)
            if m:
                out.append((m.group(1), m.group(2)))
        return out

    def tls(self) -> LogLine | None:
        # info "Stream encrypted (TLSv1.3 with TLS_AES_128_GCM_SHA256)"
        return self.find(r"^Stream encrypted \(")

    def auth(self) -> tuple[str | None, LogLine | None]:
        """("external" | "dialback" | None, the line that shows it).

        A stream counts as EXTERNAL only when the SASL exchange succeeded:
        Prosody falls back to dialback on the same stream after <failure/>."""
        if not self.find(r"^connection \S+ is now authenticated"):
            return None, None
        if self.direction == "outgoing":
            # debug "Received[s2sout_unauthed]: <success xmlns='urn:ietf:params:xml:ns:xmpp-sasl' xml:lang='en'>"
            # (after "Sending[s2sout_unauthed]: <auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>")
            l = self.find(r"^Received\[s2sout_unauthed\]: <success\b[^>]*xmpp-sasl")
            if l and self.find(r"^Sending\[s2sout_unauthed\]: <auth\b[^>]*mechanism='EXTERNAL'"):
                return "external", l
            # debug "sent dialback key on outgoing s2s stream", then
            # debug "Received[s2sout_unauthed]: <result from='b.test' xml:lang='en' type='valid' xmlns='jabber:server:dialback' to='a.test'>"
            l = self.find(r"^Received\[s2sout_unauthed\]: <result\b[^>]*type='valid'")
            if l and self.find(r"^sent dialback key on outgoing s2s stream"):
                return "dialback", l
        else:
            # debug "Received[s2sin_unauthed]: <auth mechanism='EXTERNAL' xml:lang='en' xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
            # then debug "Sending[s2sin_unauthed]: <success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
            # (attribute order varies between runs)
            l = self.find(r"^Sending\[s2sin_unauthed\]: <success\b[^>]*xmpp-sasl")
            if l and self.find(r"^Received\[s2sin_unauthed\]: <auth\b[^>]*mechanism='EXTERNAL'"):
                return "external", l
            # debug "asking b.test if key 3f2a... belongs to them"
            l = self.find(r"^asking \S+ if key \S+ belongs to them")
            if l:
                return "dialback", l
        return None, None

    def __str__(self):
        return "\n".join(str(l) for l in self.lines)


def s2s_sessions(text: str) -> dict[str, S2sSession]:
    sessions: dict[str, S2sSession] = {}
    for l in parse_log(text):
        if re.match(r"^s2s(in|out)[0-9a-f]+$", l.source):
            sessions.setdefault(l.source, S2sSession(l.source)).lines.append(l)
    return sessions
