// The receiver's whole verification of one <add/>: chain, dates, name,
// proof. Pure and thread-safe (runs on the libuv thread pool).
#pragma once

#include "tls/identity.h"
#include "tls/trust.h"

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace s2smux::mux {

// Reasons of a <failed/>, names as on the wire.
enum class AddFailure : std::uint8_t {
    None,
    Malformed,      // <malformed/>: bad base64, no certificate, unparsable DER
    ChainTooLarge,  // <chain-too-large/>
    Untrusted,      // <untrusted/>: does not chain to a trust anchor, bad signature in the chain
    Expired,        // <expired/>
    NotYetValid,    // <not-yet-valid/>
    NameMismatch,   // <name-mismatch/>: the domain is not a name of the certificate
    BadProof,       // <bad-proof/>: signature invalid (wrong key, other stream, other id/domain)
    Replayed,       // <replayed/>: add id already used on this stream
    RateLimited,    // <rate-limited/>
    TooManyDomains, // <too-many-domains/>
    Busy,           // <busy/>: verification queue full
    PolicyViolation,// <policy-violation/>: e.g. claiming one of the receiver's own domains, mux not enabled
};
const char* to_string(AddFailure f);
bool parse_add_failure(std::string_view name, AddFailure& out);

struct AddCheckInput {
    std::vector<std::string> chain_der; // leaf first, as received
    std::string domain;
    std::string alg, signature;
    std::string message;                // proof_message() as the receiver computes it
    std::int64_t now = 0;               // unix seconds
};

struct AddCheckResult {
    AddFailure failure = AddFailure::None;
    std::string text;                   // human-readable detail for <text/> and logs
    tls::Identity identity;             // of the leaf, when it parsed
    std::vector<std::string> names;     // identity.names() when accepted
};

AddCheckResult check_add(const tls::TrustStore& trust, const AddCheckInput& in);

} // namespace s2smux::mux
