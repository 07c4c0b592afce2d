// Where to connect for a remote XMPP domain (RFC 6120 §3.2, XEP-0368):
// static [[route]] entries first (exact name, then "*.parent" wildcard), then
// DNS SRV _xmpps-server._tcp (direct TLS) and _xmpp-server._tcp (STARTTLS)
// through c-ares on the libuv loop, then A/AAAA of the domain on port 5269.
// Never blocks the loop.
#pragma once

#include "common/result.h"
#include "daemon/config.h"

#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace s2smux::route {

struct Target {
    std::string address;   // IP literal to connect to
    std::uint16_t port = 0;
    bool direct_tls = false;
    std::string host;      // SRV target / route host (for logs)
    std::string source;    // "route b.test", "SRV _xmpp-server._tcp.b.test", "A b.test"
    std::optional<xmpp::TlsPolicy> policy; // from a static route
};

struct Resolution {
    std::vector<Target> targets; // in the order to try
    std::string explain;         // one line per step, for logs and `s2smuxctl resolve`
};

// Pure SRV ordering (RFC 2782: priority ascending, weighted random within a
// priority; XEP-0368: direct TLS and STARTTLS records merged by priority, at
// equal priority direct TLS first). `rnd` in [0,1) is supplied for tests.
struct SrvRecord {
    std::string target;
    std::uint16_t port = 0;
    std::uint16_t priority = 0;
    std::uint16_t weight = 0;
    bool direct_tls = false;
};
std::vector<SrvRecord> order_srv(std::vector<SrvRecord> recs, const std::function<double()>& rnd);

// Static route lookup (exact first, then the longest matching wildcard).
const RouteConfig* find_route(const std::vector<RouteConfig>& routes, std::string_view domain);

// Tuning, mostly for tests.
struct ResolverOptions {
    int timeout_ms = 0; // first DNS try timeout (c-ares doubles it per round); 0: resolv.conf / c-ares default
    int tries = 0;      // tries per name server; 0: resolv.conf / c-ares default
    std::function<double()> rnd; // [0,1) for SRV weights; empty: a seeded PRNG
};

class Resolver {
public:
    using Callback = std::function<void(Result<Resolution>)>;

    // `nameserver` empty: system resolv.conf (and /etc/hosts for A/AAAA).
    // With a nameserver only that server is asked (no /etc/hosts).
    Resolver(uv_loop_t* loop, std::vector<RouteConfig> routes, std::optional<Endpoint> nameserver);
    Resolver(uv_loop_t* loop, std::vector<RouteConfig> routes, std::optional<Endpoint> nameserver,
             ResolverOptions options);
    // Calls shutdown() if that was not done. Handles are freed by their close
    // callbacks, so the loop must run once more before uv_loop_close().
    ~Resolver();
    Resolver(const Resolver&) = delete;
    Resolver& operator=(const Resolver&) = delete;

    Result<void> init();
    // Callback runs on the loop, never synchronously from inside resolve()
    // (even for static routes). Errors start with the domain and say what
    // failed: "b.test: no SRV, A or AAAA records (NXDOMAIN)", "b.test: DNS
    // timeout talking to 127.0.0.1:5353", "b.test: service explicitly
    // unavailable (SRV '.')". After shutdown() (or without init()) the
    // callback still runs, later, with an error.
    void resolve(const std::string& domain, Callback cb);
    void set_routes(std::vector<RouteConfig> routes);
    // Cancels pending queries: their callbacks run with an error
    // ("b.test: resolver shut down") before shutdown() returns, and no
    // callback of an earlier resolve() runs afterwards. Closes all handles
    // (uv_close); run the loop until they are closed, then destroy. Idempotent.
    void shutdown();

    struct Impl;

private:
    std::unique_ptr<Impl> impl_;
};

} // namespace s2smux::route
