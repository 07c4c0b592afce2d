#include "net/listener.h"

#include "common/log.h"

#include <fmt/format.h>

namespace s2smux::net {

Listener::Listener(uv_loop_t* loop, std::string name, AcceptFn on_accept)
    : loop_(loop), name_(std::move(name)), on_accept_(std::move(on_accept)) {}

Listener::~Listener() { close(); }

Result<void> Listener::listen(const Endpoint& ep, int backlog) {
    ep_ = ep;
    sockaddr_storage ss{};
    bool v6 = ep.host.find(':') != std::string::npos;
    int rc = v6 ? uv_ip6_addr(ep.host.c_str(), ep.port, reinterpret_cast<sockaddr_in6*>(&ss))
                : uv_ip4_addr(ep.host.c_str(), ep.port, reinterpret_cast<sockaddr_in*>(&ss));
    if (rc != 0) return make_error(fmt::format("{}: bad address {}", name_, ep.to_string()));
    tcp_ = new uv_tcp_t{};
    uv_tcp_init(loop_, tcp_);
    tcp_->data = this;
    rc = uv_tcp_bind(tcp_, reinterpret_cast<sockaddr*>(&ss), 0);
    if (rc == 0) rc = uv_listen(reinterpret_cast<uv_stream_t*>(tcp_), backlog, on_connection);
    if (rc != 0) {
        close();
        return make_error(fmt::format("cannot listen on {} ({}): {}", ep.to_string(), name_, uv_strerror(rc)));
    }
    log::info("", "listening on {} ({})", ep.to_string(), name_);
    return {};
}

void Listener::close() {
    if (!tcp_) return;
    uv_close(reinterpret_cast<uv_handle_t*>(tcp_), [](uv_handle_t* h) { delete reinterpret_cast<uv_tcp_t*>(h); });
    tcp_ = nullptr;
}

void Listener::on_connection(uv_stream_t* server, int status) {
    auto* self = static_cast<Listener*>(server->data);
    if (status < 0) {
        log::warn("", "{}: accept error: {}", self->name_, uv_strerror(status));
        return;
    }
    self->on_accept_(server);
}

} // namespace s2smux::net
