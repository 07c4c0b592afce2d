// The EC_KEY / ECDSA_verify interface is deprecated in OpenSSL 3 but kept
// through 3.x: it skips the provider machinery (algorithm fetches by name,
// a group built per key, their allocations and locks), which cost about a
// fifth of the CPU of an add across the verification threads. The math is
// the same code either way.
#define OPENSSL_SUPPRESS_DEPRECATED
#include "tls/ec_verify.h"

#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/obj_mac.h>

#include <array>

namespace s2smux::tls {

namespace {

struct Tlv {
    unsigned char tag = 0;
    std::string_view whole, value;
};

// One definite-length TLV (low tag number) off the front of `in`.
bool take(std::string_view& in, Tlv& out) {
    if (in.size() < 2) return false;
    auto byte = [&](std::size_t i) { return static_cast<unsigned char>(in[i]); };
    if ((byte(0) & 0x1f) == 0x1f) return false;
    std::size_t len = byte(1), hdr = 2;
    if (len & 0x80) {
        std::size_t n = len & 0x7f;
        if (n == 0 || n > 4 || in.size() < 2 + n) return false;
        len = 0;
        for (std::size_t i = 0; i < n; ++i) len = (len << 8) | byte(2 + i);
        hdr += n;
    }
    if (len > in.size() - hdr) return false;
    out.tag = byte(0);
    out.whole = in.substr(0, hdr + len);
    out.value = in.substr(hdr, len);
    in.remove_prefix(hdr + len);
    return true;
}

constexpr unsigned char kSeq = 0x30, kBitString = 0x03, kInteger = 0x02, kVersion = 0xa0;

struct Curve {
    std::string_view oid; // whole TLV
    int nid;              // libcrypto curve
    gnutls_ecc_curve_t curve;
    std::size_t field_bytes;
};

using namespace std::string_view_literals;
constexpr std::string_view kEcPublicKey = "\x06\x07\x2a\x86\x48\xce\x3d\x02\x01"sv;
constexpr std::array<Curve, 3> kCurves{{
    {"\x06\x08\x2a\x86\x48\xce\x3d\x03\x01\x07"sv, NID_X9_62_prime256v1, GNUTLS_ECC_CURVE_SECP256R1, 32},
    {"\x06\x05\x2b\x81\x04\x00\x22"sv, NID_secp384r1, GNUTLS_ECC_CURVE_SECP384R1, 48},
    {"\x06\x05\x2b\x81\x04\x00\x23"sv, NID_secp521r1, GNUTLS_ECC_CURVE_SECP521R1, 66},
}};

struct SigAlg {
    std::string_view der; // whole AlgorithmIdentifier, parameters absent (RFC 5758)
    EcDigest digest;
};
constexpr std::array<SigAlg, 3> kSigAlgs{{
    {"\x30\x0a\x06\x08\x2a\x86\x48\xce\x3d\x04\x03\x02"sv, EcDigest::Sha256},
    {"\x30\x0a\x06\x08\x2a\x86\x48\xce\x3d\x04\x03\x03"sv, EcDigest::Sha384},
    {"\x30\x0a\x06\x08\x2a\x86\x48\xce\x3d\x04\x03\x04"sv, EcDigest::Sha512},
}};

// Fetched once: EVP_sha256() and the like fetch their implementation on
// every use. Never freed (process lifetime).
const EVP_MD* md_of(EcDigest d) {
    static EVP_MD* const md[3] = {EVP_MD_fetch(nullptr, "SHA256", nullptr), EVP_MD_fetch(nullptr, "SHA384", nullptr),
                                  EVP_MD_fetch(nullptr, "SHA512", nullptr)};
    return md[static_cast<int>(d)];
}

// One group per curve, shared: EC_KEY_set_group() copies it.
const EC_GROUP* group_of(const Curve& c) {
    static EC_GROUP* const groups[3] = {EC_GROUP_new_by_curve_name(kCurves[0].nid),
                                        EC_GROUP_new_by_curve_name(kCurves[1].nid),
                                        EC_GROUP_new_by_curve_name(kCurves[2].nid)};
    return groups[&c - kCurves.data()];
}

} // namespace

bool split_cert_der(std::string_view der, CertDer& out) {
    Tlv cert, tbs, alg, sig;
    if (!take(der, cert) || cert.tag != kSeq || !der.empty()) return false;
    std::string_view c = cert.value;
    if (!take(c, tbs) || tbs.tag != kSeq || !take(c, alg) || alg.tag != kSeq || !take(c, sig) ||
        sig.tag != kBitString || !c.empty())
        return false;
    if (sig.value.empty() || sig.value[0] != 0) return false;
    std::string_view t = tbs.value;
    Tlv f, tbs_alg, issuer, validity, subject, spki;
    if (!take(t, f)) return false;
    if (f.tag == kVersion && !take(t, f)) return false;
    if (f.tag != kInteger) return false;
    if (!take(t, tbs_alg) || tbs_alg.tag != kSeq || !take(t, issuer) || issuer.tag != kSeq || !take(t, validity) ||
        !take(t, subject) || subject.tag != kSeq || !take(t, spki) || spki.tag != kSeq)
        return false;
    out = CertDer{tbs.whole, tbs_alg.whole, issuer.whole, subject.whole, spki.whole, alg.whole, sig.value.substr(1)};
    return true;
}

bool ecdsa_digest_of(std::string_view sig_alg, EcDigest& out) {
    for (const auto& a : kSigAlgs) {
        if (a.der == sig_alg) {
            out = a.digest;
            return true;
        }
    }
    return false;
}

std::shared_ptr<const EcPublicKey> EcPublicKey::from_spki(std::string_view spki_der) {
    Tlv spki, alg, bits, oid;
    if (!take(spki_der, spki) || spki.tag != kSeq || !spki_der.empty()) return nullptr;
    std::string_view s = spki.value;
    if (!take(s, alg) || alg.tag != kSeq || !take(s, bits) || bits.tag != kBitString || !s.empty()) return nullptr;
    std::string_view a = alg.value;
    if (!take(a, oid) || oid.whole != kEcPublicKey || !take(a, oid) || !a.empty()) return nullptr;
    const Curve* curve = nullptr;
    for (const auto& c : kCurves)
        if (c.oid == oid.whole) curve = &c;
    if (!curve) return nullptr;
    // Uncompressed points only (what certificates carry); no point at infinity.
    std::string_view point = bits.value;
    if (point.size() != 2 + 2 * curve->field_bytes || point[0] != 0 || point[1] != 0x04) return nullptr;
    point.remove_prefix(1);

    const EC_GROUP* group = group_of(*curve);
    EC_KEY* key = group ? EC_KEY_new() : nullptr;
    // The decoding checks that the point is on the curve; these curves have
    // cofactor 1, so that is all a public key needs.
    const bool ok = key && EC_KEY_set_group(key, group) == 1 &&
                    EC_KEY_oct2key(key, reinterpret_cast<const unsigned char*>(point.data()), point.size(), nullptr) == 1;
    if (!ok) {
        EC_KEY_free(key);
        ERR_clear_error();
        return nullptr;
    }
    return std::shared_ptr<const EcPublicKey>(new EcPublicKey(key, curve->curve));
}

EcPublicKey::~EcPublicKey() { EC_KEY_free(key_); }

bool EcPublicKey::verify(EcDigest digest, std::string_view data, std::string_view sig) const {
    if (sig.empty() || sig.size() > 1024) return false;
    unsigned char hash[EVP_MAX_MD_SIZE];
    unsigned hash_len = 0;
    const EVP_MD* md = md_of(digest);
    const bool ok = md && EVP_Digest(data.data(), data.size(), hash, &hash_len, md, nullptr) == 1 &&
                    ECDSA_verify(0, hash, static_cast<int>(hash_len), reinterpret_cast<const unsigned char*>(sig.data()),
                                 static_cast<int>(sig.size()), key_) == 1;
    if (!ok) ERR_clear_error(); // per-thread queue: keep it from growing
    return ok;
}

} // namespace s2smux::tls
