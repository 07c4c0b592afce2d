#include "xmpp/session.h"

#include "common/base64.h"
#include "common/log.h"
#include "xml/writer.h"
#include "xmpp/jid.h"
#include "xmpp/ns.h"

#include <fmt/format.h>

#include <algorithm>
#include <optional>

namespace s2smux::xmpp {

namespace {

StreamError stream_error_for(xml::ParseError e) {
    switch (e) {
    case xml::ParseError::RestrictedXml: return StreamError::RestrictedXml;
    case xml::ParseError::PolicyViolation: return StreamError::PolicyViolation;
    case xml::ParseError::InvalidNamespace: return StreamError::InvalidNamespace;
    case xml::ParseError::BadFormat: return StreamError::BadFormat;
    case xml::ParseError::NotWellFormed:
    case xml::ParseError::None: break;
    }
    return StreamError::NotWellFormed;
}

bool has_mechanism(const xml::Node* mechs, std::string_view name) {
    if (!mechs) return false;
    for (const xml::Node* m = mechs->first; m; m = m->next)
        if (m->is(ns::kSasl, "mechanism") && m->text_content() == name) return true;
    return false;
}

// First child element in `ns_` other than <text/>: the condition of an error.
std::string_view condition_of(const xml::Node* el, std::string_view ns_) {
    if (!el) return {};
    for (const xml::Node* c = el->first; c; c = c->next)
        if (c->kind == xml::Node::Kind::Element && c->ns == ns_ && c->name != "text") return c->name;
    return {};
}

std::string text_of(const xml::Node* el, std::string_view ns_) {
    if (!el) return {};
    const xml::Node* t = el->child(ns_, "text");
    return t ? t->text_content() : std::string();
}

// "dialback error COND: TEXT" for a <db:result type='error'/>; `cond` gets COND.
std::string dialback_error(const xml::Node& el, std::string& cond) {
    const xml::Node* err = el.child(ns::kServer, "error");
    if (!err) err = el.child_in(ns::kDialback);
    cond = std::string(condition_of(err, ns::kStanzas));
    std::string text = text_of(err, ns::kStanzas);
    return fmt::format("dialback error {}{}{}", cond.empty() ? "(none)" : cond, text.empty() ? "" : ": ", text);
}

bool version_ok(std::string_view v) { return v.size() >= 2 && v[0] == '1' && v[1] == '.'; }

} // namespace

const char* to_string(AuthMethod m) {
    switch (m) {
    case AuthMethod::SaslExternal: return "SASL EXTERNAL";
    case AuthMethod::Dialback: return "dialback";
    case AuthMethod::DialbackCert: return "dialback+certificate";
    case AuthMethod::DialbackTrusted: return "dialback (trusted local server)";
    case AuthMethod::Bidi: return "bidi";
    }
    return "?";
}

bool PeerCert::valid_for(std::string_view domain) const {
    return present && trusted && tls::matches_domain(identity, domain);
}

std::string PeerCert::describe() const {
    if (!present) return "no certificate";
    std::string names;
    for (const auto& n : identity.names()) {
        if (!names.empty()) names += ", ";
        names += n;
    }
    return fmt::format("subject {}; names {}; {}", identity.subject, names.empty() ? "(none)" : names,
                       trusted ? "trusted" : "NOT trusted: " + error);
}

Session::Session(SessionConfig cfg, SessionHost& host, const DialbackKeys& keys)
    : cfg_(std::move(cfg)), host_(host), keys_(keys), parser_(*this, cfg_.limits) {
    if (cfg_.role == Role::Initiator) {
        local_domain_ = cfg_.from;
        remote_domain_ = cfg_.to;
    }
    if (cfg_.tls_policy == TlsPolicy::Disabled) cfg_.tls_possible = false;
}

Session::~Session() = default;

// A call into the session: recorded when tapped; nesting is tracked so that
// a tap can tell the host's own calls from those made inside a callback.
struct Session::TapCall {
    Session& s;
    explicit TapCall(Session& self) : s(self) { ++s.depth_; }
    TapCall(Session& self, std::string_view name, std::initializer_list<std::string_view> args) : s(self) {
        if (s.tap_) s.tap_->tap_call(name, args, s.now_, s.depth_ > 0);
        ++s.depth_;
    }
    ~TapCall() { --s.depth_; }
    TapCall(const TapCall&) = delete;
    TapCall& operator=(const TapCall&) = delete;
};

void Session::set_limits(const xml::Limits& l) {
    TapCall c(*this, "limits",
              {std::to_string(l.max_stanza_bytes), std::to_string(l.max_header_bytes), std::to_string(l.max_depth),
               std::to_string(l.max_attrs), std::to_string(l.max_attr_value)});
    cfg_.limits = l;
    parser_.set_limits(l);
}

// ---------------------------------------------------------------- output

void Session::append(std::string_view s) {
    bool was_empty = out_.empty();
    out_.append(s);
    last_out_ = now_;
    if (tap_) tap_->tap_out(s);
    if (was_empty && !out_.empty()) host_.session_wants_write();
}

void Session::send_header() {
    std::string h;
    h.reserve(256);
    h += "<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
         "xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback'";
    auto attr = [&](std::string_view name, std::string_view v) {
        if (v.empty()) return;
        h += ' ';
        h += name;
        h += "='";
        xml::escape_attr(h, v);
        h += '\'';
    };
    if (cfg_.role == Role::Receiver) {
        attr("id", stream_id_);
        attr("from", local_domain_);
        attr("to", remote_domain_);
    } else {
        attr("from", cfg_.from);
        attr("to", cfg_.to);
    }
    h += " version='1.0' xml:lang='en'>";
    append(h);
    header_sent_ = true;
}

void Session::send_features() {
    std::string f;
    xml::Writer w(f);
    w.open("stream:features");
    bool starttls = !tls_.active && cfg_.tls_possible && cfg_.tls_policy != TlsPolicy::Disabled;
    if (starttls) {
        w.open("starttls").xmlns(ns::kTls);
        if (cfg_.tls_policy == TlsPolicy::Required) w.open("required").close();
        w.close();
    }
    // Under a "required" policy nothing but STARTTLS is offered in plaintext.
    bool auth_allowed = tls_.active || cfg_.tls_policy != TlsPolicy::Required;
    external_offered_ = false;
    if (auth_allowed && !sasl_done_ && cfg_.offer_external && external_possible(remote_domain_)) {
        w.open("mechanisms").xmlns(ns::kSasl).open("mechanism").text("EXTERNAL").close().close();
        external_offered_ = true;
    }
    if (auth_allowed && cfg_.offer_dialback)
        w.open("dialback").xmlns(ns::kDialbackFeature).open("errors").close().close();
    bidi_offered_ = false;
    if (auth_allowed && cfg_.offer_bidi && !bidi_ && !sasl_done_ && in_.empty()) {
        w.open("bidi").xmlns(ns::kBidiFeature).close();
        bidi_offered_ = true;
    }
    mux_offered_ = mux_possible() && !mux_enabled_;
    if (mux_offered_) w.open("mux").xmlns(ns::kMux).close();
    if (auth_allowed && cfg_.stream_mgmt && !sm_.in_active()) {
        w.open("sm").xmlns(ns::kSm).open("optional").close().close();
        sm_offered_ = true;
    }
    w.close();
    append(f);
}

void Session::send_stanza_raw(std::string_view serialized_stanza) {
    TapCall c(*this, "send-stanza", {serialized_stanza});
    ++stanzas_out_;
    const std::size_t at = out_.size();
    append(serialized_stanza);
    if (sm_.out_active()) sm_sent(at);
}

void Session::send_stanza(const xml::Node& el) {
    ++stanzas_out_;
    bool was_empty = out_.empty();
    const std::size_t at = out_.size();
    xml::serialize(out_, el);
    last_out_ = now_;
    if (tap_) { // recorded as the serialized stanza it became
        std::string_view part = std::string_view(out_).substr(at);
        tap_->tap_call("send-stanza", {part}, now_, depth_ > 0);
        tap_->tap_out(part);
    }
    if (was_empty) host_.session_wants_write();
    if (sm_.out_active()) sm_sent(at);
}

// Keeps a copy until the peer acknowledges it, and asks for acks in batches:
// every kAckEvery stanzas, or ack_delay_ms after the first unrequested one.
void Session::sm_sent(std::size_t at) {
    constexpr std::size_t kAckEvery = 100;
    sm_.sent(std::string_view(out_).substr(at));
    if (sm_.unacked_bytes() > cfg_.max_unacked_bytes) {
        fail(StreamError::ResourceConstraint,
             fmt::format("{} stanzas ({} bytes) sent and not acknowledged", sm_.unacked(), sm_.unacked_bytes()));
        return;
    }
    if (sm_.unrequested() >= kAckEvery) sm_request();
    else if (sm_due_ == kNever) sm_due_ = now_ + cfg_.ack_delay_ms;
}

void Session::sm_request() {
    append("<r xmlns='urn:xmpp:sm:3'/>");
    sm_.requested();
    sm_due_ = kNever;
}

void Session::send_raw(std::string_view serialized) {
    TapCall c(*this, "send-raw", {serialized});
    append(serialized);
}

// ----------------------------------------------------------------- input

void Session::start(TimeMs now) {
    now_ = now;
    TapCall c(*this, "start", {});
    last_in_ = last_out_ = now;
    deadline_ = now + cfg_.auth_timeout_ms;
    if (cfg_.role == Role::Initiator) send_header();
}

void Session::on_bytes(const char* data, std::size_t len, TimeMs now) {
    now_ = now;
    if (tap_) [[unlikely]]
        tap_->tap_in(std::string_view(data, len), now);
    TapCall c(*this);
    last_in_ = now;
    if ((state_ == State::Closed && !drain_in_) || state_ == State::TlsPending) return;
    feed(data, len);
    // Unrequested <a/> once per read that handled stanzas (XEP-0198 allows
    // it): the peer forgets them at once, so a crash here leaves it only the
    // last read's worth to send again (duplicates), not a whole <r/> window.
    if (sm_.in_active() && reported_h() != sm_acked_h_ && state_ != State::Closed && !sent_close_) sm_ack();
}

void Session::sm_ack() {
    const std::uint32_t h = reported_h();
    append(fmt::format("<a xmlns='urn:xmpp:sm:3' h='{}'/>", h));
    sm_acked_h_ = h;
}

std::uint32_t Session::hold_push() {
    if (!cfg_.ack_after_forward || !sm_.in_active()) return 0;
    hold_.push_back(false);
    return sm_.h_in();
}

void Session::stanzas_done(const std::uint32_t* seqs, std::size_t n) {
    std::string list; // for a capture only: the numbers, space-separated
    if (tap_) [[unlikely]]
        for (std::size_t i = 0; i < n; ++i) list += (i ? " " : "") + std::to_string(seqs[i]);
    TapCall c(*this, "stanzas-done", {list});
    for (std::size_t i = 0; i < n; ++i) {
        const std::uint32_t idx = seqs[i] - hold_base_; // wraps with the counter
        if (idx < hold_.size()) hold_[idx] = true;
    }
    while (!hold_.empty() && hold_.front()) {
        hold_.pop_front();
        ++hold_base_;
    }
    if (sm_.in_active() && reported_h() != sm_acked_h_ && state_ != State::Closed && !sent_close_) sm_ack();
}

void Session::feed(const char* data, std::size_t len) {
    if (state_ == State::Closed) { // reading after our close: no restarts any more
        if (drain_in_ && !parser_.feed(data, len).ok) drain_in_ = false;
        return;
    }
    while (len > 0 && state_ != State::Closed) {
        xml::FeedResult r = parser_.feed(data, len);
        if (!r.ok || !r.suspended || state_ == State::Closed) return;
        const char* tail = data + (len - r.trailing);
        Restart kind = restart_;
        restart_ = Restart::None;
        parser_.reset();
        if (kind == Restart::Tls) {
            // Anything after <starttls/> or <proceed/> in the same plaintext
            // read would be interpreted inside TLS: refuse it (STARTTLS
            // command injection).
            if (r.trailing_nonspace) {
                fail(StreamError::PolicyViolation, "data received after STARTTLS negotiation");
                return;
            }
            state_ = State::TlsPending;
            header_sent_ = false; // the stream inside TLS is a new one: a stream error must open it first
            callback("start-tls");
            host_.session_start_tls();
            return;
        }
        if (kind == Restart::Sasl) {
            state_ = State::WaitHeader;
            header_sent_ = false; // likewise for the stream after SASL
            if (cfg_.role == Role::Initiator) send_header();
        }
        data = tail;
        len = r.trailing;
    }
}

void Session::on_tls_established(TlsState st, TimeMs now) {
    now_ = now;
    if (tap_) tap_->tap_tls(st, now, depth_ > 0);
    TapCall c(*this);
    if (state_ == State::Closed) return;
    bool direct = state_ != State::TlsPending; // direct TLS: before start()
    tls_ = std::move(st);
    tls_.active = true;
    log::info(log_ctx_, "TLS established ({}, {}); peer certificate: {}", tls_.version, tls_.cipher,
              tls_.peer.describe());
    if (cfg_.role == Role::Initiator && cfg_.verify_peer && cfg_.tls_policy == TlsPolicy::Required &&
        !tls_.peer.valid_for(cfg_.to)) {
        std::string why = !tls_.peer.present ? "presented no certificate"
                          : !tls_.peer.trusted
                              ? fmt::format("certificate is not trusted: {}", tls_.peer.error)
                              : fmt::format("certificate is not valid for {} ({})", cfg_.to,
                                            tls_.peer.describe());
        fail_quiet(fmt::format("{}: {} (TLS policy 'required')", cfg_.to, why),
                   StanzaError::RemoteServerTimeout);
        return;
    }
    state_ = State::WaitHeader;
    if (cfg_.role == Role::Initiator && !direct) send_header();
}

void Session::on_transport_closed(std::string_view why) {
    TapCall c(*this, "eof", {why});
    if (state_ == State::Closed) return;
    CloseInfo info;
    info.by_peer = true;
    info.error = true;
    info.reason = fmt::format("connection closed: {}", why);
    info.transport = true;
    finish_close(std::move(info));
}

// An open, authenticated stream both ways (not mid-restart): whitespace
// may be written between elements, and silence from the peer means something.
bool Session::alive_checks() const {
    return header_sent_ && !sent_close_ && restart_ == Restart::None && state_ != State::Closed &&
           state_ != State::WaitHeader && state_ != State::TlsPending && (!in_.empty() || !out_pairs_.empty());
}

// A standard stream whose peer was authenticated by its certificate (a
// multiplexed one removes expired certificates itself, name by name).
bool Session::cert_reset_applies() const {
    return state_ != State::Closed && !mux_enabled_ && tls_.peer.trusted && tls_.peer_expires_at != kNever &&
           (sasl_done_ || bidi_);
}

TimeMs Session::next_deadline() const {
    TimeMs d = deadline_;
    if (mux_ && state_ != State::Closed) d = std::min(d, mux_->mux_deadline());
    if (state_ != State::Closed && !sent_close_) d = std::min(d, sm_due_);
    if (cert_reset_applies()) d = std::min(d, tls_.peer_expires_at);
    if (alive_checks()) {
        if (cfg_.keepalive_ms) d = std::min(d, last_out_ + cfg_.keepalive_ms);
        if (cfg_.dead_peer_ms && mux_enabled_) d = std::min(d, last_in_ + cfg_.dead_peer_ms);
    }
    return d;
}

void Session::on_timer(TimeMs now) {
    now_ = now;
    TapCall c(*this, "timer", {});
    if (state_ == State::Closed) return;
    if (mux_ && answer("mux-due", {}, now >= mux_->mux_deadline())) {
        callback("mux-timer");
        mux_->mux_timer(now);
    }
    if (cert_reset_applies() && now >= tls_.peer_expires_at) {
        // RFC 6120 §13.7.2.3: the certificate this stream was authenticated
        // with is no longer valid. Its stanzas go on a new stream (which
        // needs a valid one).
        fail(StreamError::Reset, fmt::format("the peer's certificate ({}) expired", tls_.peer.identity.subject));
        return;
    }
    if (state_ != State::Closed && !sent_close_ && answer("sm-due", {}, now >= sm_due_)) {
        if (sm_.unacked()) sm_request();
        else sm_due_ = kNever; // acknowledged unasked meanwhile
    }
    if (state_ != State::Closed && alive_checks()) {
        if (cfg_.dead_peer_ms && mux_enabled_ && now - last_in_ >= cfg_.dead_peer_ms) {
            std::string why = fmt::format("nothing received from the peer in {} s", (now - last_in_) / 1000);
            // A resumable stream ends without a word: a stream error would
            // end the session the peer is about to resume.
            if (!sm_resume_id_.empty()) abandon(why);
            else fail(StreamError::ConnectionTimeout, why);
            return;
        }
        if (cfg_.keepalive_ms && now - last_out_ >= cfg_.keepalive_ms) append(" ");
    }
    if (state_ == State::Closed || now < deadline_) return;
    deadline_ = kNever;
    auto secs = cfg_.auth_timeout_ms / 1000;
    if (cfg_.role == Role::Receiver) {
        fail(StreamError::ConnectionTimeout, fmt::format("not authenticated within {} s", secs));
    } else {
        fail_quiet(fmt::format("{}: no authenticated stream within {} s", cfg_.to, secs),
                   StanzaError::RemoteServerTimeout);
    }
}

// ------------------------------------------------------- parser handler

bool Session::on_stream_open(const xml::StreamHeader& hdr) {
    if (state_ != State::WaitHeader) {
        fail(StreamError::InvalidXml, "unexpected stream header");
        return false;
    }
    // Checks common to both roles. The receiver sends its own header first
    // (fail() does), as RFC 6120 §4.9.1.2 asks before a stream error.
    if (hdr.default_ns != ns::kServer) {
        fail(StreamError::InvalidNamespace,
             fmt::format("default namespace must be jabber:server, not '{}'", hdr.default_ns));
        return false;
    }
    if (!version_ok(hdr.version)) {
        fail(StreamError::UnsupportedVersion,
             fmt::format("stream version '{}' not supported (1.0 required)", hdr.version));
        return false;
    }
    bool ok = cfg_.role == Role::Receiver ? recv_header_receiver(hdr) : recv_header_initiator(hdr);
    return ok && state_ != State::Closed;
}

bool Session::recv_header_receiver(const xml::StreamHeader& hdr) {
    std::string to = lowercase_domain(hdr.to);
    if (to.empty() || !valid_domain(to) || !answer("hosts", {to}, host_.session_hosts(to))) {
        fail(StreamError::HostUnknown,
             hdr.to.empty() ? std::string("stream header has no 'to'")
                            : fmt::format("'{}' is not served here", hdr.to));
        return false;
    }
    if (!hdr.from.empty() && !valid_domain(hdr.from)) {
        local_domain_ = to;
        fail(StreamError::InvalidFrom, fmt::format("invalid 'from' in stream header: '{}'", hdr.from));
        return false;
    }
    local_domain_ = to;
    if (!hdr.from.empty()) remote_domain_ = lowercase_domain(hdr.from);
    stream_id_ = answer("stream-id", {}, random_stream_id());
    send_header();
    send_features();
    state_ = State::Negotiating;
    if (!bidi_out_after_restart_.empty()) {
        std::string d = std::move(bidi_out_after_restart_);
        bidi_out_after_restart_.clear();
        add_pair_out(local_domain_, d, AuthMethod::Bidi);
    }
    return true;
}

bool Session::recv_header_initiator(const xml::StreamHeader& hdr) {
    peer_stream_id_ = std::string(hdr.id);
    peer_declares_db_ = hdr.declares_dialback;
    state_ = State::Negotiating;
    return true;
}

bool Session::on_element(const xml::Node& el) {
    if (state_ == State::Closed) {
        // We closed first (RFC 6120 §4.4): what the peer sent before it saw
        // our end is still delivered; anything else is not answered any more.
        if (drain_in_ && el.ns == ns::kServer && (el.name == "message" || el.name == "presence" || el.name == "iq"))
            recv_stanza(el);
        return drain_in_;
    }
    if (el.ns == ns::kStream) {
        if (el.name == "error") {
            recv_stream_error(el);
        } else if (el.name == "features" && cfg_.role == Role::Initiator) {
            recv_features(el);
        } else {
            fail(StreamError::UnsupportedStanzaType, fmt::format("unexpected <stream:{}/>", el.name));
        }
    } else if (el.ns == ns::kServer &&
               (el.name == "message" || el.name == "presence" || el.name == "iq")) {
        recv_stanza(el);
    } else if (el.ns == ns::kDialback) {
        if (el.name == "result") {
            if (cfg_.role == Role::Receiver) recv_db_result_receiver(el);
            else recv_db_result_initiator(el);
        } else if (el.name == "verify") {
            recv_db_verify(el);
        } else {
            fail(StreamError::UnsupportedStanzaType, fmt::format("unknown dialback element <{}/>", el.name));
        }
    } else if (el.ns == ns::kTls) {
        if (cfg_.role == Role::Receiver && el.name == "starttls") {
            recv_starttls();
        } else if (cfg_.role == Role::Initiator && state_ == State::WaitProceed && el.name == "proceed") {
            restart_ = Restart::Tls;
            return false;
        } else if (cfg_.role == Role::Initiator && state_ == State::WaitProceed && el.name == "failure") {
            fail_quiet(fmt::format("{}: STARTTLS refused by the peer", cfg_.to), StanzaError::RemoteServerTimeout);
        } else {
            fail(StreamError::PolicyViolation, fmt::format("unexpected TLS element <{}/>", el.name));
        }
    } else if (el.ns == ns::kSasl) {
        if (cfg_.role == Role::Receiver && el.name == "auth") {
            recv_auth(el);
        } else if (cfg_.role == Role::Receiver && el.name == "abort") {
            append("<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><aborted/></failure>");
        } else if (cfg_.role == Role::Initiator && state_ == State::WaitSasl && el.name == "success") {
            sasl_done_ = true;
            log::info(log_ctx_, "SASL EXTERNAL succeeded as {}", cfg_.from);
            restart_ = Restart::Sasl;
            return false;
        } else if (cfg_.role == Role::Initiator && state_ == State::WaitSasl && el.name == "failure") {
            std::string cond(condition_of(&el, ns::kSasl));
            std::string text = text_of(&el, ns::kSasl);
            external_tried_for_ = cfg_.from;
            log::info(log_ctx_, "SASL EXTERNAL refused by {}: {}{}{}", cfg_.to, cond, text.empty() ? "" : ": ", text);
            if (dialback_offered_ && cfg_.use_dialback) {
                start_dialback();
            } else {
                fail_quiet(fmt::format("{}: SASL EXTERNAL refused ({}) and no dialback offered", cfg_.to, cond),
                           StanzaError::RemoteServerTimeout);
            }
        } else {
            fail(StreamError::PolicyViolation, fmt::format("unexpected SASL element <{}/>", el.name));
        }
    } else if (el.ns == ns::kMux) {
        recv_mux(el);
    } else if (el.ns == ns::kSm) {
        recv_sm(el);
    } else if ((el.ns == ns::kBidi || el.ns == ns::kBidiFeature) && el.name == "bidi" &&
               cfg_.role == Role::Receiver) {
        if (!bidi_offered_) {
            fail(StreamError::PolicyViolation, "bidi requested but not offered");
        } else {
            bidi_ = true;
            log::debug(log_ctx_, "bidi enabled by the peer");
        }
    } else {
        fail(StreamError::UnsupportedStanzaType,
             fmt::format("unsupported element <{}/> in namespace '{}'", el.name, el.ns));
    }
    return state_ != State::Closed && restart_ == Restart::None;
}

void Session::on_stream_close() {
    if (state_ == State::Closed) {
        if (drain_in_) log::debug(log_ctx_, "the peer closed its stream too");
        drain_in_ = false;
        return;
    }
    CloseInfo info;
    info.by_peer = true;
    if (cfg_.role == Role::Initiator && state_ != State::Ready) {
        info.error = true;
        info.reason = state_ == State::WaitSasl
                          ? fmt::format("{} closed the stream in answer to SASL EXTERNAL", cfg_.to)
                          : fmt::format("{} closed the stream before authentication", cfg_.to);
    } else {
        info.reason = "stream closed by the peer";
    }
    if (!sent_close_) {
        if (sm_.in_active()) sm_ack();
        append("</stream:stream>");
        sent_close_ = true;
    }
    finish_close(std::move(info));
}

void Session::on_parse_error(xml::ParseError err, std::string_view detail) {
    drain_in_ = false;
    fail(stream_error_for(err), detail);
}

// -------------------------------------------------------------- receiver

bool Session::external_possible(std::string_view domain) const {
    if (!tls_.active || !tls_.peer.present || !tls_.peer.trusted) return false;
    return domain.empty() || tls_.peer.valid_for(domain);
}

void Session::recv_starttls() {
    if (tls_.active || !cfg_.tls_possible || state_ != State::Negotiating) {
        append("<failure xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
        fail_quiet("STARTTLS requested but not offered", StanzaError::RemoteServerTimeout);
        return;
    }
    append("<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
    restart_ = Restart::Tls;
}

void Session::recv_auth(const xml::Node& el) {
    auto failure = [&](std::string_view cond, std::string_view text) {
        std::string f;
        xml::Writer w(f);
        w.open("failure").xmlns(ns::kSasl).open(cond).close();
        if (!text.empty()) w.open("text").attr("xml:lang", "en").text(text).close();
        w.close();
        append(f);
        log::info(log_ctx_, "SASL EXTERNAL refused: {} {}", cond, text);
    };
    if (sasl_done_) return failure("not-authorized", "already authenticated");
    if (el.attr("mechanism") != "EXTERNAL") return failure("invalid-mechanism", "");
    if (!external_offered_) return failure("not-authorized", "EXTERNAL was not offered");
    std::string authzid;
    std::string payload = el.text_content();
    if (payload != "=" && !payload.empty() && !base64_decode(authzid, payload))
        return failure("incorrect-encoding", "");
    std::string domain = authzid.empty() ? remote_domain_ : lowercase_domain(authzid);
    if (domain.empty()) return failure("not-authorized", "no identity: no 'from' and no authzid");
    if (!remote_domain_.empty() && domain != remote_domain_)
        return failure("invalid-authzid", "authzid differs from the stream's 'from'");
    if (!valid_domain(domain)) return failure("invalid-authzid", "");
    if (!tls_.peer.valid_for(domain))
        return failure("not-authorized", fmt::format("certificate not valid for {}", domain));
    append("<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>");
    sasl_done_ = true;
    remote_domain_ = domain;
    add_pair_in(domain, local_domain_, AuthMethod::SaslExternal);
    // The reverse direction opens only once the initiator has restarted the
    // stream: anything we sent between <success/> and its new header would
    // be parsed as part of the old stream and rejected.
    if (bidi_) bidi_out_after_restart_ = domain;
    restart_ = Restart::Sasl;
}

void Session::recv_db_result_receiver(const xml::Node& el) {
    if (el.has_attr("type")) {
        log::debug(log_ctx_, "ignoring <db:result type='{}'/> on an incoming stream", el.attr("type"));
        return;
    }
    std::string from = lowercase_domain(el.attr("from"));
    std::string to = lowercase_domain(el.attr("to"));
    if (from.empty() || to.empty()) {
        fail(StreamError::ImproperAddressing, "<db:result/> without 'from' or 'to'");
        return;
    }
    if (!valid_domain(from)) {
        fail(StreamError::InvalidFrom, fmt::format("invalid dialback 'from' '{}'", from));
        return;
    }
    if (!valid_domain(to) || !answer("hosts", {to}, host_.session_hosts(to))) {
        fail(StreamError::HostUnknown, fmt::format("'{}' is not served here", to));
        return;
    }
    if (!cfg_.offer_dialback) {
        fail(StreamError::UnsupportedFeature, "dialback is not offered on this stream");
        return;
    }
    if (cfg_.tls_policy == TlsPolicy::Required && !tls_.active) {
        fail(StreamError::PolicyViolation, "TLS is required before dialback");
        return;
    }
    std::string key = el.text_content();
    auto answer = [&](std::string_view type) {
        std::string r;
        xml::Writer(r).open("db:result").attr("from", to).attr("to", from).attr("type", type).close();
        append(r);
    };
    if (in_.count(std::pair<std::string_view, std::string_view>(from, to))) {
        answer("valid");
        return;
    }
    if (pending_db_.count(std::pair<std::string_view, std::string_view>(from, to))) return;
    if (tls_.peer.valid_for(from)) {
        answer("valid");
        add_pair_in(from, to, AuthMethod::DialbackCert);
        if (bidi_) add_pair_out(to, from, AuthMethod::Bidi);
        return;
    }
    if (key.empty()) {
        answer("invalid");
        log::warn(log_ctx_, "dialback from {} to {} refused: empty key", from, to);
        return;
    }
    pending_db_.emplace(from, to);
    DialbackVerdict v = host_.session_dialback_request(DialbackRequest{from, to, key, stream_id_});
    if (tap_) {
        static constexpr std::string_view kVerdicts[] = {"valid", "invalid", "pending"};
        std::string a = tap_->tap_answer("dialback", {from, to}, std::string(kVerdicts[static_cast<int>(v)]));
        v = a == "valid" ? DialbackVerdict::Valid : a == "invalid" ? DialbackVerdict::Invalid : DialbackVerdict::Pending;
    }
    if (state_ == State::Closed) return;
    if (v == DialbackVerdict::Pending) return;
    if (auto it = pending_db_.find(std::pair<std::string_view, std::string_view>(from, to)); it != pending_db_.end())
        pending_db_.erase(it);
    if (v == DialbackVerdict::Valid) {
        answer("valid");
        add_pair_in(from, to, AuthMethod::DialbackTrusted);
    } else {
        answer("invalid");
        log::warn(log_ctx_, "dialback from {} to {} refused", from, to);
    }
}

void Session::dialback_result(std::string_view from, std::string_view to, bool valid,
                              std::string_view error, StanzaError cond) {
    TapCall c(*this, "dialback-result", {from, to, valid ? "valid" : "invalid", error, condition_name(cond)});
    if (state_ == State::Closed) return;
    auto it = pending_db_.find(std::pair<std::string_view, std::string_view>(from, to));
    if (it == pending_db_.end()) return;
    std::string f = it->first, t = it->second;
    pending_db_.erase(it);
    std::string r;
    xml::Writer w(r);
    if (!error.empty()) {
        w.open("db:result").attr("from", t).attr("to", f).attr("type", "error");
        w.open("error").attr("type", default_error_type(cond)).open(condition_name(cond)).xmlns(ns::kStanzas).close();
        w.open("text").xmlns(ns::kStanzas).attr("xml:lang", "en").text(error).close();
        w.close().close();
        append(r);
        log::warn(log_ctx_, "dialback from {} to {} could not be verified: {}", f, t, error);
        return;
    }
    w.open("db:result").attr("from", t).attr("to", f).attr("type", valid ? "valid" : "invalid").close();
    append(r);
    if (valid) {
        add_pair_in(f, t, AuthMethod::Dialback);
    } else {
        log::warn(log_ctx_, "dialback from {} to {} refused by the authoritative server", f, t);
    }
}

// ------------------------------------------------------------- initiator

void Session::recv_features(const xml::Node& el) {
    if (state_ != State::Negotiating) {
        fail(StreamError::InvalidXml, "unexpected <stream:features/>");
        return;
    }
    const xml::Node* starttls = el.child(ns::kTls, "starttls");
    const xml::Node* mechs = el.child(ns::kSasl, "mechanisms");
    const xml::Node* dialback = el.child(ns::kDialbackFeature, "dialback");
    bool bidi = el.child(ns::kBidiFeature, "bidi") || el.child(ns::kBidi, "bidi");
    dialback_offered_ = dialback != nullptr || peer_declares_db_;
    if (el.child(ns::kSm, "sm")) sm_offered_ = true;
    peer_dialback_errors_ = dialback && dialback->child(ns::kDialbackFeature, "errors");

    if (sasl_done_) {
        features_mux_ = el.child(ns::kMux, "mux") != nullptr;
        if (!cfg_.resume_previd.empty() && sm_offered_ && cfg_.stream_mgmt && features_mux_ && cfg_.want_mux &&
            mux_possible()) {
            // Ready once the peer answers (<resumed/>, or <failed/>: anew).
            std::string r;
            xml::Writer(r).open("resume").xmlns(ns::kSm).attr("previd", cfg_.resume_previd)
                .attr("h", std::to_string(cfg_.resume_h)).close();
            append(r);
            resuming_ = true;
            return;
        }
        enable_mux();
        if (state_ == State::Closed) return;
        become_ready(AuthMethod::SaslExternal);
        return;
    }
    if (!tls_.active) {
        if (starttls && cfg_.tls_possible) {
            append("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
            state_ = State::WaitProceed;
            return;
        }
        if (cfg_.tls_policy == TlsPolicy::Required) {
            fail_quiet(fmt::format("{}: {} (TLS policy 'required' forbids plaintext)", cfg_.to,
                                   starttls ? "TLS unavailable" : "the peer does not offer STARTTLS"),
                       StanzaError::RemoteServerTimeout);
            return;
        }
    }
    if (cfg_.verify_only) {
        state_ = State::Ready;
        deadline_ = kNever;
        callback("ready");
        host_.session_ready();
        return;
    }
    if (bidi && cfg_.want_bidi && tls_.active && tls_.peer.valid_for(cfg_.to)) {
        append("<bidi xmlns='urn:xmpp:bidi'/>");
        bidi_ = true;
    }
    bool external = has_mechanism(mechs, "EXTERNAL") && cfg_.use_external && tls_.active &&
                    external_tried_for_.empty() &&
                    answer("has-cert", {cfg_.from}, host_.session_has_cert(cfg_.from));
    if (external) {
        std::string a = "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>";
        base64_encode(a, cfg_.from);
        a += "</auth>";
        append(a);
        state_ = State::WaitSasl;
        return;
    }
    if (dialback_offered_ && cfg_.use_dialback) {
        start_dialback();
        return;
    }
    fail_quiet(fmt::format("{}: no usable authentication method (SASL EXTERNAL {}, dialback {})", cfg_.to,
                           has_mechanism(mechs, "EXTERNAL") ? "not possible" : "not offered",
                           dialback_offered_ ? "disabled" : "not offered"),
               StanzaError::RemoteServerTimeout);
}

void Session::start_dialback() {
    std::string key = answer("db-key", {cfg_.to, cfg_.from, peer_stream_id_},
                             keys_.generate(cfg_.to, cfg_.from, peer_stream_id_));
    std::string r;
    xml::Writer(r).open("db:result").attr("from", cfg_.from).attr("to", cfg_.to).text(key).close();
    append(r);
    state_ = State::WaitDialback;
}

bool Session::request_pair(std::string_view from, std::string_view to) {
    TapCall c(*this, "request-pair", {from, to});
    std::pair<std::string_view, std::string_view> k(from, to);
    if (cfg_.role != Role::Initiator || state_ != State::Ready || cfg_.verify_only || mux_enabled_ ||
        !cfg_.use_dialback || out_pairs_.count(k))
        return false;
    if (requested_.count(k)) return true; // the answer is on its way
    // The same key as for the stream's own pair (XEP-0185), with this pair's
    // names: the authoritative server verifies it the same way.
    std::string key = answer("db-key", {to, from, peer_stream_id_}, keys_.generate(to, from, peer_stream_id_));
    std::string r;
    xml::Writer(r).open("db:result").attr("from", from).attr("to", to).text(key).close();
    append(r);
    requested_.emplace(std::string(from), std::string(to));
    log::debug(log_ctx_, "requested {} -> {} on this stream (dialback piggybacking)", from, to);
    return true;
}

bool Session::has_from(std::string_view from) const {
    auto has = [&](const DomainPairSet& set) {
        auto it = set.lower_bound(std::pair<std::string_view, std::string_view>(from, ""));
        return it != set.end() && it->first == from;
    };
    return has(out_pairs_) || has(requested_);
}

bool Session::recv_pair_answer(const xml::Node& el) {
    if (requested_.empty()) return false;
    // The answer comes from the receiving domain to the originating one.
    std::string from = lowercase_domain(el.attr("from"));
    std::string to = lowercase_domain(el.attr("to"));
    auto it = requested_.find(std::pair<std::string_view, std::string_view>(to, from));
    if (it == requested_.end()) return false;
    DomainPair p = *it;
    requested_.erase(it);
    std::string_view type = el.attr("type");
    if (type == "valid") {
        add_pair_out(p.first, p.second, AuthMethod::Dialback);
        return true;
    }
    std::string reason;
    if (type == "error") {
        std::string cond;
        reason = dialback_error(el, cond);
    } else {
        reason = fmt::format("dialback key rejected ({})", type.empty() ? "no type" : type);
    }
    log::warn(log_ctx_, "{} -> {} refused on this stream: {}", p.first, p.second, reason);
    callback("pair-refused", {p.first, p.second, reason});
    host_.session_pair_refused(p.first, p.second, type == "error", reason);
    return true;
}

void Session::recv_db_result_initiator(const xml::Node& el) {
    if (state_ == State::Ready && recv_pair_answer(el)) return;
    std::string_view type = el.attr("type");
    std::string from = lowercase_domain(el.attr("from"));
    std::string to = lowercase_domain(el.attr("to"));
    if (state_ != State::WaitDialback || from != cfg_.to || (!to.empty() && to != cfg_.from)) {
        log::debug(log_ctx_, "ignoring unexpected <db:result from='{}' to='{}' type='{}'/>", from, to, type);
        return;
    }
    if (type == "valid") {
        become_ready(AuthMethod::Dialback);
    } else if (type == "error") {
        std::string cond;
        std::string reason = dialback_error(el, cond);
        fail_quiet(fmt::format("{}: {}", cfg_.to, reason),
                   cond == "remote-server-not-found" ? StanzaError::RemoteServerNotFound
                                                     : StanzaError::RemoteServerTimeout);
    } else {
        fail_quiet(fmt::format("{}: dialback key for {} rejected ({})", cfg_.to, cfg_.from,
                               type.empty() ? "no type" : type),
                   StanzaError::RemoteServerTimeout);
    }
}

// Before reporting the stream ready, so the host sees a mux stream from the
// first moment it can route on it.
void Session::enable_mux() {
    if (!features_mux_ || !cfg_.want_mux || !mux_possible()) return;
    append("<enable xmlns='urn:s2smux:mux:0'/>");
    mux_enabled_ = true;
    log::info(log_ctx_, "multiplexing enabled (peer offered it)");
    callback("mux-enabled");
    host_.session_mux_enabled();
}

void Session::become_ready(AuthMethod m) {
    state_ = State::Ready;
    deadline_ = kNever;
    // Before the host learns the pair: its first stanza is already counted.
    sm_enable();
    add_pair_out(cfg_.from, cfg_.to, m);
    // Seed 003: the reverse direction only for a name authenticated by X.509.
    if (bidi_ && tls_.peer.valid_for(cfg_.to)) add_pair_in(cfg_.to, cfg_.from, AuthMethod::Bidi);
}

// ------------------------------------------------------------------ both

void Session::recv_db_verify(const xml::Node& el) {
    std::string_view type = el.attr("type");
    std::string from = lowercase_domain(el.attr("from"));
    std::string to = lowercase_domain(el.attr("to"));
    std::string_view id = el.attr("id");
    if (!type.empty()) {
        if (cfg_.role == Role::Initiator) {
            callback("verify-answer", {from, to, id, type});
            host_.session_verify_answer(from, to, id, type == "valid");
        }
        else log::debug(log_ctx_, "ignoring <db:verify type='{}'/> on an incoming stream", type);
        return;
    }
    if (from.empty() || to.empty() || id.empty()) {
        fail(StreamError::ImproperAddressing, "<db:verify/> without 'from', 'to' or 'id'");
        return;
    }
    // We are the authoritative server for `to` (the originating domain).
    bool valid = answer("hosts", {to}, host_.session_hosts(to)) &&
                 answer("db-key-valid", {from, to, id}, keys_.verify(from, to, id, el.text_content()));
    std::string r;
    xml::Writer(r).open("db:verify").attr("from", to).attr("to", from).attr("id", id)
        .attr("type", valid ? "valid" : "invalid").close();
    append(r);
    if (valid) log::info(log_ctx_, "dialback key of {} for {} confirmed", to, from);
    else log::warn(log_ctx_, "dialback key claimed for {} towards {} is NOT ours: answered invalid", to, from);
}

std::string_view Session::lower(std::string_view d, std::string& scratch) const {
    if (!needs_lowercase(d)) return d;
    scratch = lowercase_domain(d);
    return scratch;
}

void Session::recv_stanza(const xml::Node& el) {
    if (in_.empty()) {
        fail(StreamError::NotAuthorized, "stanza received before authentication");
        return;
    }
    // Handled from here on, whatever happens to it (delivered, refused,
    // bounced): the peer must not send it again.
    sm_.received();
    const std::uint32_t seq = hold_push();
    StanzaRoute r;
    r.head.name = el.name;
    r.head.from = el.attr("from");
    r.head.to = el.attr("to");
    r.head.id = el.attr("id");
    r.head.type = el.attr("type");
    if (r.head.from.empty() || r.head.to.empty()) {
        fail(StreamError::ImproperAddressing,
             fmt::format("<{}/> without '{}'", el.name, r.head.from.empty() ? "from" : "to"));
        return;
    }
    JidParts from, to;
    if (!parse_jid(r.head.from, from)) {
        fail(StreamError::InvalidFrom, fmt::format("malformed 'from' JID '{}'", r.head.from));
        return;
    }
    r.from_domain = lower(from.domain, scratch_from_);
    // A malformed 'to' is the host's to answer with <jid-malformed/>.
    r.to_domain = parse_jid(r.head.to, to) ? lower(to.domain, scratch_to_) : std::string_view();
    if (mux_enabled_ && mux_) {
        // On a multiplexed stream the accepted certificate sets decide; a
        // stanza that breaks the rule is refused, never delivered, and the
        // stream stays up (unless the handler is strict).
        const char* reason = nullptr;
        bool ok = mux_->mux_check_receive(r.from_domain, r.to_domain, &reason);
        if (tap_) {
            scratch_reason_ = tap_->tap_answer("mux-receive", {r.from_domain, r.to_domain},
                                               ok ? std::string() : std::string(reason ? reason : "?"));
            ok = scratch_reason_.empty();
            reason = scratch_reason_.c_str();
        }
        if (!ok) {
            callback("mux-refuse", {r.from_domain, r.to_domain, reason});
            mux_->mux_refuse(el, r, reason);
            if (seq) stanzas_done(&seq, 1);
            return;
        }
    } else if (r.to_domain.empty() || !can_receive(r.from_domain, r.to_domain)) {
        // in_ is ordered by origin domain: the first pair at or after
        // (from, "") tells whether `from` authenticated at all.
        auto it = in_.lower_bound(std::pair<std::string_view, std::string_view>(r.from_domain, ""));
        bool from_known = it != in_.end() && it->first == r.from_domain;
        if (!from_known) {
            fail(StreamError::InvalidFrom, fmt::format("'{}' is not authenticated on this stream", r.from_domain));
            return;
        }
        if (!r.to_domain.empty()) {
            fail(StreamError::ImproperAddressing,
                 fmt::format("'{}' may not send to '{}' on this stream", r.from_domain, r.to_domain));
            return;
        }
    }
    ++stanzas_in_;
    r.sm_seq = seq;
    callback("stanza", {r.from_domain, r.to_domain});
    r.raw = parser_.element_raw();
    host_.session_stanza(el, r);
}

bool Session::mux_possible() const {
    // Multiplexing needs a mutually X.509-authenticated TLS 1.3 stream with
    // bidi: the exporter binds add proofs to this session, and either side
    // may add domains at any time.
    bool want = cfg_.role == Role::Receiver ? cfg_.offer_mux : cfg_.want_mux;
    return want && tls_.active && tls_.tls13 && !tls_.exporter.empty() && bidi_ && sasl_done_ &&
           tls_.peer.valid_for(remote_domain_);
}

void Session::recv_mux(const xml::Node& el) {
    if (cfg_.role == Role::Receiver && el.name == "enable") {
        if (!mux_offered_ || mux_enabled_) {
            fail(StreamError::PolicyViolation, "multiplexing was not offered on this stream");
            return;
        }
        append("<enabled xmlns='urn:s2smux:mux:0'/>");
        mux_enabled_ = true;
        log::info(log_ctx_, "multiplexing enabled by the peer");
        callback("mux-enabled");
        host_.session_mux_enabled();
        return;
    }
    if (cfg_.role == Role::Initiator && el.name == "enabled" && mux_enabled_) return;
    if (!mux_enabled_ || !mux_) {
        fail(StreamError::PolicyViolation, fmt::format("<{}/> before multiplexing was enabled", el.name));
        return;
    }
    callback("mux-element", {el.name});
    mux_->mux_element(el, now_);
}

void Session::sm_enable() {
    if (!cfg_.stream_mgmt || !sm_offered_ || sm_.out_active() || cfg_.role != Role::Initiator) return;
    append(cfg_.resume_max_s && mux_enabled_ ? "<enable xmlns='urn:xmpp:sm:3' resume='true'/>"
                                             : "<enable xmlns='urn:xmpp:sm:3'/>");
    sm_.start_out();
    log::debug(log_ctx_, "stream management: enable sent");
}

namespace {

// XEP-0198 'h': a decimal uint32.
std::optional<std::uint32_t> parse_h(std::string_view hs) {
    std::uint64_t h = 0;
    if (hs.empty() || hs.size() > 10) return std::nullopt;
    for (char ch : hs) {
        if (ch < '0' || ch > '9') return std::nullopt;
        h = h * 10 + static_cast<unsigned>(ch - '0');
    }
    if (h > UINT32_MAX) return std::nullopt;
    return static_cast<std::uint32_t>(h);
}

// Resumption ids are ours (hex); anything else is not one of them.
bool plausible_id(std::string_view id) {
    if (id.empty() || id.size() > 64) return false;
    return std::all_of(id.begin(), id.end(), [](char c) {
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    });
}

constexpr std::string_view kSmFailedPrefix = "<failed xmlns='urn:xmpp:sm:3'><";
constexpr std::string_view kSmFailedSuffix = " xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>";

} // namespace

void Session::recv_sm(const xml::Node& el) {
    if (el.name == "r") {
        if (!sm_.in_active()) {
            fail(StreamError::UnsupportedStanzaType, "<r/> without stream management enabled");
            return;
        }
        sm_ack();
    } else if (el.name == "a") {
        std::string_view hs = el.attr("h");
        auto h = parse_h(hs);
        if (!h || !sm_.out_active()) {
            fail(StreamError::BadFormat, h ? "<a/> without stream management enabled"
                                           : fmt::format("<a/> with a bad 'h' ('{}')", hs));
            return;
        }
        if (!sm_.acked(*h)) {
            fail(StreamError::UndefinedCondition,
                 fmt::format("handled-count-too-high: h={} but {} stanzas sent", *h, sm_.out_count()));
            return;
        }
    } else if (el.name == "enable" && cfg_.role == Role::Receiver) {
        if (!sm_offered_ || sm_.in_active() || in_.empty()) {
            append(std::string(kSmFailedPrefix) + "unexpected-request" + std::string(kSmFailedSuffix));
            log::info(log_ctx_, "stream management refused: {}",
                      !sm_offered_ ? "not offered" : sm_.in_active() ? "already enabled" : "not authenticated");
            return;
        }
        std::string_view r = el.attr("resume");
        if ((r == "true" || r == "1") && cfg_.resume_max_s && mux_enabled_) {
            sm_resume_id_ = answer("sm-id", {}, random_stream_id());
            append(fmt::format("<enabled xmlns='urn:xmpp:sm:3' id='{}' resume='true' max='{}'/>", sm_resume_id_,
                               cfg_.resume_max_s));
        } else {
            append("<enabled xmlns='urn:xmpp:sm:3'/>");
        }
        sm_.start_in();
        sm_.start_out();
        log::info(log_ctx_, "stream management enabled by the peer{}", sm_resume_id_.empty() ? "" : " (resumable)");
    } else if (el.name == "enabled" && cfg_.role == Role::Initiator && sm_.out_active() && !sm_.in_active()) {
        sm_.start_in();
        std::string_view id = el.attr("id"), r = el.attr("resume");
        if ((r == "true" || r == "1") && plausible_id(id) && mux_enabled_ && cfg_.resume_max_s)
            sm_resume_id_ = std::string(id);
        log::info(log_ctx_, "stream management enabled{}", sm_resume_id_.empty() ? "" : " (resumable)");
    } else if (el.name == "failed" && cfg_.role == Role::Initiator && resuming_) {
        // The peer lost (or never had) the state: start over on this stream.
        resuming_ = false;
        log::info(log_ctx_, "resumption of {} refused by the peer ({}); multiplexing anew", cfg_.resume_previd,
                  condition_of(&el, ns::kStanzas));
        callback("resume-failed", {cfg_.resume_previd});
        host_.session_resume_failed(cfg_.resume_previd);
        if (state_ == State::Closed) return;
        enable_mux();
        if (state_ == State::Closed) return;
        become_ready(AuthMethod::SaslExternal);
    } else if (el.name == "failed" && cfg_.role == Role::Initiator && sm_.out_active() && !sm_.in_active()) {
        sm_.stop_out();
        sm_due_ = kNever;
        log::info(log_ctx_, "stream management refused by the peer");
    } else if (el.name == "resume" && cfg_.role == Role::Receiver) {
        recv_resume(el);
    } else if (el.name == "resumed" && cfg_.role == Role::Initiator && resuming_) {
        recv_resumed(el);
    } else {
        fail(StreamError::UnsupportedStanzaType, fmt::format("unexpected stream management element <{}/>", el.name));
    }
}

void Session::recv_resume(const xml::Node& el) {
    std::string_view previd = el.attr("previd");
    auto h = parse_h(el.attr("h"));
    // Only a peer authenticated by SASL EXTERNAL on a stream that could
    // multiplex may resume, and only before anything was enabled on it.
    if (!h || !plausible_id(previd) || !sasl_done_ || in_.empty() || !mux_offered_ || mux_enabled_ ||
        sm_.in_active() || !cfg_.stream_mgmt || !cfg_.resume_max_s) {
        append(std::string(kSmFailedPrefix) + "unexpected-request" + std::string(kSmFailedSuffix));
        log::info(log_ctx_, "resumption of '{}' refused: not possible on this stream", previd);
        return;
    }
    callback("resume", {previd});
    ResumeState* st = host_.session_resume(previd);
    if (!st) {
        append(std::string(kSmFailedPrefix) + "item-not-found" + std::string(kSmFailedSuffix));
        log::info(log_ctx_, "resumption of '{}' refused: unknown, expired, or not this peer's", previd);
        return;
    }
    if (!st->sm.acked(*h)) {
        fail(StreamError::UndefinedCondition,
             fmt::format("handled-count-too-high: h={} but {} stanzas sent", *h, st->sm.out_count()));
        return;
    }
    std::string r;
    xml::Writer(r).open("resumed").xmlns(ns::kSm).attr("previd", previd).attr("h", std::to_string(st->sm.h_in())).close();
    append(r);
    adopt(*st, *h);
}

void Session::recv_resumed(const xml::Node& el) {
    auto h = parse_h(el.attr("h"));
    if (!h || el.attr("previd") != cfg_.resume_previd) {
        fail(StreamError::BadFormat, "<resumed/> for another stream or without a valid 'h'");
        return;
    }
    resuming_ = false;
    callback("resumed", {cfg_.resume_previd});
    ResumeState* st = host_.session_resume(cfg_.resume_previd);
    if (!st) {
        fail_quiet(fmt::format("{}: resumed, but the state of {} is gone", cfg_.to, cfg_.resume_previd),
                   StanzaError::RemoteServerTimeout);
        return;
    }
    if (!st->sm.acked(*h)) {
        fail(StreamError::UndefinedCondition,
             fmt::format("handled-count-too-high: h={} but {} stanzas sent", *h, st->sm.out_count()));
        return;
    }
    adopt(*st, *h);
    if (state_ == State::Closed) return;
    become_ready(AuthMethod::SaslExternal);
}

void Session::adopt(ResumeState& st, std::uint32_t peer_h) {
    sm_ = std::move(st.sm);
    st.sm = StreamMgmt{};
    sm_resume_id_ = st.id;
    sm_acked_h_ = sm_.h_in();
    hold_.clear();
    hold_base_ = sm_.h_in() + 1;
    // Everything the peer did not get goes again, in order, before anything new.
    auto again = sm_.unacked_stanzas();
    for (std::string_view x : again) append(x);
    sm_due_ = again.empty() ? kNever : now_ + cfg_.ack_delay_ms;
    log::info(log_ctx_, "stream {} resumed: the peer had {} of our stanzas, {} sent again; multiplexing state kept",
              sm_resume_id_, peer_h, again.size());
    mux_enabled_ = true;
    host_.session_resumed();
}

ResumeState Session::take_resume_state() {
    ResumeState st;
    st.id = sm_resume_id_;
    st.sm = std::move(sm_);
    sm_ = StreamMgmt{};
    return st;
}

void Session::abandon(std::string_view why) {
    TapCall c(*this, "abandon", {why});
    if (state_ == State::Closed) return;
    log::warn(log_ctx_, "{}: connection dropped, the stream can be resumed", why);
    CloseInfo info;
    info.error = true;
    info.transport = true;
    info.reason = std::string(why);
    finish_close(std::move(info));
}

void Session::recv_stream_error(const xml::Node& el) {
    std::string cond(condition_of(&el, ns::kStreams));
    std::string text = text_of(&el, ns::kStreams);
    CloseInfo info;
    info.by_peer = true;
    info.error = true;
    info.reason = fmt::format("peer sent stream error <{}/>{}{}", cond.empty() ? "?" : cond,
                              text.empty() ? "" : ": ", text);
    if (cond == "host-unknown" || cond == "remote-connection-failed")
        info.bounce = StanzaError::RemoteServerNotFound;
    if (!sent_close_) {
        append("</stream:stream>");
        sent_close_ = true;
    }
    finish_close(std::move(info));
}

void Session::add_pair_in(std::string_view from, std::string_view to, AuthMethod m) {
    if (!in_.emplace(std::string(from), std::string(to)).second) return;
    if (cfg_.role == Role::Receiver) deadline_ = kNever;
    log::info(log_ctx_, "authenticated {} -> {} (incoming, {})", from, to, to_string(m));
    callback("authenticated", {from, to, "in", to_string(m)});
    host_.session_authenticated(from, to, true, m);
}

void Session::add_pair_out(std::string_view from, std::string_view to, AuthMethod m) {
    if (!out_pairs_.emplace(std::string(from), std::string(to)).second) return;
    log::info(log_ctx_, "authenticated {} -> {} (outgoing, {})", from, to, to_string(m));
    callback("authenticated", {from, to, "out", to_string(m)});
    host_.session_authenticated(from, to, false, m);
}

bool Session::can_send(std::string_view from_domain, std::string_view to_domain) const {
    if (state_ == State::Closed) return false;
    if (mux_enabled_ && mux_) return mux_->mux_send_allowed(from_domain, to_domain);
    return out_pairs_.count(std::pair<std::string_view, std::string_view>(from_domain, to_domain)) != 0;
}

bool Session::can_receive(std::string_view from_domain, std::string_view to_domain) const {
    return in_.count(std::pair<std::string_view, std::string_view>(from_domain, to_domain)) != 0;
}

void Session::send_db_verify(std::string_view from, std::string_view to, std::string_view id,
                             std::string_view key) {
    TapCall c(*this, "db-verify", {from, to, id, key});
    std::string r;
    xml::Writer(r).open("db:verify").attr("from", from).attr("to", to).attr("id", id).text(key).close();
    append(r);
}

// ----------------------------------------------------------------- close

void Session::fail(StreamError cond, std::string_view text, StanzaError bounce) {
    if (state_ == State::Closed) return;
    log::warn(log_ctx_, "stream error <{}/>: {}", condition_name(cond), text);
    if (!header_sent_ && cfg_.role == Role::Receiver) {
        if (stream_id_.empty()) stream_id_ = answer("stream-id", {}, random_stream_id());
        send_header();
    }
    // What we handled, first: the peer need not send it again elsewhere.
    if (sm_.in_active() && header_sent_ && !sent_close_) sm_ack();
    std::string e;
    write_stream_error(e, cond, text);
    e += "</stream:stream>";
    append(e);
    sent_close_ = true;
    CloseInfo info;
    info.error = true;
    info.reason = fmt::format("sent stream error <{}/>: {}", condition_name(cond), text);
    info.bounce = bounce;
    finish_close(std::move(info));
}

void Session::fail_quiet(std::string_view reason, StanzaError bounce) {
    if (state_ == State::Closed) return;
    log::warn(log_ctx_, "{}", reason);
    if (header_sent_ && !sent_close_) {
        append("</stream:stream>");
        sent_close_ = true;
    }
    CloseInfo info;
    info.error = true;
    info.reason = std::string(reason);
    info.bounce = bounce;
    finish_close(std::move(info));
}

void Session::close(StreamError cond, std::string_view text) {
    TapCall c(*this, "close", {condition_name(cond), text});
    fail(cond, text);
}

void Session::close() {
    TapCall c(*this, "close", {});
    if (state_ == State::Closed) return;
    if (header_sent_ && !sent_close_) {
        // The peer can forget what we handled before it sees the end.
        if (sm_.in_active()) sm_ack();
        append("</stream:stream>");
        // Stanzas already on their way are still read and delivered until the
        // peer closes too, unless stream management has the peer send again
        // what we did not acknowledge (handling them here would duplicate them).
        // Not on a multiplexed stream either: refusing a stanza there means
        // answering it, and nothing may follow our </stream:stream>.
        drain_in_ = !sm_.in_active() && !mux_enabled_ && !in_.empty() && restart_ == Restart::None;
        sent_close_ = true;
    }
    CloseInfo info;
    info.reason = "closed by us";
    finish_close(std::move(info));
}

void Session::finish_close(CloseInfo info) {
    state_ = State::Closed;
    deadline_ = kNever;
    info.authenticated = !in_.empty() || !out_pairs_.empty();
    callback("closed", {info.reason});
    host_.session_closed(info);
}

} // namespace s2smux::xmpp
