// A client of s2smuxd's admin socket (admin/protocol.h) on the load tool's
// own libuv loop: requests may be pipelined on one connection, replies come
// back in order, each handed to its callback with the time it completed.
#pragma once

#include "admin/backend.h"
#include "admin/protocol.h"

#include <uv.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace s2smux::load {

class AdminClient {
public:
    // reply, uv_hrtime() when its terminator line was read
    using OnReply = std::function<void(const admin::Reply& r, std::uint64_t t_ns)>;
    // connected (empty error) or failed (connect, read, write, protocol error, EOF)
    using OnStatus = std::function<void(const std::string& error)>;

    explicit AdminClient(uv_loop_t* loop) : loop_(loop) {}
    // The handle must have been closed (close(), then the loop run) before.
    ~AdminClient() = default;
    AdminClient(const AdminClient&) = delete;
    AdminClient& operator=(const AdminClient&) = delete;

    // Connects to the Unix socket at `path`; `status` is called once with ""
    // when connected, later with an error if the connection fails.
    void connect(const std::string& path, OnStatus status);
    // Queues request lines (each without "\n") in one write (made once
    // connected, if still connecting); `on_reply` is called once per line,
    // in order.
    void send(const std::vector<std::string>& lines, const OnReply& on_reply);
    void send(std::string line, OnReply on_reply) { send(std::vector<std::string>{std::move(line)}, on_reply); }

    bool connected() const { return connected_; }
    bool usable() const { return open_ && !closing_; } // connecting or connected
    std::size_t outstanding() const { return waiting_.size(); }
    // Closes the connection (pending replies are dropped); idempotent.
    void close();

private:
    static void on_connect(uv_connect_t* req, int status);
    static void alloc_cb(uv_handle_t* h, std::size_t, uv_buf_t* buf);
    static void read_cb(uv_stream_t* s, ssize_t n, const uv_buf_t* buf);
    void failed(std::string why);
    void write(std::string data);

    uv_loop_t* loop_;
    uv_pipe_t pipe_{};
    uv_connect_t creq_{};
    bool open_ = false, connected_ = false, closing_ = false;
    OnStatus status_;
    admin::ReplyReader reader_;
    std::deque<OnReply> waiting_;
    std::string early_; // requests sent before the connection was up
    char rbuf_[16384];
};

} // namespace s2smux::load
