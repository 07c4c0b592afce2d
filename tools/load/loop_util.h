// libuv plumbing shared by the load tool's runs (Bench, MuxBench,
// PairsBench, IdleStreams, FaultRun), each on its own loop in this process.
#pragma once

#include "common/result.h"
#include "net/stream.h"
#include "tls/certs.h"
#include "tls/trust.h"
#include "xmpp/dialback.h"

#include <uv.h>

#include <cstdint>
#include <string>

namespace s2smux::load {

// What every run's driver starts from: its own uv loop, and a net::Context
// on it (certificates, trust store, dialback keys) whose streams it owns.
// The StreamOwner callbacks default to a server that hosts no domain, has
// no certificate, refuses dialback and ignores the rest; a driver overrides
// what it needs (stream_stanza and stream_closed always).
class LoopDriver : public net::StreamOwner {
public:
    LoopDriver(const LoopDriver&) = delete;
    LoopDriver& operator=(const LoopDriver&) = delete;

protected:
    // The stores must outlive the driver (they may be its own members).
    LoopDriver(const tls::CertStore* certs, const tls::TrustStore* trust, const xmpp::DialbackKeys* keys);
    ~LoopDriver() override;

    bool stream_hosts(net::Stream&, std::string_view) override { return false; }
    bool stream_has_cert(std::string_view) override { return false; }
    xmpp::DialbackVerdict stream_dialback_request(net::Stream&, const xmpp::DialbackRequest&) override {
        return xmpp::DialbackVerdict::Invalid;
    }
    void stream_authenticated(net::Stream&, std::string_view, std::string_view, bool, xmpp::AuthMethod) override {}
    void stream_verify_answer(net::Stream&, std::string_view, std::string_view, std::string_view, bool) override {}
    void stream_ready(net::Stream&) override {}
    void stream_mux_enabled(net::Stream&) override {}

    // Runs the loop until its last handle is closed, then closes it. A
    // handle still open (a leak in the tool or in net::Stream) sets `error`
    // if it is empty, and with `report` lists the open handles on stderr.
    void run_loop(std::string& error, bool report);

    uv_loop_t loop_{};
    net::Context ctx_;
    // The driver's handles (start_driver): send and flush around every poll
    // (IdleStreams: flush only), and a tick for phases, liveness and progress.
    uv_prepare_t prepare_{};
    uv_check_t check_{};
    uv_timer_t timer_{};
};

// Binds `h` to 127.0.0.1:0 and listens; each connection calls (self->*On)().
// Returns the port the kernel chose. On error the handle is initialized
// (the caller closes it).
template <class T, void (T::*On)()>
Result<std::uint16_t> listen_loopback(uv_loop_t* loop, uv_tcp_t& h, T* self, int backlog) {
    uv_tcp_init(loop, &h);
    h.data = self;
    sockaddr_in addr{};
    uv_ip4_addr("127.0.0.1", 0, &addr);
    int rc = uv_tcp_bind(&h, reinterpret_cast<sockaddr*>(&addr), 0);
    if (rc == 0)
        rc = uv_listen(reinterpret_cast<uv_stream_t*>(&h), backlog, [](uv_stream_t* srv, int status) {
            if (status == 0) (static_cast<T*>(srv->data)->*On)();
        });
    int len = sizeof addr;
    if (rc == 0) rc = uv_tcp_getsockname(&h, reinterpret_cast<sockaddr*>(&addr), &len);
    if (rc != 0) return make_error(std::string("listen on 127.0.0.1: ") + uv_strerror(rc));
    return static_cast<std::uint16_t>(ntohs(addr.sin_port));
}

// A run's driver handles: (self->*Pump)() before and after every poll
// (send, then flush), (self->*Tick)() every `tick_ms`.
template <class T, void (T::*Pump)(), void (T::*Tick)()>
void start_driver(uv_loop_t* loop, uv_prepare_t& prepare, uv_check_t& check, uv_timer_t& timer, T* self,
                  std::uint64_t tick_ms) {
    uv_prepare_init(loop, &prepare);
    prepare.data = self;
    uv_prepare_start(&prepare, [](uv_prepare_t* h) { (static_cast<T*>(h->data)->*Pump)(); });
    uv_check_init(loop, &check);
    check.data = self;
    uv_check_start(&check, [](uv_check_t* h) { (static_cast<T*>(h->data)->*Pump)(); });
    uv_timer_init(loop, &timer);
    timer.data = self;
    uv_timer_start(&timer, [](uv_timer_t* h) { (static_cast<T*>(h->data)->*Tick)(); }, tick_ms, tick_ms);
}

// A run that failed before its loop ran: close the listener and the loop.
void abandon_loop(uv_loop_t* loop, uv_tcp_t& listener);

// Writes what the sessions queued (the streams on ctx.dirty).
void flush_dirty(net::Context& ctx);

// A local server's outbound S2S stream to a gateway's inner listener on
// 127.0.0.1:`inner_port` (the trusted side): dialback `from` -> `to`,
// STARTTLS when offered if `tls`, the gateway's certificate not verified
// (as s2smuxd's own upstream streams do).
net::Stream* connect_local_server(net::Context& ctx, std::string from, std::string to, std::uint16_t inner_port,
                                  bool tls, std::uint64_t id, TimeMs auth_timeout_ms = 10000);

// A local server accepting a gateway's upstream stream on `listener`:
// dialback offered, STARTTLS if `tls_possible` (a certificate for the
// domains it hosts), no SASL EXTERNAL, no bidi.
net::Stream* accept_upstream(net::Context& ctx, uv_tcp_t& listener, bool tls_possible, std::uint64_t id,
                             TimeMs auth_timeout_ms = 10000);

} // namespace s2smux::load
