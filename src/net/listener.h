// A listening TCP socket on the loop; hands accepted connections to a callback.
#pragma once

#include "common/result.h"
#include "daemon/config.h"

#include <uv.h>

#include <functional>
#include <string>

namespace s2smux::net {

class Listener {
public:
    using AcceptFn = std::function<void(uv_stream_t* server)>;

    Listener(uv_loop_t* loop, std::string name, AcceptFn on_accept);
    ~Listener();
    Listener(const Listener&) = delete;
    Listener& operator=(const Listener&) = delete;

    Result<void> listen(const Endpoint& ep, int backlog = 511);
    // Stops accepting; the handle is closed (and this object may be destroyed
    // once the loop ran the close callback).
    void close();
    const std::string& name() const { return name_; }
    const Endpoint& endpoint() const { return ep_; }

private:
    static void on_connection(uv_stream_t* server, int status);
    uv_loop_t* loop_;
    std::string name_;
    AcceptFn on_accept_;
    uv_tcp_t* tcp_ = nullptr;
    Endpoint ep_;
};

} // namespace s2smux::net
