#include "tls/trust.h"

#include <gnutls/gnutls.h>

#include <algorithm>
#include <ctime>
#include <fstream>
#include <limits>
#include <mutex>
#include <sstream>

namespace s2smux::tls {

namespace {

// Longer peer chains are rejected before any parsing (real S2S chains have
// 1-4 certificates).
constexpr std::size_t kMaxChain = 8;

struct CrtList {
    std::vector<gnutls_x509_crt_t> crts;
    ~CrtList() {
        for (auto c : crts) gnutls_x509_crt_deinit(c);
    }
};

std::string iso_time(std::int64_t t) {
    std::time_t tt = static_cast<std::time_t>(t);
    std::tm tm{};
    if (!gmtime_r(&tt, &tm)) return std::to_string(t);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

std::string take_datum(gnutls_datum_t& d) {
    std::string s(reinterpret_cast<const char*>(d.data), d.size);
    gnutls_free(d.data);
    d = gnutls_datum_t{};
    return s;
}

std::string dn_of(gnutls_x509_crt_t crt, bool issuer) {
    gnutls_datum_t d{};
    int r = issuer ? gnutls_x509_crt_get_issuer_dn3(crt, &d, 0) : gnutls_x509_crt_get_dn3(crt, &d, 0);
    if (r < 0) return "?";
    std::string s(reinterpret_cast<const char*>(d.data), d.size);
    gnutls_free(d.data);
    return s;
}

struct Dates {
    std::int64_t not_before = -1, not_after = -1;
};

Dates dates_of(gnutls_x509_crt_t crt) {
    return {static_cast<std::int64_t>(gnutls_x509_crt_get_activation_time(crt)),
            static_cast<std::int64_t>(gnutls_x509_crt_get_expiration_time(crt))};
}

bool dates_ok(const Dates& d, std::int64_t now) {
    return d.not_before != -1 && d.not_after != -1 && now >= d.not_before && now <= d.not_after;
}

// Checks the validity window of one certificate. `what()` names it in errors
// (only called on failure: DN formatting is not free). Sets res.error and
// res.reason and returns false when outside the window; otherwise narrows
// res.valid_from / res.valid_until to it.
template <class What>
bool check_dates(const Dates& d, std::int64_t now, What what, VerifyResult& res) {
    if (d.not_before == -1 || d.not_after == -1) {
        res.error = what() + " has unreadable validity dates";
        res.reason = VerifyError::Malformed;
        return false;
    }
    if (now < d.not_before) {
        res.error = what() + " not yet valid until " + iso_time(d.not_before);
        res.reason = VerifyError::NotYetValid;
        return false;
    }
    if (now > d.not_after) {
        res.error = what() + " expired on " + iso_time(d.not_after);
        res.reason = VerifyError::Expired;
        return false;
    }
    res.valid_from = std::max(res.valid_from, d.not_before);
    res.valid_until = std::min(res.valid_until, d.not_after);
    return true;
}

VerifyResult& fail(VerifyResult& res, VerifyError reason, std::string error) {
    res.trusted = false;
    res.reason = reason;
    res.error = std::move(error);
    return res;
}

// Name constraints (2.5.29.30), or unreadable extensions (assumed constrained).
bool has_name_constraints(gnutls_x509_crt_t crt) {
    std::size_t size = 0;
    unsigned critical = 0;
    return gnutls_x509_crt_get_extension_by_oid(crt, "2.5.29.30", 0, nullptr, &size, &critical) !=
           GNUTLS_E_REQUESTED_DATA_NOT_AVAILABLE;
}

gnutls_datum_t datum_of(std::string_view der) {
    return gnutls_datum_t{reinterpret_cast<unsigned char*>(const_cast<char*>(der.data())),
                          static_cast<unsigned>(der.size())};
}

std::string status_text(unsigned status) {
    gnutls_datum_t out{};
    if (gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &out, 0) < 0) return "invalid";
    std::string s(reinterpret_cast<const char*>(out.data), out.size);
    gnutls_free(out.data);
    return s;
}

} // namespace

const char* to_string(VerifyError e) {
    switch (e) {
    case VerifyError::None: return "none";
    case VerifyError::Untrusted: return "untrusted";
    case VerifyError::Expired: return "expired";
    case VerifyError::NotYetValid: return "not-yet-valid";
    case VerifyError::BadSignature: return "bad-signature";
    case VerifyError::ChainTooLong: return "chain-too-long";
    case VerifyError::Malformed: return "malformed";
    case VerifyError::Internal: return "internal";
    }
    return "unknown";
}

TrustStore::TrustStore() {
    // Construction failure here is only possible on memory exhaustion.
    if (gnutls_x509_trust_list_init(&list_, 0) < 0) list_ = nullptr;
}

TrustStore::~TrustStore() {
    if (list_) gnutls_x509_trust_list_deinit(list_, 1);
}

Result<void> TrustStore::add_ca_file(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) return make_error("cannot open CA file " + path);
    std::ostringstream ss;
    ss << f.rdbuf();
    auto r = add_ca_pem(ss.str());
    if (!r) return make_error(path + ": " + r.error());
    return {};
}

Result<void> TrustStore::add_ca_pem(std::string_view pem) {
    if (!list_) return make_error("trust list not initialised");
    gnutls_datum_t d{reinterpret_cast<unsigned char*>(const_cast<char*>(pem.data())),
                     static_cast<unsigned>(pem.size())};
    std::unique_lock lock(mu_);
    int r = gnutls_x509_trust_list_add_trust_mem(list_, &d, nullptr, GNUTLS_X509_FMT_PEM, 0, 0);
    if (r < 0) return make_error(std::string("cannot load CA certificates: ") + gnutls_strerror(r));
    if (r == 0) return make_error("no CA certificate found in PEM data");
    count_ += static_cast<std::size_t>(r);
    return {};
}

Result<void> TrustStore::add_system() {
    if (!list_) return make_error("trust list not initialised");
    std::unique_lock lock(mu_);
    int r = gnutls_x509_trust_list_add_system_trust(list_, 0, 0);
    if (r < 0) return make_error(std::string("cannot load system trust store: ") + gnutls_strerror(r));
    if (r == 0) return make_error("system trust store is empty");
    count_ += static_cast<std::size_t>(r);
    return {};
}

VerifyResult verify_chain(const TrustStore& trust, const std::vector<std::string>& chain_der, std::int64_t now) {
    VerifyResult res;
    if (chain_der.empty()) return fail(res, VerifyError::Malformed, "no certificate");

    if (auto id = identity_from_der(chain_der.front())) res.identity = std::move(*id);

    if (chain_der.size() > kMaxChain)
        return fail(res, VerifyError::ChainTooLong,
                    "chain too long (" + std::to_string(chain_der.size()) + " certificates, at most " +
                        std::to_string(kMaxChain) + ")");

    CrtList list;
    for (std::size_t i = 0; i < chain_der.size(); ++i) {
        gnutls_x509_crt_t crt = nullptr;
        if (gnutls_x509_crt_init(&crt) < 0) return fail(res, VerifyError::Internal, "out of memory");
        list.crts.push_back(crt);
        const auto& der = chain_der[i];
        gnutls_datum_t d{reinterpret_cast<unsigned char*>(const_cast<char*>(der.data())),
                         static_cast<unsigned>(der.size())};
        int r = gnutls_x509_crt_import(crt, &d, GNUTLS_X509_FMT_DER);
        if (r < 0)
            return fail(res, VerifyError::Malformed,
                        (i == 0 ? std::string("certificate") : "chain certificate #" + std::to_string(i)) +
                            " cannot be parsed: " + gnutls_strerror(r));
    }

    // The path we check dates on: leaf, then each issuer found in the chain
    // (peers may send extra or unordered certificates; those are ignored).
    // gnutls_x509_crt_check_issuer() is only true when the issuer DN of one
    // is byte for byte the subject DN of the other (then it compares key
    // ids, which is the slow part): comparing the raw DNs first skips the
    // calls that cannot succeed.
    std::vector<std::string> subject(list.crts.size()), issuer(list.crts.size());
    for (std::size_t i = 0; i < list.crts.size(); ++i) {
        gnutls_datum_t d{};
        if (gnutls_x509_crt_get_raw_dn(list.crts[i], &d) >= 0) subject[i] = take_datum(d);
        if (gnutls_x509_crt_get_raw_issuer_dn(list.crts[i], &d) >= 0) issuer[i] = take_datum(d);
    }
    auto maybe_issuer = [&](std::size_t cert, std::size_t by) {
        return subject[by].empty() || issuer[cert].empty() || issuer[cert] == subject[by];
    };
    std::vector<gnutls_x509_crt_t> path{list.crts.front()};
    std::vector<bool> used(list.crts.size(), false);
    used[0] = true;
    for (std::size_t cur = 0;;) {
        if (maybe_issuer(cur, cur) && gnutls_x509_crt_check_issuer(list.crts[cur], list.crts[cur]))
            break; // self-signed
        bool found = false;
        for (std::size_t i = 0; i < list.crts.size(); ++i) {
            if (!used[i] && maybe_issuer(cur, i) && gnutls_x509_crt_check_issuer(list.crts[cur], list.crts[i])) {
                used[i] = true;
                path.push_back(list.crts[i]);
                cur = i;
                found = true;
                break;
            }
        }
        if (!found) break;
    }

    // Time checks are ours (GnuTLS only knows the wall clock), so `now` is
    // authoritative and tests are deterministic.
    const unsigned flags = GNUTLS_VERIFY_DISABLE_TIME_CHECKS | GNUTLS_VERIFY_DISABLE_TRUSTED_TIME_CHECKS;
    unsigned status = 0;
    bool have_anchor = false;
    Dates anchor_dates;
    std::string anchor_dn; // only when its dates fail at `now`
    {
        std::shared_lock lock(trust.mutex());
        gnutls_x509_trust_list_t tl = trust.list();
        if (!tl) return fail(res, VerifyError::Internal, "trust list not initialised");
        int r = gnutls_x509_trust_list_verify_crt2(tl, list.crts.data(), static_cast<unsigned>(list.crts.size()),
                                                   nullptr, 0, flags, &status, nullptr);
        if (r < 0) return fail(res, VerifyError::Internal, std::string("verification failed: ") + gnutls_strerror(r));
        if (status == 0) {
            // Borrow the list's own certificate: GNUTLS_TL_GET_COPY re-parses it
            // (as costly as parsing a peer certificate). Valid while the lock is
            // held, only read. A copy where the list cannot lend one (PKCS#11).
            gnutls_x509_crt_t anchor = nullptr;
            bool copied = false;
            if (gnutls_x509_trust_list_get_issuer(tl, path.back(), &anchor, 0) < 0 || !anchor) {
                anchor = nullptr;
                if (gnutls_x509_trust_list_get_issuer(tl, path.back(), &anchor, GNUTLS_TL_GET_COPY) >= 0 && anchor)
                    copied = true;
                else
                    anchor = nullptr;
            }
            if (anchor) {
                have_anchor = true;
                res.name_constrained = has_name_constraints(anchor);
                anchor_dates = dates_of(anchor);
                if (!dates_ok(anchor_dates, now)) anchor_dn = dn_of(anchor, false);
                if (copied) gnutls_x509_crt_deinit(anchor);
            }
        }
    }

    if (status != 0) {
        res.reason = VerifyError::Untrusted;
        if (status & GNUTLS_CERT_SIGNER_NOT_FOUND)
            res.error = "certificate signer not trusted (issuer " + dn_of(path.back(), true) + ")";
        else if (status & GNUTLS_CERT_SIGNATURE_FAILURE) {
            res.error = "signature invalid";
            res.reason = VerifyError::BadSignature;
        }
        else if (status & GNUTLS_CERT_SIGNER_NOT_CA)
            res.error = "certificate signer is not a CA";
        else if (status & GNUTLS_CERT_INSECURE_ALGORITHM)
            res.error = "insecure signature algorithm";
        else if (status & GNUTLS_CERT_SIGNER_CONSTRAINTS_FAILURE)
            res.error = "CA constraints violated (path length or name constraints)";
        else if (status & GNUTLS_CERT_REVOKED)
            res.error = "certificate revoked";
        else if (status & GNUTLS_CERT_UNKNOWN_CRIT_EXTENSIONS)
            res.error = "unknown critical extension";
        else
            res.error = "certificate not trusted: " + status_text(status);
        return res;
    }

    res.valid_from = std::numeric_limits<std::int64_t>::min();
    res.valid_until = std::numeric_limits<std::int64_t>::max();
    for (std::size_t i = 0; i < path.size(); ++i) {
        auto what = [&] { return i == 0 ? std::string("certificate") : "CA certificate " + dn_of(path[i], false); };
        if (!check_dates(dates_of(path[i]), now, what, res)) break;
    }
    if (res.error.empty() && have_anchor)
        check_dates(anchor_dates, now, [&] { return "trust anchor " + anchor_dn; }, res);
    if (!res.error.empty()) {
        res.valid_from = res.valid_until = 0;
        return res;
    }

    for (auto crt : path) res.name_constrained = res.name_constrained || has_name_constraints(crt);
    res.trusted = true;
    res.reason = VerifyError::None;
    return res;
}

std::string anchor_issuer_der(const TrustStore& trust, std::string_view cert_der) {
    CrtList list;
    gnutls_x509_crt_t crt = nullptr;
    if (gnutls_x509_crt_init(&crt) < 0) return {};
    list.crts.push_back(crt);
    gnutls_datum_t d = datum_of(cert_der);
    if (gnutls_x509_crt_import(crt, &d, GNUTLS_X509_FMT_DER) < 0) return {};
    std::shared_lock lock(trust.mutex());
    if (!trust.list()) return {};
    gnutls_x509_crt_t anchor = nullptr;
    if (gnutls_x509_trust_list_get_issuer(trust.list(), crt, &anchor, GNUTLS_TL_GET_COPY) < 0 || !anchor) return {};
    list.crts.push_back(anchor);
    gnutls_datum_t out{};
    if (gnutls_x509_crt_export2(anchor, GNUTLS_X509_FMT_DER, &out) < 0) return {};
    return take_datum(out);
}

bool is_ca_der(std::string_view cert_der) {
    CrtList list;
    gnutls_x509_crt_t crt = nullptr;
    if (gnutls_x509_crt_init(&crt) < 0) return false;
    list.crts.push_back(crt);
    gnutls_datum_t d = datum_of(cert_der);
    if (gnutls_x509_crt_import(crt, &d, GNUTLS_X509_FMT_DER) < 0) return false;
    unsigned critical = 0, ca = 0;
    int path_len = -1;
    if (gnutls_x509_crt_get_basic_constraints(crt, &critical, &ca, &path_len) < 0 || !ca) return false;
    unsigned usage = 0;
    int r = gnutls_x509_crt_get_key_usage(crt, &usage, &critical);
    if (r == GNUTLS_E_REQUESTED_DATA_NOT_AVAILABLE) return true;
    return r >= 0 && (usage & GNUTLS_KEY_KEY_CERT_SIGN) != 0;
}

} // namespace s2smux::tls
