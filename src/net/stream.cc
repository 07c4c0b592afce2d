#include "net/stream.h"

#include "common/log.h"
#include "net/work.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <ctime>

namespace s2smux::net {

namespace {

constexpr TimeMs kCloseGraceMs = 5000; // flush window for a closing stream
constexpr std::size_t kReadBuf = 64 * 1024;

std::string sockaddr_string(const sockaddr_storage& ss) {
    char ip[INET6_ADDRSTRLEN] = {0};
    if (ss.ss_family == AF_INET) {
        auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
        uv_ip4_name(a, ip, sizeof ip);
        return fmt::format("{}:{}", ip, ntohs(a->sin_port));
    }
    if (ss.ss_family == AF_INET6) {
        auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
        uv_ip6_name(a, ip, sizeof ip);
        return fmt::format("[{}]:{}", ip, ntohs(a->sin6_port));
    }
    return "?";
}

} // namespace

const char* to_string(StreamKind k) {
    switch (k) {
    case StreamKind::OuterIn: return "outer-in";
    case StreamKind::InnerIn: return "inner-in";
    case StreamKind::OuterOut: return "outer-out";
    case StreamKind::UpstreamOut: return "upstream-out";
    case StreamKind::VerifyOut: return "verify-out";
    }
    return "?";
}

// Peer certificate verification on the thread pool.
struct VerifyWork {
    uv_work_t req{};
    Stream* stream;
    const tls::TrustStore* trust;
    std::vector<std::string> chain;
    tls::VerifyResult result;
    double seconds = 0; // time spent verifying, on the pool thread
};

struct ConnectAttempt {
    uv_connect_t req{};
    Stream* stream;
    uv_tcp_t* tcp;
};

Stream::Stream(Context& ctx, StreamKind kind, xmpp::SessionConfig cfg, std::uint64_t id)
    : ctx_(ctx), kind_(kind), id_(id) {
    session_ = std::make_unique<xmpp::Session>(std::move(cfg), *this, *ctx.keys);
    uv_timer_init(ctx_.loop, &timer_);
    timer_.data = this;
    ++refs_;
}

Stream::~Stream() {
    // The tap goes first, while the stream is whole (a capture writes its
    // stream's last record from its destructor).
    if (tap_) {
        session_->set_tap(nullptr);
        tap_.reset();
    }
}

void Stream::set_tap(std::unique_ptr<xmpp::SessionTap> tap) {
    session_->set_tap(tap.get());
    tap_ = std::move(tap);
}

void Stream::set_log_context() {
    const auto& c = session_->config();
    std::string ctx = fmt::format("s{} {}", id_, to_string(kind_));
    if (c.role == xmpp::Role::Initiator) ctx += fmt::format(" {}->{}", c.from, c.to);
    if (!peer_.empty()) ctx += " " + peer_;
    session_->set_log_context(std::move(ctx));
}

void Stream::adopt(uv_tcp_t* tcp) {
    tcp_ = tcp;
    tcp_->data = this;
    ++refs_;
    uv_tcp_nodelay(tcp_, 1);
    sockaddr_storage ss{};
    int len = sizeof ss;
    if (uv_tcp_getpeername(tcp_, reinterpret_cast<sockaddr*>(&ss), &len) == 0) peer_ = sockaddr_string(ss);
    set_log_context();
    start_reading();
}

Stream* Stream::accept(Context& ctx, uv_stream_t* server, StreamKind kind, bool direct_tls,
                       xmpp::SessionConfig cfg, std::uint64_t id) {
    auto* tcp = new uv_tcp_t{};
    uv_tcp_init(ctx.loop, tcp);
    if (uv_accept(server, reinterpret_cast<uv_stream_t*>(tcp)) != 0) {
        uv_close(reinterpret_cast<uv_handle_t*>(tcp), [](uv_handle_t* h) { delete reinterpret_cast<uv_tcp_t*>(h); });
        return nullptr;
    }
    auto* s = new Stream(ctx, kind, std::move(cfg), id);
    s->direct_tls_ = direct_tls;
    s->adopt(tcp);
    log::info(s->session_->log_context(), "accepted connection{}", direct_tls ? " (direct TLS)" : "");
    ctx.owner->stream_opened(*s);
    if (direct_tls) {
        s->begin_tls(tls::Role::Server);
        s->started_ = true;
        s->session_->start(uv_now(ctx.loop)); // arms the authentication deadline
    } else {
        s->session_begin();
    }
    s->arm_timer();
    return s;
}

Stream* Stream::connect(Context& ctx, StreamKind kind, xmpp::SessionConfig cfg,
                        std::vector<route::Target> targets, std::uint64_t id, TimeMs connect_timeout_ms) {
    auto* s = new Stream(ctx, kind, std::move(cfg), id);
    s->targets_ = std::move(targets);
    s->connect_timeout_ms_ = connect_timeout_ms;
    s->set_log_context();
    ctx.owner->stream_opened(*s);
    // Start from the loop, never synchronously: the owner must be able to
    // register the stream before any failure is reported.
    s->start_pending_ = true;
    s->arm_timer();
    return s;
}

// ------------------------------------------------------------ connecting

namespace {
void delete_tcp(uv_handle_t* h) { delete reinterpret_cast<uv_tcp_t*>(h); }
} // namespace

void Stream::try_next_target() {
    if (finished_ || closing_) return;
    if (target_idx_ >= targets_.size()) {
        std::string_view errs = connect_errors_;
        while (!errs.empty() && (errs.back() == ' ' || errs.back() == ';')) errs.remove_suffix(1);
        fail_transport(targets_.empty() ? std::string("no address to connect to")
                                        : fmt::format("could not connect: {}", errs),
                       xmpp::StanzaError::RemoteServerNotFound);
        return;
    }
    const route::Target& t = targets_[target_idx_++];
    bool v6 = t.address.find(':') != std::string::npos;
    sockaddr_storage ss{};
    int rc = v6 ? uv_ip6_addr(t.address.c_str(), t.port, reinterpret_cast<sockaddr_in6*>(&ss))
                : uv_ip4_addr(t.address.c_str(), t.port, reinterpret_cast<sockaddr_in*>(&ss));
    peer_ = v6 ? fmt::format("[{}]:{}", t.address, t.port) : fmt::format("{}:{}", t.address, t.port);
    set_log_context();
    if (rc != 0) {
        connect_errors_ += fmt::format("{}: bad address; ", peer_);
        try_next_target();
        return;
    }
    direct_tls_ = t.direct_tls;
    auto* attempt = new ConnectAttempt{};
    attempt->stream = this;
    attempt->tcp = new uv_tcp_t{};
    uv_tcp_init(ctx_.loop, attempt->tcp);
    attempt->req.data = attempt;
    log::debug(session_->log_context(), "connecting ({}{})", t.source, t.direct_tls ? ", direct TLS" : "");
    rc = uv_tcp_connect(&attempt->req, attempt->tcp, reinterpret_cast<sockaddr*>(&ss), connect_cb);
    if (rc != 0) {
        connect_errors_ += fmt::format("{}: {}; ", peer_, uv_strerror(rc));
        uv_close(reinterpret_cast<uv_handle_t*>(attempt->tcp), delete_tcp);
        delete attempt;
        try_next_target();
        return;
    }
    ++refs_;
    pending_connect_ = attempt;
    connect_deadline_ = uv_now(ctx_.loop) + connect_timeout_ms_;
    arm_timer();
}

void Stream::connect_cb(uv_connect_t* req, int status) {
    auto* attempt = static_cast<ConnectAttempt*>(req->data);
    Stream* s = attempt->stream;
    uv_tcp_t* tcp = attempt->tcp;
    bool current = s->pending_connect_ == attempt;
    delete attempt;
    if (current) s->pending_connect_ = nullptr;
    if (status == 0 && current && !s->finished_ && !s->closing_) {
        s->connect_deadline_ = kNever;
        s->on_connected(tcp);
    } else {
        if (status != 0 && status != UV_ECANCELED && current && !s->finished_)
            s->connect_errors_ += fmt::format("{}: {}; ", s->peer_, uv_strerror(status));
        // An abandoned attempt's handle is already closing (see on_timer).
        if (!uv_is_closing(reinterpret_cast<uv_handle_t*>(tcp)))
            uv_close(reinterpret_cast<uv_handle_t*>(tcp), delete_tcp);
        if (current && !s->finished_ && !s->closing_) s->try_next_target();
    }
    s->unref(); // the attempt's reference
}

void Stream::on_connected(uv_tcp_t* tcp) {
    adopt(tcp);
    log::debug(session_->log_context(), "connected");
    if (direct_tls_) begin_tls(tls::Role::Client);
    else session_begin();
    arm_timer();
}

// ---------------------------------------------------------------- reading

void Stream::start_reading() {
    if (read_paused_) return;
    uv_read_start(reinterpret_cast<uv_stream_t*>(tcp_), alloc_cb, read_cb);
}

// Stopping reads is enough, also under TLS: every record of the last read
// was decrypted and handed to the session already (a partial one waits in
// the channel), so nothing is lost and nothing more comes in until resumed.
void Stream::pause_reading() {
    if (read_paused_) return;
    read_paused_ = true;
    log::debug(session_->log_context(), "reading paused (backpressure)");
    if (tcp_ && !closing_) uv_read_stop(reinterpret_cast<uv_stream_t*>(tcp_));
}

void Stream::resume_reading() {
    if (!read_paused_) return;
    read_paused_ = false;
    log::debug(session_->log_context(), "reading resumed");
    if (tcp_ && !closing_) start_reading();
}

void Stream::alloc_cb(uv_handle_t*, std::size_t, uv_buf_t* buf) {
    // One loop thread, reads processed synchronously: one buffer serves all.
    static char storage[kReadBuf];
    buf->base = storage;
    buf->len = sizeof storage;
}

void Stream::read_cb(uv_stream_t* h, ssize_t n, const uv_buf_t* buf) {
    auto* s = static_cast<Stream*>(h->data);
    if (n > 0) {
        s->on_read(buf->base, static_cast<std::size_t>(n));
    } else if (n < 0) {
        s->on_eof(n == UV_EOF ? "EOF" : uv_strerror(static_cast<int>(n)));
    }
}

void Stream::on_read(const char* data, std::size_t len) {
    if (closing_ || (finished_ && !session_->reading_after_close())) return;
    stats_.bytes_in += len;
    ctx_.totals[index(kind_)].bytes_in += len;
    TimeMs now = uv_now(ctx_.loop);
    if (!tls_) {
        session_->on_bytes(data, len, now);
    } else {
        bool was_done = tls_->handshake_done();
        plain_scratch_.clear();
        tls::IoStatus st = tls_->feed(data, len, plain_scratch_);
        if (!tls_->outbound().empty()) mark_dirty();
        if (st == tls::IoStatus::Error) {
            fail_transport(fmt::format("TLS: {}", tls_->error()), xmpp::StanzaError::RemoteServerTimeout);
            return;
        }
        if (!was_done && tls_->handshake_done()) {
            count_tls(true);
            tls_handshake_done();
        }
        if (log::enabled(log::Level::Debug))
            log::debug(session_->log_context(), "read {} bytes, {} plaintext{}", len, plain_scratch_.size(),
                       verifying_ ? " (held until the certificate is verified)" : "");
        if (!plain_scratch_.empty()) {
            if (verifying_) held_plain_ += plain_scratch_;
            else if (!finished_ || session_->reading_after_close()) session_->on_bytes(plain_scratch_, now);
        }
        if (st == tls::IoStatus::Closed) {
            on_eof("TLS close_notify"); // the peer is done writing: nothing more to read
            return;
        }
    }
    // We closed first and the peer has closed too: close_notify, then the
    // transport goes (write_pending() does both once everything is
    // written; not flush(): it would forget that we are on the dirty list).
    if (finished_ && close_after_flush_ && !session_->reading_after_close()) {
        write_pending();
        return;
    }
    arm_timer();
}

void Stream::on_eof(std::string_view why) {
    if (finished_) {
        shutdown(why);
        return;
    }
    session_->on_transport_closed(why); // notifies the owner via session_closed
    shutdown(why);
}

// -------------------------------------------------------------------- TLS

void Stream::begin_tls(tls::Role role) {
    tls::ChannelOptions o;
    o.role = role;
    const auto& c = session_->config();
    if (role == tls::Role::Client) {
        o.server_name = c.to;
        if (kind_ == StreamKind::OuterOut || kind_ == StreamKind::VerifyOut) o.client_cert_domain = c.from;
    } else {
        o.server_name = session_->local_domain();
        o.request_client_cert = kind_ != StreamKind::InnerIn;
    }
    o.alpn_xmpp_server = direct_tls_;
    tls_ = std::make_unique<tls::Channel>(*ctx_.certs, std::move(o));
    if (auto r = tls_->start(); !r) {
        fail_transport(fmt::format("TLS setup failed: {}", r.error()), xmpp::StanzaError::InternalServerError);
        return;
    }
    mark_dirty();
}

void Stream::session_start_tls() {
    // Whatever the session wrote so far (e.g. <proceed/>) goes out in plaintext.
    wpending_ += session_->out();
    session_->out().clear();
    begin_tls(session_->role() == xmpp::Role::Initiator ? tls::Role::Client : tls::Role::Server);
}

void Stream::tls_handshake_done() {
    auto chain = tls_->peer_chain_der();
    if (chain.empty()) {
        verify_done(tls::VerifyResult{});
        return;
    }
    auto* w = new VerifyWork{};
    w->req.data = w;
    w->stream = this;
    w->trust = ctx_.trust;
    w->chain = std::move(chain);
    verifying_ = true;
    ++refs_;
    ++pool_jobs;
    uv_queue_work(
        ctx_.loop, &w->req,
        [](uv_work_t* req) {
            auto* w = static_cast<VerifyWork*>(req->data);
            auto t0 = std::chrono::steady_clock::now();
            w->result = tls::verify_chain(*w->trust, w->chain, static_cast<std::int64_t>(std::time(nullptr)));
            w->seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        },
        [](uv_work_t* req, int) {
            auto* w = static_cast<VerifyWork*>(req->data);
            Stream* s = w->stream;
            bool had_chain = !w->chain.empty();
            tls::VerifyResult res = std::move(w->result);
            s->ctx_.tls_verify.observe(w->seconds); // the Context outlives its streams
            --pool_jobs;
            delete w;
            if (had_chain && !res.trusted && res.error.empty()) res.error = "verification failed";
            s->verifying_ = false;
            if (!s->closing_ && !s->finished_) s->verify_done(std::move(res));
            s->unref();
        });
}

void Stream::verify_done(tls::VerifyResult res) {
    verifying_ = false;
    xmpp::TlsState st;
    st.active = true;
    st.version = tls_->version();
    st.cipher = tls_->cipher();
    st.peer.present = !tls_->peer_chain_der().empty();
    st.peer.trusted = res.trusted;
    st.peer.error = std::move(res.error);
    st.peer.identity = std::move(res.identity);
    st.tls13 = tls_->is_tls13();
    if (auto lc = tls_->local_cert()) st.local = lc->identity;
    if (st.tls13) {
        // RFC 9266 channel binding: binds multiplexing proofs to this session.
        if (auto e = tls_->exporter("EXPORTER-Channel-Binding", "", 32)) st.exporter = std::move(*e);
    }
    TimeMs now = uv_now(ctx_.loop);
    if (st.peer.trusted && st.peer.identity.not_after > 0) {
        st.peer_expires_at = now + (st.peer.identity.not_after * 1000 - wall_clock_ms());
    }
    session_->on_tls_established(std::move(st), now);
    if (!started_ && !session_->closed()) { // direct TLS, outgoing: the stream starts now
        started_ = true;
        session_->start(now);
    }
    if (!held_plain_.empty() && !finished_) {
        std::string held;
        held.swap(held_plain_);
        session_->on_bytes(held, now);
    }
    mark_dirty();
    arm_timer();
}

void Stream::session_begin() {
    started_ = true;
    session_->start(uv_now(ctx_.loop));
    arm_timer();
}

// ---------------------------------------------------------------- writing

void Stream::session_wants_write() { mark_dirty(); }

void Stream::mark_dirty() {
    if (in_dirty_ || closing_) return;
    in_dirty_ = true;
    ctx_.dirty.push_back(this);
}

void Stream::flush() {
    in_dirty_ = false;
    write_pending();
}

void Stream::write_pending() {
    if (closing_) return;
    std::string& out = session_->out();
    if (!out.empty()) {
        if (!tls_) {
            if (wpending_.empty()) wpending_.swap(out);
            else wpending_ += out;
            out.clear();
        } else if (tls_->handshake_done()) {
            tls_->write(out);
            out.clear();
        }
    }
    // close_notify ends the TLS session both ways for most peers: not before
    // the peer closed its stream too (we still read until then).
    if (close_after_flush_ && tls_ && tls_->handshake_done() && !tls_bye_ && !session_->reading_after_close()) {
        tls_->shutdown();
        tls_bye_ = true;
    }
    if (tls_ && !tls_->outbound().empty()) {
        if (wpending_.empty()) wpending_.swap(tls_->outbound());
        else wpending_ += tls_->outbound();
        tls_->outbound().clear();
    }
    write_now();
    drained();
    if (close_after_flush_ && !writing_ && wpending_.empty() && !session_->reading_after_close()) shutdown("closed");
}

void Stream::report_origins(std::vector<StanzaOrigin>& v) {
    if (v.empty()) return;
    std::vector<StanzaOrigin> done;
    done.swap(v);
    ctx_.owner->stream_forwarded(done);
}

void Stream::write_now() {
    if (writing_ || wpending_.empty() || !tcp_ || closing_) return;
    // The stanzas noted so far are in wpending_ once the session's output
    // (and TLS's) has all moved there.
    const bool covered = session_->out().empty() && (!tls_ || tls_->outbound().empty());
    uv_buf_t b = uv_buf_init(wpending_.data(), static_cast<unsigned>(wpending_.size()));
    int n = uv_try_write(reinterpret_cast<uv_stream_t*>(tcp_), &b, 1);
    if (n > 0) {
        stats_.bytes_out += static_cast<std::uint64_t>(n);
        ctx_.totals[index(kind_)].bytes_out += static_cast<std::uint64_t>(n);
        if (static_cast<std::size_t>(n) == wpending_.size()) {
            wpending_.clear();
            if (covered) report_origins(origins_);
            return;
        }
        wpending_.erase(0, static_cast<std::size_t>(n));
    } else if (n < 0 && n != UV_EAGAIN) {
        fail_transport(fmt::format("write failed: {}", uv_strerror(n)), xmpp::StanzaError::RemoteServerTimeout);
        return;
    }
    winflight_.swap(wpending_);
    wpending_.clear();
    if (covered) origins_inflight_.swap(origins_);
    b = uv_buf_init(winflight_.data(), static_cast<unsigned>(winflight_.size()));
    write_req_.data = this;
    int rc = uv_write(&write_req_, reinterpret_cast<uv_stream_t*>(tcp_), &b, 1, write_cb);
    if (rc != 0) {
        fail_transport(fmt::format("write failed: {}", uv_strerror(rc)), xmpp::StanzaError::RemoteServerTimeout);
        return;
    }
    writing_ = true;
}

void Stream::write_cb(uv_write_t* req, int status) {
    auto* s = static_cast<Stream*>(req->data);
    s->writing_ = false;
    if (status == 0) {
        s->stats_.bytes_out += s->winflight_.size();
        s->ctx_.totals[index(s->kind_)].bytes_out += s->winflight_.size();
    }
    s->winflight_.clear();
    s->report_origins(s->origins_inflight_);
    if (s->closing_) return;
    if (status < 0) {
        s->fail_transport(fmt::format("write failed: {}", uv_strerror(status)), xmpp::StanzaError::RemoteServerTimeout);
        return;
    }
    if (!s->wpending_.empty()) s->write_now();
    else if (s->close_after_flush_ && !s->session_->reading_after_close()) s->shutdown("closed");
    s->drained(); // a no-op once closing
}

// -------------------------------------------------------------- backpressure

std::size_t Stream::pending_output() const {
    return session_->out().size() + wpending_.size() + winflight_.size() + (tls_ ? tls_->outbound().size() : 0);
}

std::size_t Stream::account() {
    std::size_t pending = pending_output();
    ctx_.buffered = ctx_.buffered - accounted_ + pending;
    accounted_ = pending;
    return pending;
}

void Stream::release_global_if_low() {
    if (ctx_.buffered <= ctx_.limits.global_low() && ctx_.pauses.holding(kGlobalHold))
        ctx_.pauses.release(kGlobalHold);
}

void Stream::fed_by(Stream* source) {
    if (closing_) return;
    std::size_t pending = account();
    if (!source || finished_ || source->finished_ || source->closing_) return;
    if (pending > ctx_.limits.high) ctx_.pauses.hold(id_, source->id_, *source);
    if (ctx_.buffered > ctx_.limits.global_high) ctx_.pauses.hold(kGlobalHold, source->id_, *source);
}

void Stream::drained() {
    if (closing_) return;
    if (account() <= ctx_.limits.low() && ctx_.pauses.holding(id_)) ctx_.pauses.release(id_);
    release_global_if_low();
}

// The sources this stream held read again; nothing holds it any more (a
// finished session delivers nothing). Once closing, its output is gone too.
void Stream::leave_backpressure() {
    ctx_.pauses.forget(id_);
    if (!closing_) return;
    ctx_.buffered -= accounted_;
    accounted_ = 0;
    release_global_if_low();
}

// ------------------------------------------------------------------ timers

void Stream::arm_timer() {
    if (closing_) return;
    TimeMs due = start_pending_ ? uv_now(ctx_.loop) : session_->next_deadline();
    if (pending_connect_ && connect_deadline_ < due) due = connect_deadline_;
    if (close_after_flush_ && close_deadline_ < due) due = close_deadline_;
    if (due == timer_due_) return;
    timer_due_ = due;
    if (due == kNever) {
        uv_timer_stop(&timer_);
        return;
    }
    TimeMs now = uv_now(ctx_.loop);
    uv_timer_start(&timer_, timer_cb, static_cast<std::uint64_t>(due > now ? due - now : 0), 0);
}

void Stream::timer_cb(uv_timer_t* t) { static_cast<Stream*>(t->data)->on_timer(); }

void Stream::on_timer() {
    timer_due_ = kNever;
    TimeMs now = uv_now(ctx_.loop);
    if (start_pending_) {
        start_pending_ = false;
        try_next_target();
        arm_timer();
        return;
    }
    if (close_after_flush_ && now >= close_deadline_) {
        shutdown("close timeout");
        return;
    }
    if (pending_connect_ && now >= connect_deadline_ && !finished_) {
        // Abandon this attempt (its callback sees it is stale) and move on.
        connect_errors_ += fmt::format("{}: timed out; ", peer_);
        connect_deadline_ = kNever;
        uv_tcp_t* tcp = pending_connect_->tcp;
        pending_connect_ = nullptr;
        uv_close(reinterpret_cast<uv_handle_t*>(tcp), delete_tcp); // connect_cb runs first, with UV_ECANCELED
        try_next_target();
        arm_timer();
        return;
    }
    // The peer's silence is ours while we do not read: keep the session's
    // dead-peer clock from running out (an empty input, so it is captured).
    if (read_paused_ && !finished_) session_->on_bytes("", 0, now);
    session_->on_timer(now);
    arm_timer();
}

// ----------------------------------------------------------------- closing

void Stream::fail_transport(std::string reason, xmpp::StanzaError bounce) {
    if (!finished_) {
        finished_ = true;
        log::warn(session_->log_context(), "{}", reason);
        xmpp::CloseInfo info;
        info.error = true;
        info.reason = std::move(reason);
        info.bounce = bounce;
        info.transport = true;
        info.authenticated = !session_->pairs_in().empty() || !session_->pairs_out().empty();
        leave_backpressure();
        ctx_.owner->stream_closed(*this, info);
    }
    shutdown("failed");
}

void Stream::session_closed(const xmpp::CloseInfo& info) {
    if (finished_) return;
    finished_ = true;
    leave_backpressure();
    ctx_.owner->stream_closed(*this, info);
    close_after_flush_ = true;
    close_deadline_ = uv_now(ctx_.loop) + kCloseGraceMs;
    mark_dirty();
}

void Stream::count_tls(bool ok) {
    if (tls_counted_) return;
    tls_counted_ = true;
    auto& t = ctx_.totals[index(kind_)];
    ++(ok ? t.tls_ok : t.tls_failed);
}

void Stream::shutdown(std::string_view why) {
    if (closing_) return;
    closing_ = true;
    if (tls_) count_tls(false); // no-op when the handshake completed
    log::debug(session_->log_context(), "closing connection ({})", why);
    if (in_dirty_) {
        auto it = std::find(ctx_.dirty.begin(), ctx_.dirty.end(), this);
        if (it != ctx_.dirty.end()) ctx_.dirty.erase(it);
        in_dirty_ = false;
    }
    leave_backpressure();
    // What was still to be written is lost with the connection; waiting
    // longer would not bring it back.
    report_origins(origins_inflight_);
    report_origins(origins_);
    if (tcp_) {
        uv_close(reinterpret_cast<uv_handle_t*>(tcp_), tcp_close_cb);
        tcp_ = nullptr;
    }
    uv_close(reinterpret_cast<uv_handle_t*>(&timer_), timer_close_cb);
}

void Stream::tcp_close_cb(uv_handle_t* h) {
    auto* s = static_cast<Stream*>(h->data);
    delete reinterpret_cast<uv_tcp_t*>(h);
    s->unref();
}

void Stream::timer_close_cb(uv_handle_t* h) { static_cast<Stream*>(h->data)->unref(); }

void Stream::unref() {
    if (--refs_ == 0) delete this;
}

// ------------------------------------------------------ session → owner

bool Stream::session_hosts(std::string_view domain) { return ctx_.owner->stream_hosts(*this, domain); }
bool Stream::session_has_cert(std::string_view domain) { return ctx_.owner->stream_has_cert(domain); }
xmpp::DialbackVerdict Stream::session_dialback_request(const xmpp::DialbackRequest& req) {
    return ctx_.owner->stream_dialback_request(*this, req);
}
void Stream::session_authenticated(std::string_view from, std::string_view to, bool dir_in, xmpp::AuthMethod m) {
    ctx_.owner->stream_authenticated(*this, from, to, dir_in, m);
}
void Stream::session_verify_answer(std::string_view from, std::string_view to, std::string_view id, bool valid) {
    ctx_.owner->stream_verify_answer(*this, from, to, id, valid);
}
void Stream::session_ready() { ctx_.owner->stream_ready(*this); }
void Stream::session_mux_enabled() { ctx_.owner->stream_mux_enabled(*this); }
void Stream::session_stanza(const xml::Node& el, const xmpp::StanzaRoute& r) {
    ctx_.owner->stream_stanza(*this, el, r);
}

} // namespace s2smux::net
