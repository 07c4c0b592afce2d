// One TCP connection: libuv handle + optional TLS channel + XMPP session.
//
// The thin I/O shell around the sans-I/O core. Reads go TLS → session;
// session output is batched and written once per loop iteration (the owner
// flushes dirty streams from uv_prepare/uv_check), so many stanzas share a
// TLS record and a write(2). Peer certificates are verified on the libuv
// thread pool; the loop never waits for it. Memory is freed only after every
// libuv handle and pending work item is done (the uv_close rule).
#pragma once

#include "common/clock.h"
#include "common/metrics.h"
#include "net/backpressure.h"
#include "route/resolver.h"
#include "tls/channel.h"
#include "tls/trust.h"
#include "xmpp/session.h"

#include <uv.h>

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace s2smux::net {

enum class StreamKind : std::uint8_t {
    OuterIn,     // a remote server connected to our public S2S port
    InnerIn,     // the local server's outbound S2S
    OuterOut,    // we connect to a remote server
    UpstreamOut, // we connect to the local server to deliver inbound stanzas
    VerifyOut,   // we connect to a remote authoritative server for <db:verify/>
};
const char* to_string(StreamKind k);
inline bool is_outgoing(StreamKind k) {
    return k == StreamKind::OuterOut || k == StreamKind::UpstreamOut || k == StreamKind::VerifyOut;
}

class Stream;

// A received stanza whose sender waits for it to leave before it is
// acknowledged (xmpp::SessionConfig::ack_after_forward): the stream it came
// from and its number there.
struct StanzaOrigin {
    std::uint64_t stream = 0; // 0: nobody waits
    std::uint32_t seq = 0;
};

class StreamOwner {
public:
    virtual ~StreamOwner() = default;
    virtual bool stream_hosts(Stream& s, std::string_view domain) = 0;
    virtual bool stream_has_cert(std::string_view domain) = 0;
    virtual xmpp::DialbackVerdict stream_dialback_request(Stream& s, const xmpp::DialbackRequest& r) = 0;
    virtual void stream_authenticated(Stream& s, std::string_view from, std::string_view to, bool dir_in,
                                      xmpp::AuthMethod m) = 0;
    virtual void stream_verify_answer(Stream& s, std::string_view from, std::string_view to,
                                      std::string_view id, bool valid) = 0;
    virtual void stream_ready(Stream& s) = 0;
    virtual void stream_stanza(Stream& s, const xml::Node& el, const xmpp::StanzaRoute& r) = 0;
    // Multiplexing was enabled on the stream (attach a handler to its session).
    virtual void stream_mux_enabled(Stream& s) = 0;
    // A new stream, before its session starts: the place to set a tap that
    // sees it from its first byte (Stream::set_tap). peer() is known for
    // accepted streams, not yet for outgoing ones.
    virtual void stream_opened(Stream&) {}
    // The peer refused a pair requested with Session::request_pair().
    virtual void stream_pair_refused(Stream&, std::string_view /*from*/, std::string_view /*to*/,
                                     bool /*error_answer*/, std::string_view /*reason*/) {}
    // Resumption (xmpp::SessionHost::session_resume and the rest).
    virtual xmpp::ResumeState* stream_resume(Stream&, std::string_view /*previd*/) { return nullptr; }
    virtual void stream_resumed(Stream&) {}
    virtual void stream_resume_failed(Stream&, std::string_view /*previd*/) {}
    // The bytes of these stanzas were handed to the kernel on some stream
    // (or it closed with them: nothing more can be done for them here).
    virtual void stream_forwarded(const std::vector<StanzaOrigin>&) {}
    // The stream is finished (session closed, connect failed, transport
    // error). Forget the pointer: the stream frees itself once its handles
    // are closed.
    virtual void stream_closed(Stream& s, const xmpp::CloseInfo& info) = 0;
};

inline constexpr std::size_t kStreamKinds = 5;
constexpr std::size_t index(StreamKind k) { return static_cast<std::size_t>(k); }
static_assert(index(StreamKind::VerifyOut) + 1 == kStreamKinds, "a stream kind was added: update kStreamKinds");

// Totals of every stream of one kind, counted where they happen so that they
// outlive the streams (metrics).
struct KindTotals {
    std::uint64_t bytes_in = 0, bytes_out = 0; // on the wire
    std::uint64_t tls_ok = 0;      // handshakes completed
    std::uint64_t tls_failed = 0;  // handshakes that failed or whose connection ended first
};

// Shared by all streams of a loop.
struct Context {
    uv_loop_t* loop = nullptr;
    const tls::CertStore* certs = nullptr;
    const tls::TrustStore* trust = nullptr;
    const xmpp::DialbackKeys* keys = nullptr;
    StreamOwner* owner = nullptr;
    std::vector<Stream*> dirty; // streams with output to flush
    std::array<KindTotals, kStreamKinds> totals{}; // by index(StreamKind)
    metrics::Histogram tls_verify; // peer certificate chain verification on the thread pool
    // Backpressure (net/backpressure.h): who paused whom, the marks, and the
    // pending output of all streams as of their last write or delivery.
    PauseRegistry pauses;
    BufferLimits limits;
    std::size_t buffered = 0;
};

struct StreamStats {
    std::uint64_t bytes_in = 0, bytes_out = 0; // on the wire
    std::uint64_t stanzas_out = 0;
};

class Stream final : public xmpp::SessionHost, public Pausable {
public:
    // Incoming: accepts from `server`. direct_tls: TLS from the first byte (XEP-0368).
    static Stream* accept(Context& ctx, uv_stream_t* server, StreamKind kind, bool direct_tls,
                          xmpp::SessionConfig cfg, std::uint64_t id);
    // Outgoing: tries the targets in order; TCP failures move to the next.
    static Stream* connect(Context& ctx, StreamKind kind, xmpp::SessionConfig cfg,
                           std::vector<route::Target> targets, std::uint64_t id, TimeMs connect_timeout_ms);

    xmpp::Session& session() { return *session_; }
    StreamKind kind() const { return kind_; }
    std::uint64_t id() const { return id_; }
    const std::string& peer() const { return peer_; }
    // Outgoing: the target connected to (nullptr before a connection).
    const route::Target* target() const {
        return tcp_ && target_idx_ > 0 && target_idx_ <= targets_.size() ? &targets_[target_idx_ - 1] : nullptr;
    }
    const StreamStats& stats() const { return stats_; }
    bool finished() const { return finished_; }
    bool connected() const { return tcp_ != nullptr; } // TCP up (accepted, or connected to a target)

    // Encrypt and write pending session output (from the owner's dirty list).
    void flush();
    // The same, outside the dirty-list pass: for a destination that has
    // accumulated enough output to be worth a write now.
    void write_pending();
    // Close now (after flushing what is pending); owner is not notified again.
    void shutdown(std::string_view why);

    // A stanza just written to this stream's session came from `o`: it is
    // reported (stream_forwarded) once its bytes are written to the socket.
    void note_origin(StanzaOrigin o) {
        if (o.stream) origins_.push_back(o);
    }

    // Bytes queued toward the socket (backpressure figure).
    std::size_t write_backlog() const { return wpending_.size() + winflight_.size(); }
    // Everything written to this stream and not yet on the wire.
    std::size_t pending_output() const;
    // Backpressure: call after giving this stream output that `source` (may
    // be null) produced. Above this stream's high mark, or all streams'
    // above the global cap, `source` stops reading until it drains.
    void fed_by(Stream* source);
    // Pausable: reading stops / starts again (the registry decides; a
    // stream paused for several reasons reads once all are gone).
    void pause_reading() override;
    void resume_reading() override;
    bool reading_paused() const { return read_paused_; }

    // A tap on the session, owned by the stream (a capture,
    // daemon/captures.h): freed with the stream, after its last byte, or
    // replaced here (nullptr detaches). Not from inside a session callback.
    void set_tap(std::unique_ptr<xmpp::SessionTap> tap);
    xmpp::SessionTap* tap() const { return tap_.get(); }

private:
    Stream(Context& ctx, StreamKind kind, xmpp::SessionConfig cfg, std::uint64_t id);
    ~Stream() override;

    // xmpp::SessionHost
    void session_wants_write() override;
    void session_start_tls() override;
    bool session_hosts(std::string_view domain) override;
    bool session_has_cert(std::string_view domain) override;
    xmpp::DialbackVerdict session_dialback_request(const xmpp::DialbackRequest& req) override;
    void session_authenticated(std::string_view from, std::string_view to, bool dir_in, xmpp::AuthMethod m) override;
    void session_verify_answer(std::string_view from, std::string_view to, std::string_view id, bool valid) override;
    void session_ready() override;
    void session_stanza(const xml::Node& el, const xmpp::StanzaRoute& r) override;
    void session_closed(const xmpp::CloseInfo& info) override;
    void session_mux_enabled() override;
    xmpp::ResumeState* session_resume(std::string_view previd) override { return ctx_.owner->stream_resume(*this, previd); }
    void session_resumed() override { ctx_.owner->stream_resumed(*this); }
    void session_resume_failed(std::string_view previd) override { ctx_.owner->stream_resume_failed(*this, previd); }
    void session_pair_refused(std::string_view from, std::string_view to, bool error_answer,
                              std::string_view reason) override {
        ctx_.owner->stream_pair_refused(*this, from, to, error_answer, reason);
    }

    void start_reading();
    void on_read(const char* data, std::size_t len);
    void on_eof(std::string_view why);
    void begin_tls(tls::Role role);
    void tls_handshake_done();
    void verify_done(tls::VerifyResult res);
    void session_begin(); // start the session (after direct TLS, if any)
    void try_next_target();
    void on_connected(uv_tcp_t* tcp);
    void adopt(uv_tcp_t* tcp);
    void arm_timer();
    void on_timer();
    void mark_dirty();
    void write_now();
    void fail_transport(std::string reason, xmpp::StanzaError bounce);
    void count_tls(bool ok);
    void unref();
    std::size_t account(); // pending_output(), brought into ctx_.buffered
    void release_global_if_low();
    void drained(); // after write progress: releases what this stream held
    void leave_backpressure(); // finished or closing
    void set_log_context();

    static void alloc_cb(uv_handle_t*, std::size_t, uv_buf_t* buf);
    static void read_cb(uv_stream_t* s, ssize_t n, const uv_buf_t* buf);
    static void write_cb(uv_write_t* req, int status);
    static void connect_cb(uv_connect_t* req, int status);
    static void tcp_close_cb(uv_handle_t* h);
    static void timer_close_cb(uv_handle_t* h);
    static void timer_cb(uv_timer_t* t);

    Context& ctx_;
    StreamKind kind_;
    std::uint64_t id_;
    std::string peer_;
    std::unique_ptr<xmpp::Session> session_;
    std::unique_ptr<xmpp::SessionTap> tap_; // freed first (~Stream)
    std::unique_ptr<tls::Channel> tls_;
    bool direct_tls_ = false;
    bool verifying_ = false;        // peer certificate verification in flight
    std::string held_plain_;        // plaintext that arrived while verifying

    uv_tcp_t* tcp_ = nullptr;       // heap: connect attempts each use a fresh handle
    uv_timer_t timer_{};
    uv_write_t write_req_{};
    int refs_ = 0;                  // open handles + pending connects + pending work
    bool closing_ = false;          // handles being closed
    bool finished_ = false;         // owner notified
    bool writing_ = false;
    bool in_dirty_ = false;
    bool close_after_flush_ = false;
    bool tls_bye_ = false;          // close_notify queued
    bool started_ = false;          // session_->start() called
    bool start_pending_ = false;    // outgoing: first connect attempt not yet made
    bool tls_counted_ = false;      // handshake outcome counted in ctx_.totals
    bool read_paused_ = false;      // backpressure: uv_read_stop'ed
    std::size_t accounted_ = 0;     // this stream's share of ctx_.buffered
    TimeMs timer_due_ = kNever;
    TimeMs close_deadline_ = kNever;

    std::vector<StanzaOrigin> origins_;          // noted, not in a write yet
    std::vector<StanzaOrigin> origins_inflight_; // their bytes are in the write in flight
    void report_origins(std::vector<StanzaOrigin>& v);
    std::string wpending_;          // ciphertext/plaintext waiting for the socket
    std::string winflight_;         // buffer owned by the in-flight uv_write
    std::string plain_scratch_;     // decrypted bytes of one read

    std::vector<route::Target> targets_;
    std::size_t target_idx_ = 0;
    struct ConnectAttempt* pending_connect_ = nullptr;
    TimeMs connect_timeout_ms_ = 30000;
    std::string connect_errors_;
    TimeMs connect_deadline_ = kNever;

    StreamStats stats_;
    friend struct VerifyWork;
    friend struct ConnectAttempt;
};

} // namespace s2smux::net
