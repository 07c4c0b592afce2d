#define BOOST_TEST_MODULE test_tls_identity
#include <boost/test/unit_test.hpp>

#include "tests/support/test_certs.h"
#include "tls/certs.h"
#include "tls/identity.h"
#include "tls/trust.h"

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>
#include <unistd.h>

using namespace s2smux;
using namespace s2smux::tls;
using s2smux::test::CertSpec;
using s2smux::test::kDay;
using s2smux::test::TestCa;

namespace {

Identity dns(std::vector<std::string> v) {
    Identity id;
    id.dns = std::move(v);
    return id;
}
Identity srv(std::vector<std::string> v) {
    Identity id;
    id.srv = std::move(v);
    return id;
}
Identity xmpp(std::vector<std::string> v) {
    Identity id;
    id.xmpp = std::move(v);
    return id;
}
Identity cn(std::string c, Identity id = {}) {
    id.common_name = std::move(c);
    return id;
}

constexpr std::int64_t k2023_01_01 = 1672531200;
constexpr std::int64_t k2023_06_01 = 1685577600;
constexpr std::int64_t k2024_01_01 = 1704067200;

// One CA and its leaf certificates for the whole module (key generation is
// cheap, but this keeps the tests short).
const TestCa& demo_ca() {
    static const TestCa ca("Demo CA");
    return ca;
}

} // namespace

// ---------------------------------------------------------------------------
// Name matching (RFC 6125 / RFC 7590)

BOOST_AUTO_TEST_CASE(name_matching_table) {
    struct Case {
        const char* what;
        Identity id;
        std::string domain;
        bool expect;
    };
    const std::vector<Case> cases = {
        // dNSName exact, case, trailing dot
        {"exact", dns({"a.test"}), "a.test", true},
        {"case-insensitive domain", dns({"a.test"}), "A.TeSt", true},
        {"case-insensitive pattern", dns({"A.Test"}), "a.test", true},
        {"trailing dot in domain", dns({"a.test"}), "a.test.", true},
        {"trailing dot in pattern", dns({"a.test."}), "a.test", true},
        {"other domain", dns({"a.test"}), "b.test", false},
        {"subdomain is not the domain", dns({"a.test"}), "muc.a.test", false},
        {"parent is not the domain", dns({"muc.a.test"}), "a.test", false},
        {"suffix is not a label match", dns({"a.test"}), "xa.test", false},
        {"empty domain", dns({"a.test"}), "", false},
        {"lone dot", dns({"a.test"}), ".", false},
        {"second dNSName", dns({"x.test", "a.test"}), "a.test", true},
        // wildcards: entire leftmost label only, exactly one label
        {"wildcard one label", dns({"*.example.com"}), "a.example.com", true},
        {"wildcard case", dns({"*.Example.COM"}), "XMPP.example.com.", true},
        {"wildcard not the parent", dns({"*.example.com"}), "example.com", false},
        {"wildcard not two labels", dns({"*.example.com"}), "a.b.example.com", false},
        {"wildcard empty label", dns({"*.example.com"}), ".example.com", false},
        {"partial wildcard prefix", dns({"f*.example.com"}), "foo.example.com", false},
        {"partial wildcard prefix exact", dns({"f*.example.com"}), "f.example.com", false},
        {"partial wildcard suffix", dns({"*oo.example.com"}), "foo.example.com", false},
        {"wildcard not leftmost", dns({"a.*.example.com"}), "a.b.example.com", false},
        {"double wildcard", dns({"*.*.example.com"}), "a.b.example.com", false},
        {"wildcard on a TLD", dns({"*.com"}), "example.com", false},
        {"wildcard on a single label", dns({"*.test"}), "a.test", false},
        {"bare star", dns({"*"}), "test", false},
        {"literal star in domain", dns({"*.example.com"}), "*.example.com", false},
        // SRVName
        {"SRVName", srv({"_xmpp-server.a.test"}), "a.test", true},
        {"SRVName case", srv({"_XMPP-Server.A.test"}), "a.TEST", true},
        {"SRVName trailing dot", srv({"_xmpp-server.a.test"}), "a.test.", true},
        {"SRVName xmpps (XEP-0368)", srv({"_xmpps-server.a.test"}), "a.test", true},
        {"SRVName client service", srv({"_xmpp-client.a.test"}), "a.test", false},
        {"SRVName other domain", srv({"_xmpp-server.a.test"}), "b.test", false},
        {"SRVName no wildcard", srv({"_xmpp-server.*.test"}), "a.test", false},
        {"SRVName subdomain", srv({"_xmpp-server.a.test"}), "muc.a.test", false},
        {"SRVName without service", srv({"a.test"}), "a.test", false},
        // XmppAddr
        {"XmppAddr", xmpp({"a.test"}), "a.test", true},
        {"XmppAddr case", xmpp({"A.Test"}), "a.test", true},
        {"XmppAddr full JID", xmpp({"user@a.test"}), "a.test", false},
        {"XmppAddr with resource", xmpp({"a.test/res"}), "a.test", false},
        {"XmppAddr no wildcard", xmpp({"*.test"}), "a.test", false},
        // CN only without any SAN identity
        {"CN fallback", cn("a.test"), "a.test", true},
        {"CN fallback case", cn("A.TEST"), "a.test", true},
        {"CN fallback other", cn("a.test"), "b.test", false},
        {"CN ignored with dNSName", cn("a.test", dns({"b.test"})), "a.test", false},
        {"dNSName used next to CN", cn("a.test", dns({"b.test"})), "b.test", true},
        {"CN ignored with SRVName", cn("a.test", srv({"_xmpp-server.b.test"})), "a.test", false},
        {"CN ignored with non-XMPP SRVName", cn("a.test", srv({"_imap.b.test"})), "a.test", false},
        {"CN ignored with XmppAddr", cn("a.test", xmpp({"b.test"})), "a.test", false},
        {"empty identity", Identity{}, "a.test", false},
        // IDN-looking names: A-labels compare as ASCII, U-labels never match
        {"A-label exact", dns({"xn--caf-dma.test"}), "xn--caf-dma.test", true},
        {"A-label case", dns({"XN--CAF-DMA.test"}), "xn--caf-dma.TEST", true},
        {"U-label vs A-label", dns({"xn--caf-dma.test"}), "caf\xc3\xa9.test", false},
        {"U-label in cert never matches", dns({"caf\xc3\xa9.test"}), "caf\xc3\xa9.test", false},
        {"wildcard over A-label parent", dns({"*.xn--caf-dma.test"}), "muc.xn--caf-dma.test", true},
        {"wildcard covering an A-label", dns({"*.example.com"}), "xn--caf-dma.example.com", true},
        {"partial wildcard in A-label", dns({"xn--*.test"}), "xn--caf-dma.test", false},
        {"SRVName A-label", srv({"_xmpp-server.xn--caf-dma.test"}), "XN--caf-dma.test", true},
    };
    for (const auto& c : cases) {
        BOOST_TEST_CONTEXT(c.what << ": domain '" << c.domain << "'") {
            BOOST_TEST(matches_domain(c.id, c.domain) == c.expect);
        }
    }
}

BOOST_AUTO_TEST_CASE(dns_name_matches_direct) {
    BOOST_TEST(dns_name_matches("*.a.test", "muc.a.test"));
    BOOST_TEST(dns_name_matches("*.a.test.", "MUC.A.TEST"));
    BOOST_TEST(!dns_name_matches("*.a.test", "a.test"));
    BOOST_TEST(!dns_name_matches("*.a.test", "x.muc.a.test"));
    BOOST_TEST(!dns_name_matches("m*.a.test", "muc.a.test"));
    BOOST_TEST(!dns_name_matches("", ""));
    BOOST_TEST(!dns_name_matches("a..test", "a..test"));
    BOOST_TEST(!dns_name_matches("a test", "a test"));
}

BOOST_AUTO_TEST_CASE(identity_names) {
    Identity id;
    id.dns = {"b.test", "*.a.test", "b.test."};
    id.srv = {"_xmpp-server.a.test", "_xmpp-client.c.test", "_xmpps-server.B.TEST"};
    id.xmpp = {"d.test", "u@e.test", "f.test/r"};
    id.common_name = "ignored.test";
    std::vector<std::string> want = {"*.a.test", "a.test", "b.test", "d.test"};
    BOOST_TEST(id.names() == want, boost::test_tools::per_element());

    Identity only_cn;
    only_cn.common_name = "Cn.Test";
    BOOST_TEST(only_cn.names() == std::vector<std::string>{"cn.test"}, boost::test_tools::per_element());
    BOOST_TEST(Identity{}.names().empty());
}

// ---------------------------------------------------------------------------
// Parsing

BOOST_AUTO_TEST_CASE(identity_from_der_all_san_kinds) {
    auto leaf = demo_ca().issue({.dns = {"A.Test", "*.b.test"},
                                 .srv = {"_xmpp-server.a.test", "_xmpps-server.c.test"},
                                 .xmpp = {"a.test", "user@a.test"},
                                 .cn = "cn.test",
                                 .not_before = k2023_01_01,
                                 .not_after = k2024_01_01});
    auto id = identity_from_der(leaf.der());
    BOOST_TEST_REQUIRE(id.ok(), (id.ok() ? "" : id.error()));
    BOOST_TEST(id->dns == (std::vector<std::string>{"a.test", "*.b.test"}), boost::test_tools::per_element());
    BOOST_TEST(id->srv == (std::vector<std::string>{"_xmpp-server.a.test", "_xmpps-server.c.test"}),
               boost::test_tools::per_element());
    BOOST_TEST(id->xmpp == (std::vector<std::string>{"a.test", "user@a.test"}), boost::test_tools::per_element());
    BOOST_TEST(id->common_name == "cn.test");
    BOOST_TEST(id->subject == "CN=cn.test");
    BOOST_TEST(id->not_before == k2023_01_01);
    BOOST_TEST(id->not_after == k2024_01_01);
    BOOST_TEST(id->names() == (std::vector<std::string>{"*.b.test", "a.test", "c.test"}),
               boost::test_tools::per_element());
    BOOST_TEST(matches_domain(*id, "a.test"));
    BOOST_TEST(matches_domain(*id, "x.b.test"));
    BOOST_TEST(matches_domain(*id, "c.test"));
    BOOST_TEST(!matches_domain(*id, "cn.test"));
}

BOOST_AUTO_TEST_CASE(identity_from_der_each_kind_alone) {
    auto s = identity_from_der(demo_ca().issue({.srv = {"_xmpp-server.s.test"}}).der());
    BOOST_TEST_REQUIRE(s.ok());
    BOOST_TEST(s->dns.empty());
    BOOST_TEST(s->srv == std::vector<std::string>{"_xmpp-server.s.test"}, boost::test_tools::per_element());
    BOOST_TEST(s->common_name.empty());
    BOOST_TEST(s->subject == "O=s2smux test");
    BOOST_TEST(matches_domain(*s, "s.test"));

    auto x = identity_from_der(demo_ca().issue({.xmpp = {"x.test"}}).der());
    BOOST_TEST_REQUIRE(x.ok());
    BOOST_TEST(x->xmpp == std::vector<std::string>{"x.test"}, boost::test_tools::per_element());
    BOOST_TEST(matches_domain(*x, "x.test"));

    auto c = identity_from_der(demo_ca().issue({.cn = "Only-CN.test"}).der());
    BOOST_TEST_REQUIRE(c.ok());
    BOOST_TEST(c->dns.empty());
    BOOST_TEST(c->srv.empty());
    BOOST_TEST(c->xmpp.empty());
    BOOST_TEST(c->common_name == "Only-CN.test");
    BOOST_TEST(matches_domain(*c, "only-cn.test"));

    auto both = identity_from_der(demo_ca().issue({.dns = {"d.test"}, .cn = "cn.test"}).der());
    BOOST_TEST_REQUIRE(both.ok());
    BOOST_TEST(!matches_domain(*both, "cn.test"));
    BOOST_TEST(matches_domain(*both, "d.test"));
}

BOOST_AUTO_TEST_CASE(identity_from_der_rejects_garbage) {
    BOOST_TEST(!identity_from_der("").ok());
    BOOST_TEST(!identity_from_der("not a certificate").ok());
    auto der = demo_ca().issue(test::xmpp_server("a.test")).der();
    BOOST_TEST(!identity_from_der(der.substr(0, der.size() / 2)).ok());
}

// The committed demo certificates (certs/gen-certs.sh): dNSName + SRVName,
// no XmppAddr, signed by certs/ca.pem. Tests run from the source root.
BOOST_AUTO_TEST_CASE(demo_certificates) {
    if (!std::filesystem::exists("certs/ca.pem")) {
        BOOST_TEST_MESSAGE("certs/ca.pem not found (not run from the source root); skipped");
        return;
    }
    TrustStore trust;
    BOOST_TEST_REQUIRE(trust.add_ca_file("certs/ca.pem").ok());
    for (std::string d : {"a.test", "b.test", "c.test", "muc.a.test"}) {
        BOOST_TEST_CONTEXT(d) {
            auto cert = load_cert_files("certs/" + d + ".pem", "certs/" + d + ".key");
            BOOST_TEST_REQUIRE(cert.ok(), (cert.ok() ? "" : cert.error()));
            const auto& lc = **cert;
            BOOST_TEST(lc.chain_der.size() == 1u);
            BOOST_TEST(lc.identity.dns == std::vector<std::string>{d}, boost::test_tools::per_element());
            BOOST_TEST(lc.identity.srv == std::vector<std::string>{"_xmpp-server." + d},
                       boost::test_tools::per_element());
            BOOST_TEST(lc.identity.xmpp.empty());
            BOOST_TEST(matches_domain(lc.identity, d));
            auto v = verify_chain(trust, lc.chain_der, test::now());
            BOOST_TEST(v.trusted, v.error);
            BOOST_TEST(lc.identity.not_after > test::now() + 365 * kDay);
        }
    }
}

// ---------------------------------------------------------------------------
// Chain verification

BOOST_AUTO_TEST_CASE(trust_store_loading) {
    TrustStore trust;
    BOOST_TEST(trust.count() == 0u);
    BOOST_TEST(trust.add_ca_pem(demo_ca().cert_pem()).ok());
    BOOST_TEST(trust.count() == 1u);
    TestCa other("Other CA");
    BOOST_TEST(trust.add_ca_pem(demo_ca().cert_pem() + other.cert_pem()).ok());
    BOOST_TEST(trust.count() >= 2u);
    auto bad = trust.add_ca_pem("garbage");
    BOOST_TEST(!bad.ok());
    auto missing = trust.add_ca_file("/nonexistent/ca.pem");
    BOOST_TEST_REQUIRE(!missing.ok());
    BOOST_TEST(missing.error().find("/nonexistent/ca.pem") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(verify_trusted_leaf) {
    TrustStore trust;
    BOOST_TEST_REQUIRE(trust.add_ca_pem(demo_ca().cert_pem()).ok());
    auto leaf = demo_ca().issue(test::xmpp_server("a.test"));
    auto v = verify_chain(trust, leaf.chain_der, test::now());
    BOOST_TEST(v.trusted, v.error);
    BOOST_TEST(v.error.empty());
    BOOST_TEST(matches_domain(v.identity, "a.test"));
    BOOST_TEST(!matches_domain(v.identity, "b.test"));
}

BOOST_AUTO_TEST_CASE(verify_via_intermediates) {
    TrustStore trust;
    BOOST_TEST_REQUIRE(trust.add_ca_pem(demo_ca().cert_pem()).ok());
    auto inter1 = demo_ca().intermediate("Demo Intermediate 1");
    auto inter2 = inter1.intermediate("Demo Intermediate 2");

    auto leaf1 = inter1.issue(test::xmpp_server("a.test"));
    BOOST_TEST(leaf1.chain_der.size() == 2u);
    auto v1 = verify_chain(trust, leaf1.chain_der, test::now());
    BOOST_TEST(v1.trusted, v1.error);

    auto leaf2 = inter2.issue(test::xmpp_server("b.test"));
    BOOST_TEST(leaf2.chain_der.size() == 3u);
    auto v2 = verify_chain(trust, leaf2.chain_der, test::now());
    BOOST_TEST(v2.trusted, v2.error);
    BOOST_TEST(matches_domain(v2.identity, "b.test"));

    // Unordered chain (intermediates reversed) is tolerated.
    std::vector<std::string> unordered = {leaf2.chain_der[0], leaf2.chain_der[2], leaf2.chain_der[1]};
    auto v3 = verify_chain(trust, unordered, test::now());
    BOOST_TEST(v3.trusted, v3.error);

    // The root included in the chain is fine too.
    auto with_root = leaf1.chain_der;
    with_root.push_back(demo_ca().cert_der());
    auto v4 = verify_chain(trust, with_root, test::now());
    BOOST_TEST(v4.trusted, v4.error);

    // Missing intermediate: the leaf's issuer is unknown.
    auto v5 = verify_chain(trust, {leaf2.chain_der[0]}, test::now());
    BOOST_TEST(!v5.trusted);
    BOOST_TEST(v5.error == "certificate signer not trusted (issuer CN=Demo Intermediate 2)");
    BOOST_TEST(matches_domain(v5.identity, "b.test")); // identity filled anyway
}

BOOST_AUTO_TEST_CASE(verify_untrusted_ca) {
    TrustStore trust;
    BOOST_TEST_REQUIRE(trust.add_ca_pem(demo_ca().cert_pem()).ok());
    TestCa evil("Evil CA");
    auto leaf = evil.issue(test::xmpp_server("a.test"));
    auto v = verify_chain(trust, leaf.chain_der, test::now());
    BOOST_TEST(!v.trusted);
    BOOST_TEST(v.error == "certificate signer not trusted (issuer CN=Evil CA)");
    BOOST_TEST(matches_domain(v.identity, "a.test"));

    // Sending the untrusted root along does not help.
    auto v2 = verify_chain(trust, {leaf.der(), evil.cert_der()}, test::now());
    BOOST_TEST(!v2.trusted);
    BOOST_TEST(v2.error == "certificate signer not trusted (issuer CN=Evil CA)");

    // An empty trust store trusts nothing.
    TrustStore empty;
    auto v3 = verify_chain(empty, demo_ca().issue(test::xmpp_server("a.test")).chain_der, test::now());
    BOOST_TEST(!v3.trusted);
    BOOST_TEST(v3.error == "certificate signer not trusted (issuer CN=Demo CA)");
}

BOOST_AUTO_TEST_CASE(verify_expired_uses_now) {
    TrustStore trust;
    BOOST_TEST_REQUIRE(trust.add_ca_pem(demo_ca().cert_pem()).ok());
    auto leaf = demo_ca().issue({.dns = {"a.test"}, .not_before = k2023_01_01, .not_after = k2024_01_01});

    auto v = verify_chain(trust, leaf.chain_der, test::now());
    BOOST_TEST(!v.trusted);
    BOOST_TEST(v.error == "certificate expired on 2024-01-01T00:00:00Z");

    // Same certificate, verified "in the past": valid. `now` really drives it.
    auto past = verify_chain(trust, leaf.chain_der, k2023_06_01);
    BOOST_TEST(past.trusted, past.error);
    // Boundaries: valid through not_after, expired one second later.
    BOOST_TEST(verify_chain(trust, leaf.chain_der, k2024_01_01).trusted);
    BOOST_TEST(!verify_chain(trust, leaf.chain_der, k2024_01_01 + 1).trusted);
}

BOOST_AUTO_TEST_CASE(verify_not_yet_valid_uses_now) {
    TrustStore trust;
    BOOST_TEST_REQUIRE(trust.add_ca_pem(demo_ca().cert_pem()).ok());
    const std::int64_t t = test::now();
    auto leaf = demo_ca().issue({.dns = {"a.test"}, .not_before = t + 10 * kDay, .not_after = t + 20 * kDay});
    auto v = verify_chain(trust, leaf.chain_der, t);
    BOOST_TEST(!v.trusted);
    BOOST_TEST(v.error.rfind("certificate not yet valid until ", 0) == 0, v.error);
    BOOST_TEST(verify_chain(trust, leaf.chain_der, t + 15 * kDay).trusted);

    auto fixed = demo_ca().issue({.dns = {"a.test"}, .not_before = k2024_01_01, .not_after = k2024_01_01 + kDay});
    auto v2 = verify_chain(trust, fixed.chain_der, k2023_06_01);
    BOOST_TEST(v2.error == "certificate not yet valid until 2024-01-01T00:00:00Z");
}

BOOST_AUTO_TEST_CASE(verify_expired_intermediate_and_anchor) {
    TrustStore trust;
    BOOST_TEST_REQUIRE(trust.add_ca_pem(demo_ca().cert_pem()).ok());
    auto old_inter = demo_ca().intermediate("Old Intermediate", k2023_01_01, k2024_01_01);
    auto leaf = old_inter.issue(test::xmpp_server("a.test"));
    auto v = verify_chain(trust, leaf.chain_der, test::now());
    BOOST_TEST(!v.trusted);
    BOOST_TEST(v.error == "CA certificate CN=Old Intermediate expired on 2024-01-01T00:00:00Z");

    TestCa old_root("Old Root", k2023_01_01, k2024_01_01);
    TrustStore trust2;
    BOOST_TEST_REQUIRE(trust2.add_ca_pem(old_root.cert_pem()).ok());
    auto leaf2 = old_root.issue(test::xmpp_server("a.test"));
    auto v2 = verify_chain(trust2, leaf2.chain_der, test::now());
    BOOST_TEST(!v2.trusted);
    BOOST_TEST(v2.error == "trust anchor CN=Old Root expired on 2024-01-01T00:00:00Z");
    BOOST_TEST(verify_chain(trust2, leaf2.chain_der, k2023_06_01).trusted == false); // leaf not yet valid then
}

BOOST_AUTO_TEST_CASE(verify_tampered_signature) {
    TrustStore trust;
    BOOST_TEST_REQUIRE(trust.add_ca_pem(demo_ca().cert_pem()).ok());
    auto leaf = demo_ca().issue(test::xmpp_server("a.test"));
    // The last byte is inside the ECDSA signature's INTEGER s.
    std::string bad_sig = leaf.der();
    bad_sig.back() = static_cast<char>(bad_sig.back() ^ 0x01);
    auto v = verify_chain(trust, {bad_sig}, test::now());
    BOOST_TEST(!v.trusted);
    BOOST_TEST(v.error == "signature invalid");

    // Changing the signed content (a name) breaks the signature too.
    std::string bad_tbs = leaf.der();
    auto pos = bad_tbs.find("a.test");
    BOOST_TEST_REQUIRE(pos != std::string::npos);
    bad_tbs[pos] = 'e';
    auto v2 = verify_chain(trust, {bad_tbs}, test::now());
    BOOST_TEST(!v2.trusted);
    BOOST_TEST(v2.error == "signature invalid");
    BOOST_TEST(matches_domain(v2.identity, "e.test")); // parsed, but not trusted
}

BOOST_AUTO_TEST_CASE(verify_malformed_inputs) {
    TrustStore trust;
    BOOST_TEST_REQUIRE(trust.add_ca_pem(demo_ca().cert_pem()).ok());
    auto v = verify_chain(trust, {}, test::now());
    BOOST_TEST(!v.trusted);
    BOOST_TEST(v.error == "no certificate");

    auto g = verify_chain(trust, {"garbage"}, test::now());
    BOOST_TEST(!g.trusted);
    BOOST_TEST(g.error.rfind("certificate cannot be parsed", 0) == 0, g.error);

    auto leaf = demo_ca().issue(test::xmpp_server("a.test"));
    std::vector<std::string> longchain(9, leaf.der());
    auto l = verify_chain(trust, longchain, test::now());
    BOOST_TEST(!l.trusted);
    BOOST_TEST(l.error.rfind("chain too long", 0) == 0, l.error);
}

BOOST_AUTO_TEST_CASE(verify_concurrently) {
    TrustStore trust;
    BOOST_TEST_REQUIRE(trust.add_ca_pem(demo_ca().cert_pem()).ok());
    auto good = demo_ca().issue(test::xmpp_server("a.test"));
    TestCa evil("Evil CA");
    auto bad = evil.issue(test::xmpp_server("a.test"));
    std::atomic<int> wrong{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t) {
        threads.emplace_back([&, t] {
            for (int i = 0; i < 40; ++i) {
                bool use_good = (i + t) % 2 == 0;
                auto v = verify_chain(trust, use_good ? good.chain_der : bad.chain_der, test::now());
                if (v.trusted != use_good) ++wrong;
            }
        });
    }
    // Adding a CA while verifications run is allowed.
    TestCa more("More CA");
    BOOST_TEST(trust.add_ca_pem(more.cert_pem()).ok());
    for (auto& th : threads) th.join();
    BOOST_TEST(wrong.load() == 0);
}

// ---------------------------------------------------------------------------
// Local certificates and the store

BOOST_AUTO_TEST_CASE(load_cert_pem_ok_and_mismatch) {
    auto a = demo_ca().issue(test::xmpp_server("a.test"));
    auto b = demo_ca().issue(test::xmpp_server("b.test"));

    auto ok = load_cert_pem(a.chain_pem, a.key_pem);
    BOOST_TEST_REQUIRE(ok.ok(), (ok.ok() ? "" : ok.error()));
    BOOST_TEST((*ok)->chain_der == a.chain_der, boost::test_tools::per_element());
    BOOST_TEST((*ok)->pcerts.size() == 1u);
    BOOST_TEST((*ok)->key != nullptr);
    BOOST_TEST((*ok)->identity.names() == std::vector<std::string>{"a.test"}, boost::test_tools::per_element());

    auto mismatch = load_cert_pem(a.chain_pem, b.key_pem);
    BOOST_TEST_REQUIRE(!mismatch.ok());
    BOOST_TEST(mismatch.error() == "private key does not match the certificate");

    BOOST_TEST(!load_cert_pem(a.chain_pem, "garbage").ok());
    BOOST_TEST(!load_cert_pem("", a.key_pem).ok());
    BOOST_TEST(!load_cert_pem("garbage", a.key_pem).ok());
    // A CA certificate with a leaf key does not match either.
    BOOST_TEST(!load_cert_pem(demo_ca().cert_pem(), a.key_pem).ok());
}

BOOST_AUTO_TEST_CASE(load_cert_pem_sorts_chain) {
    auto inter = demo_ca().intermediate("Demo Intermediate");
    auto leaf = inter.issue(test::xmpp_server("a.test"));
    BOOST_TEST_REQUIRE(leaf.chain_der.size() == 2u);
    std::string reversed = test::der_to_pem(leaf.chain_der[1]) + test::der_to_pem(leaf.chain_der[0]);
    auto lc = load_cert_pem(reversed, leaf.key_pem);
    BOOST_TEST_REQUIRE(lc.ok(), (lc.ok() ? "" : lc.error()));
    BOOST_TEST((*lc)->chain_der == leaf.chain_der, boost::test_tools::per_element());
    BOOST_TEST((*lc)->pcerts.size() == 2u);
    BOOST_TEST(test::pem_to_der((*lc)->chain_pem) == leaf.chain_der[0]);
}

BOOST_AUTO_TEST_CASE(load_cert_files_records_paths) {
    auto a = demo_ca().issue(test::xmpp_server("a.test"));
    auto dir = std::filesystem::temp_directory_path() / ("s2smux-tls-test-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    std::string cert_path = (dir / "a.pem").string(), key_path = (dir / "a.key").string();
    std::ofstream(cert_path) << a.chain_pem;
    std::ofstream(key_path) << a.key_pem;
    auto lc = load_cert_files(cert_path, key_path);
    BOOST_TEST_REQUIRE(lc.ok(), (lc.ok() ? "" : lc.error()));
    BOOST_TEST((*lc)->cert_path == cert_path);
    BOOST_TEST((*lc)->key_path == key_path);
    auto missing = load_cert_files((dir / "none.pem").string(), key_path);
    BOOST_TEST(!missing.ok());
    std::filesystem::remove_all(dir);
}

BOOST_AUTO_TEST_CASE(cert_store_lookup) {
    CertStore store;
    BOOST_TEST(store.any() == nullptr);
    BOOST_TEST(store.find("a.test") == nullptr);

    auto a = demo_ca().issue({.dns = {"a.test", "*.a.test"}, .srv = {"_xmpp-server.a.test"}}).local();
    auto muc = demo_ca().issue(test::xmpp_server("muc.a.test")).local();
    auto b = demo_ca().issue({.srv = {"_xmpp-server.b.test"}, .xmpp = {"b2.test"}}).local();
    store.add(a);
    store.add(muc);
    store.add(b);

    BOOST_TEST(store.find("a.test") == a);
    BOOST_TEST(store.find("A.TEST.") == a);
    BOOST_TEST(store.find("muc.a.test") == muc);           // exact beats wildcard
    BOOST_TEST(store.find("pubsub.a.test") == a);          // wildcard for the parent
    BOOST_TEST(store.find("x.pubsub.a.test") == nullptr);  // one label only
    BOOST_TEST(store.find("b.test") == b);
    BOOST_TEST(store.find("b2.test") == b);
    BOOST_TEST(store.find("c.test") == nullptr);
    BOOST_TEST(store.find("") == nullptr);
    BOOST_TEST(store.all().size() == 3u);
    BOOST_TEST(store.any() != nullptr);

    // Replacing: a newer certificate for b.test takes over that name.
    auto b_new = demo_ca().issue(test::xmpp_server("b.test")).local();
    store.add(b_new);
    BOOST_TEST(store.find("b.test") == b_new);
    BOOST_TEST(store.find("b2.test") == b); // the old one still serves its other name

    // Removing by one name removes every name of that certificate.
    BOOST_TEST(store.remove("a.test"));
    BOOST_TEST(store.find("a.test") == nullptr);
    BOOST_TEST(store.find("pubsub.a.test") == nullptr);
    BOOST_TEST(store.find("muc.a.test") == muc);
    BOOST_TEST(!store.remove("a.test"));
    BOOST_TEST(store.remove("B2.test"));
    BOOST_TEST(store.find("b2.test") == nullptr);
    BOOST_TEST(store.find("b.test") == b_new);
    BOOST_TEST(store.all().size() == 2u);
}
