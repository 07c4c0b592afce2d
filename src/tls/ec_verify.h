// ECDSA signature checks with libcrypto (OpenSSL 3), for the hot path of
// mux adds: its P-256 verification costs less than half of nettle's (GnuTLS)
// on x86-64. Only ECDSA on P-256, P-384 and P-521; everything else stays
// with GnuTLS. Pure and thread-safe (a key is only read once built).
#pragma once

#include <gnutls/gnutls.h>

#include <cstdint>
#include <memory>
#include <string_view>

struct ec_key_st;

namespace s2smux::tls {

enum class EcDigest : std::uint8_t { Sha256, Sha384, Sha512 };

class EcPublicKey {
public:
    // From a SubjectPublicKeyInfo (DER): id-ecPublicKey on a named curve
    // P-256/P-384/P-521 with a point on that curve; nullptr for anything else.
    static std::shared_ptr<const EcPublicKey> from_spki(std::string_view spki_der);
    ~EcPublicKey();
    EcPublicKey(const EcPublicKey&) = delete;
    EcPublicKey& operator=(const EcPublicKey&) = delete;

    gnutls_ecc_curve_t curve() const { return curve_; }
    // `sig` (DER Ecdsa-Sig-Value) is a signature of `data` hashed with `digest`.
    bool verify(EcDigest digest, std::string_view data, std::string_view sig) const;

private:
    EcPublicKey(ec_key_st* key, gnutls_ecc_curve_t curve) : key_(key), curve_(curve) {}
    ec_key_st* key_;
    gnutls_ecc_curve_t curve_;
};

// The parts of a DER X.509 certificate that a signature check needs, as
// views into it. Only the outer structure is read: GnuTLS parses the rest.
struct CertDer {
    std::string_view tbs;         // tbsCertificate, whole TLV (the signed bytes)
    std::string_view tbs_sig_alg; // the AlgorithmIdentifier inside tbsCertificate
    std::string_view issuer;      // issuer Name, whole TLV (raw bytes)
    std::string_view subject;     // subject Name, whole TLV
    std::string_view spki;        // subjectPublicKeyInfo, whole TLV
    std::string_view sig_alg;     // outer signatureAlgorithm, whole TLV
    std::string_view signature;   // signatureValue without its unused-bits byte
};
bool split_cert_der(std::string_view der, CertDer& out);

// ecdsa-with-SHA256/384/512 (no parameters); false for every other algorithm.
bool ecdsa_digest_of(std::string_view sig_alg, EcDigest& out);

} // namespace s2smux::tls
