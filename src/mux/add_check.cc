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

constexpr std::size_t kMaxIssuers = 256;

// SHA-256 over (4-byte big-endian length, bytes) of every certificate from `first`.
std::string chain_key(const std::vector<std::string>& chain_der, std::size_t first = 0) {
    gnutls_hash_hd_t h = nullptr;
    if (gnutls_hash_init(&h, GNUTLS_DIG_SHA256) < 0) return {};
    for (std::size_t i = first; i < chain_der.size(); ++i) {
        const auto& der = chain_der[i];
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


struct CrtGuard {
    gnutls_x509_crt_t crt = nullptr;
    ~CrtGuard() {
        if (crt) gnutls_x509_crt_deinit(crt);
    }
};

// Critical extensions every GnuTLS version processes; a leaf with any other
// one goes through the full verification (which may refuse it).
bool only_known_critical_extensions(gnutls_x509_crt_t crt) {
    for (unsigned i = 0;; ++i) {
        char oid[128];
        std::size_t size = sizeof oid;
        unsigned critical = 0;
        int r = gnutls_x509_crt_get_extension_info(crt, i, oid, &size, &critical);
        if (r == GNUTLS_E_REQUESTED_DATA_NOT_AVAILABLE) return true;
        if (r < 0) return false;
        if (!critical) continue;
        std::string_view o(oid);
        if (o != "2.5.29.15" && o != "2.5.29.19" && o != "2.5.29.17" && o != "2.5.29.37") return false;
    }
}

// The leaf's signature under the issuer's ECDSA key, the algorithm the same
// inside tbsCertificate and outside.
bool signed_by(const tls::EcPublicKey& key, const tls::CertDer& leaf) {
    tls::EcDigest digest;
    return leaf.tbs_sig_alg == leaf.sig_alg && tls::ecdsa_digest_of(leaf.sig_alg, digest) &&
           key.verify(digest, leaf.tbs, leaf.signature);
}

// Everything verify_chain() checks of a leaf whose issuer is known good
// (see ChainCache), plus the proof key. False: not decided here, verify the
// whole chain (failures get their reasons and texts there).
bool verify_under_issuer(const ChainCache::Issuer& issuer, const tls::CertDer& parts, std::string_view leaf_der,
                         std::int64_t now, tls::VerifyResult& v, ProofKey& key) {
    if (now < issuer.valid_from || now > issuer.valid_until || !signed_by(*issuer.key, parts)) return false;
    CrtGuard crt;
    if (gnutls_x509_crt_init(&crt.crt) < 0) return false;
    gnutls_datum_t d{reinterpret_cast<unsigned char*>(const_cast<char*>(leaf_der.data())),
                     static_cast<unsigned>(leaf_der.size())};
    if (gnutls_x509_crt_import(crt.crt, &d, GNUTLS_X509_FMT_DER) < 0 || !only_known_critical_extensions(crt.crt))
        return false;
    auto nb = static_cast<std::int64_t>(gnutls_x509_crt_get_activation_time(crt.crt));
    auto na = static_cast<std::int64_t>(gnutls_x509_crt_get_expiration_time(crt.crt));
    if (nb == -1 || na == -1 || now < nb || now > na) return false;
    unsigned usage = 0, critical = 0;
    int ku = gnutls_x509_crt_get_key_usage(crt.crt, &usage, &critical);
    if (ku < 0 && ku != GNUTLS_E_REQUESTED_DATA_NOT_AVAILABLE) return false;
    auto id = tls::identity_from_crt(crt.crt);
    if (!id) return false;
    key.spki_der.assign(parts.spki);
    key.signing_allowed = ku == GNUTLS_E_REQUESTED_DATA_NOT_AVAILABLE || (usage & GNUTLS_KEY_DIGITAL_SIGNATURE);
    key.ec = tls::EcPublicKey::from_spki(parts.spki);
    v.trusted = true;
    v.reason = tls::VerifyError::None;
    v.error.clear();
    v.identity = std::move(*id);
    v.valid_from = std::max(nb, issuer.valid_from);
    v.valid_until = std::min(na, issuer.valid_until);
    return true;
}

// After `chain_der` verified: find the certificate that signed its leaf and
// remember it if it qualifies (see ChainCache).
void learn_issuer(ChainCache& cache, const tls::TrustStore& trust, const std::vector<std::string>& chain_der,
                  const tls::CertDer& leaf, std::string key, std::int64_t now, std::size_t generation) {
    // The issuer: a chain certificate whose subject is the leaf's issuer
    // name, else a trust anchor; with the rest of the chain after it.
    std::vector<std::string> issuer_chain;
    for (std::size_t i = 1; i < chain_der.size() && issuer_chain.empty(); ++i) {
        tls::CertDer c;
        if (tls::split_cert_der(chain_der[i], c) && c.subject == leaf.issuer) {
            issuer_chain.push_back(chain_der[i]);
            for (std::size_t j = 1; j < chain_der.size(); ++j)
                if (j != i) issuer_chain.push_back(chain_der[j]);
        }
    }
    if (issuer_chain.empty()) {
        std::string anchor = tls::anchor_issuer_der(trust, chain_der.front());
        if (anchor.empty()) return;
        issuer_chain.push_back(std::move(anchor));
    }
    tls::CertDer ic;
    if (!tls::split_cert_der(issuer_chain.front(), ic)) return;
    // What never changes for these bytes is remembered as "no fast path"
    // (e.g. RSA CAs), so that their leaves do not pay for this every time.
    auto never = [&] { cache.remember_issuer(std::move(key), ChainCache::Issuer{nullptr, 0, 0, generation}); };
    auto ec = tls::EcPublicKey::from_spki(ic.spki);
    if (!ec || !tls::is_ca_der(issuer_chain.front())) return never();
    if (!signed_by(*ec, leaf)) return;
    auto v = tls::verify_chain(trust, issuer_chain, now);
    if (v.trusted && v.name_constrained) return never();
    if (!v.trusted) return;
    cache.remember_issuer(std::move(key), ChainCache::Issuer{std::move(ec), v.valid_from, v.valid_until, generation});
}

} // namespace

std::string ChainCache::issuer_key(std::string_view leaf_issuer_dn, const std::vector<std::string>& chain_der) {
    std::string key(leaf_issuer_dn);
    key += chain_key(chain_der, 1);
    return key;
}

std::shared_ptr<const ChainCache::Issuer> ChainCache::issuer(const std::string& key, std::size_t generation) {
    std::lock_guard lock(mu_);
    auto it = issuers_.find(key);
    if (it == issuers_.end() || it->second->generation != generation) return nullptr;
    if (it->second->key) ++stats_.issuer_hits;
    return it->second;
}

void ChainCache::remember_issuer(std::string key, Issuer issuer) {
    std::lock_guard lock(mu_);
    if (issuers_.size() >= kMaxIssuers) issuers_.clear();
    issuers_[std::move(key)] = std::make_shared<const Issuer>(std::move(issuer));
}

std::size_t ChainCache::issuer_count() const {
    std::lock_guard lock(mu_);
    return issuers_.size();
}

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
    issuers_.clear();
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
    // Entries keep the key's DER only: a libcrypto key weighs kilobytes,
    // and rebuilding one costs a fraction of a signature check.
    proof_key.ec.reset();
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
    if (have_key && !proof_key.ec) proof_key.ec = tls::EcPublicKey::from_spki(proof_key.spki_der);
    if (!have_key) {
        // A new leaf under a remembered issuer: its own signature only.
        tls::CertDer leaf;
        bool split = cache && tls::split_cert_der(in.chain_der.front(), leaf);
        std::string issuer_key = split ? ChainCache::issuer_key(leaf.issuer, in.chain_der) : std::string();
        tls::VerifyResult v;
        bool fast = false;
        std::shared_ptr<const ChainCache::Issuer> issuer;
        if (split) {
            issuer = cache->issuer(issuer_key, probe.generation);
            fast = issuer && issuer->key &&
                   verify_under_issuer(*issuer, leaf, in.chain_der.front(), in.now, v, proof_key);
            have_key = fast;
        }
        if (!have_key) {
            v = tls::verify_chain(trust, in.chain_der, in.now);
            if (!v.trusted) {
                res.identity = std::move(v.identity);
                return fail(add_failure_for(v.reason), v.error.empty() ? "certificate not trusted" : v.error);
            }
            if (split && !issuer && !v.name_constrained) // known issuers are not learnt again
                learn_issuer(*cache, trust, in.chain_der, leaf, std::move(issuer_key), in.now, probe.generation);
            // Parse the leaf's key once, for this proof and later ones.
            if (cache)
                if (auto k = proof_key_from_der(in.chain_der.front())) {
                    proof_key = std::move(*k);
                    have_key = true;
                }
        }
        // Chains under a remembered issuer are cheap to check again: the
        // cache keeps the costly ones (its entries weigh most of a KiB).
        if (have_key && !fast) cache->insert(std::move(probe), v, proof_key);
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
        // Appended step by step: GCC 12 -O3 reports a false -Wrestrict on "'" + std::string.
        std::string text = "'";
        text += shown(in.domain);
        text += "' is not a name of the certificate (";
        text += names.empty() ? std::string("it has no usable name") : "names: " + list;
        text += ")";
        return fail(AddFailure::NameMismatch, std::move(text));
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
