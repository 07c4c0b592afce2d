// Certificate identities and RFC 6125 matching for XMPP server-to-server
// (RFC 6120 §13.7.1.2, RFC 7590): dNSName (wildcard only as the whole
// leftmost label), SRVName id-on-dnsSRV ("_xmpp-server.<domain>"), XmppAddr
// id-on-xmppAddr. The subject CN is never used when SANs exist; it is only a
// last resort when the certificate has no identity SANs at all.
#pragma once

#include "common/result.h"

#include <gnutls/x509.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace s2smux::tls {

struct Identity {
    std::vector<std::string> dns;      // dNSName, lowercased, may start with "*."
    std::vector<std::string> srv;      // SRVName values as in the cert, e.g. "_xmpp-server.example.com"
    std::vector<std::string> xmpp;     // XmppAddr values (bare domains for servers)
    std::string subject;               // RFC 4514 subject DN (for logs and same-subject replace)
    std::string common_name;           // CN, only used when no SAN identity exists
    std::int64_t not_before = 0;       // unix seconds
    std::int64_t not_after = 0;

    // Every XMPP domain name this certificate is valid for (wildcards kept as
    // "*.example.com"), deduplicated, sorted.
    std::vector<std::string> names() const;
};

// True if `id` authenticates the XMPP server domain `domain`.
bool matches_domain(const Identity& id, std::string_view domain);

// Wildcard rule used by matches_domain(): "*.example.com" matches
// "a.example.com", not "example.com" nor "a.b.example.com". Case-insensitive
// (ASCII), one trailing dot ignored. Partial wildcards ("f*.example.com"),
// wildcards outside the leftmost label and wildcards over a single label
// ("*.test", "*.com") match nothing. Names with non-ASCII bytes (U-labels:
// IDNs must be compared as A-labels, "xn--...") or empty labels never match.
bool dns_name_matches(std::string_view pattern, std::string_view domain);

// Parses identities of a DER X.509 certificate.
Result<Identity> identity_from_der(std::string_view der);
// The same from a certificate already parsed.
Result<Identity> identity_from_crt(gnutls_x509_crt_t crt);

} // namespace s2smux::tls
