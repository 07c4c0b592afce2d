// libFuzzer target: the sans-I/O S2S session (xmpp::Session) fed the
// peer's side of a stream.
//
// Input: byte 0 picks the configuration (bits below); the rest is what the
// peer sends, split into reads at 0x01 bytes (never valid in XML 1.0, so no
// stream is lost by reserving it). The byte after a 0x01 is an event run
// before the next read:
//   v / i / e  the authoritative server answers the oldest pending dialback
//              request: valid / invalid / error
//   t          11 s pass (past the 10 s authentication deadline), timers run
//   c / C      the host closes the stream (gracefully / with a stream error)
//   x          the transport reports EOF
//   s          the host sends a stanza on the stream, if it may
//   d          the host sends a <db:verify/> request
//   f          the stanzas delivered so far left the host (ack after
//              forward, mux configurations): acknowledged now
// TLS is simulated the way the transport does it: when the session asks for
// STARTTLS, the handshake "completes" before the next read, with a peer
// certificate for b.test (trusted or not, per config). With TLS 1.3 and mux
// on, a MuxSession whose verifications fail at once is attached.
//
// Invariants, on top of the sanitizers: the host hears of the close once;
// nothing is written after it; everything written is well-formed XML, a
// stream error is a defined condition and ends the stream, and a close
// that says it sent a stream error did; a 'required' TLS policy never
// authenticates anything without TLS; stanzas reach the host only from
// authenticated pairs (or pairs the mux rule accepts).
#include "common/log.h"
#include "fuzz_common.h"
#include "mux/mux_session.h"
#include "xml/fragments.h"
#include "xmpp/session.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

using namespace s2smux;
using namespace s2smux::xmpp;

namespace {

// Configuration byte.
constexpr std::uint8_t kInitiator = 0x01;    // else receiver
constexpr std::uint8_t kPolicyMask = 0x06;   // >>1: required, optional, disabled, required
constexpr std::uint8_t kNoDialback = 0x08;
constexpr std::uint8_t kDirectTls = 0x10;    // TLS before the first byte (XEP-0368)
constexpr std::uint8_t kPeerTrusted = 0x20;  // the peer's certificate verifies for b.test
constexpr std::uint8_t kVerdictNow = 0x40;   // receiver: dialback valid at once; initiator: verify-only
constexpr std::uint8_t kMux = 0x80;          // TLS 1.3 with an exporter, mux offered/wanted

const DialbackKeys& keys() {
    static DialbackKeys k("fuzz secret");
    return k;
}

tls::Identity identity(const char* name) {
    tls::Identity id;
    id.dns = {name};
    id.subject = std::string("CN=") + name;
    return id;
}

struct MuxStub final : mux::MuxHost {
    void mux_sign(std::shared_ptr<const tls::LocalCert>, std::string, std::function<void(Result<mux::Signature>)> done) override {
        done(make_error("no key in the fuzzer"));
    }
    void mux_verify(mux::AddCheckInput, std::function<void(mux::AddCheckResult)> done) override {
        mux::AddCheckResult r;
        r.failure = mux::AddFailure::Untrusted;
        r.text = "fuzzer trusts nothing";
        done(std::move(r));
    }
    bool mux_is_local(std::string_view d) override { return d == "a.test"; }
    void mux_names_changed() override {}
    void mux_add_answered(std::string_view, bool, mux::AddFailure, std::string_view) override {}
    void mux_refused(const StanzaHead&, mux::Refusal, std::string_view) override {}
    void mux_refusing(const StanzaHead&, mux::Refusal) override {}
};

struct Host final : SessionHost {
    std::uint8_t cfg = 0;
    Session* s = nullptr;
    int closes = 0;
    std::optional<CloseInfo> closed;
    bool want_tls = false;
    std::deque<std::pair<std::string, std::string>> pending_db; // from, to
    MuxStub mux_host;
    std::unique_ptr<mux::MuxSession> mux;

    void session_wants_write() override {}
    void session_start_tls() override { want_tls = true; }
    bool session_hosts(std::string_view d) override { return d == "a.test"; }
    bool session_has_cert(std::string_view d) override { return d == "a.test"; }
    DialbackVerdict session_dialback_request(const DialbackRequest& r) override {
        if (cfg & kVerdictNow) return DialbackVerdict::Valid;
        pending_db.emplace_back(r.from, r.to);
        return DialbackVerdict::Pending;
    }
    void session_authenticated(std::string_view from, std::string_view to, bool, AuthMethod m) override {
        bool required = ((cfg & kPolicyMask) >> 1) % 3 == 0;
        FUZZ_CHECK(!required || s->tls_active(), "authenticated without TLS under 'required':", from,
                   std::string(to) + " " + to_string(m));
        FUZZ_CHECK(!from.empty() && !to.empty());
    }
    void session_verify_answer(std::string_view, std::string_view, std::string_view, bool) override {}
    void session_ready() override {}
    std::vector<std::uint32_t> held; // ack_after_forward: stanzas "still inside"
    void session_stanza(const xml::Node& el, const StanzaRoute& r) override {
        // After our own close, stanzas already on their way are still delivered.
        FUZZ_CHECK(!s->closed() || s->reading_after_close(), "stanza delivered after the close");
        if (r.sm_seq) held.push_back(r.sm_seq);
        const char* why = nullptr;
        if (s->mux_enabled() && mux) {
            FUZZ_CHECK(mux->mux_check_receive(r.from_domain, r.to_domain, &why), "stanza breaks the mux rule");
            return;
        }
        if (s->can_receive(r.from_domain, r.to_domain)) return;
        // A malformed 'to' is the host's to answer; the origin must still be authenticated.
        FUZZ_CHECK(r.to_domain.empty(), "stanza from an unauthenticated pair:", el.name);
        bool from_known = false;
        for (const auto& p : s->pairs_in()) from_known |= p.first == r.from_domain;
        FUZZ_CHECK(from_known, "stanza from an unauthenticated domain:", r.from_domain);
    }
    void session_closed(const CloseInfo& info) override {
        FUZZ_CHECK(++closes == 1, "session_closed twice");
        closed = info;
    }
    void session_mux_enabled() override {
        mux = std::make_unique<mux::MuxSession>(*s, mux_host, mux::MuxSession::Binding::of(*s, 0), mux::Limits{}, 0);
        s->set_mux(mux.get());
    }
};

TlsState tls_state(std::uint8_t cfg) {
    TlsState t;
    t.active = true;
    t.tls13 = cfg & kMux;
    t.version = t.tls13 ? "TLS1.3" : "TLS1.2";
    t.cipher = "AES-128-GCM";
    if (t.tls13) t.exporter = std::string(32, '\x2a');
    t.peer.present = true;
    t.peer.trusted = cfg & kPeerTrusted;
    if (!t.peer.trusted) t.peer.error = "signer not trusted";
    t.peer.identity = identity("b.test");
    t.local = identity("a.test");
    return t;
}

SessionConfig session_config(std::uint8_t cfg) {
    SessionConfig c;
    c.role = cfg & kInitiator ? Role::Initiator : Role::Receiver;
    static constexpr TlsPolicy kPolicies[] = {TlsPolicy::Required, TlsPolicy::Optional, TlsPolicy::Disabled,
                                              TlsPolicy::Required};
    c.tls_policy = kPolicies[(cfg & kPolicyMask) >> 1];
    c.verify_peer = c.tls_policy == TlsPolicy::Required;
    c.offer_dialback = c.use_dialback = !(cfg & kNoDialback);
    c.offer_mux = c.want_mux = cfg & kMux;
    if (c.role == Role::Initiator) {
        c.from = "a.test";
        c.to = "b.test";
        c.verify_only = cfg & kVerdictNow;
    }
    // Small limits, so the fuzzer reaches them.
    c.limits.max_stanza_bytes = 4096;
    c.limits.max_header_bytes = 1024;
    c.limits.max_depth = 8;
    c.limits.max_attrs = 16;
    c.limits.max_attr_value = 512;
    c.auth_timeout_ms = 10000;
    // Each 't' event (11 s) is past both: keepalives and dead-peer closes happen.
    c.keepalive_ms = 5000;
    c.dead_peer_ms = 20000;
    // Stream management whenever the peer offers or asks; a small bound on
    // what is kept, so the fuzzer reaches it.
    c.stream_mgmt = true;
    c.ack_after_forward = cfg & kMux; // and stanzas leave on 'f' events
    c.ack_delay_ms = 3000;
    c.max_unacked_bytes = 2048;
    return c;
}

} // namespace

static std::string g_log; // log lines of the current input (kept from growing)

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    log::capture(&g_log);
    log::set_level(log::Level::Debug); // format every log line, hostile text included
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    g_log.clear();
    if (size < 1) return 0;
    const std::uint8_t cfg = data[0];
    std::string_view in(reinterpret_cast<const char*>(data + 1), size - 1);

    Host host;
    host.cfg = cfg;
    Session s(session_config(cfg), host, keys());
    host.s = &s;
    fuzz::OutputCheck out;
    out.set_role(cfg & kInitiator ? Role::Initiator : Role::Receiver);
    bool transport_closed = false;
    TimeMs now = 0;

    // One step of the host: hand over the output, check nothing follows the close.
    bool was_closed = false;
    auto flush = [&] {
        for (;;) {
            FUZZ_CHECK(!was_closed || s.out().empty(), "output after the close:", s.out());
            out.add(s.out());
            s.out().clear();
            was_closed = s.closed();
            FUZZ_CHECK(s.closed() == (host.closes == 1), "closed() and session_closed disagree");
            if (!host.want_tls || s.closed() || s.tls_active()) return;
            out.restart();
            s.on_tls_established(tls_state(cfg), now); // the handshake, before any further read
        }
    };

    // As the transport does it: direct TLS first, and a stream that failed there never starts.
    if (cfg & kDirectTls) s.on_tls_established(tls_state(cfg), now);
    if (!s.closed()) s.start(now);
    flush();
    while (!in.empty()) {
        auto sep = in.find('\x01');
        s.on_bytes(in.substr(0, sep), now);
        flush();
        if (sep == std::string_view::npos || sep + 1 >= in.size()) break;
        char ev = in[sep + 1];
        in.remove_prefix(sep + 2);
        switch (ev) {
        case 'v':
        case 'i':
        case 'e':
            if (!host.pending_db.empty()) {
                auto [from, to] = host.pending_db.front();
                host.pending_db.pop_front();
                s.dialback_result(from, to, ev == 'v', ev == 'e' ? "no route to the authoritative server" : "");
            }
            break;
        case 't':
            now += 11000;
            s.on_timer(now);
            break;
        case 'c': s.close(); break;
        case 'C': s.close(StreamError::SystemShutdown, "shutting down"); break;
        case 'x':
            s.on_transport_closed("EOF");
            transport_closed = true;
            break;
        case 's': {
            std::string_view from = s.local_domain(), to = s.remote_domain();
            if (s.can_send(from, to))
                s.send_stanza_raw("<message from='u@" + std::string(from) + "' to='v@" + std::string(to) +
                                  "' type='chat'><body>hi</body></message>");
            break;
        }
        case 'f': // what was delivered left the daemon: acknowledged now (newest first)
            std::reverse(host.held.begin(), host.held.end());
            s.stanzas_done(host.held.data(), host.held.size());
            host.held.clear();
            break;
        case 'd': // the daemon asks on an outgoing stream it was told is ready
            if (s.role() == Role::Initiator && s.ready()) s.send_db_verify("a.test", "b.test", s.stream_id(), "key");
            break;
        default: break;
        }
        flush();
    }

    // What stream management kept is exactly the stanzas we sent, readable
    // again (the daemon requeues them after a break).
    std::size_t kept = s.sm().unacked();
    std::string unacked = s.take_unacked();
    std::size_t parsed = 0;
    std::string err;
    FUZZ_CHECK(xml::for_each_element(unacked, [&](const xml::Node&) { ++parsed; }, &err), "unacked unreadable:", err);
    FUZZ_CHECK(parsed == kept, "unacked count differs:", std::to_string(parsed), std::to_string(kept));

    if (host.closed) {
        const CloseInfo& info = *host.closed;
        // fail() says "sent stream error <cond/>": the peer must have received exactly that.
        static constexpr std::string_view kSent = "sent stream error <";
        if (info.reason.compare(0, kSent.size(), kSent) == 0) {
            std::string_view cond = std::string_view(info.reason).substr(kSent.size());
            cond = cond.substr(0, cond.find('/'));
            FUZZ_CHECK(out.stream_error == cond, "close reason and stream error differ:", info.reason, out.stream_error);
        }
        // Every close but a transport failure ends the stream we opened.
        if (!transport_closed && out.open()) FUZZ_CHECK(out.closed, "closed without </stream:stream>:", info.reason);
    }
    return 0;
}
