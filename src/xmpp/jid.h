// JIDs (RFC 7622) as far as a server-to-server gateway needs them: split a
// JID into views without allocating, validate it, and normalise domains.
// Domains are compared in ASCII-lowercased form; internationalised labels are
// passed through as UTF-8 (the servers behind the gateway apply nameprep).
#pragma once

#include <string>
#include <string_view>

namespace s2smux::xmpp {

struct JidParts {
    std::string_view local;
    std::string_view domain;
    std::string_view resource;
    bool has_local = false;
    bool has_resource = false;
};

// Splits and validates; false for malformed JIDs (empty parts after a
// separator, over-long parts, forbidden characters, invalid domain).
bool parse_jid(std::string_view jid, JidParts& out);

// A valid domainpart: 1..1023 bytes, labels 1..63 bytes, no whitespace or
// control characters, none of the characters RFC 7622 forbids, or an IP
// literal ("[::1]" / "127.0.0.1").
bool valid_domain(std::string_view d);

bool needs_lowercase(std::string_view d);
std::string lowercase_domain(std::string_view d);

// Domain of a JID, lowercased, or empty string if the JID is malformed.
std::string jid_domain(std::string_view jid);

} // namespace s2smux::xmpp
