#include "mux/proof.h"

#include <gnutls/abstract.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include <array>
#include <cstring>

namespace s2smux::mux {

namespace {

constexpr std::string_view kContext = "s2smux mux add v0";

gnutls_datum_t datum(std::string_view s) {
    return gnutls_datum_t{reinterpret_cast<unsigned char*>(const_cast<char*>(s.data())),
                          static_cast<unsigned>(s.size())};
}

std::string err(const char* what, int r) { return std::string(what) + ": " + gnutls_strerror(r); }

// Supported signature schemes (TLS 1.3 SignatureScheme names, RFC 8446
// §4.2.3) and the key each one needs.
struct Scheme {
    std::string_view name;
    gnutls_sign_algorithm_t sign;
    gnutls_pk_algorithm_t pk;
    gnutls_ecc_curve_t curve; // ECDSA only; INVALID otherwise
};

constexpr std::array<Scheme, 11> kSchemes{{
    {"ecdsa_secp256r1_sha256", GNUTLS_SIGN_ECDSA_SECP256R1_SHA256, GNUTLS_PK_ECDSA, GNUTLS_ECC_CURVE_SECP256R1},
    {"ecdsa_secp384r1_sha384", GNUTLS_SIGN_ECDSA_SECP384R1_SHA384, GNUTLS_PK_ECDSA, GNUTLS_ECC_CURVE_SECP384R1},
    {"ecdsa_secp521r1_sha512", GNUTLS_SIGN_ECDSA_SECP521R1_SHA512, GNUTLS_PK_ECDSA, GNUTLS_ECC_CURVE_SECP521R1},
    {"rsa_pss_rsae_sha256", GNUTLS_SIGN_RSA_PSS_RSAE_SHA256, GNUTLS_PK_RSA, GNUTLS_ECC_CURVE_INVALID},
    {"rsa_pss_rsae_sha384", GNUTLS_SIGN_RSA_PSS_RSAE_SHA384, GNUTLS_PK_RSA, GNUTLS_ECC_CURVE_INVALID},
    {"rsa_pss_rsae_sha512", GNUTLS_SIGN_RSA_PSS_RSAE_SHA512, GNUTLS_PK_RSA, GNUTLS_ECC_CURVE_INVALID},
    {"rsa_pss_pss_sha256", GNUTLS_SIGN_RSA_PSS_SHA256, GNUTLS_PK_RSA_PSS, GNUTLS_ECC_CURVE_INVALID},
    {"rsa_pss_pss_sha384", GNUTLS_SIGN_RSA_PSS_SHA384, GNUTLS_PK_RSA_PSS, GNUTLS_ECC_CURVE_INVALID},
    {"rsa_pss_pss_sha512", GNUTLS_SIGN_RSA_PSS_SHA512, GNUTLS_PK_RSA_PSS, GNUTLS_ECC_CURVE_INVALID},
    {"ed25519", GNUTLS_SIGN_EDDSA_ED25519, GNUTLS_PK_EDDSA_ED25519, GNUTLS_ECC_CURVE_INVALID},
    {"ed448", GNUTLS_SIGN_EDDSA_ED448, GNUTLS_PK_EDDSA_ED448, GNUTLS_ECC_CURVE_INVALID},
}};

const Scheme* find_scheme(std::string_view name) {
    for (const auto& s : kSchemes)
        if (s.name == name) return &s;
    return nullptr;
}

// The scheme sign_proof() uses for a key.
const Scheme* default_scheme(gnutls_pk_algorithm_t pk, gnutls_ecc_curve_t curve) {
    switch (pk) {
    case GNUTLS_PK_ECDSA:
        for (const auto& s : kSchemes)
            if (s.pk == GNUTLS_PK_ECDSA && s.curve == curve) return &s;
        return nullptr;
    case GNUTLS_PK_RSA: return find_scheme("rsa_pss_rsae_sha256");
    case GNUTLS_PK_RSA_PSS: return find_scheme("rsa_pss_pss_sha256");
    case GNUTLS_PK_EDDSA_ED25519: return find_scheme("ed25519");
    case GNUTLS_PK_EDDSA_ED448: return find_scheme("ed448");
    default: return nullptr;
    }
}

bool compatible(const Scheme& s, gnutls_pk_algorithm_t pk, gnutls_ecc_curve_t curve) {
    if (s.pk != pk) return false;
    return s.pk != GNUTLS_PK_ECDSA || s.curve == curve;
}

// "ECDSA P-256", "RSA 2048 bits", "Ed25519", ... for error texts.
std::string describe_key(gnutls_pk_algorithm_t pk, unsigned bits, gnutls_ecc_curve_t curve) {
    switch (pk) {
    case GNUTLS_PK_ECDSA:
        switch (curve) {
        case GNUTLS_ECC_CURVE_SECP256R1: return "ECDSA P-256";
        case GNUTLS_ECC_CURVE_SECP384R1: return "ECDSA P-384";
        case GNUTLS_ECC_CURVE_SECP521R1: return "ECDSA P-521";
        default: {
            const char* c = gnutls_ecc_curve_get_name(curve);
            return std::string("ECDSA ") + (c ? c : "unknown curve");
        }
        }
    case GNUTLS_PK_RSA: return "RSA " + std::to_string(bits) + " bits";
    case GNUTLS_PK_RSA_PSS: return "RSA-PSS " + std::to_string(bits) + " bits";
    case GNUTLS_PK_EDDSA_ED25519: return "Ed25519";
    case GNUTLS_PK_EDDSA_ED448: return "Ed448";
    default: {
        const char* name = gnutls_pk_get_name(pk);
        return name ? name : "unknown";
    }
    }
}

struct PubkeyGuard {
    gnutls_pubkey_t key = nullptr;
    ~PubkeyGuard() {
        if (key) gnutls_pubkey_deinit(key);
    }
};

struct CrtGuard {
    gnutls_x509_crt_t crt = nullptr;
    ~CrtGuard() {
        if (crt) gnutls_x509_crt_deinit(crt);
    }
};

bool has_nul(std::string_view s) { return s.find('\0') != std::string_view::npos; }

} // namespace

const char* to_string(Signer s) { return s == Signer::Initiator ? "initiator" : "receiver"; }

std::string proof_message(std::string_view exporter, Signer signer, std::string_view stream_id,
                          std::string_view add_id, std::string_view domain, std::string_view leaf_der) {
    if (exporter.size() != kExporterSize || has_nul(stream_id) || has_nul(add_id) || has_nul(domain)) return {};
    unsigned char hash[32];
    gnutls_datum_t leaf = datum(leaf_der);
    if (gnutls_hash_fast(GNUTLS_DIG_SHA256, leaf.data, leaf.size, hash) < 0) return {};

    std::string_view role = to_string(signer);
    std::string m;
    m.reserve(kContext.size() + exporter.size() + role.size() + stream_id.size() + add_id.size() + domain.size() +
              sizeof hash + 6);
    m.append(kContext).push_back('\0');
    m.append(exporter).push_back('\0');
    m.append(role).push_back('\0');
    m.append(stream_id).push_back('\0');
    m.append(add_id).push_back('\0');
    m.append(domain).push_back('\0');
    m.append(reinterpret_cast<const char*>(hash), sizeof hash);
    return m;
}

bool is_supported_alg(std::string_view alg) { return find_scheme(alg) != nullptr; }

Result<std::string> proof_alg_for(const tls::LocalCert& cert) {
    if (!cert.key) return make_error("certificate has no private key");
    unsigned bits = 0;
    int pk = gnutls_privkey_get_pk_algorithm(cert.key, &bits);
    if (pk < 0) return make_error(err("cannot read the private key type", pk));
    gnutls_ecc_curve_t curve = GNUTLS_ECC_CURVE_INVALID;
    if (pk == GNUTLS_PK_ECDSA) {
        int r = gnutls_privkey_export_ecc_raw2(cert.key, &curve, nullptr, nullptr, nullptr, 0);
        // Keys that cannot be exported (tokens): the leaf's public key tells.
        if (r < 0 && !cert.pcerts.empty()) r = gnutls_pubkey_export_ecc_raw2(cert.pcerts.front().pubkey, &curve,
                                                                             nullptr, nullptr, 0);
        if (r < 0) return make_error(err("cannot read the key's curve", r));
    }
    auto pk_alg = static_cast<gnutls_pk_algorithm_t>(pk);
    const Scheme* s = default_scheme(pk_alg, curve);
    if (!s) return make_error("no proof signature scheme for a " + describe_key(pk_alg, bits, curve) + " key");
    return std::string(s->name);
}

Result<Signature> sign_proof(const tls::LocalCert& cert, std::string_view message) {
    if (message.empty()) return make_error("empty proof message");
    auto alg = proof_alg_for(cert);
    if (!alg) return make_error(alg.error());
    const Scheme* s = find_scheme(*alg);
    gnutls_datum_t data = datum(message), sig{};
    int r = gnutls_privkey_sign_data2(cert.key, s->sign, 0, &data, &sig);
    if (r < 0) return make_error(err("cannot sign the proof", r));
    Signature out;
    out.alg = std::move(*alg);
    out.value.assign(reinterpret_cast<const char*>(sig.data), sig.size);
    gnutls_free(sig.data);
    return out;
}

namespace {

constexpr const char* kNoDigitalSignature = "certificate key usage does not allow signatures (no digitalSignature)";

Result<const Scheme*> check_args(std::string_view alg, std::string_view message, std::string_view sig) {
    const Scheme* scheme = find_scheme(alg);
    if (!scheme) {
        std::string shown(alg.substr(0, 64));
        for (char& c : shown)
            if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7f) c = '?';
        return make_error("unsupported signature algorithm '" + shown + "'");
    }
    if (message.empty()) return make_error("empty proof message");
    if (sig.empty()) return make_error("empty signature");
    return scheme;
}

// Whether the certificate's keyUsage (if any) allows signatures.
Result<bool> signing_allowed(gnutls_x509_crt_t crt) {
    unsigned usage = 0, critical = 0;
    int r = gnutls_x509_crt_get_key_usage(crt, &usage, &critical);
    if (r == GNUTLS_E_REQUESTED_DATA_NOT_AVAILABLE) return true;
    if (r < 0) return make_error(err("cannot read key usage", r));
    return (usage & GNUTLS_KEY_DIGITAL_SIGNATURE) != 0;
}

Result<void> parse_leaf(std::string_view leaf_der, CrtGuard& crt) {
    if (leaf_der.empty()) return make_error("no certificate");
    int r = gnutls_x509_crt_init(&crt.crt);
    if (r < 0) return make_error(err("gnutls_x509_crt_init", r));
    gnutls_datum_t d = datum(leaf_der);
    r = gnutls_x509_crt_import(crt.crt, &d, GNUTLS_X509_FMT_DER);
    if (r < 0) return make_error(err("certificate cannot be parsed", r));
    return {};
}

// The scheme must fit the key (type, and curve for ECDSA); then the signature.
Result<void> verify_with(gnutls_pubkey_t pub, const Scheme& scheme, std::string_view message, std::string_view sig) {
    unsigned bits = 0;
    int pk = gnutls_pubkey_get_pk_algorithm(pub, &bits);
    if (pk < 0) return make_error(err("cannot read the certificate's key type", pk));
    auto pk_alg = static_cast<gnutls_pk_algorithm_t>(pk);
    gnutls_ecc_curve_t curve = GNUTLS_ECC_CURVE_INVALID;
    if (pk_alg == GNUTLS_PK_ECDSA) {
        int r = gnutls_pubkey_export_ecc_raw2(pub, &curve, nullptr, nullptr, 0);
        if (r < 0) return make_error(err("cannot read the certificate key's curve", r));
    }
    if (!compatible(scheme, pk_alg, curve))
        return make_error("signature algorithm " + std::string(scheme.name) + " does not fit the certificate key (" +
                          describe_key(pk_alg, bits, curve) + ")");

    gnutls_datum_t data = datum(message), sd = datum(sig);
    int r = gnutls_pubkey_verify_data2(pub, scheme.sign, 0, &data, &sd);
    if (r < 0) {
        if (r == GNUTLS_E_PK_SIG_VERIFY_FAILED) return make_error("signature invalid");
        return make_error(err("signature invalid", r));
    }
    return {};
}

} // namespace

Result<void> verify_proof(std::string_view leaf_der, std::string_view alg, std::string_view message,
                          std::string_view sig) {
    auto scheme = check_args(alg, message, sig);
    if (!scheme) return make_error(scheme.error());
    CrtGuard crt;
    if (auto p = parse_leaf(leaf_der, crt); !p) return p;

    // A key restricted to other uses (e.g. a CA's keyCertSign only) does not
    // sign proofs.
    auto allowed = signing_allowed(crt.crt);
    if (!allowed) return make_error(allowed.error());
    if (!*allowed) return make_error(kNoDigitalSignature);

    PubkeyGuard pub;
    int r = gnutls_pubkey_init(&pub.key);
    if (r < 0) return make_error(err("gnutls_pubkey_init", r));
    r = gnutls_pubkey_import_x509(pub.key, crt.crt, 0);
    if (r < 0) return make_error(err("cannot read the certificate's public key", r));
    return verify_with(pub.key, **scheme, message, sig);
}

Result<ProofKey> proof_key_from_der(std::string_view leaf_der) {
    CrtGuard crt;
    if (auto p = parse_leaf(leaf_der, crt); !p) return make_error(p.error());
    auto allowed = signing_allowed(crt.crt);
    if (!allowed) return make_error(allowed.error());

    PubkeyGuard pub;
    int r = gnutls_pubkey_init(&pub.key);
    if (r < 0) return make_error(err("gnutls_pubkey_init", r));
    r = gnutls_pubkey_import_x509(pub.key, crt.crt, 0);
    if (r < 0) return make_error(err("cannot read the certificate's public key", r));
    gnutls_datum_t spki{};
    r = gnutls_pubkey_export2(pub.key, GNUTLS_X509_FMT_DER, &spki);
    if (r < 0) return make_error(err("cannot export the certificate's public key", r));
    ProofKey key;
    key.spki_der.assign(reinterpret_cast<const char*>(spki.data), spki.size);
    gnutls_free(spki.data);
    key.signing_allowed = *allowed;
    key.ec = tls::EcPublicKey::from_spki(key.spki_der);
    return key;
}

Result<void> verify_proof(const ProofKey& key, std::string_view alg, std::string_view message, std::string_view sig) {
    auto scheme = check_args(alg, message, sig);
    if (!scheme) return make_error(scheme.error());
    if (key.spki_der.empty()) return make_error("no certificate");
    if (!key.signing_allowed) return make_error(kNoDigitalSignature);
    if (key.ec && compatible(**scheme, GNUTLS_PK_ECDSA, key.ec->curve())) {
        tls::EcDigest digest = (*scheme)->sign == GNUTLS_SIGN_ECDSA_SECP384R1_SHA384   ? tls::EcDigest::Sha384
                               : (*scheme)->sign == GNUTLS_SIGN_ECDSA_SECP521R1_SHA512 ? tls::EcDigest::Sha512
                                                                                       : tls::EcDigest::Sha256;
        if (key.ec->verify(digest, message, sig)) return {};
        // Rejected: GnuTLS says why, in its words.
    }
    PubkeyGuard pub;
    int r = gnutls_pubkey_init(&pub.key);
    if (r < 0) return make_error(err("gnutls_pubkey_init", r));
    gnutls_datum_t d = datum(key.spki_der);
    r = gnutls_pubkey_import(pub.key, &d, GNUTLS_X509_FMT_DER);
    if (r < 0) return make_error(err("cannot read the certificate's public key", r));
    return verify_with(pub.key, **scheme, message, sig);
}

} // namespace s2smux::mux
