#include "admin/http_metrics.h"

#include "common/log.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>

namespace s2smux::admin {

namespace {

constexpr const char* kCtx = "metrics";

bool is_tchar(char c) { // RFC 9110 token characters
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

const char* reason(int status) {
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 431: return "Request Header Fields Too Large";
    }
    return "Error";
}

HttpAnswer status(int code, std::string_view version = "HTTP/1.1") {
    HttpAnswer a;
    a.status = code;
    a.version = std::string(version);
    return a;
}

} // namespace

HttpAnswer parse_http_request(std::string_view in) {
    auto eol = in.find('\n');
    if (eol == std::string_view::npos) return in.size() > kMaxRequestBytes ? status(431) : HttpAnswer{};
    // The request line is judged at once: garbage gets its 400 without waiting.
    std::string_view line = in.substr(0, eol);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    auto sp1 = line.find(' ');
    auto sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
    if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos) return status(400);
    std::string_view method = line.substr(0, sp1), target = line.substr(sp1 + 1, sp2 - sp1 - 1),
                     version = line.substr(sp2 + 1);
    if (version != "HTTP/1.0" && version != "HTTP/1.1") return status(400);
    if (method.empty() || !std::all_of(method.begin(), method.end(), is_tchar)) return status(400, version);
    if (target.empty() || target.front() != '/' ||
        std::any_of(target.begin(), target.end(), [](char c) { return static_cast<unsigned char>(c) <= 0x20 || c == 0x7f; }))
        return status(400, version);

    // Headers are not needed, but the whole head is read before answering.
    std::size_t end = in.find("\n\n", eol);
    std::size_t end_crlf = in.find("\n\r\n", eol);
    if (end == std::string_view::npos && end_crlf == std::string_view::npos)
        return in.size() > kMaxRequestBytes ? status(431, version) : HttpAnswer{};
    if (std::min(end, end_crlf) > kMaxRequestBytes) return status(431, version);

    std::string_view path = target.substr(0, target.find_first_of("?#"));
    if (path != "/metrics") return status(404, version);
    if (method != "GET" && method != "HEAD") return status(405, version);
    HttpAnswer a = status(200, version);
    a.head_only = method == "HEAD";
    return a;
}

std::string http_response(const HttpAnswer& a, std::string_view metrics_text) {
    std::string err;
    std::string_view body = metrics_text, type = kMetricsContentType;
    if (a.status != 200) {
        err = fmt::format("{} {}\n", a.status, reason(a.status));
        body = err;
        type = "text/plain; charset=utf-8";
    }
    std::string out = fmt::format("{} {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{}Connection: close\r\n\r\n",
                                  a.version, a.status, reason(a.status), type, body.size(),
                                  a.status == 405 ? "Allow: GET, HEAD\r\n" : "");
    if (!a.head_only) out += body;
    return out;
}

// ---------------------------------------------------------------------------
// One connection: read the head, write one answer, close. Freed by the close
// callback of its last handle.

struct HttpMetricsServer::Conn {
    HttpMetricsServer* server; // nullptr once closing
    uv_tcp_t tcp{};
    uv_timer_t timer{};
    uv_write_t wreq{};
    int handles = 0;
    bool answered = false;
    bool closing = false;
    std::array<char, 4096> rbuf{};
    std::string in, out;

    explicit Conn(HttpMetricsServer* s) : server(s) {}

    void answer(const HttpAnswer& a) {
        answered = true;
        uv_read_stop(reinterpret_cast<uv_stream_t*>(&tcp));
        out = http_response(a, a.status == 200 && server ? server->body_() : std::string()); // HEAD: its length
        if (a.status != 200) log::debug(kCtx, "HTTP {} for a request of {} bytes", a.status, in.size());
        uv_buf_t b = uv_buf_init(out.data(), static_cast<unsigned>(out.size()));
        wreq.data = this;
        if (uv_write(&wreq, reinterpret_cast<uv_stream_t*>(&tcp), &b, 1, write_cb) != 0) close();
    }

    static void alloc_cb(uv_handle_t* h, std::size_t, uv_buf_t* buf) {
        auto* c = static_cast<Conn*>(h->data);
        *buf = uv_buf_init(c->rbuf.data(), static_cast<unsigned>(c->rbuf.size()));
    }

    static void read_cb(uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
        auto* c = static_cast<Conn*>(s->data);
        if (c->closing || c->answered) return;
        if (n < 0) { // EOF before a complete request, or an error
            c->close();
            return;
        }
        c->in.append(buf->base, static_cast<std::size_t>(n));
        HttpAnswer a = parse_http_request(c->in);
        if (a.status) c->answer(a);
    }

    static void write_cb(uv_write_t* req, int) {
        // Also called with UV_ECANCELED when close() came first.
        static_cast<Conn*>(req->data)->close();
    }

    static void timer_cb(uv_timer_t* t) {
        auto* c = static_cast<Conn*>(t->data);
        if (c->answered) { // the client does not read its answer
            c->close();
            return;
        }
        c->answer(status(408));
        uv_timer_start(t, timer_cb, kRequestTimeoutMs, 0); // for reading the 408
    }

    void close() {
        if (closing) return;
        closing = true;
        if (server) server->forget(this);
        server = nullptr;
        uv_close(reinterpret_cast<uv_handle_t*>(&tcp), close_cb);
        uv_close(reinterpret_cast<uv_handle_t*>(&timer), close_cb);
    }

    static void close_cb(uv_handle_t* h) {
        auto* c = static_cast<Conn*>(h->data);
        if (--c->handles == 0) delete c;
    }
};

HttpMetricsServer::HttpMetricsServer(uv_loop_t* loop, Body body) : loop_(loop), body_(std::move(body)) {}

HttpMetricsServer::~HttpMetricsServer() { close(); }

Result<void> HttpMetricsServer::listen(const std::string& host, std::uint16_t port) {
    sockaddr_storage ss{};
    bool v6 = host.find(':') != std::string::npos;
    shown_ = fmt::format("http://{}{}{}:{}/metrics", v6 ? "[" : "", host, v6 ? "]" : "", port);
    int rc = v6 ? uv_ip6_addr(host.c_str(), port, reinterpret_cast<sockaddr_in6*>(&ss))
                : uv_ip4_addr(host.c_str(), port, reinterpret_cast<sockaddr_in*>(&ss));
    if (rc != 0) return make_error(fmt::format("bad address {}", host));
    tcp_ = new uv_tcp_t{};
    uv_tcp_init(loop_, tcp_);
    tcp_->data = this;
    rc = uv_tcp_bind(tcp_, reinterpret_cast<sockaddr*>(&ss), 0);
    if (rc == 0) rc = uv_listen(reinterpret_cast<uv_stream_t*>(tcp_), 16, on_connection);
    if (rc != 0) {
        close();
        return make_error(fmt::format("cannot listen on {}: {}", shown_, uv_strerror(rc)));
    }
    log::info(kCtx, "serving Prometheus metrics on {}", shown_);
    return {};
}

void HttpMetricsServer::close() {
    if (tcp_) {
        uv_close(reinterpret_cast<uv_handle_t*>(tcp_), [](uv_handle_t* h) { delete reinterpret_cast<uv_tcp_t*>(h); });
        tcp_ = nullptr;
        log::info(kCtx, "stopped serving metrics on {}", shown_);
    }
    auto conns = std::move(conns_);
    conns_.clear();
    for (Conn* c : conns) {
        c->server = nullptr;
        c->close();
    }
}

void HttpMetricsServer::forget(Conn* c) {
    auto it = std::find(conns_.begin(), conns_.end(), c);
    if (it != conns_.end()) conns_.erase(it);
}

void HttpMetricsServer::on_connection(uv_stream_t* listener, int status) {
    auto* self = static_cast<HttpMetricsServer*>(listener->data);
    if (status < 0) {
        log::warn(kCtx, "accept error: {}", uv_strerror(status));
        return;
    }
    auto* c = new Conn(self);
    uv_tcp_init(self->loop_, &c->tcp);
    uv_timer_init(self->loop_, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    c->handles = 2;
    self->conns_.push_back(c);
    if (uv_accept(listener, reinterpret_cast<uv_stream_t*>(&c->tcp)) != 0 || self->conns_.size() > kMaxHttpConnections) {
        c->close(); // too many scrapers at once: the connection is refused by closing it
        return;
    }
    uv_timer_start(&c->timer, Conn::timer_cb, kRequestTimeoutMs, 0);
    uv_read_start(reinterpret_cast<uv_stream_t*>(&c->tcp), Conn::alloc_cb, Conn::read_cb);
}

} // namespace s2smux::admin
