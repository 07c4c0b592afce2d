#include "tools/load/tcp_relay.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>

namespace s2smux::load {

namespace {
constexpr std::size_t kMaxQueued = 1 << 20; // per direction, in the relay's own write queue
constexpr std::size_t kReadBuf = 64 * 1024;

struct WriteReq {
    uv_write_t req{};
    std::string data;
    void* pair = nullptr;
};
} // namespace

struct TcpRelay::Side {
    uv_tcp_t tcp{};
    Pair* pair = nullptr;
    bool reading = false, eof = false;
};

struct TcpRelay::Pair {
    TcpRelay* relay = nullptr;
    Side in, out; // in: accepted; out: to the target
    uv_connect_t creq{};
    uv_shutdown_t sreq[2]{};
    bool connected = false, closing = false;
    int handles = 2, shut = 0;

    Side& other(Side& s) { return &s == &in ? out : in; }

    void update(Side& s) {
        bool want = connected && !closing && !s.eof && !(&s == &in && relay->paused_) &&
                    other(s).tcp.write_queue_size < kMaxQueued;
        if (want == s.reading) return;
        s.reading = want;
        if (want) uv_read_start(reinterpret_cast<uv_stream_t*>(&s.tcp), alloc_cb, read_cb);
        else uv_read_stop(reinterpret_cast<uv_stream_t*>(&s.tcp));
    }
    void update_both() {
        update(in);
        update(out);
    }

    void close() {
        if (closing) return;
        closing = true;
        for (Side* s : {&in, &out})
            uv_close(reinterpret_cast<uv_handle_t*>(&s->tcp), [](uv_handle_t* h) {
                Pair* p = static_cast<Side*>(h->data)->pair;
                if (--p->handles == 0) p->relay->forget(p);
            });
    }

    static void alloc_cb(uv_handle_t*, std::size_t, uv_buf_t* buf) {
        buf->base = static_cast<char*>(std::malloc(kReadBuf));
        buf->len = buf->base ? kReadBuf : 0;
    }

    static void read_cb(uv_stream_t* st, ssize_t n, const uv_buf_t* buf) {
        Side& s = *static_cast<Side*>(st->data);
        Pair& p = *s.pair;
        if (n > 0 && !p.closing) {
            auto* w = new WriteReq;
            w->data.assign(buf->base, static_cast<std::size_t>(n));
            w->req.data = w;
            w->pair = &p;
            uv_buf_t b = uv_buf_init(w->data.data(), static_cast<unsigned>(w->data.size()));
            if (uv_write(&w->req, reinterpret_cast<uv_stream_t*>(&p.other(s).tcp), &b, 1, write_cb) != 0) {
                delete w;
                p.close();
            } else {
                p.update(s);
            }
        } else if (n == UV_EOF) {
            // Half-close: pass the FIN on once what is queued is written.
            s.eof = true;
            p.update(s);
            Side& o = p.other(s);
            uv_shutdown_t* req = &p.sreq[&o == &p.in ? 0 : 1];
            req->data = &p;
            if (uv_shutdown(req, reinterpret_cast<uv_stream_t*>(&o.tcp), [](uv_shutdown_t* r, int) {
                    Pair* pp = static_cast<Pair*>(r->data);
                    if (++pp->shut == 2) pp->close();
                }) != 0)
                p.close();
        } else if (n < 0) {
            p.close();
        }
        std::free(buf->base);
    }

    static void write_cb(uv_write_t* req, int status) {
        std::unique_ptr<WriteReq> w(static_cast<WriteReq*>(req->data));
        Pair& p = *static_cast<Pair*>(w->pair);
        if (status < 0) p.close();
        else p.update_both();
    }
};

std::string TcpRelay::listen(std::uint16_t target_port) {
    target_ = target_port;
    uv_tcp_init(loop_, &listener_);
    listener_.data = this;
    listening_ = true;
    sockaddr_in a{};
    uv_ip4_addr("127.0.0.1", 0, &a);
    int rc = uv_tcp_bind(&listener_, reinterpret_cast<sockaddr*>(&a), 0);
    if (rc == 0)
        rc = uv_listen(reinterpret_cast<uv_stream_t*>(&listener_), 16, [](uv_stream_t* s, int status) {
            if (status == 0) static_cast<TcpRelay*>(s->data)->on_accept();
        });
    int len = sizeof a;
    if (rc == 0) rc = uv_tcp_getsockname(&listener_, reinterpret_cast<sockaddr*>(&a), &len);
    if (rc != 0) return fmt::format("relay listener: {}", uv_strerror(rc));
    port_ = ntohs(a.sin_port);
    return {};
}

void TcpRelay::on_accept() {
    auto* p = new Pair;
    p->relay = this;
    for (Side* s : {&p->in, &p->out}) {
        uv_tcp_init(loop_, &s->tcp);
        s->tcp.data = s;
        s->pair = p;
    }
    pairs_.push_back(p);
    if (uv_accept(reinterpret_cast<uv_stream_t*>(&listener_), reinterpret_cast<uv_stream_t*>(&p->in.tcp)) != 0)
        return p->close();
    sockaddr_in a{};
    uv_ip4_addr("127.0.0.1", target_, &a);
    p->creq.data = p;
    int rc = uv_tcp_connect(&p->creq, &p->out.tcp, reinterpret_cast<sockaddr*>(&a), [](uv_connect_t* r, int status) {
        Pair* pp = static_cast<Pair*>(r->data);
        if (status != 0 || pp->closing) return pp->close();
        pp->connected = true;
        pp->update_both();
    });
    if (rc != 0) p->close();
}

void TcpRelay::pause(bool on) {
    paused_ = on;
    for (Pair* p : pairs_) p->update_both();
}

void TcpRelay::forget(Pair* p) {
    std::erase(pairs_, p);
    delete p;
}

void TcpRelay::close() {
    if (listening_) {
        listening_ = false;
        uv_close(reinterpret_cast<uv_handle_t*>(&listener_), nullptr);
    }
    std::vector<Pair*> all = pairs_;
    for (Pair* p : all) p->close();
}

} // namespace s2smux::load
