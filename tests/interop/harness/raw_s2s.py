"""A raw server-to-server client for sending what a well-behaved server never
would (malformed XML, oversize stanzas) after a genuine authentication:
STARTTLS with a client certificate, then SASL EXTERNAL, using Python's ssl.

    c = RawS2S("127.0.0.1", port, "b.test", "a.test", cert=pki.issue("b.test"), ca_file=pki.ca_file)
    c.authenticate()          # raises with the transcript on failure
    c.send("<message ...>")   # raw bytes
    c.read_until("</stream:stream>")
"""

from __future__ import annotations

import base64
import socket
import ssl
import time

HEADER = ("<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
          "xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' "
          "from='{frm}' to='{to}' version='1.0'>")


class RawS2S:
    def __init__(self, host: str, port: int, frm: str, to: str, cert=None, ca_file=None,
                 timeout: float = 10.0):
        self.frm, self.to = frm, to
        self.cert, self.ca_file, self.timeout = cert, ca_file, timeout
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.received = ""   # everything read so far (plaintext)
        self.closed = False

    def send(self, data: str | bytes) -> None:
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def read_until(self, needle: str, timeout: float | None = None) -> str:
        """Reads until `needle` appears in what was received; returns all of it."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while needle not in self.received:
            left = deadline - time.monotonic()
            if left <= 0 or self.closed:
                raise AssertionError(f"'{needle}' not received; got: {self.received[-600:]!r}")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except (socket.timeout, TimeoutError):
                continue
            except (ssl.SSLError, OSError):
                self.closed = True
                continue
            if not chunk:
                self.closed = True
                continue
            self.received += chunk.decode(errors="replace")
        return self.received

    def wait_closed(self, timeout: float | None = None) -> bool:
        deadline = time.monotonic() + (timeout or self.timeout)
        while not self.closed and time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(65536)
                if not chunk:
                    self.closed = True
                else:
                    self.received += chunk.decode(errors="replace")
            except (socket.timeout, TimeoutError):
                pass
            except (ssl.SSLError, OSError):
                self.closed = True
        return self.closed

    def open_stream(self) -> None:
        mark = len(self.received)
        self.send(HEADER.format(frm=self.frm, to=self.to))
        deadline = time.monotonic() + self.timeout
        while "</stream:features>" not in self.received[mark:] and "<stream:features/>" not in self.received[mark:]:
            if time.monotonic() > deadline:
                raise AssertionError(f"no stream features; got: {self.received[mark:]!r}")
            self._read_some()

    def _read_some(self) -> None:
        self.sock.settimeout(0.2)
        try:
            chunk = self.sock.recv(65536)
        except (socket.timeout, TimeoutError):
            return
        if not chunk:
            self.closed = True
            raise AssertionError(f"connection closed; got: {self.received[-600:]!r}")
        self.received += chunk.decode(errors="replace")

    def starttls(self) -> None:
        self.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        self.read_until("<proceed")
        ctx = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        ctx.check_hostname = True
        if self.cert is not None:
            ctx.load_cert_chain(str(self.cert.chain), str(self.cert.key))
        self.sock = ctx.wrap_socket(self.sock, server_hostname=self.to)
        self.received = ""

    def authenticate(self, bidi: bool = False) -> None:
        """STARTTLS + SASL EXTERNAL as `frm` (after enabling bidi if asked);
        leaves an authenticated stream whose features are in `received`."""
        self.open_stream()
        self.starttls()
        self.open_stream()
        if bidi:
            if "urn:xmpp:features:bidi" not in self.received:
                raise AssertionError(f"bidi not offered: {self.received!r}")
            self.send("<bidi xmlns='urn:xmpp:bidi'/>")
        if "EXTERNAL" not in self.received:
            raise AssertionError(f"SASL EXTERNAL not offered: {self.received!r}")
        authzid = base64.b64encode(self.frm.encode()).decode()
        self.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>{authzid}</auth>")
        self.read_until("<success")
        self.received = ""
        self.open_stream()

    def enable_mux(self) -> None:
        """After authenticate(bidi=True): enable multiplexing."""
        if "urn:s2smux:mux:0" not in self.received:
            raise AssertionError(f"multiplexing not offered: {self.received!r}")
        self.received = ""
        self.send("<enable xmlns='urn:s2smux:mux:0'/>")
        self.read_until("<enabled")

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
