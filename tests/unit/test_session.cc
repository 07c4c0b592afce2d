// Scripted exchanges against the sans-I/O S2S session, in both roles, and a
// back-to-back initiator/receiver pair with simulated TLS.
#define BOOST_TEST_MODULE test_session
#include <boost/test/unit_test.hpp>

#include "xml/writer.h"
#include "xmpp/jid.h"
#include "xmpp/session.h"

#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <vector>

using namespace s2smux;
using namespace s2smux::xmpp;

namespace {

const DialbackKeys& keys() {
    static DialbackKeys k("test secret");
    return k;
}

struct Host : SessionHost {
    std::set<std::string> hosted;
    std::set<std::string> certs;
    DialbackVerdict verdict = DialbackVerdict::Pending;
    int wants_write = 0;
    int start_tls = 0;
    int ready_calls = 0;
    std::vector<std::tuple<std::string, std::string, std::string, std::string>> db_requests; // from,to,key,id
    std::vector<std::tuple<std::string, std::string, bool, AuthMethod>> auths;
    std::vector<std::tuple<std::string, std::string, std::string, bool>> verify_answers;
    std::vector<std::string> stanzas; // serialized
    std::vector<std::pair<std::string, std::string>> stanza_domains;
    std::optional<CloseInfo> closed;

    void session_wants_write() override { ++wants_write; }
    void session_start_tls() override { ++start_tls; }
    bool session_hosts(std::string_view d) override { return hosted.count(std::string(d)) != 0; }
    bool session_has_cert(std::string_view d) override { return certs.count(std::string(d)) != 0; }
    DialbackVerdict session_dialback_request(const DialbackRequest& r) override {
        db_requests.emplace_back(std::string(r.from), std::string(r.to), std::string(r.key), std::string(r.stream_id));
        return verdict;
    }
    void session_authenticated(std::string_view from, std::string_view to, bool dir_in, AuthMethod m) override {
        auths.emplace_back(std::string(from), std::string(to), dir_in, m);
    }
    void session_verify_answer(std::string_view from, std::string_view to, std::string_view id, bool valid) override {
        verify_answers.emplace_back(std::string(from), std::string(to), std::string(id), valid);
    }
    void session_ready() override { ++ready_calls; }
    void session_stanza(const xml::Node& el, const StanzaRoute& r) override {
        std::string s;
        xml::serialize(s, el);
        stanzas.push_back(s);
        stanza_domains.emplace_back(std::string(r.from_domain), std::string(r.to_domain));
        seqs.push_back(r.sm_seq);
    }
    std::vector<std::uint32_t> seqs; // StanzaRoute::sm_seq of each
    void session_closed(const CloseInfo& info) override { closed = info; }
    ResumeState* resume_state = nullptr; // what session_resume() hands over
    int mux_enabled = 0, resumed = 0, resume_failed = 0;
    void session_mux_enabled() override { ++mux_enabled; }
    ResumeState* session_resume(std::string_view) override { return resume_state; }
    void session_resumed() override { ++resumed; }
    void session_resume_failed(std::string_view) override { ++resume_failed; }
    std::vector<std::tuple<std::string, std::string, std::string, bool>> refused; // from, to, reason, error answer
    void session_pair_refused(std::string_view from, std::string_view to, bool error_answer,
                              std::string_view reason) override {
        refused.emplace_back(std::string(from), std::string(to), std::string(reason), error_answer);
    }
};

std::string take(Session& s) {
    std::string o;
    o.swap(s.out());
    return o;
}

bool has(const std::string& hay, std::string_view needle) { return hay.find(needle) != std::string::npos; }

TlsState tls_with(std::vector<std::string> dns, bool trusted = true, std::string error = {}) {
    TlsState t;
    t.active = true;
    t.version = "TLS1.3";
    t.cipher = "AES-128-GCM";
    t.peer.present = !dns.empty() || !error.empty();
    t.peer.trusted = trusted;
    t.peer.error = std::move(error);
    t.peer.identity.dns = std::move(dns);
    return t;
}

const char* kInitHeader =
    "<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' "
    "xmlns:db='jabber:server:dialback' from='b.test' to='a.test' version='1.0'>";

std::string recv_header(std::string_view id = "abc123", std::string_view from = "b.test", std::string_view to = "a.test") {
    return "<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' "
           "xmlns:db='jabber:server:dialback' id='" + std::string(id) + "' from='" + std::string(from) + "' to='" +
           std::string(to) + "' version='1.0'>";
}

SessionConfig receiver_cfg(TlsPolicy p = TlsPolicy::Required) {
    SessionConfig c;
    c.role = Role::Receiver;
    c.tls_policy = p;
    c.auth_timeout_ms = 10000;
    return c;
}

SessionConfig initiator_cfg(TlsPolicy p = TlsPolicy::Required) {
    SessionConfig c;
    c.role = Role::Initiator;
    c.tls_policy = p;
    c.verify_peer = p == TlsPolicy::Required;
    c.from = "a.test";
    c.to = "b.test";
    c.auth_timeout_ms = 10000;
    return c;
}

struct Receiver {
    Host host;
    Session s;
    explicit Receiver(SessionConfig c = receiver_cfg()) : s(std::move(c), host, keys()) {
        host.hosted = {"a.test"};
        s.start(0);
    }
};

struct Initiator {
    Host host;
    Session s;
    explicit Initiator(SessionConfig c = initiator_cfg()) : s(std::move(c), host, keys()) {
        host.hosted = {"a.test"};
        host.certs = {"a.test"};
        s.start(0);
    }
};

// Receiver taken through STARTTLS with the given peer certificate.
void receiver_after_tls(Receiver& r, TlsState st) {
    r.s.on_bytes(kInitHeader, 0);
    take(r.s);
    r.s.on_bytes("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>", 0);
    BOOST_REQUIRE_EQUAL(r.host.start_tls, 1);
    BOOST_REQUIRE(has(take(r.s), "<proceed"));
    r.s.on_tls_established(std::move(st), 0);
    r.s.on_bytes(kInitHeader, 0);
}

} // namespace

// ------------------------------------------------------------ receiver

BOOST_AUTO_TEST_CASE(receiver_required_policy_offers_only_starttls) {
    Receiver r;
    r.s.on_bytes(kInitHeader, 0);
    std::string out = take(r.s);
    BOOST_TEST(has(out, "<stream:stream"));
    BOOST_TEST(has(out, "from='a.test'"));
    BOOST_TEST(has(out, "to='b.test'"));
    BOOST_TEST(has(out, "id='"));
    BOOST_TEST(has(out, "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>"));
    BOOST_TEST(!has(out, "dialback xmlns='urn:xmpp:features:dialback'"));
    BOOST_TEST(!has(out, "mechanisms"));
    BOOST_TEST(!has(out, "bidi"));
    BOOST_TEST(!r.host.closed);
}

BOOST_AUTO_TEST_CASE(receiver_optional_policy_offers_dialback_and_bidi) {
    Receiver r(receiver_cfg(TlsPolicy::Optional));
    r.s.on_bytes(kInitHeader, 0);
    std::string out = take(r.s);
    BOOST_TEST(has(out, "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"));
    BOOST_TEST(has(out, "<dialback xmlns='urn:xmpp:features:dialback'><errors/></dialback>"));
    BOOST_TEST(has(out, "<bidi xmlns='urn:xmpp:features:bidi'/>"));
}

BOOST_AUTO_TEST_CASE(receiver_rejects_unknown_host) {
    Receiver r;
    r.s.on_bytes("<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' "
                 "from='b.test' to='nope.test' version='1.0'>",
                 0);
    std::string out = take(r.s);
    BOOST_TEST(has(out, "<stream:stream")); // header sent before the error
    BOOST_TEST(has(out, "<host-unknown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"));
    BOOST_TEST(has(out, "</stream:stream>"));
    BOOST_REQUIRE(r.host.closed);
    BOOST_TEST(r.host.closed->error);
}

BOOST_AUTO_TEST_CASE(receiver_rejects_wrong_default_namespace) {
    Receiver r;
    r.s.on_bytes("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
                 "to='a.test' version='1.0'>",
                 0);
    BOOST_TEST(has(take(r.s), "<invalid-namespace"));
    BOOST_TEST(r.host.closed.has_value());
}

BOOST_AUTO_TEST_CASE(receiver_rejects_old_version) {
    Receiver r;
    r.s.on_bytes("<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' to='a.test'>", 0);
    BOOST_TEST(has(take(r.s), "<unsupported-version"));
}

BOOST_AUTO_TEST_CASE(receiver_starttls_then_injected_data_is_refused) {
    Receiver r;
    r.s.on_bytes(kInitHeader, 0);
    take(r.s);
    // Plaintext after <starttls/> in the same read would be treated as TLS
    // data by a naive implementation: refuse (STARTTLS command injection).
    r.s.on_bytes("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/><message/>", 0);
    std::string out = take(r.s);
    BOOST_TEST(has(out, "<policy-violation"));
    BOOST_TEST(r.host.start_tls == 0);
    BOOST_REQUIRE(r.host.closed);
}

// Found by tests/fuzz/fuzz_session (corpus/session/regress-error-after-tls-restart):
// the stream inside TLS is a new one, so a stream error there must open it
// with a header first (RFC 6120 §4.9.1.2), not continue the plaintext stream.
BOOST_AUTO_TEST_CASE(receiver_stream_error_after_tls_restart_opens_a_new_stream) {
    Receiver r;
    r.s.on_bytes(kInitHeader, 0);
    r.s.on_bytes("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>", 0);
    take(r.s);
    r.s.on_tls_established(tls_with({"b.test"}), 0);
    r.s.on_bytes(std::string_view("\0", 1), 0);
    std::string out = take(r.s);
    BOOST_TEST(out.rfind("<?xml version='1.0'?><stream:stream ", 0) == 0);
    BOOST_TEST(has(out, "<not-well-formed"));
    BOOST_TEST(has(out, "</stream:stream>"));
    BOOST_REQUIRE(r.host.closed);
}

BOOST_AUTO_TEST_CASE(receiver_stream_error_after_sasl_restart_opens_a_new_stream) {
    Receiver r;
    receiver_after_tls(r, tls_with({"b.test"}));
    r.s.on_bytes("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>=</auth>", 0);
    BOOST_TEST(has(take(r.s), "<success"));
    r.s.on_bytes("<message/>", 0); // no new stream header from the peer
    std::string out = take(r.s);
    BOOST_TEST(out.rfind("<?xml version='1.0'?><stream:stream ", 0) == 0);
    BOOST_TEST(has(out, "<stream:error>"));
    BOOST_REQUIRE(r.host.closed);
}

BOOST_AUTO_TEST_CASE(receiver_stanza_before_auth_is_not_authorized) {
    Receiver r(receiver_cfg(TlsPolicy::Optional));
    r.s.on_bytes(kInitHeader, 0);
    take(r.s);
    r.s.on_bytes("<message from='u@b.test' to='v@a.test'><body>hi</body></message>", 0);
    BOOST_TEST(has(take(r.s), "<not-authorized"));
    BOOST_TEST(r.host.stanzas.empty());
}

BOOST_AUTO_TEST_CASE(receiver_dialback_before_tls_under_required_is_refused) {
    Receiver r;
    r.s.on_bytes(kInitHeader, 0);
    take(r.s);
    r.s.on_bytes("<db:result from='b.test' to='a.test'>abcd</db:result>", 0);
    BOOST_TEST(has(take(r.s), "<policy-violation"));
    BOOST_TEST(r.host.db_requests.empty());
}

BOOST_AUTO_TEST_CASE(receiver_sasl_external_with_valid_certificate) {
    Receiver r;
    receiver_after_tls(r, tls_with({"b.test"}));
    std::string out = take(r.s);
    BOOST_TEST(has(out, "<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>EXTERNAL</mechanism></mechanisms>"));
    BOOST_TEST(!has(out, "starttls"));
    // authzid "b.test" in base64
    r.s.on_bytes("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>Yi50ZXN0</auth>", 0);
    BOOST_TEST(has(take(r.s), "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>"));
    BOOST_REQUIRE_EQUAL(r.host.auths.size(), 1u);
    BOOST_TEST(std::get<0>(r.host.auths[0]) == "b.test");
    BOOST_TEST(std::get<1>(r.host.auths[0]) == "a.test");
    BOOST_TEST(std::get<2>(r.host.auths[0]) == true);
    BOOST_TEST((std::get<3>(r.host.auths[0]) == AuthMethod::SaslExternal));
    // Stream restart: new header, features without mechanisms.
    r.s.on_bytes(kInitHeader, 0);
    out = take(r.s);
    BOOST_TEST(has(out, "<stream:stream"));
    BOOST_TEST(!has(out, "mechanisms"));
    r.s.on_bytes("<message from='u@b.test/r' to='v@a.test' id='1'><body>hi &amp; bye</body></message>", 0);
    BOOST_REQUIRE_EQUAL(r.host.stanzas.size(), 1u);
    BOOST_TEST(has(r.host.stanzas[0], "<body>hi &amp; bye</body>"));
    BOOST_TEST(r.host.stanza_domains[0].first == "b.test");
    BOOST_TEST(r.host.stanza_domains[0].second == "a.test");
    // A stanza from a domain that did not authenticate: <invalid-from/>.
    r.s.on_bytes("<message from='u@evil.test' to='v@a.test'/>", 0);
    BOOST_TEST(has(take(r.s), "<invalid-from"));
    BOOST_TEST(r.host.stanzas.size() == 1u);
}

BOOST_AUTO_TEST_CASE(receiver_sasl_external_refused_for_wrong_name) {
    Receiver r;
    receiver_after_tls(r, tls_with({"c.test"}));
    std::string out = take(r.s);
    BOOST_TEST(!has(out, "EXTERNAL")); // not offered: cert does not name b.test
    r.s.on_bytes("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>=</auth>", 0);
    out = take(r.s);
    BOOST_TEST(has(out, "<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><not-authorized/>"));
    BOOST_TEST(r.host.auths.empty());
    BOOST_TEST(!r.host.closed); // the peer may still use dialback
}

// Regression (fuzz_session): the authzid is base64, so the XML parser never
// checked its bytes; a name that is not UTF-8 was quoted into the failure's
// <text/> and made our output malformed.
BOOST_AUTO_TEST_CASE(receiver_sasl_external_authzid_not_utf8) {
    Receiver r;
    const char* no_from =
        "<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' "
        "to='a.test' version='1.0'>";
    r.s.on_bytes(no_from, 0);
    r.s.on_bytes("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>", 0);
    r.s.on_tls_established(tls_with({"b.test"}), 0);
    r.s.on_bytes(no_from, 0);
    take(r.s);
    // base64 of "b.t\xb9est": a lone continuation byte.
    r.s.on_bytes("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>Yi50uWVzdA==</auth>", 0);
    std::string out = take(r.s);
    BOOST_TEST(has(out, "<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><invalid-authzid/></failure>"));
    BOOST_TEST(xml::valid_xml_utf8(out));
    BOOST_TEST(r.host.auths.empty());
}

BOOST_AUTO_TEST_CASE(jid_parts_must_be_utf8) {
    BOOST_TEST(valid_domain("b\xc3\xbc" "cher.example"));
    BOOST_TEST(!valid_domain("b.t\xb9" "est"));      // lone continuation byte
    BOOST_TEST(!valid_domain("b\xc3" ".test"));       // truncated sequence
    BOOST_TEST(!valid_domain("\xc0\xae" "b.test"));  // overlong
    JidParts p;
    BOOST_TEST(parse_jid("u\xc3\xa9@b.test/r\xc3\xa9", p));
    BOOST_TEST(!parse_jid("u\xff@b.test", p));
    BOOST_TEST(!parse_jid("u@b.test/r\xed\xa0\x80", p)); // surrogate
}

BOOST_AUTO_TEST_CASE(keepalive_whitespace_once_authenticated_only) {
    SessionConfig c = receiver_cfg();
    c.keepalive_ms = 1000;
    c.dead_peer_ms = 3000; // multiplexed streams only: this one is not
    Receiver r(c);
    receiver_after_tls(r, tls_with({"b.test"}));
    take(r.s);
    r.s.on_timer(1500); // not authenticated yet: no keepalive
    BOOST_TEST(take(r.s).empty());
    r.s.on_bytes("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>=</auth>", 2000);
    r.s.on_bytes(kInitHeader, 2000);
    take(r.s);
    BOOST_TEST(r.s.next_deadline() == 3000);
    r.s.on_timer(3000);
    BOOST_TEST(take(r.s) == " ");
    r.s.on_timer(3500); // written 500 ms ago
    BOOST_TEST(take(r.s).empty());
    r.s.on_timer(60000); // silent peer, but not a multiplexed stream: still up
    BOOST_TEST(take(r.s) == " ");
    BOOST_TEST(!r.host.closed);
}

BOOST_AUTO_TEST_CASE(receiver_untrusted_cert_dialback_pending_then_valid) {
    Receiver r;
    receiver_after_tls(r, tls_with({"b.test"}, false, "signer not trusted"));
    std::string out = take(r.s);
    BOOST_TEST(!has(out, "EXTERNAL"));
    BOOST_TEST(has(out, "urn:xmpp:features:dialback"));
    r.s.on_bytes("<db:result from='b.test' to='a.test'>KEY123</db:result>", 0);
    BOOST_REQUIRE_EQUAL(r.host.db_requests.size(), 1u);
    BOOST_TEST(std::get<2>(r.host.db_requests[0]) == "KEY123");
    BOOST_TEST(std::get<3>(r.host.db_requests[0]) == r.s.stream_id());
    BOOST_TEST(take(r.s).empty()); // waiting for the authoritative server
    r.s.on_bytes("<message from='u@b.test' to='v@a.test'/>", 0);
    BOOST_TEST(has(take(r.s), "<not-authorized")); // not yet authenticated
}

BOOST_AUTO_TEST_CASE(receiver_dialback_result_valid_invalid_and_error) {
    for (int variant = 0; variant < 3; ++variant) {
        Receiver r;
        receiver_after_tls(r, tls_with({}, false));
        take(r.s);
        r.s.on_bytes("<db:result from='b.test' to='a.test'>KEY</db:result>", 0);
        if (variant == 0) r.s.dialback_result("b.test", "a.test", true);
        if (variant == 1) r.s.dialback_result("b.test", "a.test", false);
        if (variant == 2) r.s.dialback_result("b.test", "a.test", false, "cannot reach b.test");
        std::string out = take(r.s);
        if (variant == 0) {
            BOOST_TEST(has(out, "<db:result from='a.test' to='b.test' type='valid'/>"));
            BOOST_TEST(r.host.auths.size() == 1u);
            r.s.on_bytes("<presence from='u@b.test' to='v@a.test'/>", 0);
            BOOST_TEST(r.host.stanzas.size() == 1u);
        } else if (variant == 1) {
            BOOST_TEST(has(out, "type='invalid'"));
            BOOST_TEST(r.host.auths.empty());
        } else {
            BOOST_TEST(has(out, "type='error'"));
            BOOST_TEST(has(out, "<remote-server-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"));
            BOOST_TEST(has(out, "cannot reach b.test"));
        }
    }
}

BOOST_AUTO_TEST_CASE(receiver_dialback_accepted_when_certificate_valid) {
    Receiver r;
    receiver_after_tls(r, tls_with({"b.test"}));
    take(r.s);
    r.s.on_bytes("<db:result from='b.test' to='a.test'>KEY</db:result>", 0);
    BOOST_TEST(has(take(r.s), "type='valid'"));
    BOOST_TEST(r.host.db_requests.empty()); // no verify round trip needed (XEP-0344)
    BOOST_REQUIRE_EQUAL(r.host.auths.size(), 1u);
    BOOST_TEST((std::get<3>(r.host.auths[0]) == AuthMethod::DialbackCert));
}

BOOST_AUTO_TEST_CASE(receiver_dialback_for_unhosted_domain_is_host_unknown) {
    Receiver r;
    receiver_after_tls(r, tls_with({}, false));
    take(r.s);
    r.s.on_bytes("<db:result from='b.test' to='other.test'>KEY</db:result>", 0);
    BOOST_TEST(has(take(r.s), "<host-unknown"));
}

BOOST_AUTO_TEST_CASE(authoritative_db_verify_answers) {
    Receiver r(receiver_cfg(TlsPolicy::Optional));
    r.s.on_bytes(kInitHeader, 0);
    take(r.s);
    std::string good = keys().generate("b.test", "a.test", "ID1");
    r.s.on_bytes("<db:verify from='b.test' to='a.test' id='ID1'>" + good + "</db:verify>", 0);
    BOOST_TEST(has(take(r.s), "<db:verify from='a.test' to='b.test' id='ID1' type='valid'/>"));
    // Same key for another stream id (replay) is invalid.
    r.s.on_bytes("<db:verify from='b.test' to='a.test' id='ID2'>" + good + "</db:verify>", 0);
    BOOST_TEST(has(take(r.s), "id='ID2' type='invalid'"));
    // A key for a domain we do not host is never confirmed.
    std::string other = keys().generate("b.test", "x.test", "ID1");
    r.s.on_bytes("<db:verify from='b.test' to='x.test' id='ID1'>" + other + "</db:verify>", 0);
    BOOST_TEST(has(take(r.s), "type='invalid'"));
    BOOST_TEST(!r.host.closed);
}

BOOST_AUTO_TEST_CASE(receiver_restricted_xml_and_oversize_are_stream_errors) {
    {
        Receiver r;
        r.s.on_bytes(kInitHeader, 0);
        take(r.s);
        r.s.on_bytes("<!-- comment -->", 0);
        BOOST_TEST(has(take(r.s), "<restricted-xml"));
        BOOST_TEST(r.host.closed.has_value());
    }
    {
        SessionConfig c = receiver_cfg();
        c.limits.max_stanza_bytes = 1000;
        Receiver r(c);
        r.s.on_bytes(kInitHeader, 0);
        take(r.s);
        r.s.on_bytes("<message>" + std::string(5000, 'x') + "</message>", 0);
        BOOST_TEST(has(take(r.s), "<policy-violation"));
    }
    {
        Receiver r;
        r.s.on_bytes(kInitHeader, 0);
        take(r.s);
        r.s.on_bytes("<message><body>a</bod></message>", 0);
        BOOST_TEST(has(take(r.s), "<not-well-formed"));
    }
}

BOOST_AUTO_TEST_CASE(receiver_authentication_timeout) {
    Receiver r;
    r.s.on_bytes(kInitHeader, 0);
    take(r.s);
    BOOST_TEST(r.s.next_deadline() == 10000);
    r.s.on_timer(9999);
    BOOST_TEST(!r.host.closed);
    r.s.on_timer(10000);
    BOOST_TEST(has(take(r.s), "<connection-timeout"));
    BOOST_TEST(r.host.closed.has_value());
}

BOOST_AUTO_TEST_CASE(peer_stream_error_is_reported) {
    Receiver r;
    r.s.on_bytes(kInitHeader, 0);
    take(r.s);
    r.s.on_bytes("<stream:error><system-shutdown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
                 "<text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>bye</text></stream:error>",
                 0);
    BOOST_REQUIRE(r.host.closed);
    BOOST_TEST(r.host.closed->by_peer);
    BOOST_TEST(has(r.host.closed->reason, "system-shutdown"));
    BOOST_TEST(has(r.host.closed->reason, "bye"));
    BOOST_TEST(has(take(r.s), "</stream:stream>"));
}

// ------------------------------------------------------------ initiator

BOOST_AUTO_TEST_CASE(initiator_starttls_external) {
    Initiator i;
    std::string out = take(i.s);
    BOOST_TEST(has(out, "from='a.test'"));
    BOOST_TEST(has(out, "to='b.test'"));
    i.s.on_bytes(recv_header() + "<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls></stream:features>", 0);
    BOOST_TEST(has(take(i.s), "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"));
    i.s.on_bytes("<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>", 0);
    BOOST_TEST(i.host.start_tls == 1);
    i.s.on_tls_established(tls_with({"b.test"}), 0);
    BOOST_TEST(has(take(i.s), "<stream:stream")); // restarted over TLS
    i.s.on_bytes(recv_header("id2") +
                     "<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>EXTERNAL</mechanism></mechanisms>"
                     "<dialback xmlns='urn:xmpp:features:dialback'/></stream:features>",
                 0);
    out = take(i.s);
    BOOST_TEST(has(out, "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>YS50ZXN0</auth>"));
    i.s.on_bytes("<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>", 0);
    BOOST_TEST(has(take(i.s), "<stream:stream"));
    BOOST_TEST(!i.s.ready());
    i.s.on_bytes(recv_header("id3") + "<stream:features/>", 0);
    BOOST_TEST(i.s.ready());
    BOOST_TEST(i.s.can_send("a.test", "b.test"));
    BOOST_TEST(!i.s.can_send("a.test", "c.test"));
    BOOST_REQUIRE_EQUAL(i.host.auths.size(), 1u);
    BOOST_TEST((std::get<3>(i.host.auths[0]) == AuthMethod::SaslExternal));
}

BOOST_AUTO_TEST_CASE(initiator_required_refuses_untrusted_certificate) {
    Initiator i;
    take(i.s);
    i.s.on_bytes(recv_header() + "<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/></stream:features>", 0);
    i.s.on_bytes("<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>", 0);
    take(i.s);
    i.s.on_tls_established(tls_with({"b.test"}, false, "certificate signer not trusted"), 0);
    BOOST_TEST(take(i.s).empty()); // no stream was opened inside TLS: nothing to close
    BOOST_REQUIRE(i.host.closed);
    BOOST_TEST(i.host.closed->error);
    BOOST_TEST(has(i.host.closed->reason, "not trusted"));
    BOOST_TEST(has(i.host.closed->reason, "required"));
    BOOST_TEST((i.host.closed->bounce == StanzaError::RemoteServerTimeout));
}

BOOST_AUTO_TEST_CASE(initiator_required_refuses_wrong_name) {
    Initiator i;
    take(i.s);
    i.s.on_bytes(recv_header() + "<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/></stream:features>", 0);
    i.s.on_bytes("<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>", 0);
    i.s.on_tls_established(tls_with({"evil.test"}), 0);
    BOOST_REQUIRE(i.host.closed);
    BOOST_TEST(has(i.host.closed->reason, "not valid for b.test"));
}

BOOST_AUTO_TEST_CASE(initiator_required_refuses_plaintext) {
    Initiator i;
    take(i.s);
    i.s.on_bytes(recv_header() + "<stream:features><dialback xmlns='urn:xmpp:features:dialback'/></stream:features>", 0);
    BOOST_REQUIRE(i.host.closed);
    BOOST_TEST(has(i.host.closed->reason, "does not offer STARTTLS"));
    BOOST_TEST(!has(take(i.s), "db:result")); // nothing sent in plaintext
}

BOOST_AUTO_TEST_CASE(initiator_optional_plaintext_dialback) {
    Initiator i(initiator_cfg(TlsPolicy::Optional));
    take(i.s);
    i.s.on_bytes(recv_header("SID") + "<stream:features><dialback xmlns='urn:xmpp:features:dialback'/></stream:features>", 0);
    std::string expected_key = keys().generate("b.test", "a.test", "SID");
    BOOST_TEST(has(take(i.s), "<db:result from='a.test' to='b.test'>" + expected_key + "</db:result>"));
    i.s.on_bytes("<db:result from='b.test' to='a.test' type='valid'/>", 0);
    BOOST_TEST(i.s.ready());
    BOOST_TEST(i.s.can_send("a.test", "b.test"));
}

BOOST_AUTO_TEST_CASE(initiator_external_failure_falls_back_to_dialback) {
    Initiator i;
    take(i.s);
    i.s.on_bytes(recv_header() + "<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/></stream:features>", 0);
    i.s.on_bytes("<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>", 0);
    i.s.on_tls_established(tls_with({"b.test"}), 0);
    take(i.s);
    i.s.on_bytes(recv_header("S2") +
                     "<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>EXTERNAL</mechanism></mechanisms>"
                     "<dialback xmlns='urn:xmpp:features:dialback'><errors/></dialback></stream:features>",
                 0);
    take(i.s);
    i.s.on_bytes("<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><not-authorized/><text>unable to verify the first certificate</text></failure>", 0);
    BOOST_TEST(has(take(i.s), "<db:result from='a.test' to='b.test'>"));
    i.s.on_bytes("<db:result from='b.test' to='a.test' type='valid'/>", 0);
    BOOST_TEST(i.s.ready());
    BOOST_TEST((std::get<3>(i.host.auths.at(0)) == AuthMethod::Dialback));
}

BOOST_AUTO_TEST_CASE(initiator_dialback_rejected_and_error) {
    {
        Initiator i(initiator_cfg(TlsPolicy::Optional));
        i.s.on_bytes(recv_header() + "<stream:features><dialback xmlns='urn:xmpp:features:dialback'/></stream:features>", 0);
        i.s.on_bytes("<db:result from='b.test' to='a.test' type='invalid'/>", 0);
        BOOST_REQUIRE(i.host.closed);
        BOOST_TEST(has(i.host.closed->reason, "rejected"));
    }
    {
        Initiator i(initiator_cfg(TlsPolicy::Optional));
        i.s.on_bytes(recv_header() + "<stream:features><dialback xmlns='urn:xmpp:features:dialback'/></stream:features>", 0);
        i.s.on_bytes("<db:result from='b.test' to='a.test' type='error'><error type='cancel'>"
                     "<remote-server-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></db:result>",
                     0);
        BOOST_REQUIRE(i.host.closed);
        BOOST_TEST((i.host.closed->bounce == StanzaError::RemoteServerNotFound));
    }
}

// An initiator ready over dialback (plaintext, optional policy), peer stream id "SID".
void dialback_ready(Initiator& i) {
    take(i.s);
    i.s.on_bytes(recv_header("SID") + "<stream:features><dialback xmlns='urn:xmpp:features:dialback'/></stream:features>", 0);
    take(i.s);
    i.s.on_bytes("<db:result from='b.test' to='a.test' type='valid'/>", 0);
    BOOST_REQUIRE(i.s.ready());
}

BOOST_AUTO_TEST_CASE(initiator_piggybacks_pairs_on_a_ready_stream) {
    Initiator i(initiator_cfg(TlsPolicy::Optional));
    BOOST_TEST(!i.s.request_pair("c.test", "b.test")); // not ready yet: nothing sent
    BOOST_TEST(i.s.out().find("c.test") == std::string::npos);
    dialback_ready(i);
    BOOST_TEST(!i.s.request_pair("a.test", "b.test")); // the stream's own pair
    BOOST_TEST(i.s.out().empty());
    BOOST_TEST(!i.s.has_from("c.test"));
    // Another originating domain to the same receiving one, and to another.
    BOOST_TEST(i.s.request_pair("c.test", "b.test"));
    BOOST_TEST(i.s.request_pair("d.test", "e.test"));
    std::string out = take(i.s);
    BOOST_TEST(has(out, "<db:result from='c.test' to='b.test'>" + keys().generate("b.test", "c.test", "SID") +
                            "</db:result>"));
    BOOST_TEST(has(out, "<db:result from='d.test' to='e.test'>" + keys().generate("e.test", "d.test", "SID") +
                            "</db:result>"));
    BOOST_TEST(i.s.request_pair("c.test", "b.test")); // already asked: not sent twice
    BOOST_TEST(i.s.out().empty());
    BOOST_TEST(i.s.has_from("c.test"));
    BOOST_TEST(i.s.has_from("a.test"));
    BOOST_TEST(i.s.pairs_requested().size() == 2u);
    BOOST_TEST(!i.s.can_send("c.test", "b.test"));
    // Answers in any order; each authenticates its own pair only.
    i.s.on_bytes("<db:result from='e.test' to='d.test' type='valid'/>", 0);
    BOOST_TEST(i.s.can_send("d.test", "e.test"));
    BOOST_TEST(!i.s.can_send("c.test", "b.test"));
    BOOST_REQUIRE_EQUAL(i.host.auths.size(), 2u);
    BOOST_TEST(std::get<0>(i.host.auths[1]) == "d.test");
    BOOST_TEST(std::get<1>(i.host.auths[1]) == "e.test");
    BOOST_TEST(!std::get<2>(i.host.auths[1]));
    i.s.on_bytes("<db:result from='B.test' to='c.test' type='valid'/>", 0);
    BOOST_TEST(i.s.can_send("c.test", "b.test"));
    BOOST_TEST(i.s.pairs_requested().empty());
    BOOST_TEST(i.host.refused.empty());
    BOOST_TEST(!i.host.closed);
}

BOOST_AUTO_TEST_CASE(initiator_piggyback_refusals_keep_the_stream) {
    Initiator i(initiator_cfg(TlsPolicy::Optional));
    dialback_ready(i);
    BOOST_TEST(i.s.request_pair("c.test", "b.test"));
    BOOST_TEST(i.s.request_pair("d.test", "b.test"));
    take(i.s);
    i.s.on_bytes("<db:result from='b.test' to='c.test' type='invalid'/>", 0);
    i.s.on_bytes("<db:result from='b.test' to='d.test' type='error'><error type='cancel'>"
                 "<not-allowed xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
                 "<text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>Host unknown</text></error></db:result>",
                 0);
    // An answer for a pair never asked for is ignored.
    i.s.on_bytes("<db:result from='b.test' to='x.test' type='valid'/>", 0);
    BOOST_REQUIRE_EQUAL(i.host.refused.size(), 2u);
    BOOST_TEST(std::get<0>(i.host.refused[0]) == "c.test");
    BOOST_TEST(has(std::get<2>(i.host.refused[0]), "rejected (invalid)"));
    BOOST_TEST(!std::get<3>(i.host.refused[0]));
    BOOST_TEST(std::get<3>(i.host.refused[1]));
    BOOST_TEST(std::get<0>(i.host.refused[1]) == "d.test");
    BOOST_TEST(has(std::get<2>(i.host.refused[1]), "not-allowed: Host unknown"));
    BOOST_TEST(!i.s.can_send("c.test", "b.test"));
    BOOST_TEST(!i.s.can_send("x.test", "b.test"));
    BOOST_TEST(i.s.can_send("a.test", "b.test"));
    BOOST_TEST(!i.host.closed);
    BOOST_TEST(!i.s.has_from("c.test"));
}

BOOST_AUTO_TEST_CASE(initiator_piggyback_not_on_mux_or_verify_streams) {
    SessionConfig c = initiator_cfg(TlsPolicy::Optional);
    c.verify_only = true;
    Initiator v(c);
    take(v.s);
    v.s.on_bytes(recv_header("SID") + "<stream:features><dialback xmlns='urn:xmpp:features:dialback'/></stream:features>", 0);
    BOOST_REQUIRE(v.s.ready());
    BOOST_TEST(!v.s.request_pair("c.test", "b.test"));
    BOOST_TEST(!has(take(v.s), "db:result"));
}

BOOST_AUTO_TEST_CASE(initiator_peer_closes_after_auth) {
    // ejabberd 23.01 closes the stream without an error when SASL EXTERNAL
    // hits its XmppAddr bug: this must be an authentication failure.
    Initiator i;
    i.s.on_bytes(recv_header() + "<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/></stream:features>", 0);
    i.s.on_bytes("<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>", 0);
    i.s.on_tls_established(tls_with({"b.test"}), 0);
    i.s.on_bytes(recv_header("S2") +
                     "<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>EXTERNAL</mechanism></mechanisms></stream:features>",
                 0);
    i.s.on_bytes("</stream:stream>", 0);
    BOOST_REQUIRE(i.host.closed);
    BOOST_TEST(i.host.closed->error);
    BOOST_TEST(has(i.host.closed->reason, "SASL EXTERNAL"));
}

BOOST_AUTO_TEST_CASE(initiator_verify_only) {
    SessionConfig c = initiator_cfg(TlsPolicy::Optional);
    c.verify_only = true;
    Initiator i(c);
    i.s.on_bytes(recv_header() + "<stream:features><dialback xmlns='urn:xmpp:features:dialback'/></stream:features>", 0);
    BOOST_TEST(i.host.ready_calls == 1);
    i.s.send_db_verify("a.test", "b.test", "ID9", "KEYX");
    BOOST_TEST(has(take(i.s), "<db:verify from='a.test' to='b.test' id='ID9'>KEYX</db:verify>"));
    i.s.on_bytes("<db:verify from='b.test' to='a.test' id='ID9' type='valid'/>", 0);
    BOOST_REQUIRE_EQUAL(i.host.verify_answers.size(), 1u);
    BOOST_TEST(std::get<3>(i.host.verify_answers[0]) == true);
    BOOST_TEST(i.host.auths.empty());
}

BOOST_AUTO_TEST_CASE(initiator_timeout) {
    Initiator i;
    i.s.on_timer(10000);
    BOOST_REQUIRE(i.host.closed);
    BOOST_TEST(has(i.host.closed->reason, "no authenticated stream"));
}

// ------------------------------------------------ back to back

namespace {

struct Pair {
    Host ih, rh;
    Session init, recv;
    TlsState init_sees, recv_sees;

    Pair(SessionConfig ic, SessionConfig rc, TlsState init_sees_, TlsState recv_sees_)
        : init(std::move(ic), ih, keys()), recv(std::move(rc), rh, keys()), init_sees(std::move(init_sees_)),
          recv_sees(std::move(recv_sees_)) {
        ih.certs = {"a.test"};
        ih.hosted = {"a.test"};
        rh.hosted = {"b.test"};
    }

    void run() {
        recv.start(0);
        init.start(0);
        for (int i = 0; i < 50; ++i) {
            std::string a = take(init), b = take(recv);
            if (!a.empty()) recv.on_bytes(a, 0);
            if (!b.empty()) init.on_bytes(b, 0);
            if (ih.start_tls == 1 && rh.start_tls == 1 && !init.tls_active()) {
                recv.on_tls_established(recv_sees, 0);
                init.on_tls_established(init_sees, 0);
            }
            if (a.empty() && b.empty() && init.out().empty() && recv.out().empty()) break;
        }
    }
};

} // namespace

BOOST_AUTO_TEST_CASE(pair_starttls_external_bidi) {
    SessionConfig rc = receiver_cfg();
    Pair p(initiator_cfg(), rc, tls_with({"b.test"}), tls_with({"a.test"}));
    p.rh.verdict = DialbackVerdict::Invalid;
    p.run();
    BOOST_TEST(p.init.ready());
    BOOST_TEST(p.init.tls_active());
    BOOST_TEST(p.recv.can_receive("a.test", "b.test"));
    BOOST_TEST(p.init.can_send("a.test", "b.test"));
    // Bidi: both names are X.509-authenticated, so the reverse direction works.
    BOOST_TEST(p.init.bidi());
    BOOST_TEST(p.recv.can_send("b.test", "a.test"));
    BOOST_TEST(p.init.can_receive("b.test", "a.test"));
    p.recv.send_raw("<message from='x@b.test' to='y@a.test'><body>back</body></message>");
    p.init.on_bytes(take(p.recv), 0);
    BOOST_REQUIRE_EQUAL(p.ih.stanzas.size(), 1u);
    BOOST_TEST(has(p.ih.stanzas[0], "back"));
    BOOST_TEST(!p.ih.closed);
    BOOST_TEST(!p.rh.closed);
}

BOOST_AUTO_TEST_CASE(pair_dialback_over_tls_without_client_cert) {
    Pair p(initiator_cfg(), receiver_cfg(), tls_with({"b.test"}), tls_with({}));
    p.rh.verdict = DialbackVerdict::Pending;
    p.run();
    BOOST_REQUIRE_EQUAL(p.rh.db_requests.size(), 1u);
    auto [from, to, key, id] = p.rh.db_requests[0];
    // The authoritative side (same secret here) confirms the key.
    BOOST_TEST(keys().verify(to, from, id, key));
    p.recv.dialback_result(from, to, true);
    p.init.on_bytes(take(p.recv), 0);
    BOOST_TEST(p.init.ready());
    // Dialback alone does not authenticate the reverse direction (seed 003).
    BOOST_TEST(!p.recv.can_send("b.test", "a.test"));
}

// ------------------------------------------------------ stream management

BOOST_AUTO_TEST_CASE(stream_mgmt_bookkeeping_keeps_unacked_in_order_and_wraps) {
    StreamMgmt sm;
    sm.sent("<x/>"); // before start: not kept
    BOOST_TEST(sm.unacked() == 0u);
    sm.start_out();
    for (int i = 0; i < 5; ++i) sm.sent("<m n='" + std::to_string(i) + "'/>");
    BOOST_TEST(sm.unacked() == 5u);
    BOOST_TEST(sm.acked(2));
    auto v = sm.unacked_stanzas();
    BOOST_REQUIRE_EQUAL(v.size(), 3u);
    BOOST_TEST(v[0] == "<m n='2'/>");
    BOOST_TEST(v[2] == "<m n='4'/>");
    BOOST_TEST(!sm.acked(6)); // more than sent: refused, nothing changed
    BOOST_TEST(sm.unacked() == 3u);
    BOOST_TEST(sm.acked(2)); // repeated h: nothing new
    BOOST_TEST(sm.take_unacked() == "<m n='2'/><m n='3'/><m n='4'/>");
    BOOST_TEST(sm.unacked() == 0u);
    // A large run compacts and stays exact.
    std::string big(1000, 'a');
    for (int i = 0; i < 300; ++i) sm.sent("<m>" + big + std::to_string(i) + "</m>");
    BOOST_TEST(sm.acked(5 + 250));
    v = sm.unacked_stanzas();
    BOOST_REQUIRE_EQUAL(v.size(), 50u);
    BOOST_TEST(v[0] == "<m>" + big + "250</m>");
    BOOST_TEST(sm.unacked_bytes() < 60u * 1024);
}

BOOST_AUTO_TEST_CASE(stream_mgmt_counter_wraps_at_2_32) {
    StreamMgmt sm;
    sm.start_out();
    // Pretend 2^32 - 2 stanzas were acknowledged already.
    for (int i = 0; i < 4; ++i) sm.sent("<m/>");
    BOOST_TEST(sm.acked(4));
    // Fast-forward: h values are compared modulo 2^32.
    StreamMgmt w;
    w.start_out();
    w.sent("<a/>");
    w.sent("<b/>");
    BOOST_TEST(!w.acked(UINT32_MAX)); // "-1": far beyond what was sent
    BOOST_TEST(w.acked(1));
    BOOST_TEST(w.unacked_stanzas()[0] == "<b/>");
}

namespace {
SessionConfig sm_cfg(SessionConfig c) {
    c.stream_mgmt = true;
    c.ack_delay_ms = 200;
    return c;
}
} // namespace

BOOST_AUTO_TEST_CASE(pair_stream_mgmt_acks_both_ways_and_keeps_the_unacked) {
    Pair p(sm_cfg(initiator_cfg()), sm_cfg(receiver_cfg()), tls_with({"b.test"}), tls_with({"a.test"}));
    p.run();
    BOOST_REQUIRE(p.init.ready());
    BOOST_TEST(p.init.sm().out_active());
    BOOST_TEST(p.init.sm().in_active());
    BOOST_TEST(p.recv.sm().in_active());
    BOOST_TEST(p.recv.sm().out_active());
    // 150 stanzas one way, 3 the other (bidi).
    for (int i = 0; i < 150; ++i)
        p.init.send_stanza_raw("<message from='u@a.test' to='v@b.test' id='m" + std::to_string(i) + "'/>");
    for (int i = 0; i < 3; ++i) p.recv.send_stanza_raw("<message from='v@b.test' to='u@a.test'/>");
    std::string a = take(p.init);
    BOOST_TEST(has(a, "<r xmlns='urn:xmpp:sm:3'/>")); // after 100
    BOOST_TEST(p.init.sm().unacked() == 150u);
    p.recv.on_bytes(a, 0);
    BOOST_TEST(p.rh.stanzas.size() == 150u);
    BOOST_TEST(p.recv.sm().h_in() == 150u);
    std::string b = take(p.recv);
    // The answer to <r/>, then an unrequested one for the whole read.
    BOOST_TEST(has(b, "<a xmlns='urn:xmpp:sm:3' h='100'/>"));
    BOOST_TEST(has(b, "<a xmlns='urn:xmpp:sm:3' h='150'/>"));
    p.init.on_bytes(b, 0);
    BOOST_TEST(p.init.sm().unacked() == 0u);
    BOOST_TEST(p.ih.stanzas.size() == 3u);
    // The other direction: 3 stanzas, no <r/> yet; asked for after ack_delay_ms.
    BOOST_TEST(p.recv.sm().unacked() == 3u);
    BOOST_TEST(!has(b, "<r xmlns"));
    BOOST_TEST(p.recv.next_deadline() <= 200);
    p.init.on_timer(200);
    p.recv.on_timer(200);
    a = take(p.init);
    BOOST_TEST(!has(a, "<r xmlns='urn:xmpp:sm:3'/>")); // everything was acknowledged unasked
    b = take(p.recv);
    BOOST_TEST(has(b, "<r xmlns='urn:xmpp:sm:3'/>") == (p.recv.sm().unacked() != 0));
    p.init.on_bytes(b, 200);
    p.recv.on_bytes(take(p.init), 200);
    BOOST_TEST(p.init.sm().unacked() == 0u);
    BOOST_TEST(p.recv.sm().unacked() == 0u);
    // Sent, then the connection breaks before the ack: the host gets them back.
    p.init.send_stanza_raw("<message from='u@a.test' to='v@b.test' id='lost1'/>");
    p.init.send_stanza_raw("<message from='u@a.test' to='v@b.test' id='lost2'/>");
    p.init.on_transport_closed("reset");
    std::string back = p.init.take_unacked();
    BOOST_TEST(back == "<message from='u@a.test' to='v@b.test' id='lost1'/>"
                       "<message from='u@a.test' to='v@b.test' id='lost2'/>");
    BOOST_REQUIRE(p.ih.closed);
    BOOST_TEST(p.ih.closed->error);
}

BOOST_AUTO_TEST_CASE(stream_mgmt_graceful_close_acks_first) {
    Pair p(sm_cfg(initiator_cfg()), sm_cfg(receiver_cfg()), tls_with({"b.test"}), tls_with({"a.test"}));
    p.run();
    p.init.send_stanza_raw("<message from='u@a.test' to='v@b.test'/>");
    p.recv.on_bytes(take(p.init), 0);
    p.recv.close();
    std::string b = take(p.recv);
    BOOST_TEST(has(b, "<a xmlns='urn:xmpp:sm:3' h='1'/></stream:stream>"));
    p.init.on_bytes(b, 0);
    BOOST_TEST(p.init.sm().unacked() == 0u);
    BOOST_TEST(p.init.take_unacked().empty());
}

BOOST_AUTO_TEST_CASE(stream_mgmt_bad_acks_are_stream_errors) {
    for (std::string bad : {"<a xmlns='urn:xmpp:sm:3' h='5'/>", "<a xmlns='urn:xmpp:sm:3' h='x'/>",
                            "<a xmlns='urn:xmpp:sm:3' h='99999999999'/>", "<a xmlns='urn:xmpp:sm:3'/>"}) {
        Pair p(sm_cfg(initiator_cfg()), sm_cfg(receiver_cfg()), tls_with({"b.test"}), tls_with({"a.test"}));
        p.run();
        p.init.send_stanza_raw("<message from='u@a.test' to='v@b.test'/>");
        take(p.init);
        p.init.on_bytes(bad, 0);
        std::string out = take(p.init);
        BOOST_TEST_INFO(bad);
        BOOST_TEST(has(out, "<stream:error>"));
        BOOST_REQUIRE(p.ih.closed);
        BOOST_TEST(p.ih.closed->error);
        BOOST_TEST(p.init.take_unacked() == "<message from='u@a.test' to='v@b.test'/>");
    }
}

BOOST_AUTO_TEST_CASE(stream_mgmt_not_offered_not_enabled_and_enable_before_auth_fails) {
    // Receiver without it: the initiator never enables.
    Pair p(sm_cfg(initiator_cfg()), receiver_cfg(), tls_with({"b.test"}), tls_with({"a.test"}));
    p.run();
    BOOST_REQUIRE(p.init.ready());
    BOOST_TEST(!p.init.sm().out_active());
    p.init.send_stanza_raw("<message from='u@a.test' to='v@b.test'/>");
    BOOST_TEST(p.init.sm().unacked() == 0u);
    // <enable/> before authentication: <failed/>, stream stays.
    Receiver r(sm_cfg(receiver_cfg()));
    receiver_after_tls(r, tls_with({"b.test"}));
    BOOST_TEST(has(take(r.s), "<sm xmlns='urn:xmpp:sm:3'>"));
    r.s.on_bytes("<enable xmlns='urn:xmpp:sm:3'/>", 0);
    BOOST_TEST(has(take(r.s), "<failed xmlns='urn:xmpp:sm:3'><unexpected-request"));
    BOOST_TEST(!r.host.closed);
    // <r/> without it: stream error.
    r.s.on_bytes("<r xmlns='urn:xmpp:sm:3'/>", 0);
    BOOST_TEST(r.host.closed.has_value());
}

BOOST_AUTO_TEST_CASE(stream_mgmt_peer_that_never_acks_is_bounded) {
    SessionConfig ic = sm_cfg(initiator_cfg());
    ic.max_unacked_bytes = 65536;
    Pair p(ic, sm_cfg(receiver_cfg()), tls_with({"b.test"}), tls_with({"a.test"}));
    p.run();
    std::string body(1000, 'x');
    for (int i = 0; i < 100 && !p.ih.closed; ++i)
        p.init.send_stanza_raw("<message from='u@a.test' to='v@b.test'><body>" + body + "</body></message>");
    BOOST_REQUIRE(p.ih.closed);
    BOOST_TEST(has(p.ih.closed->reason, "not acknowledged"));
    BOOST_TEST(has(take(p.init), "<resource-constraint"));
    BOOST_TEST(p.init.take_unacked().size() > 65536u);
}

// ------------------------------------------------------------ resumption

namespace {
SessionConfig resumable(SessionConfig c) {
    c = sm_cfg(std::move(c));
    c.resume_max_s = 60;
    c.offer_mux = c.want_mux = true;
    return c;
}
TlsState tls13_with(std::vector<std::string> dns) {
    TlsState t = tls_with(std::move(dns));
    t.tls13 = true;
    t.exporter = std::string(32, 'x');
    return t;
}
} // namespace

BOOST_AUTO_TEST_CASE(resumption_sends_again_only_what_the_peer_missed) {
    Pair p(resumable(initiator_cfg()), resumable(receiver_cfg()), tls13_with({"b.test"}), tls13_with({"a.test"}));
    p.run();
    BOOST_REQUIRE(p.init.ready());
    BOOST_REQUIRE(p.init.mux_enabled());
    BOOST_REQUIRE(!p.recv.resume_id().empty());
    BOOST_TEST(p.init.resume_id() == p.recv.resume_id());
    // Three stanzas; the connection breaks after the receiver read two.
    for (int i = 1; i <= 3; ++i)
        p.init.send_stanza_raw("<message from='u@a.test' to='v@b.test' id='m" + std::to_string(i) + "'/>");
    p.recv.send_stanza_raw("<message from='v@b.test' to='u@a.test' id='back1'/>");
    std::string a = take(p.init);
    auto cut = a.find("<message from='u@a.test' to='v@b.test' id='m3'/>");
    BOOST_REQUIRE(cut != std::string::npos);
    p.recv.on_bytes(a.substr(0, cut), 0);
    BOOST_TEST(p.rh.stanzas.size() == 2u);
    take(p.recv); // its <a/> and back1 are lost with the connection
    p.init.on_transport_closed("reset");
    p.recv.on_transport_closed("reset");
    BOOST_REQUIRE(p.ih.closed && p.ih.closed->transport);
    ResumeState ist = p.init.take_resume_state(), rst = p.recv.take_resume_state();
    BOOST_TEST(ist.sm.unacked() == 3u);
    BOOST_TEST(rst.sm.unacked() == 1u);
    BOOST_TEST(rst.sm.h_in() == 2u);

    SessionConfig ic = resumable(initiator_cfg());
    ic.resume_previd = ist.id;
    ic.resume_h = ist.sm.h_in();
    Pair q(ic, resumable(receiver_cfg()), tls13_with({"b.test"}), tls13_with({"a.test"}));
    q.ih.resume_state = &ist;
    q.rh.resume_state = &rst;
    q.run();
    BOOST_TEST(q.init.ready());
    BOOST_TEST(q.ih.resumed == 1);
    BOOST_TEST(q.rh.resumed == 1);
    BOOST_TEST(q.ih.mux_enabled == 0); // not enabled anew: the state was kept
    BOOST_TEST(q.init.mux_enabled());
    BOOST_TEST(q.recv.mux_enabled());
    // Exactly the one the receiver missed, and the one we missed.
    BOOST_REQUIRE_EQUAL(q.rh.stanzas.size(), 1u);
    BOOST_TEST(has(q.rh.stanzas[0], "id='m3'"));
    BOOST_REQUIRE_EQUAL(q.ih.stanzas.size(), 1u);
    BOOST_TEST(has(q.ih.stanzas[0], "id='back1'"));
    // Counting goes on: everything acknowledged.
    q.init.on_timer(1000);
    q.recv.on_timer(1000);
    q.run();
    BOOST_TEST(q.init.sm().unacked() == 0u);
    BOOST_TEST(q.recv.sm().unacked() == 0u);
    BOOST_TEST(q.recv.sm().h_in() == 3u);
}

BOOST_AUTO_TEST_CASE(resumption_unknown_id_fails_and_multiplexes_anew) {
    SessionConfig ic = resumable(initiator_cfg());
    ic.resume_previd = "0123abcd";
    ic.resume_h = 7;
    Pair q(ic, resumable(receiver_cfg()), tls13_with({"b.test"}), tls13_with({"a.test"}));
    q.run(); // the receiver's host has no state for it
    BOOST_TEST(q.ih.resume_failed == 1);
    BOOST_TEST(q.ih.resumed == 0);
    BOOST_TEST(q.ih.mux_enabled == 1);
    BOOST_TEST(q.rh.mux_enabled == 1);
    BOOST_TEST(q.init.ready());
    BOOST_TEST(q.init.sm().out_active());
    BOOST_TEST(!q.rh.closed);
}

BOOST_AUTO_TEST_CASE(resumption_refused_without_multiplexing_or_for_a_bad_id) {
    // A receiver that offered no multiplexing (not resumable) refuses.
    Receiver r(sm_cfg(receiver_cfg()));
    receiver_after_tls(r, tls_with({"b.test"}));
    r.s.on_bytes("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>=</auth>", 0);
    r.s.on_bytes(kInitHeader, 0);
    take(r.s);
    r.s.on_bytes("<resume xmlns='urn:xmpp:sm:3' previd='abc' h='0'/>", 0);
    BOOST_TEST(has(take(r.s), "<unexpected-request"));
    r.s.on_bytes("<resume xmlns='urn:xmpp:sm:3' previd='a&apos;b' h='0'/>", 0);
    BOOST_TEST(has(take(r.s), "<unexpected-request"));
    BOOST_TEST(!r.host.closed);
}

BOOST_AUTO_TEST_CASE(dead_peer_on_a_resumable_stream_drops_the_connection_silently) {
    SessionConfig ic = resumable(initiator_cfg());
    ic.dead_peer_ms = 3000;
    Pair p(ic, resumable(receiver_cfg()), tls13_with({"b.test"}), tls13_with({"a.test"}));
    p.run();
    BOOST_REQUIRE(!p.init.resume_id().empty());
    p.init.on_timer(3500);
    BOOST_REQUIRE(p.ih.closed);
    BOOST_TEST(p.ih.closed->transport);
    BOOST_TEST(!has(take(p.init), "</stream:stream>")); // nothing that would end the session
}

BOOST_AUTO_TEST_CASE(after_our_close_the_peers_stanzas_in_flight_are_still_delivered) {
    // RFC 6120 §4.4: the peer may send until it sees our </stream:stream>.
    Pair p(initiator_cfg(), receiver_cfg(), tls_with({"b.test"}), tls_with({"a.test"}));
    p.run();
    BOOST_REQUIRE(p.init.ready());
    p.recv.close();
    BOOST_TEST(p.recv.closed());
    BOOST_TEST(p.recv.reading_after_close());
    std::string bye = take(p.recv);
    // Crossing on the wire: sent before the peer read our close.
    p.init.send_stanza_raw("<message from='u@a.test' to='v@b.test' id='crossing'/>");
    p.recv.on_bytes(take(p.init), 0);
    BOOST_REQUIRE_EQUAL(p.rh.stanzas.size(), 1u);
    BOOST_TEST(has(p.rh.stanzas[0], "crossing"));
    BOOST_TEST(take(p.recv).empty()); // nothing is written after the close
    p.init.on_bytes(bye, 0);
    p.recv.on_bytes(take(p.init), 0); // the peer's </stream:stream>
    BOOST_TEST(!p.recv.reading_after_close());
    // With stream management the peer sends again what we did not
    // acknowledge: nothing is read after the close (no duplicates).
    Pair q(sm_cfg(initiator_cfg()), sm_cfg(receiver_cfg()), tls_with({"b.test"}), tls_with({"a.test"}));
    q.run();
    q.recv.close();
    BOOST_TEST(!q.recv.reading_after_close());
    q.init.send_stanza_raw("<message from='u@a.test' to='v@b.test' id='crossing'/>");
    q.recv.on_bytes(take(q.init), 0);
    BOOST_TEST(q.rh.stanzas.empty());
}

BOOST_AUTO_TEST_CASE(standard_stream_reset_when_the_peer_certificate_expires) {
    // RFC 6120 §13.7.2.3, on a stream authenticated with SASL EXTERNAL.
    TlsState recv_sees = tls_with({"a.test"});
    recv_sees.peer_expires_at = 5000;
    Pair p(initiator_cfg(), receiver_cfg(), tls_with({"b.test"}), recv_sees);
    p.run();
    BOOST_REQUIRE(p.recv.can_receive("a.test", "b.test"));
    BOOST_TEST(p.recv.next_deadline() <= 5000);
    p.recv.on_timer(4999);
    BOOST_TEST(!p.rh.closed);
    p.recv.on_timer(5000);
    BOOST_REQUIRE(p.rh.closed);
    BOOST_TEST(has(take(p.recv), "<reset xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"));
    // A multiplexed stream removes expired certificates itself: not reset.
    TlsState mux_sees = tls13_with({"a.test"});
    mux_sees.peer_expires_at = 5000;
    Pair q(resumable(initiator_cfg()), resumable(receiver_cfg()), tls13_with({"b.test"}), mux_sees);
    q.run();
    BOOST_REQUIRE(q.recv.mux_enabled());
    q.recv.on_timer(6000);
    BOOST_TEST(!q.rh.closed);
}

BOOST_AUTO_TEST_CASE(ack_after_forward_acknowledges_only_what_left) {
    SessionConfig rc = sm_cfg(receiver_cfg());
    rc.ack_after_forward = true;
    Pair p(sm_cfg(initiator_cfg()), rc, tls_with({"b.test"}), tls_with({"a.test"}));
    p.run();
    for (int i = 1; i <= 3; ++i)
        p.init.send_stanza_raw("<message from='u@a.test' to='v@b.test' id='m" + std::to_string(i) + "'/>");
    p.init.send_raw("<r xmlns='urn:xmpp:sm:3'/>");
    p.recv.on_bytes(take(p.init), 0);
    BOOST_REQUIRE_EQUAL(p.rh.seqs.size(), 3u);
    BOOST_TEST(p.rh.seqs[0] == 1u);
    BOOST_TEST(p.rh.seqs[2] == 3u);
    BOOST_TEST(has(take(p.recv), "h='0'")); // handled, but none has left yet
    std::uint32_t first_and_last[] = {1, 3};
    p.recv.stanzas_done(first_and_last, 2);
    std::string a = take(p.recv);
    BOOST_TEST(has(a, "<a xmlns='urn:xmpp:sm:3' h='1'/>")); // 2 still inside: 3 is not acknowledged
    std::uint32_t second = 2;
    p.recv.stanzas_done(&second, 1);
    a = take(p.recv);
    BOOST_TEST(has(a, "<a xmlns='urn:xmpp:sm:3' h='3'/>"));
    p.init.on_bytes(a, 0);
    BOOST_TEST(p.init.sm().unacked() == 0u);
}
