// Capture format, recorder and deterministic replay (src/capture).
#define BOOST_TEST_MODULE capture
#include <boost/test/unit_test.hpp>

#include "capture/format.h"
#include "capture/recorder.h"
#include "capture/replay.h"
#include "xml/writer.h"
#include "xmpp/session.h"

#include <string>
#include <vector>

using namespace s2smux;
using namespace s2smux::xmpp;

namespace {

struct MemSink final : capture::Sink {
    std::string text = capture::header_line("2026-12-02T00:00:00Z") + "\n";
    void capture_write(std::string_view lines) override { text += lines; }
    TimeMs capture_origin() const override { return 1000; }
};

// A host like the gateway's: it hosts a.test, holds dialback verdicts until
// told, and answers a stanza for an unknown user with a bounce sent from
// inside the callback (a nested call).
struct Host final : SessionHost {
    Session* s = nullptr;
    bool dialback_pending = true;
    void session_wants_write() override {}
    void session_start_tls() override {}
    bool session_hosts(std::string_view d) override { return d == "a.test"; }
    bool session_has_cert(std::string_view d) override { return d == "a.test"; }
    DialbackVerdict session_dialback_request(const DialbackRequest&) override {
        return dialback_pending ? DialbackVerdict::Pending : DialbackVerdict::Valid;
    }
    void session_authenticated(std::string_view, std::string_view, bool, AuthMethod) override {}
    void session_verify_answer(std::string_view, std::string_view, std::string_view, bool) override {}
    void session_ready() override {}
    void session_stanza(const xml::Node& el, const StanzaRoute& r) override {
        if (el.attr("to").substr(0, 7) == "nobody@")
            s->send_stanza_raw("<message from='" + std::string(el.attr("to")) + "' to='" +
                               std::string(el.attr("from")) + "' type='error'><error type='cancel'>"
                               "<service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>");
        (void)r;
    }
    void session_closed(const CloseInfo&) override {}
};

const char* kHeader = "<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
                      "xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' "
                      "from='b.test' to='a.test' version='1.0'>";

TlsState peer_tls() {
    TlsState t;
    t.active = true;
    t.tls13 = true;
    t.version = "TLS1.3";
    t.cipher = "AES-256-GCM";
    t.exporter = std::string(32, '\x01'); // never recorded
    t.peer.present = true;
    t.peer.trusted = true;
    t.peer.identity.dns = {"b.test"};
    t.peer.identity.subject = "CN=b.test, O=Demo CA";
    t.peer.identity.not_after = 1900000000;
    return t;
}

// A receiver taken through STARTTLS, SASL EXTERNAL, two stanzas (one
// bounced from inside the callback), a pending dialback for another domain
// answered later, a timer and a close: recorded as stream 7.
std::string record_receiver() {
    MemSink sink;
    Host host;
    DialbackKeys keys("capture test");
    SessionConfig cfg;
    cfg.role = Role::Receiver;
    cfg.auth_timeout_ms = 10000;
    Session s(cfg, host, keys);
    host.s = &s;
    capture::Recorder rec(sink, 7);
    rec.begin("outer-in", "127.0.0.1:40000", cfg, false, 1000);
    s.set_tap(&rec);
    s.start(1000);
    s.on_bytes(kHeader, 1001);
    s.on_bytes("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>", 1002);
    s.on_tls_established(peer_tls(), 1010);
    s.on_bytes(kHeader, 1011);
    s.on_bytes("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>=</auth>", 1012);
    s.on_bytes(kHeader, 1013);
    s.on_bytes("<message from='u@b.test' to='v@a.test' id='1'><body>h\xc3\xa9llo \\ world</body></message>"
               "<message from='u@b.test' to='nobody@a.test' id='2'/>",
               1020);
    s.on_bytes("<db:result from='c.test' to='a.test'>abcdef</db:result>", 1030);
    s.dialback_result("c.test", "a.test", true);
    s.send_stanza_raw("<presence from='a.test' to='b.test'/>");
    s.on_timer(12000);
    s.close();
    rec.end("closed", 12001);
    return sink.text;
}

std::vector<capture::StreamOutcome> run(const std::string& text, bool exact = false) {
    auto cap = capture::parse(text);
    BOOST_REQUIRE_MESSAGE(cap, (cap ? "" : cap.error()));
    capture::ReplayOptions opt;
    opt.exact = exact;
    return capture::replay(*cap, opt);
}

std::string replace_once(std::string s, std::string_view from, std::string_view to) {
    auto at = s.find(from);
    BOOST_REQUIRE(at != std::string::npos);
    return s.replace(at, from.size(), to);
}

} // namespace

BOOST_AUTO_TEST_CASE(escaping_round_trips_every_byte) {
    std::string all;
    for (int c = 0; c < 256; ++c) all += static_cast<char>(c);
    for (bool arg : {false, true}) {
        std::string e;
        capture::escape(e, all, arg);
        BOOST_TEST(e.find('\n') == std::string::npos);
        BOOST_TEST(xml::valid_xml_utf8(e)); // ASCII only: any text tool reads it
        BOOST_TEST((arg ? e.find(' ') == std::string::npos : true));
        auto back = capture::unescape(e);
        BOOST_REQUIRE(back);
        BOOST_TEST(*back == all);
    }
    BOOST_TEST(!capture::unescape("\\x4"));
    BOOST_TEST(!capture::unescape("\\q00"));
}

BOOST_AUTO_TEST_CASE(records_round_trip) {
    std::string line;
    capture::format_answer(line, 5, 9, "dialback", {"b.test", ""}, "=");
    auto r = capture::parse_record(line, 1);
    BOOST_REQUIRE(r);
    BOOST_TEST(r->name == "dialback");
    BOOST_TEST(r->args.size() == 2u);
    BOOST_TEST(r->args[1] == "");
    BOOST_TEST(r->answer == "=");
    BOOST_TEST(capture::format_record(*r) == line);
    BOOST_TEST(!capture::parse_record("X 1 2 foo", 3));
    BOOST_TEST(!capture::parse_record("? 1 2 q a b", 3)); // no ' = answer'
    BOOST_TEST(!capture::parse_record("< x 2 abc", 3));
}

BOOST_AUTO_TEST_CASE(header_and_version_are_checked) {
    BOOST_TEST(!capture::parse(""));
    BOOST_TEST(!capture::parse("hello\n"));
    auto v2 = capture::parse("s2smux-capture 2 2026-01-01T00:00:00Z\n");
    BOOST_REQUIRE(!v2);
    BOOST_TEST(v2.error().find("version 2") != std::string::npos);
    auto ok = capture::parse("# comment\ns2smux-capture 1 2026-01-01T00:00:00Z\n\n# more\n");
    BOOST_REQUIRE(ok);
    BOOST_TEST(ok->records.empty());
}

BOOST_AUTO_TEST_CASE(capture_holds_no_secret) {
    std::string text = record_receiver();
    BOOST_TEST(text.find("capture test") == std::string::npos); // the dialback secret
    BOOST_TEST(text.find("\\x01\\x01\\x01") == std::string::npos); // the exporter
    BOOST_TEST(text.find("exporter=omitted") != std::string::npos);
    // Every kind of record is there: the scenario covers them all.
    for (const char* k : {"\nS ", "\n< ", "\n> ", "\n! ", "\n~ ", "\n@ ", "\n? ", "\nE "})
        BOOST_TEST(text.find(k) != std::string::npos, "record kind " << k);
}

BOOST_AUTO_TEST_CASE(replay_of_a_recording_passes) {
    std::string text = record_receiver();
    for (bool exact : {false, true}) {
        auto out = run(text, exact);
        BOOST_REQUIRE_EQUAL(out.size(), 1u);
        BOOST_TEST(out[0].status == capture::StreamOutcome::Passed, out[0].report);
        BOOST_TEST(out[0].inputs >= 12u);
        BOOST_TEST(out[0].bytes_out > 500u);
        BOOST_TEST(out[0].title == "7 outer-in 127.0.0.1:40000 receiver");
    }
}

BOOST_AUTO_TEST_CASE(altered_output_fails_with_a_readable_diff) {
    std::string text = record_receiver();
    // The recording says the peer got <success/>; pretend it got a failure.
    std::string bad = replace_once(text, "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>",
                                   "<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>");
    auto out = run(bad);
    BOOST_REQUIRE_EQUAL(out.size(), 1u);
    BOOST_TEST(out[0].status == capture::StreamOutcome::Failed);
    const std::string& rep = out[0].report;
    BOOST_TEST(rep.find("output differs after the input at line") != std::string::npos, rep);
    BOOST_TEST(rep.find("- <failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>") != std::string::npos, rep);
    BOOST_TEST(rep.find("+ <success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>") != std::string::npos, rep);
}

BOOST_AUTO_TEST_CASE(altered_input_or_answer_fails) {
    std::string text = record_receiver();
    // A stanza from a domain that never authenticated: the session now ends
    // the stream where the recording delivered the stanza.
    auto a = run(replace_once(text, "<message from='u@b.test' to='v@a.test'", "<message from='u@evil.test' to='v@a.test'"));
    BOOST_TEST(a[0].status == capture::StreamOutcome::Failed);
    BOOST_TEST(a[0].report.find("the session made the callback 'closed sent stream error <invalid-from/>") !=
                   std::string::npos,
               a[0].report);
    BOOST_TEST(a[0].report.find("@ 20 7 stanza b.test a.test") != std::string::npos, a[0].report);
    // The host no longer serves a.test: the session refuses the dialback
    // request where the recording asked the host for a verdict.
    auto b = run(replace_once(text, "? 30 7 hosts a.test = 1", "? 30 7 hosts a.test = 0"));
    BOOST_TEST(b[0].status == capture::StreamOutcome::Failed);
    BOOST_TEST(b[0].report.find("host-unknown") != std::string::npos, b[0].report);
    BOOST_TEST(b[0].report.find("? 30 7 dialback c.test a.test = pending") != std::string::npos, b[0].report);
}

BOOST_AUTO_TEST_CASE(normalisation_hides_what_varies_only) {
    std::string a = "<?xml version='1.0'?><stream:stream xmlns='jabber:server' id='abc' from='a.test'>"
                    "<db:result from='a.test' to='b.test'>0123abcd</db:result>"
                    "<db:verify from='a.test' to='b.test' id='x1'>beef</db:verify>";
    std::string b = "<?xml version='1.0'?><stream:stream xmlns='jabber:server' id='zzz' from='a.test'>"
                    "<db:result from='a.test' to='b.test'>99999999</db:result>"
                    "<db:verify from='a.test' to='b.test' id='y2'>cafe</db:verify>";
    BOOST_TEST(capture::normalise(a) == capture::normalise(b));
    std::string c = replace_once(b, "to='b.test'>9999", "to='c.test'>9999");
    BOOST_TEST(capture::normalise(a) != capture::normalise(c));
    BOOST_TEST(capture::xml_diff("<a/><b/>", "<a/><b/>", 3).empty());
    std::string d = capture::xml_diff("<a/><b/><c/>", "<a/><x/><c/>", 1);
    BOOST_TEST(d.find("  - <b/>") != std::string::npos, d);
    BOOST_TEST(d.find("  + <x/>") != std::string::npos, d);
}

BOOST_AUTO_TEST_CASE(partial_streams_are_skipped_and_bad_records_reported) {
    std::string text = capture::header_line("2026-12-02T00:00:00Z") + "\n" +
                       "S 0 3 kind=outer-in peer=x role=receiver partial=1\n< 1 3 <message/>\n" +
                       "< 0 4 <stream:stream>\n";
    auto out = run(text);
    BOOST_REQUIRE_EQUAL(out.size(), 2u);
    BOOST_TEST(out[0].status == capture::StreamOutcome::Skipped);
    BOOST_TEST(out[1].status == capture::StreamOutcome::Failed);
    BOOST_TEST(out[1].report.find("not its S record") != std::string::npos);
}
