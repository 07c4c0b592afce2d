"""Demo PKI for interop tests, generated with GnuTLS certtool.

Every key is ECDSA P-256. A domain certificate carries the dNSName DOMAIN and
the SRVName (id-on-dnsSRV, RFC 4985) `_xmpp-server.DOMAIN`, and deliberately
NO XmppAddr: ejabberd 23.01 kills the incoming S2S process with `badarg` on
SASL EXTERNAL when the peer certificate has an XmppAddr with a bare domain.

    pki = Pki(tmpdir / "pki")
    a = pki.issue("a.test")                       # trusted, valid
    b = pki.issue("b.test", ca=pki.untrusted_ca)  # chain to a CA nobody trusts
    w = pki.issue("c.test", names=["wrong.test"]) # certificate for another name
    e = pki.issue("d.test", expired=True)         # expired yesterday
    a.cert, a.key, a.ca_file, a.bundle            # paths

Self-contained on purpose (certs/gen-certs.sh is the shell equivalent).
"""

from __future__ import annotations

import datetime as _dt
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

SRVNAME_OID = "1.3.6.1.5.5.7.8.7"  # id-on-dnsSRV
XMPPADDR_OID = "1.3.6.1.5.5.7.8.5"  # id-on-xmppAddr (not used by default)


def _certtool() -> str:
    path = shutil.which("certtool")
    if not path:
        raise RuntimeError("certtool not found (apt-get install gnutls-bin)")
    return path


def _run(args: list[str]) -> None:
    proc = subprocess.run([_certtool(), *args], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"certtool {' '.join(args)} failed:\n{proc.stdout}")


def _der_ia5(text: str) -> str:
    """Hex of a DER IA5String (SRVName's value type)."""
    data = text.encode("ascii")
    if len(data) < 128:
        length = bytes([len(data)])
    else:
        raw = len(data).to_bytes((len(data).bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(raw)]) + raw
    return (b"\x16" + length + data).hex()


def _date(d: _dt.datetime) -> str:
    return d.strftime("%Y-%m-%d %H:%M:%S")


def _genkey(path: Path) -> None:
    _run(["--generate-privkey", "--key-type=ecdsa", "--curve=secp256r1",
          "--no-text", "--outfile", str(path)])
    path.chmod(0o600)


@dataclass
class CertAuthority:
    name: str
    cert: Path
    key: Path

    @classmethod
    def create(cls, directory: Path, name: str = "s2smux demo CA") -> "CertAuthority":
        directory.mkdir(parents=True, exist_ok=True)
        slug = "".join(c if c.isalnum() else "-" for c in name.lower())
        key = directory / f"{slug}.key"
        cert = directory / f"{slug}.pem"
        _genkey(key)
        tmpl = directory / f"{slug}.tmpl"
        tmpl.write_text(
            f'cn = "{name}"\n'
            f'organization = "s2smux interop tests"\n'
            "ca\n"
            "cert_signing_key\n"
            "crl_signing_key\n"
            "expiration_days = 3650\n")
        _run(["--generate-self-signed", "--load-privkey", str(key),
              "--template", str(tmpl), "--no-text", "--outfile", str(cert)])
        return cls(name, cert, key)


@dataclass
class DomainCert:
    domain: str          # the domain this certificate is meant for
    names: list[str]     # the dNSNames actually on it
    cert: Path           # leaf certificate (PEM)
    key: Path            # private key (PEM, unencrypted)
    chain: Path          # leaf + issuing CA (PEM)
    bundle: Path         # leaf + CA + key in one file (ejabberd's certfiles)
    ca: CertAuthority    # issuer
    expired: bool = False

    @property
    def ca_file(self) -> Path:
        return self.ca.cert


class Pki:
    """A trusted demo CA, an untrusted one, and certificates issued by them."""

    def __init__(self, directory: Path | str):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ca = CertAuthority.create(self.dir, "s2smux demo CA")
        self._untrusted: CertAuthority | None = None
        self._serial = 1

    @property
    def ca_file(self) -> Path:
        """The trust anchor every test server is configured with."""
        return self.ca.cert

    @property
    def untrusted_ca(self) -> CertAuthority:
        """A second CA that no test server trusts (created on first use)."""
        if self._untrusted is None:
            self._untrusted = CertAuthority.create(self.dir, "s2smux untrusted CA")
        return self._untrusted

    def issue(self, domain: str, *, names: list[str] | None = None,
              ca: CertAuthority | None = None, expired: bool = False,
              srv_names: bool = True, xmpp_addr: bool = False,
              tag: str = "", days: int = 365, starts_in_days: int = 0,
              expires_in_seconds: int | None = None) -> DomainCert:
        """Issue a server certificate for `domain`.

        names: dNSNames to put on it (default: [domain]); pass other names
               for a wrong-name certificate.
        ca: issuer (default: the trusted demo CA; `self.untrusted_ca` for an
            untrusted chain).
        expired: validity ended yesterday.
        srv_names: add SRVName _xmpp-server.NAME for each name.
        xmpp_addr: add XmppAddr NAME (crashes ejabberd 23.01; off by default).
        tag: file name suffix to keep several certificates for one domain.
        days: validity (from yesterday), e.g. a longer one for a renewal.
        starts_in_days: > 0 for a certificate that is not valid yet.
        expires_in_seconds: a short-lived certificate, valid from yesterday
            until this many seconds from now (certificate expiry mid-stream).
        """
        ca = ca or self.ca
        names = list(names) if names is not None else [domain]
        stem = domain + (f"-{tag}" if tag else "")
        if ca is not self.ca:
            stem += "-untrusted"
        if expired:
            stem += "-expired"
        if starts_in_days > 0:
            stem += "-future"
        if expires_in_seconds is not None:
            stem += "-short"
        key = self.dir / f"{stem}.key"
        cert = self.dir / f"{stem}.crt"
        tmpl = self.dir / f"{stem}.tmpl"
        _genkey(key)
        self._serial += 1
        lines = [f'cn = "{names[0] if names else domain}"',
                 f"serial = {self._serial}",
                 "signing_key", "encryption_key",
                 "tls_www_server", "tls_www_client"]
        for n in names:
            lines.append(f'dns_name = "{n}"')
        if srv_names:
            for n in names:
                lines.append(f'other_name = "{SRVNAME_OID} {_der_ia5("_xmpp-server." + n)}"')
        if xmpp_addr:
            for n in names:
                lines.append(f'xmpp_name = "{n}"')
        now = _dt.datetime.now(_dt.timezone.utc).replace(tzinfo=None)
        if expired:
            lines.append(f'activation_date = "{_date(now - _dt.timedelta(days=30))}"')
            lines.append(f'expiration_date = "{_date(now - _dt.timedelta(days=1))}"')
        elif expires_in_seconds is not None:
            lines.append(f'activation_date = "{_date(now - _dt.timedelta(days=1))}"')
            lines.append(f'expiration_date = "{_date(now + _dt.timedelta(seconds=expires_in_seconds))}"')
        elif starts_in_days > 0:
            lines.append(f'activation_date = "{_date(now + _dt.timedelta(days=starts_in_days))}"')
            lines.append(f'expiration_date = "{_date(now + _dt.timedelta(days=starts_in_days + days))}"')
        else:
            lines.append(f'activation_date = "{_date(now - _dt.timedelta(days=1))}"')
            lines.append(f"expiration_days = {days}")
        tmpl.write_text("\n".join(lines) + "\n")
        _run(["--generate-certificate", "--load-privkey", str(key),
              "--load-ca-certificate", str(ca.cert), "--load-ca-privkey", str(ca.key),
              "--template", str(tmpl), "--no-text", "--outfile", str(cert)])
        chain = self.dir / f"{stem}.chain.pem"
        chain.write_text(cert.read_text() + ca.cert.read_text())
        bundle = self.dir / f"{stem}.bundle.pem"
        bundle.write_text(cert.read_text() + ca.cert.read_text() + key.read_text())
        bundle.chmod(0o600)
        return DomainCert(domain, names, cert, key, chain, bundle, ca, expired)


def describe(cert: Path) -> str:
    """certtool's human-readable dump of a certificate (for debugging)."""
    return subprocess.run([_certtool(), "-i", "--infile", str(cert)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True).stdout
