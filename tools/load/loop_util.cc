#include "tools/load/loop_util.h"

#include <cstdio>
#include <vector>

namespace s2smux::load {

LoopDriver::LoopDriver(const tls::CertStore* certs, const tls::TrustStore* trust, const xmpp::DialbackKeys* keys) {
    uv_loop_init(&loop_);
    ctx_.loop = &loop_;
    ctx_.certs = certs;
    ctx_.trust = trust;
    ctx_.keys = keys;
    ctx_.owner = this;
}

LoopDriver::~LoopDriver() = default;

void LoopDriver::run_loop(std::string& error, bool report) {
    uv_run(&loop_, UV_RUN_DEFAULT);
    if (uv_loop_close(&loop_) == 0) return;
    if (report)
        uv_walk(&loop_, [](uv_handle_t* h, void*) {
            std::fprintf(stderr, "s2smux-load: open handle at exit: %s\n", uv_handle_type_name(h->type));
        }, nullptr);
    if (error.empty()) error = "event loop closed with open handles";
}

void flush_dirty(net::Context& ctx) {
    if (ctx.dirty.empty()) return;
    std::vector<net::Stream*> batch;
    batch.swap(ctx.dirty);
    for (net::Stream* s : batch) s->flush();
}

void abandon_loop(uv_loop_t* loop, uv_tcp_t& listener) {
    uv_close(reinterpret_cast<uv_handle_t*>(&listener), nullptr);
    uv_run(loop, UV_RUN_DEFAULT);
    uv_loop_close(loop);
}

net::Stream* connect_local_server(net::Context& ctx, std::string from, std::string to, std::uint16_t inner_port,
                                  bool tls, std::uint64_t id, TimeMs auth_timeout_ms) {
    xmpp::SessionConfig c;
    c.role = xmpp::Role::Initiator;
    c.from = std::move(from);
    c.to = std::move(to);
    c.want_bidi = false;
    c.auth_timeout_ms = auth_timeout_ms;
    c.tls_policy = tls ? xmpp::TlsPolicy::Optional : xmpp::TlsPolicy::Disabled;
    c.verify_peer = false;
    c.use_external = false;
    route::Target t;
    t.address = "127.0.0.1";
    t.port = inner_port;
    t.source = "gateway inner listener";
    return net::Stream::connect(ctx, net::StreamKind::UpstreamOut, c, {t}, id, 10000);
}

net::Stream* accept_upstream(net::Context& ctx, uv_tcp_t& listener, bool tls_possible, std::uint64_t id,
                             TimeMs auth_timeout_ms) {
    xmpp::SessionConfig c;
    c.role = xmpp::Role::Receiver;
    c.tls_policy = xmpp::TlsPolicy::Optional;
    c.tls_possible = tls_possible;
    c.offer_external = false;
    c.offer_dialback = true;
    c.offer_bidi = false;
    c.auth_timeout_ms = auth_timeout_ms;
    return net::Stream::accept(ctx, reinterpret_cast<uv_stream_t*>(&listener), net::StreamKind::OuterIn, false, c, id);
}

} // namespace s2smux::load
