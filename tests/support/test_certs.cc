#include "tests/support/test_certs.h"

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include <ctime>
#include <stdexcept>

namespace s2smux::test {

namespace {

constexpr const char* kOidSrvName = "1.3.6.1.5.5.7.8.7";
constexpr const char* kOidXmppAddr = "1.3.6.1.5.5.7.8.5";
constexpr std::int64_t kCaNotBefore = 946684800; // 2000-01-01: tests may verify "in the past"

void check(int r, const char* what) {
    if (r < 0) throw std::runtime_error(std::string("test_certs: ") + what + ": " + gnutls_strerror(r));
}

gnutls_datum_t datum(const std::string& s) {
    return gnutls_datum_t{reinterpret_cast<unsigned char*>(const_cast<char*>(s.data())),
                          static_cast<unsigned>(s.size())};
}

std::string take(gnutls_datum_t& d) {
    std::string s(reinterpret_cast<const char*>(d.data), d.size);
    gnutls_free(d.data);
    d.data = nullptr;
    return s;
}

// DER TLV with a short or long form length.
std::string der_tlv(unsigned char tag, const std::string& value) {
    std::string out(1, static_cast<char>(tag));
    std::size_t n = value.size();
    if (n < 0x80) {
        out += static_cast<char>(n);
    } else {
        std::string len;
        while (n) {
            len.insert(len.begin(), static_cast<char>(n & 0xff));
            n >>= 8;
        }
        out += static_cast<char>(0x80 | len.size());
        out += len;
    }
    return out + value;
}

struct Crt {
    gnutls_x509_crt_t h = nullptr;
    Crt() { check(gnutls_x509_crt_init(&h), "gnutls_x509_crt_init"); }
    ~Crt() {
        if (h) gnutls_x509_crt_deinit(h);
    }
    Crt(const Crt&) = delete;
    Crt& operator=(const Crt&) = delete;
};

struct Key {
    gnutls_x509_privkey_t h = nullptr;
    explicit Key(KeyType type = KeyType::EcdsaP256) {
        check(gnutls_x509_privkey_init(&h), "gnutls_x509_privkey_init");
        gnutls_pk_algorithm_t pk = GNUTLS_PK_ECDSA;
        unsigned bits = 0;
        switch (type) {
        case KeyType::EcdsaP256: bits = GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1); break;
        case KeyType::EcdsaP384: bits = GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP384R1); break;
        case KeyType::EcdsaP521: bits = GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP521R1); break;
        case KeyType::Rsa2048: pk = GNUTLS_PK_RSA, bits = 2048; break;
        case KeyType::RsaPss2048: pk = GNUTLS_PK_RSA_PSS, bits = 2048; break;
        case KeyType::Ed25519: pk = GNUTLS_PK_EDDSA_ED25519, bits = GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_ED25519); break;
        case KeyType::Ed448: pk = GNUTLS_PK_EDDSA_ED448, bits = GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_ED448); break;
        }
        check(gnutls_x509_privkey_generate(h, pk, bits, 0), "gnutls_x509_privkey_generate");
    }
    ~Key() {
        if (h) gnutls_x509_privkey_deinit(h);
    }
    Key(const Key&) = delete;
    Key& operator=(const Key&) = delete;
};

std::string export_cert(gnutls_x509_crt_t crt, gnutls_x509_crt_fmt_t fmt) {
    gnutls_datum_t d{};
    check(gnutls_x509_crt_export2(crt, fmt, &d), "gnutls_x509_crt_export2");
    return take(d);
}

std::string export_key(gnutls_x509_privkey_t key) {
    gnutls_datum_t d{};
    check(gnutls_x509_privkey_export2_pkcs8(key, GNUTLS_X509_FMT_PEM, nullptr, GNUTLS_PKCS_PLAIN, &d),
          "gnutls_x509_privkey_export2_pkcs8");
    return take(d);
}

// Common part of every certificate: version, serial, dates, key, key ids.
void init_cert(gnutls_x509_crt_t crt, gnutls_x509_privkey_t key, std::int64_t not_before, std::int64_t not_after) {
    check(gnutls_x509_crt_set_version(crt, 3), "set_version");
    unsigned char serial[16];
    check(gnutls_rnd(GNUTLS_RND_NONCE, serial, sizeof serial), "gnutls_rnd");
    serial[0] = static_cast<unsigned char>((serial[0] & 0x3f) | 0x40); // positive, 16 bytes
    check(gnutls_x509_crt_set_serial(crt, serial, sizeof serial), "set_serial");
    check(gnutls_x509_crt_set_activation_time(crt, static_cast<time_t>(not_before)), "set_activation_time");
    check(gnutls_x509_crt_set_expiration_time(crt, static_cast<time_t>(not_after)), "set_expiration_time");
    check(gnutls_x509_crt_set_key(crt, key), "set_key");
    unsigned char id[64];
    std::size_t size = sizeof id;
    check(gnutls_x509_crt_get_key_id(crt, GNUTLS_KEYID_USE_SHA1, id, &size), "get_key_id");
    check(gnutls_x509_crt_set_subject_key_id(crt, id, size), "set_subject_key_id");
}

void sign(gnutls_x509_crt_t crt, gnutls_x509_crt_t issuer, gnutls_x509_privkey_t issuer_key) {
    unsigned char id[64];
    std::size_t size = sizeof id;
    unsigned critical = 0;
    if (gnutls_x509_crt_get_subject_key_id(issuer, id, &size, &critical) >= 0)
        check(gnutls_x509_crt_set_authority_key_id(crt, id, size), "set_authority_key_id");
    check(gnutls_x509_crt_sign2(crt, issuer, issuer_key, GNUTLS_DIG_SHA256, 0), "gnutls_x509_crt_sign2");
}

void set_cn(gnutls_x509_crt_t crt, const std::string& cn) {
    if (cn.empty()) {
        static const std::string org = "s2smux test";
        check(gnutls_x509_crt_set_dn_by_oid(crt, GNUTLS_OID_X520_ORGANIZATION_NAME, 0, org.data(), org.size()),
              "set O");
    } else {
        check(gnutls_x509_crt_set_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, cn.data(), cn.size()), "set CN");
    }
}

std::int64_t or_default(std::int64_t v, std::int64_t def) { return v != 0 ? v : def; }

} // namespace

struct TestCa::Impl {
    Crt crt;
    Key key;
    std::string cert_pem, cert_der, key_pem;
    // This CA and its ancestors below the root, in chain order; empty for a root.
    std::vector<std::string> chain_der;
};

std::int64_t now() { return static_cast<std::int64_t>(std::time(nullptr)); }

CertSpec xmpp_server(const std::string& domain) {
    CertSpec s;
    s.dns = {domain};
    s.srv = {"_xmpp-server." + domain};
    return s;
}

namespace {

std::shared_ptr<TestCa::Impl> make_ca(const std::string& name, std::int64_t not_before, std::int64_t not_after,
                                      const TestCa::Impl* parent) {
    auto ca = std::make_shared<TestCa::Impl>();
    gnutls_x509_crt_t c = ca->crt.h;
    init_cert(c, ca->key.h, or_default(not_before, kCaNotBefore), or_default(not_after, now() + 7300 * kDay));
    set_cn(c, name);
    check(gnutls_x509_crt_set_basic_constraints(c, 1, -1), "set_basic_constraints");
    check(gnutls_x509_crt_set_key_usage(c, GNUTLS_KEY_KEY_CERT_SIGN | GNUTLS_KEY_CRL_SIGN), "set_key_usage");
    if (parent)
        sign(c, parent->crt.h, parent->key.h);
    else
        sign(c, c, ca->key.h);
    ca->cert_pem = export_cert(c, GNUTLS_X509_FMT_PEM);
    ca->cert_der = export_cert(c, GNUTLS_X509_FMT_DER);
    ca->key_pem = export_key(ca->key.h);
    if (parent) {
        ca->chain_der.push_back(ca->cert_der);
        ca->chain_der.insert(ca->chain_der.end(), parent->chain_der.begin(), parent->chain_der.end());
    }
    return ca;
}

} // namespace

TestCa::TestCa(const std::string& name, std::int64_t not_before, std::int64_t not_after)
    : impl_(make_ca(name, not_before, not_after, nullptr)) {}

TestCa TestCa::intermediate(const std::string& name, std::int64_t not_before, std::int64_t not_after) const {
    return TestCa(make_ca(name, not_before, not_after, impl_.get()));
}

IssuedCert TestCa::issue(const CertSpec& spec) const {
    Crt crt;
    Key key(spec.key);
    gnutls_x509_crt_t c = crt.h;
    init_cert(c, key.h, or_default(spec.not_before, now() - 3600), or_default(spec.not_after, now() + 365 * kDay));
    set_cn(c, spec.cn);
    check(gnutls_x509_crt_set_basic_constraints(c, 0, -1), "set_basic_constraints");
    check(gnutls_x509_crt_set_key_usage(c, GNUTLS_KEY_DIGITAL_SIGNATURE), "set_key_usage");
    check(gnutls_x509_crt_set_key_purpose_oid(c, GNUTLS_KP_TLS_WWW_SERVER, 0), "set_key_purpose_oid");
    check(gnutls_x509_crt_set_key_purpose_oid(c, GNUTLS_KP_TLS_WWW_CLIENT, 0), "set_key_purpose_oid");
    for (const auto& d : spec.dns)
        check(gnutls_x509_crt_set_subject_alt_name(c, GNUTLS_SAN_DNSNAME, d.data(), static_cast<unsigned>(d.size()),
                                                   GNUTLS_FSAN_APPEND),
              "dNSName");
    for (const auto& s : spec.srv) {
        std::string der = der_tlv(0x16, s); // IA5String
        check(gnutls_x509_crt_set_subject_alt_othername(c, kOidSrvName, der.data(), static_cast<unsigned>(der.size()),
                                                        GNUTLS_FSAN_APPEND),
              "SRVName");
    }
    for (const auto& x : spec.xmpp) {
        std::string der = der_tlv(0x0c, x); // UTF8String
        check(gnutls_x509_crt_set_subject_alt_othername(c, kOidXmppAddr, der.data(), static_cast<unsigned>(der.size()),
                                                        GNUTLS_FSAN_APPEND),
              "XmppAddr");
    }
    sign(c, impl_->crt.h, impl_->key.h);

    IssuedCert out;
    out.cert_pem = export_cert(c, GNUTLS_X509_FMT_PEM);
    out.key_pem = export_key(key.h);
    out.chain_der.push_back(export_cert(c, GNUTLS_X509_FMT_DER));
    out.chain_der.insert(out.chain_der.end(), impl_->chain_der.begin(), impl_->chain_der.end());
    for (const auto& d : out.chain_der) out.chain_pem += der_to_pem(d);
    return out;
}

std::shared_ptr<tls::LocalCert> IssuedCert::local() const {
    auto r = tls::load_cert_pem(chain_pem, key_pem);
    if (!r) throw std::runtime_error("test_certs: load_cert_pem: " + r.error());
    return *r;
}

const std::string& TestCa::cert_pem() const { return impl_->cert_pem; }
const std::string& TestCa::cert_der() const { return impl_->cert_der; }
const std::string& TestCa::key_pem() const { return impl_->key_pem; }

std::string pem_to_der(const std::string& pem) {
    gnutls_datum_t in = datum(pem), out{};
    check(gnutls_pem_base64_decode2("CERTIFICATE", &in, &out), "gnutls_pem_base64_decode2");
    return take(out);
}

std::string der_to_pem(const std::string& der) {
    gnutls_datum_t in = datum(der), out{};
    check(gnutls_pem_base64_encode2("CERTIFICATE", &in, &out), "gnutls_pem_base64_encode2");
    return take(out);
}

} // namespace s2smux::test
