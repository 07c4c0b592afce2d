#define BOOST_TEST_MODULE test_mux_proof
#include <boost/test/unit_test.hpp>

#include "mux/add_check.h"
#include "mux/proof.h"
#include "tests/support/test_certs.h"
#include "tls/trust.h"

#include <gnutls/abstract.h>
#include <gnutls/gnutls.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <map>
#include <mutex>
#include <thread>

using namespace s2smux;
using namespace s2smux::mux;
using s2smux::test::CertSpec;
using s2smux::test::IssuedCert;
using s2smux::test::kDay;
using s2smux::test::KeyType;
using s2smux::test::TestCa;

namespace {

constexpr std::int64_t k2023_06_01 = 1685577600;
constexpr std::int64_t k2024_01_01 = 1704067200;

// 32 bytes 0x00..0x1f: the exporter may contain 0x00 (fixed size).
std::string exporter_a() {
    std::string e(32, '\0');
    for (int i = 0; i < 32; ++i) e[i] = static_cast<char>(i);
    return e;
}
std::string exporter_b() {
    std::string e = exporter_a();
    e[31] = static_cast<char>(0x80);
    return e;
}

const TestCa& mux_ca() {
    static const TestCa ca("Mux CA");
    return ca;
}

// Leaves per key type, made once (RSA key generation is slow).
struct Leaf {
    IssuedCert cert;
    std::shared_ptr<tls::LocalCert> local;
};
const Leaf& leaf(KeyType type, const std::string& domain = "a.test") {
    static std::map<std::pair<KeyType, std::string>, Leaf> cache;
    static std::mutex mu;
    std::lock_guard lock(mu);
    auto key = std::make_pair(type, domain);
    auto it = cache.find(key);
    if (it == cache.end()) {
        CertSpec spec = test::xmpp_server(domain);
        spec.key = type;
        auto c = mux_ca().issue(spec);
        auto l = c.local();
        it = cache.emplace(key, Leaf{std::move(c), std::move(l)}).first;
    }
    return it->second;
}

std::string msg_for(const IssuedCert& c, std::string_view domain = "a.test", std::string_view exporter = {},
                    Signer signer = Signer::Initiator, std::string_view stream_id = "stream-1",
                    std::string_view add_id = "add-1") {
    std::string e = exporter.empty() ? exporter_a() : std::string(exporter);
    return proof_message(e, signer, stream_id, add_id, domain, c.der());
}

Signature sign_ok(const tls::LocalCert& lc, std::string_view m) {
    auto s = sign_proof(lc, m);
    BOOST_TEST_REQUIRE(s.ok(), (s.ok() ? "" : s.error()));
    return *s;
}

std::string err_of(const Result<void>& r) { return r.ok() ? std::string("(ok)") : r.error(); }

struct TrustFixture {
    tls::TrustStore trust;
    TrustFixture() { BOOST_TEST_REQUIRE(trust.add_ca_pem(mux_ca().cert_pem()).ok()); }

    // A complete, valid add of `domain` with cert `c` (and its key `lc`),
    // as the receiver sees it.
    AddCheckInput input(const IssuedCert& c, const tls::LocalCert& lc, const std::string& domain,
                        std::string_view sign_exporter = {}, std::string_view check_exporter = {}) {
        AddCheckInput in;
        in.chain_der = c.chain_der;
        in.domain = domain;
        auto sig = sign_ok(lc, msg_for(c, domain, sign_exporter));
        in.alg = sig.alg;
        in.signature = sig.value;
        in.message = msg_for(c, domain, check_exporter);
        in.now = test::now();
        return in;
    }

    // An add of `domain` by a leaf of `ca` valid from 2023-06-01 to 100 days
    // after 2024-01-01, checked at `now`.
    AddCheckInput dated_input(const TestCa& ca, const std::string& domain, std::int64_t now) {
        auto c = ca.issue({.dns = {domain}, .not_before = k2023_06_01, .not_after = k2024_01_01 + 100 * kDay});
        auto in = input(c, *c.local(), domain);
        in.now = now;
        return in;
    }

    // A first add under the test CA: verified in full, the CA remembered.
    void teach_mux_ca(ChainCache& cache) {
        auto first = mux_ca().issue(test::xmpp_server("a.test"));
        auto first_local = first.local();
        BOOST_TEST_REQUIRE((check_add(trust, input(first, *first_local, "a.test"), &cache).failure == AddFailure::None));
        BOOST_TEST_REQUIRE(cache.issuer_count() == 1u);
    }

    // Whatever a cache lets skip, never the name (c.test is not one of
    // `c`'s) nor the proof.
    void name_and_proof_still_checked(ChainCache& cache, const IssuedCert& c, const tls::LocalCert& lc,
                                      const std::string& domain) {
        auto in = input(c, lc, domain);
        auto wrong_name = in;
        wrong_name.domain = "c.test";
        wrong_name.message = msg_for(c, "c.test");
        BOOST_TEST((check_add(trust, wrong_name, &cache).failure == AddFailure::NameMismatch));
        auto bad_sig = in;
        bad_sig.signature[bad_sig.signature.size() / 2] ^= 0x01;
        BOOST_TEST((check_add(trust, bad_sig, &cache).failure == AddFailure::BadProof));
    }
};

} // namespace

// ---------------------------------------------------------------------------
// proof_message

BOOST_AUTO_TEST_CASE(proof_message_golden_vector) {
    // SHA-256("abc") (FIPS 180-2 example): stands for the leaf DER here.
    const unsigned char sha_abc[32] = {0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea, 0x41, 0x41, 0x40,
                                       0xde, 0x5d, 0xae, 0x22, 0x23, 0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17,
                                       0x7a, 0x9c, 0xb4, 0x10, 0xff, 0x61, 0xf2, 0x00, 0x15, 0xad};
    std::string m = proof_message(exporter_a(), Signer::Initiator, "s1", "7", "a.test", "abc");

    // Written out by hand, byte by byte.
    std::vector<unsigned char> want;
    for (char c : std::string("s2smux mux add v0")) want.push_back(static_cast<unsigned char>(c));
    want.push_back(0x00);
    for (int i = 0; i < 32; ++i) want.push_back(static_cast<unsigned char>(i)); // exporter
    want.push_back(0x00);
    for (unsigned char c : {'i', 'n', 'i', 't', 'i', 'a', 't', 'o', 'r'}) want.push_back(c);
    want.push_back(0x00);
    want.push_back('s');
    want.push_back('1');
    want.push_back(0x00);
    want.push_back('7');
    want.push_back(0x00);
    for (unsigned char c : {'a', '.', 't', 'e', 's', 't'}) want.push_back(c);
    want.push_back(0x00);
    for (unsigned char c : sha_abc) want.push_back(c);

    BOOST_TEST_REQUIRE(want.size() == 17u + 1 + 32 + 1 + 9 + 1 + 2 + 1 + 1 + 1 + 6 + 1 + 32);
    BOOST_TEST_REQUIRE(m.size() == want.size());
    for (std::size_t i = 0; i < want.size(); ++i)
        BOOST_TEST(static_cast<unsigned char>(m[i]) == want[i], "byte " << i);

    // The receiver role, same layout.
    std::string r = proof_message(exporter_a(), Signer::Receiver, "s1", "7", "a.test", "abc");
    BOOST_TEST(r.size() == m.size() - 1); // "receiver" is 8 bytes, "initiator" 9
    BOOST_TEST(r.substr(51, 9) == std::string("receiver\0", 9));
    BOOST_TEST(std::string(to_string(Signer::Initiator)) == "initiator");
    BOOST_TEST(std::string(to_string(Signer::Receiver)) == "receiver");
}

BOOST_AUTO_TEST_CASE(proof_message_refuses_nul_and_bad_exporter) {
    const std::string e = exporter_a();
    BOOST_TEST(proof_message(e, Signer::Initiator, std::string("s\0", 2), "7", "a.test", "abc").empty());
    BOOST_TEST(proof_message(e, Signer::Initiator, "s1", std::string("7\0x", 3), "a.test", "abc").empty());
    BOOST_TEST(proof_message(e, Signer::Initiator, "s1", "7", std::string("a.test\0", 7), "abc").empty());
    BOOST_TEST(proof_message(e.substr(0, 31), Signer::Initiator, "s1", "7", "a.test", "abc").empty());
    BOOST_TEST(proof_message(e + "x", Signer::Initiator, "s1", "7", "a.test", "abc").empty());
    BOOST_TEST(proof_message("", Signer::Initiator, "s1", "7", "a.test", "abc").empty());
    // Empty variable fields are allowed (unambiguous thanks to the separators).
    BOOST_TEST(proof_message(e, Signer::Initiator, "", "", "", "").size() == 17u + 1 + 32 + 1 + 9 + 4 + 32);
}

BOOST_AUTO_TEST_CASE(proof_message_is_unambiguous) {
    const std::string e = exporter_a();
    // Moving bytes across a field boundary changes the message.
    BOOST_TEST(proof_message(e, Signer::Initiator, "ab", "c", "a.test", "x") !=
               proof_message(e, Signer::Initiator, "a", "bc", "a.test", "x"));
    BOOST_TEST(proof_message(e, Signer::Initiator, "s", "1", "a.test", "x") !=
               proof_message(e, Signer::Initiator, "s", "", "1a.test", "x"));
    BOOST_TEST(proof_message(e, Signer::Initiator, "s", "1", "a.test", "x") !=
               proof_message(e, Signer::Initiator, "s", "1", "a.test", "y"));
}

// ---------------------------------------------------------------------------
// sign_proof / verify_proof

BOOST_AUTO_TEST_CASE(sign_verify_round_trip_every_key_type) {
    const std::pair<KeyType, const char*> cases[] = {
        {KeyType::EcdsaP256, "ecdsa_secp256r1_sha256"}, {KeyType::EcdsaP384, "ecdsa_secp384r1_sha384"},
        {KeyType::EcdsaP521, "ecdsa_secp521r1_sha512"}, {KeyType::Rsa2048, "rsa_pss_rsae_sha256"},
        {KeyType::RsaPss2048, "rsa_pss_pss_sha256"},    {KeyType::Ed25519, "ed25519"},
        {KeyType::Ed448, "ed448"},
    };
    for (const auto& [type, alg] : cases) {
        BOOST_TEST_CONTEXT("alg " << alg) {
            const Leaf& l = leaf(type);
            auto want_alg = proof_alg_for(*l.local);
            BOOST_TEST_REQUIRE(want_alg.ok());
            BOOST_TEST(*want_alg == alg);
            BOOST_TEST(is_supported_alg(alg));
            std::string m = msg_for(l.cert);
            auto sig = sign_ok(*l.local, m);
            BOOST_TEST(sig.alg == alg);
            BOOST_TEST(!sig.value.empty());
            auto v = verify_proof(l.cert.der(), sig.alg, m, sig.value);
            BOOST_TEST(v.ok(), err_of(v));
            // A leaf with the intermediate's chain behaves the same (only the leaf counts).
            auto v2 = verify_proof(l.cert.chain_der.front(), sig.alg, m, sig.value);
            BOOST_TEST(v2.ok(), err_of(v2));
        }
    }
}

BOOST_AUTO_TEST_CASE(verify_accepts_other_compatible_schemes) {
    // RSA keys may use any rsa_pss_rsae_*; the signer picks sha256, a peer may not.
    const Leaf& l = leaf(KeyType::Rsa2048);
    std::string m = msg_for(l.cert);
    gnutls_datum_t data{reinterpret_cast<unsigned char*>(m.data()), static_cast<unsigned>(m.size())}, sig{};
    BOOST_TEST_REQUIRE(gnutls_privkey_sign_data2(l.local->key, GNUTLS_SIGN_RSA_PSS_RSAE_SHA384, 0, &data, &sig) >= 0);
    std::string s(reinterpret_cast<const char*>(sig.data), sig.size);
    gnutls_free(sig.data);
    BOOST_TEST(verify_proof(l.cert.der(), "rsa_pss_rsae_sha384", m, s).ok());
    BOOST_TEST(!verify_proof(l.cert.der(), "rsa_pss_rsae_sha256", m, s).ok()); // hash differs
    BOOST_TEST(!verify_proof(l.cert.der(), "rsa_pss_rsae_sha512", m, s).ok());
}

BOOST_AUTO_TEST_CASE(every_single_field_change_fails) {
    for (KeyType type : {KeyType::EcdsaP256, KeyType::Ed25519}) {
        const Leaf& l = leaf(type);
        const Leaf& other = leaf(type, "other.test");
        const std::string e = exporter_a();
        std::string m = proof_message(e, Signer::Initiator, "stream-1", "add-1", "a.test", l.cert.der());
        auto sig = sign_ok(*l.local, m);
        BOOST_TEST_REQUIRE(verify_proof(l.cert.der(), sig.alg, m, sig.value).ok());

        std::string e2 = e;
        e2[0] = static_cast<char>(e2[0] ^ 0x01);
        const std::pair<const char*, std::string> changed[] = {
            {"exporter", proof_message(e2, Signer::Initiator, "stream-1", "add-1", "a.test", l.cert.der())},
            {"signer role", proof_message(e, Signer::Receiver, "stream-1", "add-1", "a.test", l.cert.der())},
            {"stream id", proof_message(e, Signer::Initiator, "stream-2", "add-1", "a.test", l.cert.der())},
            {"add id", proof_message(e, Signer::Initiator, "stream-1", "add-2", "a.test", l.cert.der())},
            {"domain", proof_message(e, Signer::Initiator, "stream-1", "add-1", "b.test", l.cert.der())},
            {"leaf", proof_message(e, Signer::Initiator, "stream-1", "add-1", "a.test", other.cert.der())},
        };
        for (const auto& [what, m2] : changed) {
            BOOST_TEST_CONTEXT("changed " << what) {
                BOOST_TEST_REQUIRE(!m2.empty());
                BOOST_TEST(m2 != m);
                auto v = verify_proof(l.cert.der(), sig.alg, m2, sig.value);
                BOOST_TEST(!v.ok());
                BOOST_TEST(err_of(v) == "signature invalid");
            }
        }
    }
}

BOOST_AUTO_TEST_CASE(wrong_key_fails) {
    const Leaf& a = leaf(KeyType::EcdsaP256);
    const Leaf& b = leaf(KeyType::EcdsaP256, "b.test");
    std::string m = msg_for(a.cert);
    auto sig = sign_ok(*a.local, m);
    // Same message, verified with another certificate's key.
    auto v = verify_proof(b.cert.der(), sig.alg, m, sig.value);
    BOOST_TEST(!v.ok());
    BOOST_TEST(err_of(v) == "signature invalid");
    // Signed by b's key for a's message.
    auto sig_b = sign_ok(*b.local, m);
    BOOST_TEST(!verify_proof(a.cert.der(), sig_b.alg, m, sig_b.value).ok());
}

BOOST_AUTO_TEST_CASE(alg_key_mismatch_rejected) {
    struct Case {
        KeyType key;
        const char* alg;
        const char* key_text;
    };
    const Case cases[] = {
        {KeyType::EcdsaP256, "rsa_pss_rsae_sha256", "ECDSA P-256"},
        {KeyType::EcdsaP256, "ed25519", "ECDSA P-256"},
        {KeyType::EcdsaP256, "ecdsa_secp384r1_sha384", "ECDSA P-256"}, // wrong curve
        {KeyType::EcdsaP384, "ecdsa_secp256r1_sha256", "ECDSA P-384"},
        {KeyType::Rsa2048, "ecdsa_secp256r1_sha256", "RSA 2048 bits"},
        {KeyType::Rsa2048, "rsa_pss_pss_sha256", "RSA 2048 bits"},    // rsaEncryption key, PSS-key scheme
        {KeyType::RsaPss2048, "rsa_pss_rsae_sha256", "RSA-PSS 2048 bits"},
        {KeyType::Ed25519, "ed448", "Ed25519"},
        {KeyType::Ed25519, "ecdsa_secp256r1_sha256", "Ed25519"},
        {KeyType::Ed448, "ed25519", "Ed448"},
    };
    for (const auto& c : cases) {
        BOOST_TEST_CONTEXT("alg " << c.alg << " on " << c.key_text) {
            const Leaf& l = leaf(c.key);
            std::string m = msg_for(l.cert);
            auto sig = sign_ok(*l.local, m);
            auto v = verify_proof(l.cert.der(), c.alg, m, sig.value);
            BOOST_TEST(!v.ok());
            BOOST_TEST(err_of(v) == std::string("signature algorithm ") + c.alg + " does not fit the certificate key (" +
                                        c.key_text + ")");
        }
    }
}

BOOST_AUTO_TEST_CASE(unknown_alg_rejected) {
    const Leaf& l = leaf(KeyType::EcdsaP256);
    std::string m = msg_for(l.cert);
    auto sig = sign_ok(*l.local, m);
    for (std::string alg : {"", "ECDSA_SECP256R1_SHA256", "ecdsa_sha256", "ecdsa_sha1", "rsa_pkcs1_sha256",
                            "ECDSA-SECP256R1-SHA256", "ecdsa_secp256r1_sha256 ", "ed25519\n"}) {
        BOOST_TEST_CONTEXT("alg '" << alg << "'") {
            BOOST_TEST(!is_supported_alg(alg));
            auto v = verify_proof(l.cert.der(), alg, m, sig.value);
            BOOST_TEST(!v.ok());
            BOOST_TEST(err_of(v).rfind("unsupported signature algorithm '", 0) == 0, err_of(v));
        }
    }
    // Control bytes of a peer's name are not echoed.
    auto v = verify_proof(l.cert.der(), "x\ny", m, sig.value);
    BOOST_TEST(err_of(v) == "unsupported signature algorithm 'x?y'");
}

BOOST_AUTO_TEST_CASE(truncated_or_garbage_signature_rejected) {
    for (KeyType type : {KeyType::EcdsaP256, KeyType::Rsa2048, KeyType::Ed25519}) {
        const Leaf& l = leaf(type);
        std::string m = msg_for(l.cert);
        auto sig = sign_ok(*l.local, m);
        BOOST_TEST_CONTEXT("alg " << sig.alg) {
            std::string flipped = sig.value;
            flipped[flipped.size() / 2] = static_cast<char>(flipped[flipped.size() / 2] ^ 0x10);
            std::string last = sig.value;
            last.back() = static_cast<char>(last.back() ^ 0x01);
            const std::string bad[] = {
                sig.value.substr(0, sig.value.size() - 1),
                sig.value.substr(0, sig.value.size() / 2),
                sig.value.substr(1),
                sig.value + '\0',
                flipped,
                last,
                std::string(sig.value.size(), '\0'),
                std::string(sig.value.size(), '\xff'),
                "garbage",
                std::string(4096, 'x'),
                std::string(1, '\x30'),
            };
            for (std::size_t i = 0; i < std::size(bad); ++i)
                BOOST_TEST(!verify_proof(l.cert.der(), sig.alg, m, bad[i]).ok(), "bad signature #" << i);
            auto empty = verify_proof(l.cert.der(), sig.alg, m, "");
            BOOST_TEST(err_of(empty) == "empty signature");
            BOOST_TEST(verify_proof(l.cert.der(), sig.alg, m, sig.value).ok());
        }
    }
}

BOOST_AUTO_TEST_CASE(verify_rejects_bad_inputs) {
    const Leaf& l = leaf(KeyType::EcdsaP256);
    std::string m = msg_for(l.cert);
    auto sig = sign_ok(*l.local, m);
    BOOST_TEST(err_of(verify_proof(l.cert.der(), sig.alg, "", sig.value)) == "empty proof message");
    BOOST_TEST(err_of(verify_proof("", sig.alg, m, sig.value)) == "no certificate");
    auto g = verify_proof("garbage", sig.alg, m, sig.value);
    BOOST_TEST(err_of(g).rfind("certificate cannot be parsed", 0) == 0, err_of(g));
    auto s = sign_proof(*l.local, "");
    BOOST_TEST(!s.ok());

    // A CA certificate (keyUsage keyCertSign|cRLSign only) does not sign proofs.
    auto ca_local = tls::load_cert_pem(mux_ca().cert_pem(), mux_ca().key_pem());
    BOOST_TEST_REQUIRE(ca_local.ok());
    auto ca_sig = sign_ok(**ca_local, m);
    auto v = verify_proof(mux_ca().cert_der(), ca_sig.alg, m, ca_sig.value);
    BOOST_TEST(err_of(v) == "certificate key usage does not allow signatures (no digitalSignature)");
}

BOOST_AUTO_TEST_CASE(proof_key_verifies_like_the_certificate) {
    for (KeyType type : {KeyType::EcdsaP256, KeyType::EcdsaP384, KeyType::Rsa2048, KeyType::RsaPss2048,
                         KeyType::Ed25519, KeyType::Ed448}) {
        const Leaf& l = leaf(type);
        auto key = proof_key_from_der(l.cert.der());
        BOOST_TEST_REQUIRE(key.ok(), (key.ok() ? "" : key.error()));
        BOOST_TEST(key->signing_allowed);
        BOOST_TEST(!key->spki_der.empty());
        std::string m = msg_for(l.cert);
        auto sig = sign_ok(*l.local, m);
        BOOST_TEST_CONTEXT("alg " << sig.alg) {
            BOOST_TEST(verify_proof(*key, sig.alg, m, sig.value).ok());
            std::string bad = sig.value;
            bad[bad.size() / 2] = static_cast<char>(bad[bad.size() / 2] ^ 0x04);
            const std::pair<std::string, std::string> cases[] = {
                {sig.alg, bad},         {sig.alg, "garbage"},           {sig.alg, ""},
                {"ed25519", sig.value}, {"ecdsa_secp256r1_sha256", sig.value}, {"nope", sig.value},
            };
            for (const auto& [alg, value] : cases) {
                if (alg == sig.alg && value == sig.value) continue;
                BOOST_TEST(err_of(verify_proof(*key, alg, m, value)) ==
                           err_of(verify_proof(l.cert.der(), alg, m, value)));
            }
            BOOST_TEST(err_of(verify_proof(*key, sig.alg, m + "x", sig.value)) == "signature invalid");
            BOOST_TEST(err_of(verify_proof(*key, sig.alg, "", sig.value)) == "empty proof message");
        }
    }
    auto ca_key = proof_key_from_der(mux_ca().cert_der());
    BOOST_TEST_REQUIRE(ca_key.ok());
    BOOST_TEST(!ca_key->signing_allowed);
    auto ca_local = tls::load_cert_pem(mux_ca().cert_pem(), mux_ca().key_pem());
    BOOST_TEST_REQUIRE(ca_local.ok());
    std::string m = msg_for(leaf(KeyType::EcdsaP256).cert);
    auto ca_sig = sign_ok(**ca_local, m);
    BOOST_TEST(err_of(verify_proof(*ca_key, ca_sig.alg, m, ca_sig.value)) ==
               "certificate key usage does not allow signatures (no digitalSignature)");
    BOOST_TEST(!proof_key_from_der("garbage").ok());
    BOOST_TEST(!proof_key_from_der("").ok());
    BOOST_TEST(err_of(verify_proof(ProofKey{}, ca_sig.alg, m, ca_sig.value)) == "no certificate");
    ProofKey junk{"junk", true};
    BOOST_TEST(err_of(verify_proof(junk, ca_sig.alg, m, ca_sig.value)).rfind("cannot read the certificate's public key", 0) == 0);
}

BOOST_AUTO_TEST_CASE(sign_and_verify_concurrently) {
    const Leaf& l = leaf(KeyType::EcdsaP256);
    const Leaf& r = leaf(KeyType::Rsa2048);
    std::atomic<int> wrong{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&, t] {
            for (int i = 0; i < 25; ++i) {
                const Leaf& use = (i + t) % 2 ? l : r;
                std::string m = proof_message(exporter_a(), Signer::Initiator, "s", std::to_string(t * 100 + i),
                                              "a.test", use.cert.der());
                auto sig = sign_proof(*use.local, m);
                if (!sig || !verify_proof(use.cert.der(), sig->alg, m, sig->value)) ++wrong;
                if (sig && verify_proof(use.cert.der(), sig->alg, m + "x", sig->value)) ++wrong;
            }
        });
    }
    for (auto& th : threads) th.join();
    BOOST_TEST(wrong.load() == 0);
}

// ---------------------------------------------------------------------------
// VerifyResult::reason (tls/trust)

BOOST_AUTO_TEST_CASE(verify_chain_reasons) {
    using tls::VerifyError;
    TrustFixture f;
    auto ok = tls::verify_chain(f.trust, leaf(KeyType::EcdsaP256).cert.chain_der, test::now());
    BOOST_TEST(ok.trusted);
    BOOST_TEST((ok.reason == VerifyError::None));

    TestCa evil("Evil CA");
    auto u = tls::verify_chain(f.trust, evil.issue(test::xmpp_server("a.test")).chain_der, test::now());
    BOOST_TEST((u.reason == VerifyError::Untrusted));
    BOOST_TEST(u.error == "certificate signer not trusted (issuer CN=Evil CA)");

    std::string bad_sig = leaf(KeyType::EcdsaP256).cert.der();
    bad_sig.back() = static_cast<char>(bad_sig.back() ^ 0x01);
    auto b = tls::verify_chain(f.trust, {bad_sig}, test::now());
    BOOST_TEST((b.reason == VerifyError::BadSignature));
    BOOST_TEST(b.error == "signature invalid");

    auto old = mux_ca().issue({.dns = {"a.test"}, .not_before = k2023_06_01, .not_after = k2024_01_01});
    auto e = tls::verify_chain(f.trust, old.chain_der, test::now());
    BOOST_TEST((e.reason == VerifyError::Expired));
    BOOST_TEST(e.error == "certificate expired on 2024-01-01T00:00:00Z");
    auto n = tls::verify_chain(f.trust, old.chain_der, k2023_06_01 - 1);
    BOOST_TEST((n.reason == VerifyError::NotYetValid));
    BOOST_TEST(n.error == "certificate not yet valid until 2023-06-01T00:00:00Z");

    auto m = tls::verify_chain(f.trust, {"garbage"}, test::now());
    BOOST_TEST((m.reason == VerifyError::Malformed));
    auto none = tls::verify_chain(f.trust, {}, test::now());
    BOOST_TEST((none.reason == VerifyError::Malformed));
    auto l = tls::verify_chain(f.trust, std::vector<std::string>(9, old.der()), test::now());
    BOOST_TEST((l.reason == VerifyError::ChainTooLong));

    // An expired intermediate: Expired too.
    auto inter = mux_ca().intermediate("Old Intermediate", k2023_06_01, k2024_01_01);
    auto li = inter.issue(test::xmpp_server("a.test"));
    auto ie = tls::verify_chain(f.trust, li.chain_der, test::now());
    BOOST_TEST((ie.reason == VerifyError::Expired));
    BOOST_TEST(ie.error == "CA certificate CN=Old Intermediate expired on 2024-01-01T00:00:00Z");

    tls::VerifyResult def;
    BOOST_TEST((def.reason == VerifyError::Untrusted)); // a default result is a failure
    BOOST_TEST(std::string(tls::to_string(VerifyError::NotYetValid)) == "not-yet-valid");
}

// ---------------------------------------------------------------------------
// check_add

BOOST_FIXTURE_TEST_SUITE(add, TrustFixture)

BOOST_AUTO_TEST_CASE(success_lists_names_and_keeps_wildcards) {
    auto c = mux_ca().issue({.dns = {"a.test", "*.a.test"}, .srv = {"_xmpp-server.a.test"}, .xmpp = {"x.test"}});
    auto lc = c.local();
    for (std::string domain : {"a.test", "chat.a.test", "x.test", "A.TEST"}) {
        BOOST_TEST_CONTEXT("domain " << domain) {
            auto r = check_add(trust, input(c, *lc, domain));
            BOOST_TEST((r.failure == AddFailure::None), r.text);
            BOOST_TEST(r.text.empty());
            BOOST_TEST(r.names == (std::vector<std::string>{"*.a.test", "a.test", "x.test"}));
            BOOST_TEST(r.identity.dns == (std::vector<std::string>{"a.test", "*.a.test"}));
            BOOST_TEST(!r.identity.subject.empty());
        }
    }
}

BOOST_AUTO_TEST_CASE(success_other_key_types) {
    for (KeyType type : {KeyType::Rsa2048, KeyType::Ed25519, KeyType::EcdsaP384}) {
        const Leaf& l = leaf(type);
        auto r = check_add(trust, input(l.cert, *l.local, "a.test"));
        BOOST_TEST((r.failure == AddFailure::None), r.text);
        BOOST_TEST(r.names == (std::vector<std::string>{"a.test"}));
    }
}

BOOST_AUTO_TEST_CASE(chain_with_intermediate) {
    auto inter = mux_ca().intermediate("Mux Intermediate");
    auto c = inter.issue(test::xmpp_server("i.test"));
    BOOST_TEST_REQUIRE(c.chain_der.size() == 2u);
    auto lc = c.local();
    auto in = input(c, *lc, "i.test");
    auto r = check_add(trust, in);
    BOOST_TEST((r.failure == AddFailure::None), r.text);
    BOOST_TEST(r.names == (std::vector<std::string>{"i.test"}));

    // Without the intermediate the leaf does not chain to the root.
    in.chain_der.resize(1);
    auto r2 = check_add(trust, in);
    BOOST_TEST((r2.failure == AddFailure::Untrusted));
    BOOST_TEST(r2.text == "certificate signer not trusted (issuer CN=Mux Intermediate)");
    BOOST_TEST(r2.names.empty());
    BOOST_TEST(r2.identity.dns == (std::vector<std::string>{"i.test"})); // parsed all the same

    // The root in the chain too is fine.
    in.chain_der = c.chain_der;
    in.chain_der.push_back(mux_ca().cert_der());
    BOOST_TEST((check_add(trust, in).failure == AddFailure::None));
}

BOOST_AUTO_TEST_CASE(untrusted_ca) {
    TestCa evil("Evil CA");
    auto c = evil.issue(test::xmpp_server("a.test"));
    auto lc = c.local();
    auto r = check_add(trust, input(c, *lc, "a.test"));
    BOOST_TEST((r.failure == AddFailure::Untrusted));
    BOOST_TEST(r.text == "certificate signer not trusted (issuer CN=Evil CA)");
    BOOST_TEST(r.names.empty());

    // A leaf whose CA signature was tampered with.
    const Leaf& l = leaf(KeyType::EcdsaP256);
    auto in = input(l.cert, *l.local, "a.test");
    in.chain_der[0].back() = static_cast<char>(in.chain_der[0].back() ^ 0x01);
    in.message = msg_for(l.cert); // still covers... the original leaf: irrelevant, the chain fails first
    auto r2 = check_add(trust, in);
    BOOST_TEST((r2.failure == AddFailure::Untrusted));
    BOOST_TEST(r2.text == "signature invalid");
}

BOOST_AUTO_TEST_CASE(expired_and_not_yet_valid) {
    auto c = mux_ca().issue({.dns = {"a.test"}, .not_before = k2023_06_01, .not_after = k2024_01_01});
    auto lc = c.local();
    auto in = input(c, *lc, "a.test");
    auto r = check_add(trust, in);
    BOOST_TEST((r.failure == AddFailure::Expired));
    BOOST_TEST(r.text == "certificate expired on 2024-01-01T00:00:00Z");

    in.now = k2023_06_01 - 1;
    auto r2 = check_add(trust, in);
    BOOST_TEST((r2.failure == AddFailure::NotYetValid));
    BOOST_TEST(r2.text == "certificate not yet valid until 2023-06-01T00:00:00Z");

    in.now = k2023_06_01 + kDay; // `now` decides, not the wall clock
    auto r3 = check_add(trust, in);
    BOOST_TEST((r3.failure == AddFailure::None), r3.text);
}

BOOST_AUTO_TEST_CASE(name_mismatch_lists_names) {
    auto c = mux_ca().issue({.dns = {"a.test", "*.a.test"}, .srv = {"_xmpp-server.a.test"}});
    auto lc = c.local();
    for (std::string domain : {"b.test", "x.y.a.test", "test", "a.test.evil"}) {
        BOOST_TEST_CONTEXT("domain " << domain) {
            auto r = check_add(trust, input(c, *lc, domain));
            BOOST_TEST((r.failure == AddFailure::NameMismatch));
            BOOST_TEST(r.text == "'" + domain + "' is not a name of the certificate (names: *.a.test, a.test)");
            BOOST_TEST(r.names.empty());
        }
    }
    auto nameless = mux_ca().issue({.srv = {"_imap.a.test"}});
    auto nl = nameless.local();
    auto r = check_add(trust, input(nameless, *nl, "a.test"));
    BOOST_TEST((r.failure == AddFailure::NameMismatch));
    BOOST_TEST(r.text == "'a.test' is not a name of the certificate (it has no usable name)");
}

BOOST_AUTO_TEST_CASE(bad_proof) {
    const Leaf& l = leaf(KeyType::EcdsaP256);
    auto in = input(l.cert, *l.local, "a.test");
    BOOST_TEST_REQUIRE((check_add(trust, in).failure == AddFailure::None));

    auto garbage = in;
    garbage.signature = "garbage";
    auto r = check_add(trust, garbage);
    BOOST_TEST((r.failure == AddFailure::BadProof));
    BOOST_TEST(r.text == "proof: signature invalid");

    // Signed for another add id.
    auto other_id = in;
    auto s = sign_ok(*l.local, proof_message(exporter_a(), Signer::Initiator, "stream-1", "add-2", "a.test",
                                             l.cert.der()));
    other_id.signature = s.value;
    BOOST_TEST((check_add(trust, other_id).failure == AddFailure::BadProof));

    // Signed by the key of another (valid) certificate for the same domain.
    const Leaf& l2 = leaf(KeyType::EcdsaP256, "a2.test");
    auto other_key = in;
    other_key.signature = sign_ok(*l2.local, in.message).value;
    BOOST_TEST((check_add(trust, other_key).failure == AddFailure::BadProof));

    // Wrong algorithm name for the key, unknown name.
    auto wrong_alg = in;
    wrong_alg.alg = "ed25519";
    auto r3 = check_add(trust, wrong_alg);
    BOOST_TEST((r3.failure == AddFailure::BadProof));
    BOOST_TEST(r3.text == "proof: signature algorithm ed25519 does not fit the certificate key (ECDSA P-256)");
    wrong_alg.alg = "sha1";
    BOOST_TEST((check_add(trust, wrong_alg).failure == AddFailure::BadProof));
    wrong_alg.alg.clear();
    BOOST_TEST((check_add(trust, wrong_alg).failure == AddFailure::BadProof));
}

BOOST_AUTO_TEST_CASE(proof_copied_from_another_stream) {
    const Leaf& l = leaf(KeyType::EcdsaP256);
    // Signed on the stream with exporter A, replayed on the stream with exporter B.
    auto r = check_add(trust, input(l.cert, *l.local, "a.test", exporter_a(), exporter_b()));
    BOOST_TEST((r.failure == AddFailure::BadProof));
    BOOST_TEST(r.text == "proof: signature invalid");
    // Reflected back to its sender (the receiver expects the other role).
    auto in = input(l.cert, *l.local, "a.test");
    in.message = proof_message(exporter_a(), Signer::Receiver, "stream-1", "add-1", "a.test", l.cert.der());
    BOOST_TEST((check_add(trust, in).failure == AddFailure::BadProof));
}

BOOST_AUTO_TEST_CASE(message_must_cover_domain_and_leaf) {
    const Leaf& l = leaf(KeyType::EcdsaP256);
    const Leaf& other = leaf(KeyType::EcdsaP256, "b.test");
    auto in = input(l.cert, *l.local, "a.test");
    // A (buggy) caller computing the message for another certificate.
    auto wrong_leaf = in;
    wrong_leaf.message = msg_for(other.cert, "a.test");
    wrong_leaf.signature = sign_ok(*l.local, wrong_leaf.message).value;
    auto r = check_add(trust, wrong_leaf);
    BOOST_TEST((r.failure == AddFailure::BadProof));
    BOOST_TEST(r.text == "proof message does not cover this domain and certificate");
    // ... or for another domain than the one checked.
    auto wrong_domain = in;
    wrong_domain.message = msg_for(l.cert, "b.a.test");
    wrong_domain.signature = sign_ok(*l.local, wrong_domain.message).value;
    BOOST_TEST((check_add(trust, wrong_domain).failure == AddFailure::BadProof));
    auto suffix = in;
    suffix.message = msg_for(l.cert, "xa.test"); // domain field ends with "a.test"
    suffix.signature = sign_ok(*l.local, suffix.message).value;
    BOOST_TEST((check_add(trust, suffix).failure == AddFailure::BadProof));
    auto junk = in;
    junk.message = "short";
    BOOST_TEST((check_add(trust, junk).failure == AddFailure::BadProof));

    // proof_message() refused the input (0x00 in the add id): Malformed.
    auto nul = in;
    nul.message = proof_message(exporter_a(), Signer::Initiator, "stream-1", std::string("a\0b", 3), "a.test",
                                l.cert.der());
    BOOST_TEST_REQUIRE(nul.message.empty());
    auto r2 = check_add(trust, nul);
    BOOST_TEST((r2.failure == AddFailure::Malformed));
}

BOOST_AUTO_TEST_CASE(oversize_chain) {
    const Leaf& l = leaf(KeyType::EcdsaP256);
    auto in = input(l.cert, *l.local, "a.test");
    in.chain_der.assign(9, l.cert.der());
    auto r = check_add(trust, in);
    BOOST_TEST((r.failure == AddFailure::ChainTooLarge));
    BOOST_TEST(r.text == "chain of 9 certificates (at most 8)");
    BOOST_TEST(r.identity.dns.empty()); // rejected before parsing

    in.chain_der.assign(8, l.cert.der()); // 8 is fine as far as size goes (duplicates are ignored)
    BOOST_TEST((check_add(trust, in).failure == AddFailure::None));

    in.chain_der = {l.cert.der(), std::string(kMaxAddChainBytes + 1 - l.cert.der().size(), 'x')};
    auto r2 = check_add(trust, in);
    BOOST_TEST((r2.failure == AddFailure::ChainTooLarge));
    BOOST_TEST(r2.text == "chain of 65537 bytes (at most 65536)");
    in.chain_der.back().pop_back(); // exactly 64 KiB: passes the size check, then fails to parse
    BOOST_TEST((check_add(trust, in).failure == AddFailure::Malformed));
}

BOOST_AUTO_TEST_CASE(malformed_and_empty_chain) {
    const Leaf& l = leaf(KeyType::EcdsaP256);
    auto in = input(l.cert, *l.local, "a.test");

    in.chain_der.clear();
    auto r = check_add(trust, in);
    BOOST_TEST((r.failure == AddFailure::Malformed));
    BOOST_TEST(r.text == "no certificate");

    in.chain_der = {"garbage"};
    auto r2 = check_add(trust, in);
    BOOST_TEST((r2.failure == AddFailure::Malformed));
    BOOST_TEST(r2.text.rfind("certificate cannot be parsed", 0) == 0, r2.text);

    in.chain_der = {l.cert.der().substr(0, l.cert.der().size() - 10)};
    BOOST_TEST((check_add(trust, in).failure == AddFailure::Malformed));

    in.chain_der = {l.cert.der(), "garbage"};
    auto r3 = check_add(trust, in);
    BOOST_TEST((r3.failure == AddFailure::Malformed));
    BOOST_TEST(r3.text.rfind("chain certificate #1 cannot be parsed", 0) == 0, r3.text);
    BOOST_TEST(r3.identity.dns == (std::vector<std::string>{"a.test"})); // the leaf parsed

    in.chain_der = {""};
    auto r4 = check_add(trust, in);
    BOOST_TEST((r4.failure == AddFailure::Malformed));
    BOOST_TEST(r4.text == "empty certificate");
    in.chain_der = {l.cert.der(), ""};
    BOOST_TEST(check_add(trust, in).text == "empty chain certificate #1");
}

BOOST_AUTO_TEST_CASE(check_add_concurrently) {
    const Leaf& l = leaf(KeyType::EcdsaP256);
    TestCa evil("Evil CA 2");
    auto bad = evil.issue(test::xmpp_server("a.test"));
    auto bad_local = bad.local();
    auto good_in = input(l.cert, *l.local, "a.test");
    auto bad_in = input(bad, *bad_local, "a.test");
    std::atomic<int> wrong{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&, t] {
            for (int i = 0; i < 30; ++i) {
                bool use_good = (i + t) % 2 == 0;
                auto r = check_add(trust, use_good ? good_in : bad_in);
                if ((r.failure == AddFailure::None) != use_good) ++wrong;
            }
        });
    }
    TestCa more("More CA");
    BOOST_TEST(trust.add_ca_pem(more.cert_pem()).ok());
    for (auto& th : threads) th.join();
    BOOST_TEST(wrong.load() == 0);
}

BOOST_AUTO_TEST_CASE(cache_hits_for_the_same_chain) {
    ChainCache cache(trust);
    auto c = mux_ca().issue({.dns = {"a.test", "b.test", "*.w.test"}});
    auto lc = c.local();
    std::vector<std::string> domains = {"a.test", "b.test", "x.w.test", "y.w.test"};
    for (const auto& d : domains) {
        auto in = input(c, *lc, d);
        auto with = check_add(trust, in, &cache);
        auto without = check_add(trust, in);
        BOOST_TEST((with.failure == AddFailure::None), with.text);
        BOOST_TEST(with.names == without.names);
        BOOST_TEST(with.identity.dns == without.identity.dns);
        BOOST_TEST(with.identity.subject == without.identity.subject);
    }
    BOOST_TEST(cache.stats().misses == 1u);
    BOOST_TEST(cache.stats().hits == 3u);
    BOOST_TEST(cache.size() == 1u);

    // A hit skips the chain, never the name or the proof.
    name_and_proof_still_checked(cache, c, *lc, "a.test");
    auto in = input(c, *lc, "a.test");
    auto other_stream = input(c, *lc, "a.test", exporter_a(), exporter_b());
    BOOST_TEST((check_add(trust, other_stream, &cache).failure == AddFailure::BadProof));
    auto wrong_alg = in;
    wrong_alg.alg = "rsa_pss_rsae_sha256";
    auto wa = check_add(trust, wrong_alg, &cache);
    BOOST_TEST((wa.failure == AddFailure::BadProof));
    BOOST_TEST(wa.text == check_add(trust, wrong_alg).text);
    BOOST_TEST(cache.stats().hits == 7u);

    // Sanity failures come first, before the cache.
    auto nine = in;
    nine.chain_der.assign(9, c.der());
    BOOST_TEST((check_add(trust, nine, &cache).failure == AddFailure::ChainTooLarge));
    BOOST_TEST(cache.stats().hits + cache.stats().misses == 8u);

    cache.clear();
    BOOST_TEST(cache.size() == 0u);
}

BOOST_AUTO_TEST_CASE(cache_respects_dates) {
    ChainCache cache(trust);
    auto c = mux_ca().issue({.dns = {"a.test"}, .not_before = k2023_06_01, .not_after = k2024_01_01});
    auto lc = c.local();
    auto in = input(c, *lc, "a.test");
    in.now = k2023_06_01 + kDay;
    BOOST_TEST_REQUIRE((check_add(trust, in, &cache).failure == AddFailure::None));
    in.now = k2024_01_01; // last valid second: still a hit
    BOOST_TEST((check_add(trust, in, &cache).failure == AddFailure::None));
    BOOST_TEST(cache.stats().hits == 1u);
    in.now = k2024_01_01 + 1;
    auto r = check_add(trust, in, &cache);
    BOOST_TEST((r.failure == AddFailure::Expired));
    BOOST_TEST(r.text == "certificate expired on 2024-01-01T00:00:00Z");
    in.now = k2023_06_01 - 1;
    auto r2 = check_add(trust, in, &cache);
    BOOST_TEST((r2.failure == AddFailure::NotYetValid));
    BOOST_TEST(cache.stats().hits == 1u);

    // The window covers the whole path: an intermediate expiring before the leaf.
    auto inter = mux_ca().intermediate("Short Intermediate", k2023_06_01, k2024_01_01);
    auto ii = dated_input(inter, "i.test", k2023_06_01 + kDay);
    BOOST_TEST_REQUIRE((check_add(trust, ii, &cache).failure == AddFailure::None));
    ii.now = k2024_01_01 + kDay;
    auto r3 = check_add(trust, ii, &cache);
    BOOST_TEST((r3.failure == AddFailure::Expired));
    BOOST_TEST(r3.text == "CA certificate CN=Short Intermediate expired on 2024-01-01T00:00:00Z");

    auto v = tls::verify_chain(trust, ii.chain_der, k2023_06_01 + kDay);
    BOOST_TEST(v.trusted);
    BOOST_TEST(v.valid_from == k2023_06_01);
    BOOST_TEST(v.valid_until == k2024_01_01);
    auto bad = tls::verify_chain(trust, ii.chain_der, k2024_01_01 + kDay);
    BOOST_TEST(bad.valid_from == 0);
    BOOST_TEST(bad.valid_until == 0);
}

BOOST_AUTO_TEST_CASE(cache_keeps_no_failures_and_follows_the_trust_store) {
    ChainCache cache(trust);
    TestCa late("Late CA");
    auto c = late.issue(test::xmpp_server("a.test"));
    auto lc = c.local();
    auto in = input(c, *lc, "a.test");
    BOOST_TEST((check_add(trust, in, &cache).failure == AddFailure::Untrusted));
    BOOST_TEST((check_add(trust, in, &cache).failure == AddFailure::Untrusted));
    BOOST_TEST(cache.size() == 0u);
    BOOST_TEST(cache.stats().misses == 2u);
    BOOST_TEST_REQUIRE(trust.add_ca_pem(late.cert_pem()).ok());
    BOOST_TEST((check_add(trust, in, &cache).failure == AddFailure::None));
    BOOST_TEST((check_add(trust, in, &cache).failure == AddFailure::None));
    BOOST_TEST(cache.stats().hits == 1u);

    // Adding a CA makes every entry a miss (verified again once).
    TestCa another("Another CA");
    BOOST_TEST_REQUIRE(trust.add_ca_pem(another.cert_pem()).ok());
    BOOST_TEST((check_add(trust, in, &cache).failure == AddFailure::None));
    BOOST_TEST(cache.stats().misses == 4u);
    BOOST_TEST((check_add(trust, in, &cache).failure == AddFailure::None));
    BOOST_TEST(cache.stats().hits == 2u);
    BOOST_TEST(cache.size() == 1u);

    // A cache bound to another trust store is not used.
    tls::TrustStore other;
    ChainCache foreign(other);
    BOOST_TEST((check_add(trust, in, &foreign).failure == AddFailure::None));
    BOOST_TEST(foreign.size() == 0u);
    BOOST_TEST(foreign.stats().misses == 0u);
}

BOOST_AUTO_TEST_CASE(cache_is_bounded) {
    // One leaf per CA: the first chain under an issuer is verified in full
    // and kept (later leaves of a known issuer take the cheap path, unkept).
    std::vector<TestCa> cas{TestCa("Bounded CA 1"), TestCa("Bounded CA 2"), TestCa("Bounded CA 3")};
    for (const auto& ca : cas) BOOST_TEST_REQUIRE(trust.add_ca_pem(ca.cert_pem()).ok());
    ChainCache cache(trust, 2);
    std::vector<AddCheckInput> ins;
    std::vector<std::shared_ptr<tls::LocalCert>> keep;
    for (int i = 0; i < 3; ++i) {
        auto c = cas[i].issue(test::xmpp_server("a.test"));
        keep.push_back(c.local());
        ins.push_back(input(c, *keep.back(), "a.test"));
        BOOST_TEST((check_add(trust, ins.back(), &cache).failure == AddFailure::None));
    }
    BOOST_TEST(cache.size() == 2u);
    // The oldest went first.
    BOOST_TEST((check_add(trust, ins[2], &cache).failure == AddFailure::None));
    BOOST_TEST((check_add(trust, ins[1], &cache).failure == AddFailure::None));
    BOOST_TEST(cache.stats().hits == 2u);
    BOOST_TEST((check_add(trust, ins[0], &cache).failure == AddFailure::None));
    BOOST_TEST(cache.stats().hits == 2u);
    BOOST_TEST(cache.stats().misses == 4u);
    BOOST_TEST(cache.stats().issuer_hits == 1u); // ins[0] again: its CA is known
}

// A new leaf under a remembered issuer: its own signature, dates and
// extensions only, with the same results as the full verification.
BOOST_AUTO_TEST_CASE(known_issuer_checks_new_leaves) {
    ChainCache cache(trust);
    teach_mux_ca(cache);
    BOOST_TEST(cache.stats().issuer_hits == 0u);

    auto c = mux_ca().issue({.dns = {"b.test", "*.w.test"}, .cn = "b.test"});
    auto lc = c.local();
    for (const std::string d : {"b.test", "x.w.test"}) {
        auto with = check_add(trust, input(c, *lc, d), &cache);
        auto without = check_add(trust, input(c, *lc, d));
        BOOST_TEST((with.failure == AddFailure::None), with.text);
        BOOST_TEST(with.names == without.names);
        BOOST_TEST(with.identity.subject == without.identity.subject);
        BOOST_TEST(with.identity.not_after == without.identity.not_after);
    }
    BOOST_TEST(cache.stats().issuer_hits == 2u);
    BOOST_TEST(cache.size() == 1u); // only the chain verified in full is kept

    name_and_proof_still_checked(cache, c, *lc, "b.test");
}

BOOST_AUTO_TEST_CASE(known_issuer_lets_no_bad_chain_through) {
    ChainCache cache(trust);
    teach_mux_ca(cache);
    auto same = [&](const AddCheckInput& in, AddFailure want) {
        auto with = check_add(trust, in, &cache);
        auto without = check_add(trust, in);
        BOOST_TEST((with.failure == want), with.text);
        BOOST_TEST(with.text == without.text);
    };

    // Another CA with the same name (same issuer DN, other key): untrusted.
    TestCa impostor("Mux CA");
    auto evil = impostor.issue(test::xmpp_server("e.test"));
    auto evil_local = evil.local();
    same(input(evil, *evil_local, "e.test"), AddFailure::Untrusted);

    // A leaf of the right CA with its signature tampered with.
    auto t = mux_ca().issue(test::xmpp_server("t.test"));
    auto t_local = t.local();
    auto tampered = input(t, *t_local, "t.test");
    tampered.chain_der[0].back() ^= 0x01;
    tampered.message = proof_message(exporter_a(), Signer::Initiator, "stream-1", "add-1", "t.test",
                                     tampered.chain_der[0]);
    tampered.signature = sign_ok(*t_local, tampered.message).value;
    same(tampered, AddFailure::Untrusted);

    // Dates of the leaf.
    auto old = mux_ca().issue({.dns = {"o.test"}, .not_before = k2023_06_01, .not_after = k2024_01_01});
    auto old_local = old.local();
    same(input(old, *old_local, "o.test"), AddFailure::Expired);
    auto early = mux_ca().issue({.dns = {"n.test"}, .not_before = test::now() + kDay, .not_after = test::now() + 9 * kDay});
    auto early_local = early.local();
    same(input(early, *early_local, "n.test"), AddFailure::NotYetValid);

    // Dates of the issuer's path: an intermediate that expired since.
    auto inter = mux_ca().intermediate("Short Intermediate 2", k2023_06_01, k2024_01_01);
    BOOST_TEST_REQUIRE((check_add(trust, dated_input(inter, "i.test", k2023_06_01 + kDay), &cache).failure ==
                        AddFailure::None));
    BOOST_TEST(cache.issuer_count() == 2u);
    auto jj = dated_input(inter, "j.test", k2023_06_01 + 2 * kDay);
    auto hits = cache.stats().issuer_hits;
    BOOST_TEST((check_add(trust, jj, &cache).failure == AddFailure::None));
    BOOST_TEST(cache.stats().issuer_hits == hits + 1);
    jj.now = k2024_01_01 + kDay;
    same(jj, AddFailure::Expired);

    // Adding a CA to the store: remembered issuers are verified again.
    TestCa more("More CA 2");
    BOOST_TEST_REQUIRE(trust.add_ca_pem(more.cert_pem()).ok());
    hits = cache.stats().issuer_hits;
    auto c = mux_ca().issue(test::xmpp_server("g.test"));
    auto lc = c.local();
    BOOST_TEST((check_add(trust, input(c, *lc, "g.test"), &cache).failure == AddFailure::None));
    BOOST_TEST(cache.stats().issuer_hits == hits);
}

// A leaf whose own chain is not trusted never teaches an issuer, and an
// issuer known to one trust store is unknown to another.
BOOST_AUTO_TEST_CASE(untrusted_chains_teach_nothing) {
    ChainCache cache(trust);
    TestCa outsider("Outsider CA");
    auto o1 = outsider.issue(test::xmpp_server("a.test"));
    auto o2 = outsider.issue(test::xmpp_server("b.test"));
    auto l1 = o1.local(), l2 = o2.local();
    BOOST_TEST((check_add(trust, input(o1, *l1, "a.test"), &cache).failure == AddFailure::Untrusted));
    BOOST_TEST((check_add(trust, input(o2, *l2, "b.test"), &cache).failure == AddFailure::Untrusted));
    BOOST_TEST(cache.issuer_count() == 0u);
    BOOST_TEST(cache.stats().issuer_hits == 0u);
}

BOOST_AUTO_TEST_CASE(cache_concurrently) {
    ChainCache cache(trust, 8);
    std::vector<IssuedCert> certs;
    std::vector<std::shared_ptr<tls::LocalCert>> locals;
    std::vector<AddCheckInput> ins;
    for (int i = 0; i < 12; ++i) {
        certs.push_back(mux_ca().issue(test::xmpp_server("a.test")));
        locals.push_back(certs.back().local());
    }
    for (int i = 0; i < 12; ++i) ins.push_back(input(certs[i], *locals[i], "a.test"));
    TestCa evil("Evil CA 3");
    auto bad = evil.issue(test::xmpp_server("a.test"));
    auto bad_local = bad.local();
    auto bad_in = input(bad, *bad_local, "a.test");
    std::atomic<int> wrong{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&, t] {
            for (int i = 0; i < 40; ++i) {
                bool use_bad = (i + t) % 5 == 0;
                auto r = check_add(trust, use_bad ? bad_in : ins[(i * 7 + t) % ins.size()], &cache);
                if ((r.failure == AddFailure::None) == use_bad) ++wrong;
            }
        });
    }
    for (auto& th : threads) th.join();
    BOOST_TEST(wrong.load() == 0);
    BOOST_TEST(cache.size() <= 8u);
    BOOST_TEST(cache.stats().hits + cache.stats().misses == 160u);
}

BOOST_AUTO_TEST_SUITE_END()

// tls/ec_verify.h: the DER split and libcrypto keys behind the fast paths.
BOOST_AUTO_TEST_CASE(ec_verify_parts_and_keys) {
    const Leaf& p256 = leaf(KeyType::EcdsaP256);
    tls::CertDer parts;
    BOOST_TEST_REQUIRE(tls::split_cert_der(p256.cert.der(), parts));
    tls::CertDer ca;
    BOOST_TEST_REQUIRE(tls::split_cert_der(mux_ca().cert_der(), ca));
    BOOST_TEST(parts.issuer == ca.subject);
    BOOST_TEST(parts.sig_alg == parts.tbs_sig_alg);
    tls::EcDigest digest;
    BOOST_TEST_REQUIRE(tls::ecdsa_digest_of(parts.sig_alg, digest));
    auto ca_key = tls::EcPublicKey::from_spki(ca.spki);
    BOOST_TEST_REQUIRE(ca_key != nullptr);
    BOOST_TEST((ca_key->curve() == GNUTLS_ECC_CURVE_SECP256R1));
    BOOST_TEST(ca_key->verify(digest, parts.tbs, parts.signature));
    std::string tbs(parts.tbs);
    tbs[tbs.size() / 2] ^= 0x01;
    BOOST_TEST(!ca_key->verify(digest, tbs, parts.signature));
    BOOST_TEST(!ca_key->verify(digest, parts.tbs, ""));
    BOOST_TEST(!ca_key->verify(digest, parts.tbs, "garbage"));
    // The leaf's own key did not sign its certificate.
    auto own = tls::EcPublicKey::from_spki(parts.spki);
    BOOST_TEST_REQUIRE(own != nullptr);
    BOOST_TEST(!own->verify(digest, parts.tbs, parts.signature));

    // Other keys stay with GnuTLS.
    for (KeyType type : {KeyType::Rsa2048, KeyType::Ed25519}) {
        tls::CertDer other;
        BOOST_TEST_REQUIRE(tls::split_cert_der(leaf(type).cert.der(), other));
        BOOST_TEST(tls::EcPublicKey::from_spki(other.spki) == nullptr);
    }
    tls::CertDer p384;
    BOOST_TEST_REQUIRE(tls::split_cert_der(leaf(KeyType::EcdsaP384).cert.der(), p384));
    auto k384 = tls::EcPublicKey::from_spki(p384.spki);
    BOOST_TEST_REQUIRE(k384 != nullptr);
    BOOST_TEST((k384->curve() == GNUTLS_ECC_CURVE_SECP384R1));
    BOOST_TEST(!tls::ecdsa_digest_of(ca.spki, digest));

    // Truncated, extended or corrupted input is refused, never read past.
    const std::string& der = p256.cert.der();
    for (std::size_t n = 0; n < der.size(); ++n) BOOST_TEST(!tls::split_cert_der(der.substr(0, n), parts));
    BOOST_TEST(!tls::split_cert_der(der + '\0', parts));
    std::string spki(ca.spki);
    for (std::size_t n = 0; n < spki.size(); ++n)
        BOOST_TEST(tls::EcPublicKey::from_spki(spki.substr(0, n)) == nullptr);
    std::string off_curve = spki;
    off_curve.back() ^= 0x01; // the point is no longer on the curve
    BOOST_TEST(tls::EcPublicKey::from_spki(off_curve) == nullptr);
}

BOOST_AUTO_TEST_CASE(failure_wire_names) {
    const std::pair<AddFailure, const char*> names[] = {
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
    };
    for (const auto& [f, name] : names) {
        BOOST_TEST(std::string(to_string(f)) == name);
        AddFailure back = AddFailure::None;
        BOOST_TEST(parse_add_failure(name, back));
        BOOST_TEST((back == f));
    }
    BOOST_TEST(std::string(to_string(AddFailure::None)) == "none");
    AddFailure out = AddFailure::Busy;
    for (std::string bad : {"none", "", "BAD-PROOF", "bad_proof", "bad-proof ", "unknown"}) {
        BOOST_TEST(!parse_add_failure(bad, out), bad);
        BOOST_TEST((out == AddFailure::Busy)); // untouched
    }

    using tls::VerifyError;
    BOOST_TEST((add_failure_for(VerifyError::None) == AddFailure::None));
    BOOST_TEST((add_failure_for(VerifyError::Untrusted) == AddFailure::Untrusted));
    BOOST_TEST((add_failure_for(VerifyError::BadSignature) == AddFailure::Untrusted));
    BOOST_TEST((add_failure_for(VerifyError::Internal) == AddFailure::Untrusted));
    BOOST_TEST((add_failure_for(VerifyError::Expired) == AddFailure::Expired));
    BOOST_TEST((add_failure_for(VerifyError::NotYetValid) == AddFailure::NotYetValid));
    BOOST_TEST((add_failure_for(VerifyError::ChainTooLong) == AddFailure::ChainTooLarge));
    BOOST_TEST((add_failure_for(VerifyError::Malformed) == AddFailure::Malformed));
}

// ---------------------------------------------------------------------------
// Benchmark (S2SMUX_BENCH=1 build/tests/unit/test_mux_proof -t bench_add_costs):
// per-add costs with ECDSA P-256, leaf + root CA, in µs of thread CPU time.

namespace {

bool bench_enabled() {
    const char* v = std::getenv("S2SMUX_BENCH");
    return v && std::string(v) == "1";
}

double thread_cpu_seconds() {
    timespec ts{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

// Runs `op` in batches of at least `batch_s` seconds; returns the median CPU
// µs per operation over `batches` batches (and the wall µs of the same batch).
template <class Op>
std::pair<double, double> measure(Op op, int batches = 5, double batch_s = 0.4) {
    for (int i = 0; i < 20; ++i) op(i); // warm up
    std::vector<std::pair<double, double>> per_op;
    int n = 0;
    for (int b = 0; b < batches; ++b) {
        int count = 0;
        double c0 = thread_cpu_seconds();
        auto w0 = std::chrono::steady_clock::now();
        double c1 = c0;
        while (c1 - c0 < batch_s) {
            for (int k = 0; k < 16; ++k) op(n++);
            count += 16;
            c1 = thread_cpu_seconds();
        }
        double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - w0).count();
        per_op.emplace_back((c1 - c0) * 1e6 / count, wall * 1e6 / count);
    }
    std::sort(per_op.begin(), per_op.end());
    return per_op[per_op.size() / 2];
}

void report(const char* what, std::pair<double, double> us) {
    std::printf("  %-44s %9.1f us CPU (%9.1f wall)  %9.0f /s per core\n", what, us.first, us.second,
                1e6 / us.first);
    std::fflush(stdout);
}

} // namespace

BOOST_AUTO_TEST_CASE(bench_add_costs, *boost::unit_test::precondition([](boost::unit_test::test_unit_id) {
    return boost::unit_test::assertion_result(bench_enabled());
})) {
    tls::TrustStore trust;
    BOOST_TEST_REQUIRE(trust.add_ca_pem(mux_ca().cert_pem()).ok());
    auto inter = mux_ca().intermediate("Bench Intermediate");

    // Distinct leaves (each add brings its own certificate in real life).
    constexpr int kLeaves = 32;
    std::vector<IssuedCert> certs, inter_certs;
    std::vector<std::shared_ptr<tls::LocalCert>> locals, inter_locals;
    std::vector<AddCheckInput> inputs, inter_inputs;
    for (int i = 0; i < kLeaves; ++i) {
        std::string domain = "d" + std::to_string(i) + ".test";
        certs.push_back(mux_ca().issue(test::xmpp_server(domain)));
        locals.push_back(certs.back().local());
        inter_certs.push_back(inter.issue(test::xmpp_server(domain)));
        inter_locals.push_back(inter_certs.back().local());
        for (int k = 0; k < 2; ++k) {
            const auto& c = k ? inter_certs.back() : certs.back();
            const auto& lc = k ? inter_locals.back() : locals.back();
            AddCheckInput in;
            in.chain_der = c.chain_der;
            in.domain = domain;
            in.message = proof_message(exporter_a(), Signer::Initiator, "stream-1", "add-" + std::to_string(i),
                                       domain, c.der());
            auto sig = sign_ok(*lc, in.message);
            in.alg = sig.alg;
            in.signature = sig.value;
            in.now = test::now();
            BOOST_TEST_REQUIRE((check_add(trust, in).failure == AddFailure::None));
            (k ? inter_inputs : inputs).push_back(std::move(in));
        }
    }

    std::printf("mux add costs, ECDSA P-256 (median of 5 batches, thread CPU time; wall in brackets)\n");
    std::size_t sink = 0;
    report("proof_message", measure([&](int i) {
               const auto& in = inputs[i % kLeaves];
               sink += proof_message(exporter_a(), Signer::Initiator, "stream-1", "add-1", in.domain,
                                     in.chain_der.front())
                           .size();
           }));
    report("sign_proof", measure([&](int i) { sink += sign_proof(*locals[i % kLeaves], inputs[i % kLeaves].message)->value.size(); }));
    report("verify_proof", measure([&](int i) {
               const auto& in = inputs[i % kLeaves];
               sink += verify_proof(in.chain_der.front(), in.alg, in.message, in.signature).ok();
           }));
    report("identity_from_der (leaf)",
           measure([&](int i) { sink += tls::identity_from_der(inputs[i % kLeaves].chain_der.front())->dns.size(); }));
    report("verify_chain (leaf + CA)", measure([&](int i) {
               sink += tls::verify_chain(trust, inputs[i % kLeaves].chain_der, test::now()).trusted;
           }));
    report("verify_chain (leaf + intermediate + CA)", measure([&](int i) {
               sink += tls::verify_chain(trust, inter_inputs[i % kLeaves].chain_der, test::now()).trusted;
           }));
    auto full = measure([&](int i) { sink += check_add(trust, inputs[i % kLeaves]).names.size(); });
    report("check_add (leaf + CA)", full);
    report("check_add (leaf + intermediate + CA)",
           measure([&](int i) { sink += check_add(trust, inter_inputs[i % kLeaves]).names.size(); }));
    // Chains seen before (same certificate for several domains, re-adds
    // after a reconnect): the chain verification is skipped.
    ChainCache cache(trust);
    report("check_add, ChainCache hit (leaf + CA)",
           measure([&](int i) { sink += check_add(trust, inputs[i % kLeaves], &cache).names.size(); }));
    report("check_add, ChainCache hit (leaf + int. + CA)",
           measure([&](int i) { sink += check_add(trust, inter_inputs[i % kLeaves], &cache).names.size(); }));
    std::printf("  (cache: %llu hits, %llu misses)\n", static_cast<unsigned long long>(cache.stats().hits),
                static_cast<unsigned long long>(cache.stats().misses));
    // New leaves under an issuer seen before (cold adds of many domains
    // from one CA): a one-entry chain cache misses every time.
    ChainCache cold(trust, 1);
    report("check_add, new leaf, known issuer (leaf + CA)",
           measure([&](int i) { sink += check_add(trust, inputs[i % kLeaves], &cold).names.size(); }));
    report("check_add, new leaf, known issuer (leaf + int.)",
           measure([&](int i) { sink += check_add(trust, inter_inputs[i % kLeaves], &cold).names.size(); }));
    std::printf("  (issuer hits: %llu of %llu misses)\n", static_cast<unsigned long long>(cold.stats().issuer_hits),
                static_cast<unsigned long long>(cold.stats().misses));

    // Other key types (one leaf each): sign and verify only.
    for (KeyType type : {KeyType::EcdsaP384, KeyType::Rsa2048, KeyType::Ed25519}) {
        const Leaf& l = leaf(type);
        std::string m = msg_for(l.cert);
        auto sig = sign_ok(*l.local, m);
        std::string name = "sign_proof " + sig.alg;
        report(name.c_str(), measure([&](int) { sink += sign_proof(*l.local, m)->value.size(); }, 3, 0.3));
        name = "verify_proof " + sig.alg;
        report(name.c_str(), measure([&](int) { sink += verify_proof(l.cert.der(), sig.alg, m, sig.value).ok(); }, 3, 0.3));
    }

    // All cores at once: adds/s of the machine (verification runs on the libuv pool).
    unsigned threads = std::max(1u, std::thread::hardware_concurrency());
    std::atomic<long> done{0};
    std::atomic<bool> stop{false};
    std::vector<std::thread> pool;
    auto t0 = std::chrono::steady_clock::now();
    for (unsigned t = 0; t < threads; ++t)
        pool.emplace_back([&, t] {
            long n = 0;
            for (int i = static_cast<int>(t); !stop.load(std::memory_order_relaxed); ++i, ++n)
                if (check_add(trust, inputs[i % kLeaves]).failure != AddFailure::None) std::abort();
            done += n;
        });
    std::this_thread::sleep_for(std::chrono::seconds(2));
    stop = true;
    for (auto& th : pool) th.join();
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("  check_add on %u threads: %.0f adds/s in total (%.0f per thread)\n", threads,
                static_cast<double>(done.load()) / secs, static_cast<double>(done.load()) / secs / threads);
    std::printf("  (sink %zu)\n", sink);
    BOOST_TEST(full.first > 0.0);
}
