// A byte relay on loopback for the fault suite (fault_run.h): listens on
// 127.0.0.1:<port>, connects each accepted connection to 127.0.0.1:<target>
// and copies bytes both ways. pause(true) stops reading from the accepted
// side (a receiver that stops reading: the sender's kernel buffers fill and
// its writes back up); the other direction keeps flowing. The relay itself
// buffers at most ~1 MiB per direction (it stops reading while the other
// side's write queue is above that), so the backlog is the sender's.
#pragma once

#include <uv.h>

#include <cstdint>
#include <string>
#include <vector>

namespace s2smux::load {

class TcpRelay {
public:
    explicit TcpRelay(uv_loop_t* loop) : loop_(loop) {}
    ~TcpRelay() = default; // close() and run the loop first
    TcpRelay(const TcpRelay&) = delete;
    TcpRelay& operator=(const TcpRelay&) = delete;

    // Listens on 127.0.0.1:0; empty string or what failed.
    std::string listen(std::uint16_t target_port);
    std::uint16_t port() const { return port_; }
    void pause(bool on);
    bool paused() const { return paused_; }
    // Closes the listener and every connection (pending bytes dropped).
    void close();

    struct Pair;
    struct Side;

private:
    friend struct Pair;
    void on_accept();
    void forget(Pair* p);

    uv_loop_t* loop_;
    uv_tcp_t listener_{};
    bool listening_ = false;
    bool paused_ = false;
    std::uint16_t port_ = 0, target_ = 0;
    std::vector<Pair*> pairs_;
};

} // namespace s2smux::load
