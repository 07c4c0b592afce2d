#define BOOST_TEST_MODULE http_metrics
#include <boost/test/unit_test.hpp>

#include "admin/http_metrics.h"

#include <string>

using namespace s2smux::admin;

namespace {
int status_of(std::string_view req) { return parse_http_request(req).status; }
} // namespace

BOOST_AUTO_TEST_CASE(metrics_get_and_head) {
    auto a = parse_http_request("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:9100\r\nAccept: */*\r\n\r\n");
    BOOST_TEST(a.status == 200);
    BOOST_TEST(!a.head_only);
    BOOST_TEST(a.version == "HTTP/1.1");
    a = parse_http_request("HEAD /metrics?x=1 HTTP/1.0\n\n");
    BOOST_TEST(a.status == 200);
    BOOST_TEST(a.head_only);
    BOOST_TEST(a.version == "HTTP/1.0");
}

BOOST_AUTO_TEST_CASE(incomplete_heads_wait) {
    BOOST_TEST(status_of("") == 0);
    BOOST_TEST(status_of("GET /metr") == 0);
    BOOST_TEST(status_of("GET /metrics HTTP/1.1\r\nHost: x\r\n") == 0);
    // ... up to the bound.
    BOOST_TEST(status_of(std::string(kMaxRequestBytes + 1, 'G')) == 431);
    BOOST_TEST(status_of("GET /metrics HTTP/1.1\r\nX: " + std::string(kMaxRequestBytes, 'x')) == 431);
}

BOOST_AUTO_TEST_CASE(errors) {
    BOOST_TEST(status_of("GET / HTTP/1.1\r\n\r\n") == 404);
    BOOST_TEST(status_of("GET /metricsx HTTP/1.1\r\n\r\n") == 404);
    BOOST_TEST(status_of("POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n") == 405);
    BOOST_TEST(status_of("DELETE /metrics HTTP/1.0\r\n\r\n") == 405);
    // Garbage is answered as soon as the first line is complete.
    BOOST_TEST(status_of("hello\r\n") == 400);
    BOOST_TEST(status_of("GET /metrics\r\n") == 400);          // HTTP/0.9
    BOOST_TEST(status_of("GET /metrics HTTP/2.0\r\n") == 400);
    BOOST_TEST(status_of("GET  /metrics HTTP/1.1\r\n") == 400); // two spaces
    BOOST_TEST(status_of("G(T /metrics HTTP/1.1\r\n") == 400);
    BOOST_TEST(status_of("GET metrics HTTP/1.1\r\n") == 400);
    BOOST_TEST(status_of(std::string("\x16\x03\x01\x02\x00\n", 6)) == 400); // a TLS ClientHello
}

BOOST_AUTO_TEST_CASE(responses) {
    HttpAnswer ok = parse_http_request("GET /metrics HTTP/1.0\r\n\r\n");
    BOOST_TEST(http_response(ok, "a 1\n") ==
               "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
               "Content-Length: 4\r\nConnection: close\r\n\r\na 1\n");
    HttpAnswer head = parse_http_request("HEAD /metrics HTTP/1.1\r\n\r\n");
    BOOST_TEST(http_response(head, "a 1\n").ends_with("Content-Length: 4\r\nConnection: close\r\n\r\n"));
    HttpAnswer bad = parse_http_request("PUT /metrics HTTP/1.1\r\n\r\n");
    std::string r = http_response(bad, "never shown");
    BOOST_TEST(r.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"));
    BOOST_TEST(r.find("Allow: GET, HEAD\r\n") != std::string::npos);
    BOOST_TEST(r.ends_with("\r\n\r\n405 Method Not Allowed\n"));
    BOOST_TEST(r.find("never shown") == std::string::npos);
}
