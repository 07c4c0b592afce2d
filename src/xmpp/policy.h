// TLS policy toward a remote (see seed 004, "secure only" vs "fallback").
#pragma once

#include <optional>
#include <string_view>

namespace s2smux::xmpp {

enum class TlsPolicy {
    Required, // TLS always; the peer's certificate must validate; never plaintext or dialback-without-TLS
    Optional, // TLS when offered; an unverifiable peer falls back to dialback; plaintext allowed
    Disabled, // never start TLS (plaintext + dialback only)
};

inline const char* to_string(TlsPolicy p) {
    switch (p) {
    case TlsPolicy::Required: return "required";
    case TlsPolicy::Optional: return "optional";
    case TlsPolicy::Disabled: return "disabled";
    }
    return "?";
}

inline std::optional<TlsPolicy> parse_tls_policy(std::string_view s) {
    if (s == "required") return TlsPolicy::Required;
    if (s == "optional") return TlsPolicy::Optional;
    if (s == "disabled") return TlsPolicy::Disabled;
    return std::nullopt;
}

} // namespace s2smux::xmpp
