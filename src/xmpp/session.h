// Sans-I/O XMPP server-to-server session (RFC 6120) in either role.
//
// Input: plaintext bytes of the stream (after TLS), TLS completion with the
// verified peer certificate, and the current time. Output: bytes in out(),
// and calls on SessionHost for what the session cannot decide alone (start
// TLS, hosted domains, dialback verification through the authoritative
// server) and for what it produces (authenticated domain pairs, stanzas,
// close). Nothing here touches a socket or a clock, so every branch is
// reachable from unit tests and from replayed captures.
//
// Covers: stream header and features, STARTTLS and direct TLS (XEP-0368),
// SASL EXTERNAL (XEP-0178) in both roles, dialback (XEP-0220: result and
// verify in every role, dialback errors, piggybacked domain pairs: accepted
// as receiver, requested with request_pair() as initiator), bidi
// (XEP-0288, both the feature and the enable namespace), stream errors, and
// addressing checks on every received stanza.
#pragma once

#include "common/clock.h"
#include "tls/identity.h"
#include "xml/element.h"
#include "xml/stream_parser.h"
#include "xmpp/dialback.h"
#include "xmpp/errors.h"
#include "xmpp/policy.h"
#include "xmpp/session_tap.h"
#include "xmpp/stream_mgmt.h"

#include <cstdint>
#include <deque>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace s2smux::xmpp {

enum class Role : std::uint8_t { Initiator, Receiver };

// Ordered set of (from domain, to domain) pairs, searchable with string_views.
struct DomainPairLess {
    using is_transparent = void;
    template <class A, class B>
    bool operator()(const A& a, const B& b) const {
        std::string_view af(a.first), bf(b.first);
        if (af != bf) return af < bf;
        return std::string_view(a.second) < std::string_view(b.second);
    }
};
using DomainPair = std::pair<std::string, std::string>;
using DomainPairSet = std::set<DomainPair, DomainPairLess>;

enum class AuthMethod : std::uint8_t {
    SaslExternal,    // XEP-0178
    Dialback,        // XEP-0220, verified by the authoritative server
    DialbackCert,    // XEP-0220 key accepted because the TLS certificate is valid for the domain (XEP-0344)
    DialbackTrusted, // XEP-0220 from a trusted local server (inner side)
    Bidi,            // reverse direction of a bidi stream, name authenticated by X.509
};
const char* to_string(AuthMethod m);

struct PeerCert {
    bool present = false;
    bool trusted = false;  // chain verified to a trust anchor, dates valid
    std::string error;     // why not trusted
    tls::Identity identity;

    bool valid_for(std::string_view domain) const;
    std::string describe() const; // "subject CN=..., names a.test, b.test" for logs
};

struct TlsState {
    bool active = false;
    bool tls13 = false;
    std::string version; // "TLS1.3"
    std::string cipher;
    PeerCert peer;
    tls::Identity local;  // the certificate we presented (empty if none)
    std::string exporter; // RFC 9266 tls-exporter (32 bytes), TLS 1.3 only
    // When the peer's certificate stops being valid, on the session's clock
    // (the transport converts its notAfter): a standard stream authenticated
    // with it is reset then (RFC 6120 §13.7.2.3). kNever: no such date.
    TimeMs peer_expires_at = kNever;
};

struct SessionConfig {
    Role role = Role::Receiver;
    TlsPolicy tls_policy = TlsPolicy::Required;
    // Receiver: a certificate exists, so STARTTLS can be offered.
    // Initiator: TLS may be started when offered.
    bool tls_possible = true;
    // Initiator: the receiving server's certificate must be valid for `to`
    // (implied by TlsPolicy::Required; false for the trusted upstream).
    bool verify_peer = true;

    bool offer_external = true; // receiver
    bool use_external = true;   // initiator (only with a local certificate for `from`)
    bool offer_dialback = true; // receiver
    bool use_dialback = true;   // initiator
    bool offer_bidi = true;     // receiver
    bool want_bidi = true;      // initiator

    // Initiator: originating (local) and receiving (remote) domain.
    std::string from, to;
    // Initiator: only carries <db:verify/> requests; never authenticates.
    bool verify_only = false;

    // Multiplexing (urn:s2smux:mux:0): offered by a receiver / enabled by an
    // initiator after TLS 1.3 + SASL EXTERNAL + bidi.
    bool offer_mux = false;
    bool want_mux = false;

    xml::Limits limits;
    TimeMs auth_timeout_ms = 30000; // time to reach an authenticated state
    // Once authenticated (RFC 6120 §4.6.1): a whitespace keepalive after this
    // long without writing, and, on a multiplexed stream (whose peer, a
    // gateway, keeps it alive the same way), <connection-timeout/> after this
    // long without a byte from the peer: a dead peer or a black-holed path.
    // 0 = never.
    TimeMs keepalive_ms = 0;
    TimeMs dead_peer_ms = 0;

    // Stream management (XEP-0198 acks, urn:xmpp:sm:3): a receiver offers it
    // once authentication is possible, an initiator enables it when offered.
    // Sent stanzas are kept until acknowledged; what is left when the stream
    // breaks is the host's to retry or bounce (take_unacked()).
    bool stream_mgmt = false;
    TimeMs ack_delay_ms = 200;                     // <r/> at most this long after a stanza
    std::size_t max_unacked_bytes = 64u << 20;     // <resource-constraint/> beyond
    // Resumption (XEP-0198 <resume/>), on multiplexed streams only: how long
    // a broken stream's state is kept for the initiator to resume it (0: no
    // resumption). Initiator: resume this stream (previd) instead of
    // enabling multiplexing anew; the host holds its state.
    // Acknowledge a received stanza only once the host says it left
    // (stanzas_done()): a crash of this process then cannot lose what the
    // peer already forgot; it sends it again instead.
    bool ack_after_forward = false;
    std::uint32_t resume_max_s = 0;
    std::string resume_previd;
    std::uint32_t resume_h = 0; // stanzas we had received on it
};

// What a resumed stream takes over from the broken one (the host keeps it
// in between): counters, and the stanzas not acknowledged yet.
struct ResumeState {
    std::string id;
    StreamMgmt sm;
};

enum class DialbackVerdict : std::uint8_t {
    Valid,   // accept now
    Invalid, // reject now
    Pending, // the host asks the authoritative server; answer with dialback_result()
};

struct DialbackRequest {
    std::string_view from; // originating domain (the peer's claim)
    std::string_view to;   // receiving domain (ours)
    std::string_view key;
    std::string_view stream_id; // our stream id on this stream
};

struct CloseInfo {
    bool error = false;          // closed because something failed
    bool by_peer = false;        // the peer closed (stream end, stream error or EOF)
    bool authenticated = false;  // had reached an authenticated state
    std::string reason;          // human-readable, for logs and bounce texts
    // The connection failed or was lost (connect, reset, EOF, TLS), as
    // opposed to a refusal by the peer: worth trying again.
    bool transport = false;
    // Condition to bounce queued stanzas with when the stream never carried them.
    StanzaError bounce = StanzaError::RemoteServerTimeout;
};

// Addressing of a received stanza, validated and with lowercased domains.
struct StanzaRoute {
    StanzaHead head;
    std::string_view from_domain;
    std::string_view to_domain;
    // ack_after_forward: its number, for stanzas_done() (0: nothing to report).
    std::uint32_t sm_seq = 0;
    // The stanza's bytes as received, when they can be forwarded as they
    // are (xml::StreamParser::element_raw()); valid during the callback.
    std::string_view raw;
};

// The multiplexing extension, once enabled on the stream (mux::MuxSession).
class MuxHandler {
public:
    virtual ~MuxHandler() = default;
    virtual void mux_element(const xml::Node& el, TimeMs now) = 0;
    virtual bool mux_send_allowed(std::string_view from, std::string_view to) const = 0;
    // False when the stanza breaks the multiplexing rule; *reason names why.
    virtual bool mux_check_receive(std::string_view from, std::string_view to, const char** reason) const = 0;
    // Answer a refused stanza (never delivered) without closing the stream.
    virtual void mux_refuse(const xml::Node& el, const StanzaRoute& r, const char* reason) = 0;
    virtual void mux_timer(TimeMs now) = 0;
    virtual TimeMs mux_deadline() const = 0;
};

class SessionHost {
public:
    virtual ~SessionHost() = default;
    // out() went from empty to non-empty: schedule a flush.
    virtual void session_wants_write() = 0;
    // Everything in out() so far must go out in plaintext; the transport
    // switches to TLS right after it. The host calls on_tls_established()
    // (or on_transport_closed()) when the handshake and the verification of
    // the peer certificate are done, before delivering any further bytes.
    virtual void session_start_tls() = 0;
    // Receiver: may the peer address this domain as ours?
    virtual bool session_hosts(std::string_view domain) = 0;
    // Initiator: do we have a certificate for this local domain?
    virtual bool session_has_cert(std::string_view domain) = 0;
    // Receiver: the peer sent <db:result/>. The session has already checked
    // addressing and TLS policy; the host decides trust.
    virtual DialbackVerdict session_dialback_request(const DialbackRequest& req) = 0;
    // A domain pair may now be used. dir_in: stanzas from `from` to `to` may
    // be received; otherwise we may send from `from` to `to`.
    virtual void session_authenticated(std::string_view from, std::string_view to, bool dir_in,
                                       AuthMethod m) = 0;
    // Initiator (verify-only or any): answer of the authoritative server.
    virtual void session_verify_answer(std::string_view from, std::string_view to,
                                       std::string_view id, bool valid) = 0;
    // Initiator verify-only: ready to carry <db:verify/> requests.
    virtual void session_ready() = 0;
    // A stanza from an authenticated pair.
    virtual void session_stanza(const xml::Node& el, const StanzaRoute& r) = 0;
    // The stream is over. Flush out() and close the transport.
    virtual void session_closed(const CloseInfo& info) = 0;
    // Multiplexing was enabled: attach a handler with set_mux().
    virtual void session_mux_enabled() {}
    // Resumption. Receiver: may the authenticated peer resume `previd`
    // (whose state the host holds)? Initiator: the peer agreed to resume
    // it. The session moves the state out of the returned object (nullptr:
    // unknown or not this peer's).
    virtual ResumeState* session_resume(std::string_view /*previd*/) { return nullptr; }
    // The stream was resumed: multiplexing is on again; attach the previous
    // stream's handler with set_mux().
    virtual void session_resumed() {}
    // Initiator: the peer refused to resume; the host releases the state.
    virtual void session_resume_failed(std::string_view /*previd*/) {}
    // Initiator: the peer answered a request_pair() with type='invalid'
    // (error_answer false) or 'error'; the stream and its other pairs stay up.
    virtual void session_pair_refused(std::string_view /*from*/, std::string_view /*to*/, bool /*error_answer*/,
                                      std::string_view /*reason*/) {}
};

class Session final : private xml::ParserHandler {
public:
    Session(SessionConfig cfg, SessionHost& host, const DialbackKeys& keys);
    ~Session() override;
    Session(const Session&) = delete;
    Session& operator=(const Session&) = delete;

    // Initiator: sends the stream header (after on_tls_established() for
    // direct TLS). Receiver: arms the authentication deadline.
    void start(TimeMs now);

    void on_bytes(const char* data, std::size_t len, TimeMs now);
    void on_bytes(std::string_view s, TimeMs now) { on_bytes(s.data(), s.size(), now); }
    // TLS handshake done and the peer certificate verified (also used once,
    // before start(), for direct TLS).
    void on_tls_established(TlsState st, TimeMs now);
    // The transport failed or reached EOF.
    void on_transport_closed(std::string_view why);
    void on_timer(TimeMs now);
    TimeMs next_deadline() const;

    // Receiver: the authoritative server's answer for a Pending request.
    // `error` (non-empty) sends a dialback error instead of valid/invalid.
    void dialback_result(std::string_view from, std::string_view to, bool valid,
                         std::string_view error = {}, StanzaError cond = StanzaError::RemoteServerNotFound);
    // Initiator, once ready (not multiplexed): authenticate one more pair on
    // this stream with dialback (XEP-0220 "piggybacking"): sends
    // <db:result from to>KEY</db:result>; the answer comes as
    // session_authenticated() (valid) or session_pair_refused(). False (and
    // nothing sent) when the stream cannot take a request now.
    bool request_pair(std::string_view from, std::string_view to);
    // Initiator: pairs requested with request_pair() and not answered yet.
    const DomainPairSet& pairs_requested() const { return requested_; }
    // Initiator: does this stream carry (or is it asking for) a pair from `from`?
    bool has_from(std::string_view from) const;
    // Initiator: ask the peer (an authoritative server) about a key.
    void send_db_verify(std::string_view from, std::string_view to, std::string_view id,
                        std::string_view key);

    // May we send a stanza from `from_domain` to `to_domain` on this stream?
    bool can_send(std::string_view from_domain, std::string_view to_domain) const;
    bool can_receive(std::string_view from_domain, std::string_view to_domain) const;
    void send_stanza(const xml::Node& el);
    // A serialized stanza (counted as one); send_raw() is for anything else.
    void send_stanza_raw(std::string_view serialized_stanza);
    void send_raw(std::string_view serialized);

    // Multiplexing.
    bool mux_enabled() const { return mux_enabled_; }
    void set_mux(MuxHandler* h) { mux_ = h; }
    MuxHandler* mux() const { return mux_; }
    // The receiving entity's id of the current stream (ours as receiver).
    const std::string& receiver_stream_id() const {
        return cfg_.role == Role::Receiver ? stream_id_ : peer_stream_id_;
    }

    // Close with a stream error (and the closing tag).
    void close(StreamError cond, std::string_view text);
    // Close gracefully (</stream:stream>).
    void close();

    // Output waiting to be written (plaintext). The host clears it.
    std::string& out() { return out_; }

    Role role() const { return cfg_.role; }
    const SessionConfig& config() const { return cfg_; }
    // New stanza size/shape limits (reload): apply from the next byte parsed.
    void set_limits(const xml::Limits& l);
    bool tls_active() const { return tls_.active; }
    const TlsState& tls() const { return tls_; }
    bool closed() const { return state_ == State::Closed; }
    // Closed by us gracefully, and the peer has not closed yet: input is
    // still read, and its stanzas delivered (RFC 6120 §4.4).
    bool reading_after_close() const { return drain_in_; }
    bool ready() const { return state_ == State::Ready; }
    bool bidi() const { return bidi_; }
    const std::string& stream_id() const { return stream_id_; }
    const std::string& peer_stream_id() const { return peer_stream_id_; }
    // Header domains: for a receiver, the peer's from/to; for an initiator, cfg from/to.
    const std::string& local_domain() const { return local_domain_; }
    const std::string& remote_domain() const { return remote_domain_; }
    const DomainPairSet& pairs_in() const { return in_; }
    const DomainPairSet& pairs_out() const { return out_pairs_; }
    // Stream management: acknowledged state of this stream.
    const StreamMgmt& sm() const { return sm_; }
    // Stanzas we sent that the peer has not acknowledged (serialized,
    // concatenated, oldest first), taken out: after the stream ended, they
    // may not have arrived. Empty without stream management.
    std::string take_unacked() { return sm_.take_unacked(); }
    // The id under which the peer (receiver) lets this stream be resumed;
    // empty when it cannot be. A stream that broke (CloseInfo::transport)
    // with an id can be resumed: take_resume_state() hands its state over.
    const std::string& resume_id() const { return sm_resume_id_; }
    ResumeState take_resume_state();
    // ack_after_forward: these received stanzas (StanzaRoute::sm_seq) left
    // the host (written onward, bounced or dropped); acknowledged now.
    void stanzas_done(const std::uint32_t* seqs, std::size_t n);
    // Close without a byte more (a dead connection the peer will resume):
    // reported as a transport failure.
    void abandon(std::string_view why);
    std::uint64_t stanzas_in() const { return stanzas_in_; }
    std::uint64_t stanzas_out() const { return stanzas_out_; }

    // Capture or replay (session_tap.h); nullptr (the default) costs one
    // branch per input.
    void set_tap(SessionTap* t) { tap_ = t; }
    SessionTap* tap() const { return tap_; }

    // Log context prefix ("s12 outer-in 127.0.0.1:40000").
    void set_log_context(std::string ctx) { log_ctx_ = std::move(ctx); }
    const std::string& log_context() const { return log_ctx_; }

private:
    enum class State : std::uint8_t {
        WaitHeader,   // waiting for the peer's stream header
        Negotiating,  // header exchanged, features sent/being processed
        WaitProceed,  // initiator sent <starttls/>
        TlsPending,   // transport is doing the TLS handshake
        WaitSasl,     // initiator sent <auth/>
        WaitDialback, // initiator sent <db:result/>
        Ready,        // authenticated (or verify-only ready)
        Closed,
    };
    enum class Restart : std::uint8_t { None, Tls, Sasl };

    // xml::ParserHandler
    bool on_stream_open(const xml::StreamHeader& hdr) override;
    bool on_element(const xml::Node& el) override;
    void on_stream_close() override;
    void on_parse_error(xml::ParseError err, std::string_view detail) override;

    void feed(const char* data, std::size_t len);
    void append(std::string_view s);
    void send_header();
    void send_features();
    void finish_restart(std::size_t trailing_len, const char* trailing, bool nonspace);

    // Receiver
    bool recv_header_receiver(const xml::StreamHeader& hdr);
    void recv_starttls();
    void recv_auth(const xml::Node& el);
    void recv_db_result_receiver(const xml::Node& el);
    bool external_possible(std::string_view domain) const;

    // Initiator
    bool recv_header_initiator(const xml::StreamHeader& hdr);
    void recv_features(const xml::Node& el);
    void recv_db_result_initiator(const xml::Node& el);
    bool recv_pair_answer(const xml::Node& el); // initiator: answer to request_pair()? then handled
    void start_auth();
    void start_dialback();
    void become_ready(AuthMethod m);
    void tls_policy_check_after_handshake();

    // Both
    void recv_db_verify(const xml::Node& el);
    void recv_stanza(const xml::Node& el);
    void recv_stream_error(const xml::Node& el);
    void recv_mux(const xml::Node& el);
    void recv_sm(const xml::Node& el);
    void sm_enable();             // initiator, when the peer offered it
    void sm_sent(std::size_t at); // the stanza from out_[at] on was just sent
    void sm_request();            // <r/>
    void sm_ack();                // <a h='…'/>
    void recv_resume(const xml::Node& el);   // receiver
    void recv_resumed(const xml::Node& el);  // initiator
    void enable_mux();                       // initiator: <enable/> of urn:s2smux:mux:0
    void adopt(ResumeState& st, std::uint32_t peer_h); // both: take over and send again what is unacked
    bool mux_possible() const;
    void add_pair_in(std::string_view from, std::string_view to, AuthMethod m);
    void add_pair_out(std::string_view from, std::string_view to, AuthMethod m);
    void fail(StreamError cond, std::string_view text, StanzaError bounce = StanzaError::RemoteServerTimeout);
    void fail_quiet(std::string_view reason, StanzaError bounce); // initiator: close without blaming the peer
    void finish_close(CloseInfo info);
    std::string_view lower(std::string_view d, std::string& scratch) const;

    SessionConfig cfg_;
    SessionHost& host_;
    const DialbackKeys& keys_;
    xml::StreamParser parser_;
    State state_ = State::WaitHeader;
    Restart restart_ = Restart::None;
    TimeMs now_ = 0;
    TimeMs deadline_ = kNever;
    TimeMs last_in_ = 0, last_out_ = 0; // keepalive and dead-peer checks
    bool alive_checks() const;
    bool cert_reset_applies() const;

    std::string out_;
    TlsState tls_;
    std::string stream_id_;      // our id (receiver) for this stream generation
    std::string peer_stream_id_; // the receiving server's id (initiator)
    std::string local_domain_, remote_domain_;
    bool header_sent_ = false;
    bool sasl_done_ = false;
    bool external_offered_ = false;  // receiver: offered in the last features
    bool bidi_offered_ = false;      // receiver
    bool bidi_ = false;
    bool peer_dialback_errors_ = false;
    bool peer_declares_db_ = false;   // initiator: header declared xmlns:db
    bool mux_offered_ = false;        // receiver: <mux/> in the last features
    bool sm_offered_ = false;         // receiver: we offered <sm/>; initiator: the peer did
    StreamMgmt sm_;
    std::uint32_t sm_acked_h_ = 0;    // the h of our last <a/>
    // ack_after_forward: received stanzas from hold_base_ on, done or not.
    std::deque<bool> hold_;
    std::uint32_t hold_base_ = 1;
    std::uint32_t hold_push();        // a new stanza: its number
    std::uint32_t reported_h() const { return hold_.empty() ? sm_.h_in() : hold_base_ - 1; }
    std::string sm_resume_id_;        // resumable under this id
    bool resuming_ = false;           // initiator: <resume/> sent, waiting for the answer
    bool features_mux_ = false;       // initiator: the post-SASL features offered <mux/>
    TimeMs sm_due_ = kNever;          // when to send <r/> for the stanzas sent since the last one
    bool mux_enabled_ = false;
    MuxHandler* mux_ = nullptr;
    bool dialback_offered_ = false;   // initiator: last features offered dialback
    bool sent_close_ = false;
    bool drain_in_ = false;           // see reading_after_close()
    std::string external_tried_for_; // initiator: EXTERNAL failed for this domain
    std::string bidi_out_after_restart_; // receiver: reverse direction once the SASL restart is done

    DomainPairSet in_;         // (from remote, to local)
    DomainPairSet out_pairs_;  // (from local, to remote)
    DomainPairSet pending_db_; // receiver: awaiting the authoritative server
    DomainPairSet requested_;  // initiator: piggybacked <db:result/> awaiting the answer

    std::string scratch_from_, scratch_to_;
    std::string scratch_reason_; // replay: the recorded mux refusal reason
    SessionTap* tap_ = nullptr;
    int depth_ = 0; // calls into the session in progress (a tap tells nested ones)
    struct TapCall;
    std::string answer(std::string_view query, std::initializer_list<std::string_view> args, std::string a) {
        return tap_ ? tap_->tap_answer(query, args, std::move(a)) : a;
    }
    bool answer(std::string_view query, std::initializer_list<std::string_view> args, bool a) {
        return tap_ ? tap_->tap_answer(query, args, a ? "1" : "0") == "1" : a;
    }
    void callback(std::string_view name, std::initializer_list<std::string_view> args = {}) {
        if (tap_) tap_->tap_callback(name, args);
    }
    std::uint64_t stanzas_in_ = 0;
    std::uint64_t stanzas_out_ = 0;
    std::string log_ctx_;
};

} // namespace s2smux::xmpp
