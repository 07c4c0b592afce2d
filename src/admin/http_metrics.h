// The [metrics] listen endpoint: a minimal HTTP/1.x server on the loop that
// answers GET /metrics with the Prometheus text, one request per connection
// (Connection: close). It has no authentication, so the configuration only
// accepts loopback addresses.
//
// Each connection reads at most kMaxRequestBytes of request head within
// kRequestTimeoutMs; the answer is 200 (GET or HEAD /metrics), 404 (another
// path), 405 (another method), 400 (not an HTTP/1.0 or 1.1 request) or 431
// (head too large). The request parsing is sans-I/O (parse_http_request).
#pragma once

#include "common/result.h"

#include <uv.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace s2smux::admin {

constexpr std::size_t kMaxRequestBytes = 8 * 1024;
constexpr std::uint64_t kRequestTimeoutMs = 10000;
constexpr std::size_t kMaxHttpConnections = 16;
inline constexpr std::string_view kMetricsContentType = "text/plain; version=0.0.4; charset=utf-8";

struct HttpAnswer {
    int status = 0;           // 0: the request head is not complete yet
    bool head_only = false;   // HEAD: no body
    std::string version = "HTTP/1.1";
};

// What to answer to the bytes received so far (the request head, possibly
// followed by more bytes, which are ignored).
HttpAnswer parse_http_request(std::string_view received);

// A complete response: status line, Content-Type, Content-Length,
// Connection: close (Allow: GET, HEAD on 405), then the body unless
// head_only: `metrics_text` for 200, the reason phrase otherwise.
std::string http_response(const HttpAnswer& a, std::string_view metrics_text = {});

class HttpMetricsServer {
public:
    using Body = std::function<std::string()>; // the exposition text, built per request

    HttpMetricsServer(uv_loop_t* loop, Body body);
    // Calls close(); memory is freed by the loop's close callbacks.
    ~HttpMetricsServer();
    HttpMetricsServer(const HttpMetricsServer&) = delete;
    HttpMetricsServer& operator=(const HttpMetricsServer&) = delete;

    // `host` is an IP literal ("127.0.0.1", "::1").
    Result<void> listen(const std::string& host, std::uint16_t port);
    // Stops listening and closes every connection.
    void close();
    std::size_t connections() const { return conns_.size(); }

    struct Conn; // http_metrics.cc

private:
    static void on_connection(uv_stream_t* server, int status);
    void forget(Conn* c);

    uv_loop_t* loop_;
    Body body_;
    uv_tcp_t* tcp_ = nullptr;
    std::string shown_; // "http://127.0.0.1:9100/metrics"
    std::vector<Conn*> conns_;
};

} // namespace s2smux::admin
