// The receiver's whole verification of one <add/>: chain, dates, name,
// proof. Pure and thread-safe (runs on the libuv thread pool).
#pragma once

#include "mux/proof.h"
#include "tls/ec_verify.h"
#include "tls/identity.h"
#include "tls/trust.h"

#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
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
// The wire name ("bad-proof", ...); "none" for None, which has no wire name
// and which parse_add_failure() does not accept.
const char* to_string(AddFailure f);
bool parse_add_failure(std::string_view name, AddFailure& out);

// How a chain verification failure is reported: Expired / NotYetValid /
// Malformed / ChainTooLarge as such, everything else (bad signature in the
// chain, unknown CA, local errors) as Untrusted.
AddFailure add_failure_for(tls::VerifyError e);

// Limits of an <add/> chain, checked before any parsing.
constexpr std::size_t kMaxAddChainCerts = 8;
constexpr std::size_t kMaxAddChainBytes = 64 * 1024; // sum of the DER sizes

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

// In order, stopping at the first failure:
//  1. chain sanity: no certificate or an empty one -> Malformed; more than
//     kMaxAddChainCerts certificates or more than kMaxAddChainBytes -> ChainTooLarge;
//  2. tls::verify_chain() at `now` (a certificate that does not parse -> Malformed,
//     see add_failure_for(); text = VerifyResult::error);
//  3. `domain` must be a name of the leaf (tls::matches_domain) -> NameMismatch,
//     the text lists the leaf's names;
//  4. the proof: an empty `message` (proof_message() refused its input) ->
//     Malformed; a message that does not end with 0x00 <domain> 0x00
//     SHA-256(leaf) (i.e. not computed for this domain and certificate) ->
//     BadProof; verify_proof() with the leaf's key -> BadProof.
// `identity` is filled whenever the leaf parses, `names` only on success.
AddCheckResult check_add(const tls::TrustStore& trust, const AddCheckInput& in);

// Chains that verified, so that check_add() neither verifies the same chain
// again (its CA signature costs as much as the proof) nor parses its leaf
// again (the proof key is kept too): one certificate adding many domains
// (multi-name and wildcard certificates), every domain again after a
// reconnect. Optional: check_add() without a cache verifies every chain.
//
// It also remembers issuers (the certificate that signed a verified leaf,
// sent in the chain or a trust anchor), so that a NEW leaf under a known
// issuer costs one ECDSA check of its signature (libcrypto) instead of a
// whole path verification: the cold-add path of thousands of domains from
// one CA. An issuer is only remembered once it verified on its own (a
// trusted chain at `now`), is a CA allowed to sign certificates, has ECDSA
// key that verifies the leaf that taught it, and no certificate of its path
// has name constraints. A leaf checked against it must have a valid ECDSA
// signature under that key (same algorithm inside and outside the signed
// part), only critical extensions GnuTLS knows (keyUsage, basicConstraints,
// subjectAltName, extKeyUsage), and be valid at `now`, as must the issuer's
// path; anything else falls back to the full verification, so failures
// carry the same reasons and texts. Same generation rule as chains.
//
// Only successes are kept, under SHA-256 of the exact chain bytes, each with
// tls::VerifyResult::valid_from/valid_until: a hit needs `now` inside that
// window, so dates are enforced exactly as verify_chain() does. The cache is
// bound to one TrustStore (and must not outlive it); adding CAs to it
// (TrustStore::count() changes) turns older entries into misses. Bounded
// (least recently used entry dropped), thread-safe (one mutex, held for
// lookups and inserts only, never while verifying).
class ChainCache {
public:
    explicit ChainCache(const tls::TrustStore& trust, std::size_t capacity = 4096);
    ChainCache(const ChainCache&) = delete;
    ChainCache& operator=(const ChainCache&) = delete;

    const tls::TrustStore& trust() const { return trust_; }
    std::size_t size() const;
    void clear();
    struct Stats {
        std::uint64_t hits = 0, misses = 0;
        std::uint64_t issuer_hits = 0; // misses verified against a remembered issuer
    };
    Stats stats() const;

    // For check_add(): the leaf identity and proof key of a chain that
    // verified at `now` with the trust store as it is, or false; then
    // insert(probe, result of verify_chain(), proof key of the leaf) (the
    // probe holds the key and the trust store generation read before verifying).
    struct Probe {
        std::string key;
        std::size_t generation = 0;
    };
    bool lookup(const std::vector<std::string>& chain_der, std::int64_t now, tls::Identity& identity,
                ProofKey& proof_key, Probe& probe);
    void insert(Probe probe, const tls::VerifyResult& verified, ProofKey proof_key);

    struct Issuer {
        std::shared_ptr<const tls::EcPublicKey> key; // null: known, never a fast path (not ECDSA, not a CA, constrained)
        std::int64_t valid_from = 0, valid_until = 0; // of its whole path, anchor included
        std::size_t generation = 0;
    };
    // Under issuer_key(): the leaf's issuer name and the rest of its chain.
    static std::string issuer_key(std::string_view leaf_issuer_dn, const std::vector<std::string>& chain_der);
    std::shared_ptr<const Issuer> issuer(const std::string& key, std::size_t generation);
    void remember_issuer(std::string key, Issuer issuer);
    std::size_t issuer_count() const;

private:
    struct Entry {
        std::string key;
        tls::Identity identity;
        ProofKey proof_key;
        std::int64_t valid_from = 0, valid_until = 0;
        std::size_t generation = 0;
    };
    std::size_t generation() const; // trust_.count(), read under its lock

    const tls::TrustStore& trust_;
    const std::size_t capacity_;
    mutable std::mutex mu_;
    std::list<Entry> lru_; // most recent first
    std::unordered_map<std::string, std::list<Entry>::iterator> by_key_;
    std::unordered_map<std::string, std::shared_ptr<const Issuer>> issuers_; // few: emptied when full
    Stats stats_;
};

// check_add() with a cache of verified chains (see ChainCache); `cache` may
// be null, and is ignored when bound to another TrustStore than `trust`.
// Same results as without a cache.
AddCheckResult check_add(const tls::TrustStore& trust, const AddCheckInput& in, ChainCache* cache);

} // namespace s2smux::mux
