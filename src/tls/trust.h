// Trust store and chain verification. Verification is pure and thread-safe
// (read-only trust list), so the daemon runs it on the libuv thread pool.
#pragma once

#include "common/result.h"
#include "tls/identity.h"

#include <gnutls/x509.h>

#include <cstdint>
#include <memory>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <vector>

namespace s2smux::tls {

class TrustStore {
public:
    TrustStore();
    ~TrustStore();
    TrustStore(const TrustStore&) = delete;
    TrustStore& operator=(const TrustStore&) = delete;

    // PEM file with one or more CA certificates.
    Result<void> add_ca_file(const std::string& path);
    Result<void> add_ca_pem(std::string_view pem);
    // The system store (gnutls_x509_trust_list_add_system_trust).
    Result<void> add_system();
    std::size_t count() const { return count_; }

    gnutls_x509_trust_list_t list() const { return list_; }

    // Readers (verify_chain) hold it shared, add_* exclusive, so CAs can be
    // added while verifications run on other threads.
    std::shared_mutex& mutex() const { return mu_; }

private:
    gnutls_x509_trust_list_t list_ = nullptr;
    std::size_t count_ = 0;
    mutable std::shared_mutex mu_;
};

// Why a chain was rejected, for callers that map it onto protocol errors
// (mux <failed/> reasons). `error` stays the human-readable text.
enum class VerifyError {
    None,         // trusted
    Untrusted,    // no path to a trust anchor, signer not a CA, CA constraints, insecure
                  // algorithm, revoked, unknown critical extension
    Expired,      // a certificate of the path (leaf, intermediate or anchor) expired at `now`
    NotYetValid,  // a certificate of the path is not valid yet at `now`
    BadSignature, // a signature in the chain does not verify (tampered certificate)
    ChainTooLong, // more than 8 certificates (rejected before parsing)
    Malformed,    // no certificate, a certificate that does not parse, unreadable dates
    Internal,     // local failure (out of memory, trust list not initialised, GnuTLS error)
};
const char* to_string(VerifyError e); // "untrusted", "expired", ... ("none" for None)

struct VerifyResult {
    bool trusted = false;     // chain valid to a trust anchor, dates OK at `now`
    std::string error;        // human-readable reason when !trusted ("certificate expired on
                              // 2024-01-01T00:00:00Z", "certificate signer not trusted (issuer CN=X)", ...)
    Identity identity;        // of the leaf (filled whenever the leaf parses)
    VerifyError reason = VerifyError::Untrusted; // None exactly when trusted; set with `error`
    // When trusted: the window (unix seconds, inclusive) in which every
    // certificate of the verified path, trust anchor included, is valid; the
    // same chain verifies again at any `now` inside it as long as the trust
    // store is unchanged. 0 / 0 when not trusted.
    std::int64_t valid_from = 0, valid_until = 0;
    // When trusted: a certificate of the path (trust anchor included) has
    // name constraints, so what it accepts depends on the leaf's names.
    bool name_constrained = false;
};

// Verifies a peer chain (DER, leaf first) against `trust` at unix time `now`.
// Checks signatures, validity dates of every certificate, CA constraints.
// Does not check names: use matches_domain(result.identity, domain).
VerifyResult verify_chain(const TrustStore& trust, const std::vector<std::string>& chain_der,
                          std::int64_t now);

// The DER of a trust anchor of `trust` that issued `cert_der` (its subject
// is the certificate's issuer and its key ids match; the signature is not
// checked), or "" when there is none.
std::string anchor_issuer_der(const TrustStore& trust, std::string_view cert_der);

// A certificate that may issue others: basicConstraints CA, and keyCertSign
// if it has a keyUsage (what GnuTLS requires of an issuer).
bool is_ca_der(std::string_view cert_der);

} // namespace s2smux::tls
