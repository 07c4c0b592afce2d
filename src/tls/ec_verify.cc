#include "tls/ec_verify.h"

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>

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
    const char* group;    // libcrypto group name
    gnutls_ecc_curve_t curve;
    std::size_t field_bytes;
};

using namespace std::string_view_literals;
constexpr std::string_view kEcPublicKey = "\x06\x07\x2a\x86\x48\xce\x3d\x02\x01"sv;
constexpr std::array<Curve, 3> kCurves{{
    {"\x06\x08\x2a\x86\x48\xce\x3d\x03\x01\x07"sv, "P-256", GNUTLS_ECC_CURVE_SECP256R1, 32},
    {"\x06\x05\x2b\x81\x04\x00\x22"sv, "P-384", GNUTLS_ECC_CURVE_SECP384R1, 48},
    {"\x06\x05\x2b\x81\x04\x00\x23"sv, "P-521", GNUTLS_ECC_CURVE_SECP521R1, 66},
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

const EVP_MD* md_of(EcDigest d) {
    switch (d) {
    case EcDigest::Sha256: return EVP_sha256();
    case EcDigest::Sha384: return EVP_sha384();
    case EcDigest::Sha512: return EVP_sha512();
    }
    return nullptr;
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

    std::array<OSSL_PARAM, 3> params{
        OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, const_cast<char*>(curve->group), 0),
        OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, const_cast<char*>(point.data()), point.size()),
        OSSL_PARAM_construct_end()};
    EVP_PKEY_CTX* ctx = EVP_PKEY_CTX_new_from_name(nullptr, "EC", nullptr);
    EVP_PKEY* key = nullptr;
    bool ok = ctx && EVP_PKEY_fromdata_init(ctx) == 1 &&
              EVP_PKEY_fromdata(ctx, &key, EVP_PKEY_PUBLIC_KEY, params.data()) == 1; // checks the point
    EVP_PKEY_CTX_free(ctx);
    if (!ok) {
        EVP_PKEY_free(key);
        ERR_clear_error();
        return nullptr;
    }
    return std::shared_ptr<const EcPublicKey>(new EcPublicKey(key, curve->curve));
}

EcPublicKey::~EcPublicKey() { EVP_PKEY_free(key_); }

bool EcPublicKey::verify(EcDigest digest, std::string_view data, std::string_view sig) const {
    if (sig.empty()) return false;
    EVP_MD_CTX* ctx = EVP_MD_CTX_new();
    bool ok = ctx && EVP_DigestVerifyInit(ctx, nullptr, md_of(digest), nullptr, key_) == 1 &&
              EVP_DigestVerify(ctx, reinterpret_cast<const unsigned char*>(sig.data()), sig.size(),
                               reinterpret_cast<const unsigned char*>(data.data()), data.size()) == 1;
    EVP_MD_CTX_free(ctx);
    if (!ok) ERR_clear_error(); // per-thread queue: keep it from growing
    return ok;
}

} // namespace s2smux::tls
