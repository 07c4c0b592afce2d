// In-memory test PKI (GnuTLS, ECDSA P-256, SHA-256): CAs, intermediates and
// leaf certificates with any mix of dNSName / SRVName / XmppAddr / CN, a
// chosen validity window and a chosen key type (CertSpec::key; P-256 unless
// set, RSA and EdDSA too). For unit tests only; throws std::runtime_error on
// any failure.
//
//   s2smux::test::TestCa ca("Demo CA");
//   auto a = ca.issue(s2smux::test::xmpp_server("a.test"));        // dNSName + SRVName
//   auto x = ca.issue({.dns = {"b.test"}, .not_after = s2smux::test::now() - s2smux::test::kDay});
//   trust.add_ca_pem(ca.cert_pem());
//   store.add(a.local());                // tls::LocalCert for a CertStore
//   auto inter = ca.intermediate("Demo Intermediate");
//   auto c = inter.issue(s2smux::test::xmpp_server("c.test")); // chain_pem = leaf + intermediate
#pragma once

#include "tls/certs.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace s2smux::test {

constexpr std::int64_t kDay = 86400;

// Key of a leaf certificate (CAs always use ECDSA P-256).
enum class KeyType { EcdsaP256, EcdsaP384, EcdsaP521, Rsa2048, RsaPss2048, Ed25519, Ed448 };

// Current unix time in seconds.
std::int64_t now();

struct CertSpec {
    std::vector<std::string> dns;  // dNSName SANs: "a.test", "*.a.test"
    std::vector<std::string> srv;  // SRVName SANs, full value: "_xmpp-server.a.test"
    std::vector<std::string> xmpp; // XmppAddr SANs: "a.test"
    std::string cn;                // subject CN; empty = no CN (subject is O=s2smux test)
    std::int64_t not_before = 0;   // unix seconds; 0 = now() - 1 hour
    std::int64_t not_after = 0;    // unix seconds; 0 = now() + 365 days
    KeyType key = KeyType::EcdsaP256;
};

// What a real XMPP server certificate carries: dNSName `domain` and SRVName
// "_xmpp-server.<domain>" (no XmppAddr, no CN).
CertSpec xmpp_server(const std::string& domain);

struct IssuedCert {
    std::string cert_pem;               // the leaf alone
    std::string chain_pem;              // leaf + intermediates (never the root)
    std::string key_pem;                // PKCS#8 PEM, unencrypted
    std::vector<std::string> chain_der; // same certificates as chain_pem, leaf first

    const std::string& der() const { return chain_der.front(); }
    // tls::load_cert_pem(chain_pem, key_pem); throws on failure.
    std::shared_ptr<tls::LocalCert> local() const;
};

class TestCa {
public:
    // A self-signed root CA "CN=<name>". Dates in unix seconds; 0 = defaults
    // 2000-01-01 (so tests can verify with a `now` in the past) and now + 20 years.
    explicit TestCa(const std::string& name, std::int64_t not_before = 0, std::int64_t not_after = 0);

    // An intermediate CA "CN=<name>" signed by this CA. Certificates it issues
    // carry the intermediates up to (not including) the root in chain_pem.
    TestCa intermediate(const std::string& name, std::int64_t not_before = 0, std::int64_t not_after = 0) const;

    // A leaf (end-entity) certificate signed by this CA, usable for TLS server
    // and client authentication.
    IssuedCert issue(const CertSpec& spec) const;

    const std::string& cert_pem() const; // this CA's certificate (add it to a TrustStore)
    const std::string& cert_der() const;
    const std::string& key_pem() const;

    struct Impl;

private:
    explicit TestCa(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}
    std::shared_ptr<Impl> impl_; // copies share the CA
};

// Converts between PEM and DER for certificates.
std::string pem_to_der(const std::string& pem);
std::string der_to_pem(const std::string& der);

} // namespace s2smux::test
