// The admin socket: a Unix stream socket speaking the line protocol of
// admin/protocol.h, one command at a time per connection, answered by a
// Backend (the Gateway) through the Dispatcher's command table.
//
// Whoever can connect controls the gateway, so the socket is created with
// mode 0600. The process must ignore SIGPIPE (s2smuxd does): a client that
// goes away while its reply is written must not kill the daemon.
#pragma once

#include "admin/backend.h"
#include "admin/protocol.h"
#include "common/result.h"

#include <uv.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace s2smux::admin {

struct ServerLimits {
    std::size_t max_line = kMaxLineBytes;       // longer request: ERR, connection closed
    std::size_t max_pending_bytes = 64 * 1024;  // queued request bytes before reading pauses
    std::size_t max_output_bytes = 4 << 20;     // unsent reply bytes before commands pause
    std::uint64_t idle_timeout_ms = 60000;      // no command running and no I/O: closed (0: never)
    std::size_t max_connections = 32;           // more: "ERR too many admin connections", closed
};

class Server {
public:
    Server(uv_loop_t* loop, Backend& backend);
    // Calls close(); the memory of connections and handles is freed by the
    // loop's close callbacks, so run the loop once more before uv_loop_close().
    ~Server();
    Server(const Server&) = delete;
    Server& operator=(const Server&) = delete;

    // Creates the socket at `path` (mode 0600) and listens. A stale socket
    // file (nothing answers on it) is replaced; a live one is an error, as is
    // a missing directory or an existing file that is not a socket.
    Result<void> listen(const std::string& path);
    // Stops listening, closes every connection (replies still pending in the
    // backend are dropped when they arrive), removes the socket file.
    void close();

    // The command table, to add daemon-specific commands.
    Dispatcher& dispatcher() { return dispatcher_; }
    void set_limits(const ServerLimits& l) { limits_ = l; }
    const ServerLimits& limits() const { return limits_; }

    const std::string& path() const { return path_; }
    bool listening() const { return pipe_ != nullptr; }
    std::size_t connections() const { return conns_.size(); }

    struct Conn; // one client connection (server.cc)

private:
    static void on_connection(uv_stream_t* server, int status);
    void forget(Conn* c);

    uv_loop_t* loop_;
    Backend& backend_;
    Dispatcher dispatcher_;
    ServerLimits limits_;
    uv_pipe_t* pipe_ = nullptr;
    std::string path_;
    std::vector<Conn*> conns_;
    std::uint64_t next_id_ = 1;
};

} // namespace s2smux::admin
