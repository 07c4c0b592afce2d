#define BOOST_TEST_MODULE test_tls_channel
#include <boost/test/unit_test.hpp>

#include "tests/support/test_certs.h"
#include "tls/channel.h"
#include "tls/identity.h"
#include "tls/trust.h"

#include <gnutls/gnutls.h>

#include <cerrno>
#include <cstring>
#include <ostream>
#include <random>

namespace s2smux::tls {
std::ostream& operator<<(std::ostream& os, IoStatus st) {
    return os << (st == IoStatus::Ok ? "Ok" : st == IoStatus::Closed ? "Closed" : "Error");
}
} // namespace s2smux::tls

using namespace s2smux;
using namespace s2smux::tls;
using s2smux::test::TestCa;

namespace {

const TestCa& ca() {
    static const TestCa c("Channel Test CA");
    return c;
}

std::shared_ptr<LocalCert> cert_for(const std::string& domain) { return ca().issue(test::xmpp_server(domain)).local(); }

ChannelOptions client_opts(std::string sni, std::string client_cert = {}) {
    ChannelOptions o;
    o.role = Role::Client;
    o.server_name = std::move(sni);
    o.client_cert_domain = std::move(client_cert);
    return o;
}

ChannelOptions server_opts(std::string fallback = {}) {
    ChannelOptions o;
    o.role = Role::Server;
    o.server_name = std::move(fallback);
    return o;
}

// Moves ciphertext between a client and a server channel until both are quiet.
struct Link {
    Channel& c;
    Channel& s;
    std::string c_plain, s_plain; // plaintext each side received
    IoStatus c_st = IoStatus::Ok, s_st = IoStatus::Ok;
    std::size_t c_to_s_bytes = 0;

    void pump() {
        for (int i = 0; i < 1000; ++i) {
            std::string a, b;
            std::swap(a, c.outbound());
            std::swap(b, s.outbound());
            if (a.empty() && b.empty()) return;
            c_to_s_bytes += a.size();
            if (!a.empty() && s_st == IoStatus::Ok) s_st = s.feed(a.data(), a.size(), s_plain);
            if (!b.empty() && c_st == IoStatus::Ok) c_st = c.feed(b.data(), b.size(), c_plain);
        }
        BOOST_FAIL("pump did not settle");
    }
};

// Starts both channels and runs the handshake.
void handshake(Link& l) {
    auto rc = l.c.start();
    BOOST_TEST_REQUIRE(rc.ok(), (rc.ok() ? "" : rc.error()));
    auto rs = l.s.start();
    BOOST_TEST_REQUIRE(rs.ok(), (rs.ok() ? "" : rs.error()));
    l.pump();
}

void require_up(const Link& l) {
    BOOST_TEST_REQUIRE(l.c.handshake_done(), "client: " << l.c.error());
    BOOST_TEST_REQUIRE(l.s.handshake_done(), "server: " << l.s.error());
    BOOST_TEST_REQUIRE(l.c_st == IoStatus::Ok);
    BOOST_TEST_REQUIRE(l.s_st == IoStatus::Ok);
}

Identity peer_identity(const Channel& ch) {
    auto chain = ch.peer_chain_der();
    if (chain.empty()) return {};
    auto id = identity_from_der(chain.front());
    return id.ok() ? *id : Identity{};
}

std::string random_bytes(std::size_t n, unsigned seed) {
    std::mt19937 rng(seed);
    std::string s(n, '\0');
    for (auto& ch : s) ch = static_cast<char>(rng());
    return s;
}

// In-memory transport for a bare GnuTLS session (not a Channel): what it
// sends accumulates in `out`, it reads from `in`.
struct MemoryIo {
    std::string in, out;
    std::size_t off = 0;
    gnutls_session_t s = nullptr;
};

void attach_memory_transport(MemoryIo& io) {
    gnutls_transport_set_ptr(io.s, &io);
    gnutls_transport_set_push_function(io.s, [](gnutls_transport_ptr_t p, const void* d, size_t n) -> ssize_t {
        static_cast<MemoryIo*>(p)->out.append(static_cast<const char*>(d), n);
        return static_cast<ssize_t>(n);
    });
    gnutls_transport_set_pull_function(io.s, [](gnutls_transport_ptr_t p, void* d, size_t n) -> ssize_t {
        auto* self = static_cast<MemoryIo*>(p);
        std::size_t avail = self->in.size() - self->off;
        if (avail == 0) {
            gnutls_transport_set_errno(self->s, EAGAIN);
            return -1;
        }
        n = std::min(n, avail);
        std::memcpy(d, self->in.data() + self->off, n);
        self->off += n;
        return static_cast<ssize_t>(n);
    });
}

// A bare GnuTLS client with its own priorities / ALPN list, to test what the
// Channel server accepts from other implementations.
struct RawClient {
    gnutls_session_t s = nullptr;
    gnutls_certificate_credentials_t cred = nullptr;
    MemoryIo io;
    std::string& in = io.in;
    std::string& out = io.out;
    std::size_t& in_off = io.off;

    RawClient(const char* priority, std::vector<std::string> alpn) {
        BOOST_REQUIRE(gnutls_certificate_allocate_credentials(&cred) >= 0);
        BOOST_REQUIRE(gnutls_init(&s, GNUTLS_CLIENT | GNUTLS_NONBLOCK) >= 0);
        BOOST_REQUIRE(gnutls_priority_set_direct(s, priority, nullptr) >= 0);
        BOOST_REQUIRE(gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, cred) >= 0);
        BOOST_REQUIRE(gnutls_server_name_set(s, GNUTLS_NAME_DNS, "a.test", 6) >= 0);
        std::vector<gnutls_datum_t> protos;
        for (auto& p : alpn)
            protos.push_back({reinterpret_cast<unsigned char*>(p.data()), static_cast<unsigned>(p.size())});
        if (!protos.empty())
            BOOST_REQUIRE(gnutls_alpn_set_protocols(s, protos.data(), static_cast<unsigned>(protos.size()), 0) >= 0);
        io.s = s;
        attach_memory_transport(io);
    }
    ~RawClient() {
        gnutls_deinit(s);
        gnutls_certificate_free_credentials(cred);
    }

    // Runs the handshake against `server`; returns gnutls_handshake's result.
    int handshake(Channel& server, std::string& server_plain, IoStatus& server_st) {
        int r = GNUTLS_E_AGAIN;
        for (int i = 0; i < 100; ++i) {
            r = gnutls_handshake(s);
            if (r != GNUTLS_E_AGAIN) break;
            std::string a;
            std::swap(a, out);
            if (!a.empty() && server_st == IoStatus::Ok) server_st = server.feed(a.data(), a.size(), server_plain);
            in.append(server.outbound());
            server.outbound().clear();
            if (a.empty() && in_off == in.size()) break;
        }
        // Deliver the client's last flight (TLS 1.3 Finished) to the server.
        if (!out.empty() && server_st == IoStatus::Ok) server_st = server.feed(out.data(), out.size(), server_plain);
        out.clear();
        return r;
    }
};

} // namespace

BOOST_AUTO_TEST_CASE(tls13_handshake_aes_gcm) {
    global_init();
    CertStore server_store, client_store;
    server_store.add(cert_for("a.test"));
    Channel c(client_store, client_opts("a.test"));
    Channel s(server_store, server_opts());
    Link l{c, s};
    handshake(l);
    require_up(l);
    BOOST_TEST(c.version() == "TLS1.3");
    BOOST_TEST(s.version() == "TLS1.3");
    BOOST_TEST(c.is_tls13());
    BOOST_TEST(s.is_tls13());
    BOOST_TEST(c.cipher() == "AES-256-GCM");
    BOOST_TEST(s.cipher() == "AES-256-GCM");
    BOOST_TEST(c.alpn() == "");
    BOOST_TEST(s.sni() == "a.test");
    BOOST_TEST(c.sni() == "a.test");
    BOOST_TEST(c.error().empty());
    BOOST_TEST(s.error().empty());
    BOOST_TEST(s.local_cert() == server_store.find("a.test"));
    BOOST_TEST(c.local_cert() == nullptr);

    // The client sees the server's chain (GnuTLS did not judge it; we do).
    auto chain = c.peer_chain_der();
    BOOST_TEST_REQUIRE(chain.size() == 1u);
    TrustStore trust;
    BOOST_TEST_REQUIRE(trust.add_ca_pem(ca().cert_pem()).ok());
    auto v = verify_chain(trust, chain, test::now());
    BOOST_TEST(v.trusted, v.error);
    BOOST_TEST(matches_domain(v.identity, "a.test"));
}

BOOST_AUTO_TEST_CASE(peer_not_verified_by_gnutls) {
    // A certificate from an unknown CA for another name: the handshake still
    // completes, judging it is verify_chain()'s job.
    CertStore server_store, client_store;
    TestCa evil("Evil CA");
    server_store.add(evil.issue({.dns = {"evil.test"}, .not_after = test::now() - test::kDay}).local());
    Channel c(client_store, client_opts("a.test"));
    Channel s(server_store, server_opts());
    Link l{c, s};
    handshake(l);
    require_up(l);
    TrustStore trust;
    BOOST_TEST_REQUIRE(trust.add_ca_pem(ca().cert_pem()).ok());
    auto v = verify_chain(trust, c.peer_chain_der(), test::now());
    BOOST_TEST(!v.trusted);
    BOOST_TEST(v.error == "certificate signer not trusted (issuer CN=Evil CA)");
}

BOOST_AUTO_TEST_CASE(sni_selects_certificate) {
    CertStore server_store, client_store;
    for (auto d : {"a.test", "b.test", "c.test"}) server_store.add(cert_for(d));
    server_store.add(ca().issue({.dns = {"*.x.test"}}).local());

    struct Case {
        std::string sni, fallback, expect_match;
    };
    const std::vector<Case> cases = {
        {"b.test", "", "b.test"},
        {"c.test", "a.test", "c.test"},  // SNI wins over the fallback
        {"B.TEST", "", "b.test"},        // case-insensitive
        {"", "c.test", "c.test"},        // no SNI: the stream's `to`
        {"zzz.test", "a.test", "a.test"}, // unknown SNI: fallback
        {"muc.x.test", "", "muc.x.test"}, // wildcard certificate
    };
    for (const auto& k : cases) {
        BOOST_TEST_CONTEXT("sni '" << k.sni << "' fallback '" << k.fallback << "'") {
            Channel c(client_store, client_opts(k.sni));
            Channel s(server_store, server_opts(k.fallback));
            Link l{c, s};
            handshake(l);
            require_up(l);
            BOOST_TEST(matches_domain(peer_identity(c), k.expect_match));
            BOOST_TEST(s.sni() == k.sni);
        }
    }

    // Neither SNI nor fallback: any certificate rather than failing.
    Channel c(client_store, client_opts(""));
    Channel s(server_store, server_opts());
    Link l{c, s};
    handshake(l);
    require_up(l);
    BOOST_TEST(c.peer_chain_der().size() == 1u);
}

BOOST_AUTO_TEST_CASE(server_without_certificate_fails) {
    CertStore empty;
    Channel c(empty, client_opts("a.test"));
    Channel s(empty, server_opts("a.test"));
    Link l{c, s};
    handshake(l);
    BOOST_TEST(!s.handshake_done());
    BOOST_TEST(!c.handshake_done());
    BOOST_TEST(l.s_st == IoStatus::Error);
    BOOST_TEST(l.c_st == IoStatus::Error);
    BOOST_TEST(s.error().rfind("TLS handshake failed: ", 0) == 0, s.error());
    BOOST_TEST(s.error().find("(no local certificate for a.test)") != std::string::npos, s.error());
    BOOST_TEST(c.error().rfind("TLS handshake failed: ", 0) == 0, c.error());
}

BOOST_AUTO_TEST_CASE(client_certificate_presented) {
    CertStore server_store, client_store;
    server_store.add(cert_for("a.test"));
    auto b = cert_for("b.test");
    client_store.add(b);
    client_store.add(cert_for("c.test"));
    Channel c(client_store, client_opts("a.test", "b.test"));
    Channel s(server_store, server_opts());
    Link l{c, s};
    handshake(l);
    require_up(l);

    auto chain = s.peer_chain_der();
    BOOST_TEST_REQUIRE(chain.size() == 1u);
    BOOST_TEST(chain.front() == b->chain_der.front());
    BOOST_TEST(c.local_cert() == b);
    TrustStore trust;
    BOOST_TEST_REQUIRE(trust.add_ca_pem(ca().cert_pem()).ok());
    auto v = verify_chain(trust, chain, test::now());
    BOOST_TEST(v.trusted, v.error);
    BOOST_TEST(matches_domain(v.identity, "b.test"));
    BOOST_TEST(!matches_domain(v.identity, "c.test"));
}

BOOST_AUTO_TEST_CASE(client_certificate_with_intermediate) {
    CertStore server_store, client_store;
    auto inter = ca().intermediate("Channel Intermediate");
    server_store.add(inter.issue(test::xmpp_server("a.test")).local());
    client_store.add(inter.issue(test::xmpp_server("b.test")).local());
    Channel c(client_store, client_opts("a.test", "b.test"));
    Channel s(server_store, server_opts());
    Link l{c, s};
    handshake(l);
    require_up(l);
    TrustStore trust;
    BOOST_TEST_REQUIRE(trust.add_ca_pem(ca().cert_pem()).ok());
    BOOST_TEST(s.peer_chain_der().size() == 2u);
    BOOST_TEST(c.peer_chain_der().size() == 2u);
    BOOST_TEST(verify_chain(trust, s.peer_chain_der(), test::now()).trusted);
    BOOST_TEST(verify_chain(trust, c.peer_chain_der(), test::now()).trusted);
}

BOOST_AUTO_TEST_CASE(no_client_certificate) {
    CertStore server_store, client_store;
    server_store.add(cert_for("a.test"));
    client_store.add(cert_for("b.test"));
    {
        // The client has certificates but was not asked to present one.
        Channel c(client_store, client_opts("a.test", ""));
        Channel s(server_store, server_opts());
        Link l{c, s};
        handshake(l);
        require_up(l);
        BOOST_TEST(s.peer_chain_der().empty());
        BOOST_TEST(c.local_cert() == nullptr);
    }
    {
        // The client would present one but the server does not request it.
        auto so = server_opts();
        so.request_client_cert = false;
        Channel c(client_store, client_opts("a.test", "b.test"));
        Channel s(server_store, so);
        Link l{c, s};
        handshake(l);
        require_up(l);
        BOOST_TEST(s.peer_chain_der().empty());
    }
    {
        // Asked for a domain the client has no certificate for.
        Channel c(client_store, client_opts("a.test", "nope.test"));
        Channel s(server_store, server_opts());
        Link l{c, s};
        handshake(l);
        require_up(l);
        BOOST_TEST(s.peer_chain_der().empty());
    }
}

BOOST_AUTO_TEST_CASE(alpn_xmpp_server) {
    CertStore server_store, client_store;
    server_store.add(cert_for("a.test"));
    auto co = client_opts("a.test");
    auto so = server_opts();
    co.alpn_xmpp_server = so.alpn_xmpp_server = true;
    {
        Channel c(client_store, co);
        Channel s(server_store, so);
        Link l{c, s};
        handshake(l);
        require_up(l);
        BOOST_TEST(c.alpn() == "xmpp-server");
        BOOST_TEST(s.alpn() == "xmpp-server");
    }
    {
        // Server without ALPN: the client connects, alpn() tells it.
        Channel c(client_store, co);
        Channel s(server_store, server_opts());
        Link l{c, s};
        handshake(l);
        require_up(l);
        BOOST_TEST(c.alpn() == "");
    }
    {
        // Client without ALPN: accepted, the caller sees alpn() == "".
        Channel c(client_store, client_opts("a.test"));
        Channel s(server_store, so);
        Link l{c, s};
        handshake(l);
        require_up(l);
        BOOST_TEST(s.alpn() == "");
    }
}

BOOST_AUTO_TEST_CASE(alpn_server_refuses_other_protocols) {
    global_init();
    CertStore server_store;
    server_store.add(cert_for("a.test"));
    auto so = server_opts();
    so.alpn_xmpp_server = true;
    {
        Channel s(server_store, so);
        BOOST_TEST_REQUIRE(s.start().ok());
        RawClient raw(priority_string(), {"h2", "http/1.1"});
        std::string plain;
        IoStatus st = IoStatus::Ok;
        int r = raw.handshake(s, plain, st);
        BOOST_TEST(r < 0);
        BOOST_TEST(st == IoStatus::Error);
        BOOST_TEST(s.error().rfind("TLS handshake failed: ", 0) == 0, s.error());
    }
    {
        // A list that contains xmpp-server is fine.
        Channel s(server_store, so);
        BOOST_TEST_REQUIRE(s.start().ok());
        RawClient raw(priority_string(), {"h2", "xmpp-server"});
        std::string plain;
        IoStatus st = IoStatus::Ok;
        BOOST_TEST(raw.handshake(s, plain, st) == 0);
        BOOST_TEST(st == IoStatus::Ok);
        BOOST_TEST(s.handshake_done());
        BOOST_TEST(s.alpn() == "xmpp-server");
    }
}

BOOST_AUTO_TEST_CASE(tls12_peer) {
    global_init();
    CertStore server_store;
    server_store.add(cert_for("a.test"));
    {
        Channel s(server_store, server_opts());
        BOOST_TEST_REQUIRE(s.start().ok());
        RawClient raw("NORMAL:-VERS-ALL:+VERS-TLS1.2", {});
        std::string plain;
        IoStatus st = IoStatus::Ok;
        BOOST_TEST(raw.handshake(s, plain, st) == 0);
        BOOST_TEST_REQUIRE(s.handshake_done(), s.error());
        BOOST_TEST(s.version() == "TLS1.2");
        BOOST_TEST(!s.is_tls13());
        BOOST_TEST(s.cipher() == "AES-256-GCM");
        // Extended master secret is negotiated, so the exporter is allowed.
        auto e = s.exporter("EXPORTER-Channel-Binding", "", 32);
        BOOST_TEST_REQUIRE(e.ok(), (e.ok() ? "" : e.error()));
        std::string raw_e(32, '\0');
        BOOST_TEST(gnutls_prf_rfc5705(raw.s, 24, "EXPORTER-Channel-Binding", 0, "", 32, raw_e.data()) == 0);
        BOOST_TEST((*e == raw_e));
    }
    {
        // TLS 1.1 and CBC suites are refused.
        Channel s(server_store, server_opts());
        BOOST_TEST_REQUIRE(s.start().ok());
        RawClient raw("NORMAL:-VERS-ALL:+VERS-TLS1.1:+VERS-TLS1.0", {});
        std::string plain;
        IoStatus st = IoStatus::Ok;
        BOOST_TEST(raw.handshake(s, plain, st) < 0);
        BOOST_TEST(st == IoStatus::Error);
    }
    {
        Channel s(server_store, server_opts());
        BOOST_TEST_REQUIRE(s.start().ok());
        RawClient raw("NORMAL:-VERS-ALL:+VERS-TLS1.2:-CIPHER-ALL:+AES-128-CBC:-MAC-ALL:+SHA1:+SHA256", {});
        std::string plain;
        IoStatus st = IoStatus::Ok;
        BOOST_TEST(raw.handshake(s, plain, st) < 0);
        BOOST_TEST(st == IoStatus::Error);
    }
}

BOOST_AUTO_TEST_CASE(exporter_matches_and_differs) {
    CertStore server_store, client_store;
    server_store.add(cert_for("a.test"));
    const std::string label = "EXPORTER-Channel-Binding";

    Channel c1(client_store, client_opts("a.test"));
    Channel s1(server_store, server_opts());
    Link l1{c1, s1};
    handshake(l1);
    require_up(l1);
    Channel c2(client_store, client_opts("a.test"));
    Channel s2(server_store, server_opts());
    Link l2{c2, s2};
    handshake(l2);
    require_up(l2);

    auto ec1 = c1.exporter(label, "", 32), es1 = s1.exporter(label, "", 32);
    auto ec2 = c2.exporter(label, "", 32), es2 = s2.exporter(label, "", 32);
    BOOST_TEST_REQUIRE((ec1.ok() && es1.ok() && ec2.ok() && es2.ok()));
    BOOST_TEST(ec1->size() == 32u);
    BOOST_TEST((*ec1 == *es1));
    BOOST_TEST((*ec2 == *es2));
    BOOST_TEST((*ec1 != *ec2));
    BOOST_TEST((*ec1 != std::string(32, '\0')));

    auto other_label = c1.exporter("EXPORTER-other", "", 32);
    BOOST_TEST_REQUIRE(other_label.ok());
    BOOST_TEST((*other_label != *ec1));
    auto ctx_c = c1.exporter(label, "context", 48), ctx_s = s1.exporter(label, "context", 48);
    BOOST_TEST_REQUIRE((ctx_c.ok() && ctx_s.ok()));
    BOOST_TEST(ctx_c->size() == 48u);
    BOOST_TEST((*ctx_c == *ctx_s));

    Channel fresh(client_store, client_opts("a.test"));
    BOOST_TEST(!fresh.exporter(label, "", 32).ok());
}

BOOST_AUTO_TEST_CASE(megabyte_both_ways) {
    CertStore server_store, client_store;
    server_store.add(cert_for("a.test"));
    Channel c(client_store, client_opts("a.test"));
    Channel s(server_store, server_opts());
    Link l{c, s};
    handshake(l);
    require_up(l);

    const std::string up = random_bytes(1 << 20, 1), down = random_bytes(1 << 20, 2);
    BOOST_TEST(c.write(up) == IoStatus::Ok);
    BOOST_TEST(c.outbound().size() > up.size()); // records + tags
    BOOST_TEST(s.write(down) == IoStatus::Ok);
    l.pump();
    BOOST_TEST(l.s_plain.size() == up.size());
    BOOST_TEST((l.s_plain == up));
    BOOST_TEST(l.c_plain.size() == down.size());
    BOOST_TEST((l.c_plain == down));

    // Small writes, delivered in odd-sized pieces.
    l.s_plain.clear();
    std::string expect;
    for (int i = 0; i < 200; ++i) {
        std::string msg = "<message id='" + std::to_string(i) + "'/>";
        expect += msg;
        BOOST_TEST(c.write(msg) == IoStatus::Ok);
    }
    std::string wire;
    std::swap(wire, c.outbound());
    for (std::size_t off = 0; off < wire.size(); off += 7) {
        auto n = std::min<std::size_t>(7, wire.size() - off);
        BOOST_TEST_REQUIRE((s.feed(wire.data() + off, n, l.s_plain) == IoStatus::Ok));
    }
    BOOST_TEST(l.s_plain == expect);
    BOOST_TEST(c.write("") == IoStatus::Ok);
}

BOOST_AUTO_TEST_CASE(handshake_byte_by_byte) {
    CertStore server_store, client_store;
    server_store.add(cert_for("a.test"));
    client_store.add(cert_for("b.test"));
    Channel c(client_store, client_opts("a.test", "b.test"));
    Channel s(server_store, server_opts());
    BOOST_TEST_REQUIRE(c.start().ok());
    BOOST_TEST_REQUIRE(s.start().ok());
    std::string cp, sp;
    for (int round = 0; round < 20 && !(c.handshake_done() && s.handshake_done() && c.outbound().empty()); ++round) {
        std::string a, b;
        std::swap(a, c.outbound());
        std::swap(b, s.outbound());
        for (char ch : a) BOOST_TEST_REQUIRE((s.feed(&ch, 1, sp) == IoStatus::Ok), s.error());
        for (char ch : b) BOOST_TEST_REQUIRE((c.feed(&ch, 1, cp) == IoStatus::Ok), c.error());
    }
    BOOST_TEST_REQUIRE(c.handshake_done());
    BOOST_TEST_REQUIRE(s.handshake_done());
    BOOST_TEST(s.peer_chain_der().size() == 1u);
    BOOST_TEST(s.write("hello") == IoStatus::Ok);
    std::string w;
    std::swap(w, s.outbound());
    for (char ch : w) BOOST_TEST_REQUIRE((c.feed(&ch, 1, cp) == IoStatus::Ok));
    BOOST_TEST(cp == "hello");
}

BOOST_AUTO_TEST_CASE(close_notify) {
    CertStore server_store, client_store;
    server_store.add(cert_for("a.test"));
    Channel c(client_store, client_opts("a.test"));
    Channel s(server_store, server_opts());
    Link l{c, s};
    handshake(l);
    require_up(l);

    BOOST_TEST(c.write("last words") == IoStatus::Ok);
    c.shutdown();
    BOOST_TEST(c.write("too late") == IoStatus::Closed);
    c.shutdown(); // idempotent
    l.pump();
    BOOST_TEST(l.s_plain == "last words"); // data before close_notify is delivered
    BOOST_TEST(l.s_st == IoStatus::Closed);
    BOOST_TEST(l.c_st == IoStatus::Closed); // the server answered with its close_notify
    BOOST_TEST(s.error().empty());
    BOOST_TEST(c.error().empty());
    std::string p;
    BOOST_TEST(s.feed("x", 1, p) == IoStatus::Closed);
    BOOST_TEST(s.write("x") == IoStatus::Closed);
}

BOOST_AUTO_TEST_CASE(garbage_input) {
    CertStore server_store, client_store;
    server_store.add(cert_for("a.test"));
    {
        Channel s(server_store, server_opts());
        BOOST_TEST_REQUIRE(s.start().ok());
        std::string p;
        const std::string http = "GET / HTTP/1.1\r\nHost: a.test\r\n\r\n";
        BOOST_TEST(s.feed(http.data(), http.size(), p) == IoStatus::Error);
        BOOST_TEST(s.error().rfind("TLS handshake failed: ", 0) == 0, s.error());
        BOOST_TEST(p.empty());
        BOOST_TEST(s.feed("more", 4, p) == IoStatus::Error); // stays failed
        BOOST_TEST(!s.handshake_done());
    }
    {
        // A client getting XML instead of a ServerHello.
        Channel c(client_store, client_opts("a.test"));
        BOOST_TEST_REQUIRE(c.start().ok());
        BOOST_TEST(!c.outbound().empty()); // ClientHello
        std::string p;
        const std::string xml = "<?xml version='1.0'?><stream:stream xmlns='jabber:server'>";
        BOOST_TEST(c.feed(xml.data(), xml.size(), p) == IoStatus::Error);
        BOOST_TEST(c.error().rfind("TLS handshake failed: ", 0) == 0, c.error());
    }
    {
        // Corrupted record after the handshake.
        Channel c(client_store, client_opts("a.test"));
        Channel s(server_store, server_opts());
        Link l{c, s};
        handshake(l);
        require_up(l);
        BOOST_TEST(c.write("hello") == IoStatus::Ok);
        std::string wire;
        std::swap(wire, c.outbound());
        wire[wire.size() - 3] ^= 0x55;
        std::string p;
        BOOST_TEST(s.feed(wire.data(), wire.size(), p) == IoStatus::Error);
        BOOST_TEST(s.error().rfind("TLS error: ", 0) == 0, s.error());
        BOOST_TEST(p.empty());
        BOOST_TEST(!s.outbound().empty()); // an alert for the peer
        // The peer learns why.
        std::string alert;
        std::swap(alert, s.outbound());
        BOOST_TEST(c.feed(alert.data(), alert.size(), p) == IoStatus::Error);
        BOOST_TEST(!c.error().empty());
    }
}

BOOST_AUTO_TEST_CASE(api_misuse) {
    CertStore store;
    Channel c(store, client_opts("a.test"));
    std::string p;
    BOOST_TEST(c.feed("x", 1, p) == IoStatus::Error);
    BOOST_TEST(!c.error().empty());
    Channel c2(store, client_opts("a.test"));
    BOOST_TEST_REQUIRE(c2.start().ok());
    BOOST_TEST(!c2.start().ok());
    BOOST_TEST(c2.write("early") == IoStatus::Error);
    BOOST_TEST(c2.version() == "");
    BOOST_TEST(c2.peer_chain_der().empty());
}

BOOST_AUTO_TEST_CASE(store_changes_apply_to_next_handshake) {
    CertStore server_store, client_store;
    // The server channel exists before any certificate does.
    Channel s(server_store, server_opts());
    BOOST_TEST_REQUIRE(s.start().ok());
    auto a1 = cert_for("a.test");
    server_store.add(a1);
    Channel c(client_store, client_opts("a.test"));
    Link l{c, s};
    BOOST_TEST_REQUIRE(c.start().ok());
    l.pump();
    require_up(l);
    BOOST_TEST(c.peer_chain_der().front() == a1->chain_der.front());

    // Replace the certificate (renewal): new handshakes use the new one, the
    // old one stays alive for the channel that uses it.
    auto a2 = cert_for("a.test");
    server_store.add(a2);
    BOOST_TEST(server_store.find("a.test") == a2);
    Channel c2(client_store, client_opts("a.test"));
    Channel s2(server_store, server_opts());
    Link l2{c2, s2};
    handshake(l2);
    require_up(l2);
    BOOST_TEST(c2.peer_chain_der().front() == a2->chain_der.front());
    BOOST_TEST(s.local_cert() == a1);

    // Removing it while the first channel is up does not disturb that channel.
    BOOST_TEST(server_store.remove("a.test"));
    a1.reset();
    BOOST_TEST(s.write("still here") == IoStatus::Ok);
    l.pump();
    BOOST_TEST(l.c_plain == "still here");

    // Client side too: a client certificate added after the client channel.
    server_store.add(cert_for("a.test"));
    Channel c3(client_store, client_opts("a.test", "b.test"));
    BOOST_TEST_REQUIRE(c3.start().ok());
    client_store.add(cert_for("b.test"));
    Channel s3(server_store, server_opts());
    Link l3{c3, s3};
    BOOST_TEST_REQUIRE(s3.start().ok());
    l3.pump();
    require_up(l3);
    BOOST_TEST(matches_domain(peer_identity(s3), "b.test"));
}

// Regression: OpenSSL servers (Prosody) send TLS 1.3 NewSessionTickets after
// the handshake. When a ticket and application data arrive in one read,
// GnuTLS returns E_AGAIN after the ticket; the channel must keep reading or
// the data stays stranded in GnuTLS's buffer and the stream stalls.
BOOST_AUTO_TEST_CASE(ticket_and_data_in_one_read) {
    global_init();
    auto issued = ca().issue(test::xmpp_server("b.test"));
    gnutls_certificate_credentials_t cred = nullptr;
    BOOST_REQUIRE(gnutls_certificate_allocate_credentials(&cred) >= 0);
    gnutls_datum_t c{reinterpret_cast<unsigned char*>(issued.chain_pem.data()), static_cast<unsigned>(issued.chain_pem.size())};
    gnutls_datum_t k{reinterpret_cast<unsigned char*>(issued.key_pem.data()), static_cast<unsigned>(issued.key_pem.size())};
    BOOST_REQUIRE(gnutls_certificate_set_x509_key_mem(cred, &c, &k, GNUTLS_X509_FMT_PEM) >= 0);
    gnutls_datum_t ticket_key{};
    BOOST_REQUIRE(gnutls_session_ticket_key_generate(&ticket_key) >= 0);

    MemoryIo io;
    BOOST_REQUIRE(gnutls_init(&io.s, GNUTLS_SERVER | GNUTLS_NONBLOCK) >= 0);
    BOOST_REQUIRE(gnutls_priority_set_direct(io.s, "NORMAL:-VERS-ALL:+VERS-TLS1.3", nullptr) >= 0);
    BOOST_REQUIRE(gnutls_credentials_set(io.s, GNUTLS_CRD_CERTIFICATE, cred) >= 0);
    BOOST_REQUIRE(gnutls_session_ticket_enable_server(io.s, &ticket_key) >= 0);
    attach_memory_transport(io);

    CertStore store;
    Channel client(store, client_opts("b.test"));
    BOOST_TEST_REQUIRE(client.start().ok());
    std::string plain;
    int r = GNUTLS_E_AGAIN;
    for (int i = 0; i < 20 && r == GNUTLS_E_AGAIN; ++i) {
        io.in.append(client.outbound());
        client.outbound().clear();
        r = gnutls_handshake(io.s);
        if (!io.out.empty() && !client.handshake_done()) {
            BOOST_TEST_REQUIRE(client.feed(io.out.data(), io.out.size(), plain) == IoStatus::Ok);
            io.out.clear();
        }
    }
    io.in.append(client.outbound());
    client.outbound().clear();
    if (r == GNUTLS_E_AGAIN) r = gnutls_handshake(io.s); // consume the client's Finished
    BOOST_TEST_REQUIRE(r == 0, gnutls_strerror(r));
    BOOST_TEST_REQUIRE(client.handshake_done());
    // A post-handshake message (key update here; a NewSessionTicket takes the
    // same path) plus one application record, delivered in a single read.
    io.out.clear();
    BOOST_TEST_REQUIRE(gnutls_session_key_update(io.s, 0) == 0);
    std::size_t post_handshake = io.out.size();
    BOOST_TEST_REQUIRE(post_handshake > 0);
    BOOST_TEST_REQUIRE(gnutls_record_send(io.s, "<stream:features/>", 18) == 18);
    IoStatus st = client.feed(io.out.data(), io.out.size(), plain);
    BOOST_TEST(st == IoStatus::Ok);
    BOOST_TEST(plain == "<stream:features/>");

    gnutls_deinit(io.s);
    gnutls_free(ticket_key.data);
    gnutls_certificate_free_credentials(cred);
}
