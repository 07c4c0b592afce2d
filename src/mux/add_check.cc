#include "mux/add_check.h"

#include "mux/proof.h"

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

#include <array>
#include <cstring>
#include <shared_mutex>
#include <utility>

namespace s2smux::mux {

namespace {

struct WireName {
    AddFailure failure;
    std::string_view name;
};

constexpr std::array<WireName, 12> kWireNames{{
    {AddFailure::Malformed, "malformed"},
    {AddFailure::ChainTooLarge, "chain-too-large"},
    {AddFailure::Untrusted, "untrusted"},
    {AddFailure::Expired, "expired"},
    {AddFailure::NotYetValid, "not-yet-valid"},
    {AddFailure::NameMismatch, "name-mismatch"},
    {AddFailure::BadProof, "bad-proof"},
    {AddFailure::Replayed, "replayed"},
    {AddFailure::RateLimited, "rate-limited"},
    {AddFailure::TooManyDomains, "too-many-domains"},
    {AddFailure::Busy, "busy"},
    {AddFailure::PolicyViolation, "policy-violation"},
}};

// Printable, bounded copy of peer-supplied text for error messages.
std::string shown(std::string_view s, std::size_t max = 255) {
    std::string out(s.substr(0, max));
    for (char& c : out)
        if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) == 0x7f) c = '?';
    if (s.size() > max) out += "...";
    return out;
}

// The proof message ends with "0x00 <domain> 0x00 <SHA-256 of the leaf>"
// (see proof.h): check that it covers what this add claims.
bool message_covers(std::string_view message, std::string_view domain, std::string_view leaf_der) {
    constexpr std::size_t kHash = 32;
    if (message.size() < kHash + domain.size() + 2) return false;
    unsigned char hash[kHash];
    if (gnutls_hash_fast(GNUTLS_DIG_SHA256, leaf_der.data(), leaf_der.size(), hash) < 0) return false;
    std::string_view tail = message.substr(message.size() - kHash);
    if (std::memcmp(tail.data(), hash, kHash) != 0) return false;
    std::size_t dom_end = message.size() - kHash - 1; // the 0x00 after the domain
    std::size_t dom_start = dom_end - domain.size();
    return message[dom_end] == '\0' && message[dom_start - 1] == '\0' &&
           message.substr(dom_start, domain.size()) == domain;
}

} // namespace

const char* to_string(AddFailure f) {
    if (f == AddFailure::None) return "none";
    for (const auto& w : kWireNames)
        if (w.failure == f) return w.name.data(); // literals: NUL-terminated
    return "unknown";
}

bool parse_add_failure(std::string_view name, AddFailure& out) {
    for (const auto& w : kWireNames) {
        if (w.name == name) {
            out = w.failure;
            return true;
        }
    }
    return false;
}

AddFailure add_failure_for(tls::VerifyError e) {
    switch (e) {
    case tls::VerifyError::None: return AddFailure::None;
    case tls::VerifyError::Expired: return AddFailure::Expired;
    case tls::VerifyError::NotYetValid: return AddFailure::NotYetValid;
    case tls::VerifyError::ChainTooLong: return AddFailure::ChainTooLarge;
    case tls::VerifyError::Malformed: return AddFailure::Malformed;
    case tls::VerifyError::Untrusted:
    case tls::VerifyError::BadSignature:
    case tls::VerifyError::Internal: break; // fail closed
    }
    return AddFailure::Untrusted;
}

namespace {

// SHA-256 over (4-byte big-endian length, bytes) of every certificate.
std::string chain_key(const std::vector<std::string>& chain_der) {
    gnutls_hash_hd_t h = nullptr;
    if (gnutls_hash_init(&h, GNUTLS_DIG_SHA256) < 0) return {};
    for (const auto& der : chain_der) {
        const auto n = static_cast<std::uint32_t>(der.size());
        const unsigned char len[4] = {static_cast<unsigned char>(n >> 24), static_cast<unsigned char>(n >> 16),
                                      static_cast<unsigned char>(n >> 8), static_cast<unsigned char>(n)};
        gnutls_hash(h, len, sizeof len);
        gnutls_hash(h, der.data(), der.size());
    }
    std::string key(32, '\0');
    gnutls_hash_deinit(h, key.data());
    return key;
}

} // namespace

ChainCache::ChainCache(const tls::TrustStore& trust, std::size_t capacity)
    : trust_(trust), capacity_(capacity == 0 ? 1 : capacity) {}

std::size_t ChainCache::generation() const {
    std::shared_lock lock(trust_.mutex());
    return trust_.count();
}

std::size_t ChainCache::size() const {
    std::lock_guard lock(mu_);
    return lru_.size();
}

void ChainCache::clear() {
    std::lock_guard lock(mu_);
    by_key_.clear();
    lru_.clear();
}

ChainCache::Stats ChainCache::stats() const {
    std::lock_guard lock(mu_);
    return stats_;
}

bool ChainCache::lookup(const std::vector<std::string>& chain_der, std::int64_t now, tls::Identity& identity,
                        ProofKey& proof_key, Probe& probe) {
    probe.key = chain_key(chain_der);
    probe.generation = generation();
    std::lock_guard lock(mu_);
    auto it = probe.key.empty() ? by_key_.end() : by_key_.find(probe.key);
    if (it == by_key_.end() || it->second->generation != probe.generation || now < it->second->valid_from ||
        now > it->second->valid_until) {
        ++stats_.misses;
        return false;
    }
    lru_.splice(lru_.begin(), lru_, it->second);
    identity = it->second->identity;
    proof_key = it->second->proof_key;
    ++stats_.hits;
    return true;
}

void ChainCache::insert(Probe probe, const tls::VerifyResult& verified, ProofKey proof_key) {
    if (!verified.trusted || probe.key.empty()) return;
    // probe.generation was read before verifying: if CAs were added
    // meanwhile, the entry is already stale and will only ever miss.
    std::lock_guard lock(mu_);
    if (auto it = by_key_.find(probe.key); it != by_key_.end()) {
        lru_.erase(it->second);
        by_key_.erase(it);
    }
    lru_.push_front(Entry{probe.key, verified.identity, std::move(proof_key), verified.valid_from,
                          verified.valid_until, probe.generation});
    by_key_.emplace(std::move(probe.key), lru_.begin());
    while (lru_.size() > capacity_) {
        by_key_.erase(lru_.back().key);
        lru_.pop_back();
    }
}

AddCheckResult check_add(const tls::TrustStore& trust, const AddCheckInput& in) {
    return check_add(trust, in, nullptr);
}

AddCheckResult check_add(const tls::TrustStore& trust, const AddCheckInput& in, ChainCache* cache) {
    if (cache && &cache->trust() != &trust) cache = nullptr;
    AddCheckResult res;
    auto fail = [&res](AddFailure f, std::string text) -> AddCheckResult& {
        res.failure = f;
        res.text = std::move(text);
        res.names.clear();
        return res;
    };

    // 1. Sanity of the chain, before any parsing.
    if (in.chain_der.empty()) return fail(AddFailure::Malformed, "no certificate");
    if (in.chain_der.size() > kMaxAddChainCerts)
        return fail(AddFailure::ChainTooLarge, "chain of " + std::to_string(in.chain_der.size()) +
                                                   " certificates (at most " + std::to_string(kMaxAddChainCerts) +
                                                   ")");
    std::size_t total = 0;
    for (std::size_t i = 0; i < in.chain_der.size(); ++i) {
        if (in.chain_der[i].empty())
            return fail(AddFailure::Malformed,
                        i == 0 ? std::string("empty certificate") : "empty chain certificate #" + std::to_string(i));
        total += in.chain_der[i].size();
    }
    if (total > kMaxAddChainBytes)
        return fail(AddFailure::ChainTooLarge, "chain of " + std::to_string(total) + " bytes (at most " +
                                                   std::to_string(kMaxAddChainBytes) + ")");

    // 2. The chain, at `now`.
    ChainCache::Probe probe;
    ProofKey proof_key;
    bool have_key = cache && cache->lookup(in.chain_der, in.now, res.identity, proof_key, probe);
    if (!have_key) {
        auto v = tls::verify_chain(trust, in.chain_der, in.now);
        if (!v.trusted) {
            res.identity = std::move(v.identity);
            return fail(add_failure_for(v.reason), v.error.empty() ? "certificate not trusted" : v.error);
        }
        if (cache) {
            // Parse the leaf's key once, for this proof and later ones.
            if (auto k = proof_key_from_der(in.chain_der.front())) {
                proof_key = std::move(*k);
                have_key = true;
                cache->insert(std::move(probe), v, proof_key);
            }
        }
        res.identity = std::move(v.identity);
    }

    // 3. The domain must be a name of the leaf.
    if (!tls::matches_domain(res.identity, in.domain)) {
        auto names = res.identity.names();
        std::string list;
        for (const auto& n : names) {
            if (!list.empty()) list += ", ";
            list += n;
        }
        return fail(AddFailure::NameMismatch, "'" + shown(in.domain) + "' is not a name of the certificate (" +
                                                  (names.empty() ? std::string("it has no usable name")
                                                                 : "names: " + list) +
                                                  ")");
    }

    // 4. The proof, over the receiver's own message.
    if (in.message.empty())
        return fail(AddFailure::Malformed, "proof message cannot be built (0x00 in the stream id, add id or domain)");
    if (!message_covers(in.message, in.domain, in.chain_der.front()))
        return fail(AddFailure::BadProof, "proof message does not cover this domain and certificate");
    auto p = have_key ? verify_proof(proof_key, in.alg, in.message, in.signature)
                      : verify_proof(in.chain_der.front(), in.alg, in.message, in.signature);
    if (!p) return fail(AddFailure::BadProof, "proof: " + p.error());

    res.failure = AddFailure::None;
    res.text.clear();
    res.names = res.identity.names();
    return res;
}

} // namespace s2smux::mux
