// s2smuxd configuration (TOML). Every problem is reported with the file and
// the offending key, e.g. 'a.toml: [listen] outer: invalid address "1.2.3"
// (expected HOST:PORT or [IPv6]:PORT)', 'a.toml:12:3: TOML syntax error: ...',
// 'a.toml: unknown key [listen] outr'. Relative paths are resolved against the
// directory of the config file (made absolute). Keys, types and defaults:
// man/s2smux.conf.5.scd.
#pragma once

#include "common/result.h"
#include "xmpp/policy.h"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace s2smux {

struct Endpoint {
    std::string host; // IP literal ("127.0.0.1", "::1") or, for routes, a host name
    std::uint16_t port = 0;
    std::string to_string() const; // "127.0.0.1:5269", "[::1]:5269"
};

// "HOST:PORT", "[V6]:PORT"; with default_port != 0, "HOST" alone is accepted.
// HOST is an IPv4/IPv6 literal or a DNS-like host name. Errors read
// 'invalid address "1.2.3" (expected HOST:PORT or [IPv6]:PORT)'.
Result<Endpoint> parse_endpoint(std::string_view s, std::uint16_t default_port = 0);

// True for an IPv4 dotted quad or an IPv6 literal (without brackets).
bool is_ip_literal(std::string_view host);

// Lowercases a DNS-like domain and strips one trailing dot; rejects empty
// names and labels, labels > 63 and names > 253 octets, and characters other
// than letters, digits, '-', '_' and non-ASCII (IDN) bytes. The error says why
// (without naming the domain).
Result<std::string> normalize_domain(std::string_view name);

struct CertConfig {
    std::string cert; // PEM chain
    std::string key;  // PEM key
};

struct RouteConfig {
    std::string domain;              // exact "b.test" or wildcard "*.b.test"
    Endpoint address;
    bool direct_tls = false;         // XEP-0368: TLS from the first byte
    bool preconnect = false;         // open a stream at start-up (and keep one), e.g. to a partner gateway
    std::optional<xmpp::TlsPolicy> policy; // overrides [tls] policy for this remote
    std::string capture;             // capture file (absolute) for every stream of this domain; "" = none
};

struct Config {
    std::string path;     // the file it came from
    std::string base_dir; // for relative paths

    // [gateway]
    std::vector<std::string> domains;
    std::string admin_socket;
    std::string dialback_secret; // random per start when empty

    // [listen]
    std::optional<Endpoint> outer;     // public S2S, STARTTLS
    std::optional<Endpoint> outer_tls; // public S2S, direct TLS
    std::optional<Endpoint> inner;     // local server's outbound S2S

    // [upstream]
    std::optional<Endpoint> upstream;  // local server's S2S port
    xmpp::TlsPolicy upstream_tls = xmpp::TlsPolicy::Optional; // encrypt if offered, no verification
    // Domain pairs authenticated on one upstream stream (dialback
    // piggybacking); 1: one stream per pair.
    std::size_t upstream_max_pairs = 1000;

    // [tls]
    std::string ca_file;       // empty: system store
    bool system_ca = false;    // also load the system store when ca_file is set
    xmpp::TlsPolicy policy = xmpp::TlsPolicy::Required;

    std::vector<CertConfig> certs; // [[cert]]
    std::vector<RouteConfig> routes; // [[route]]

    // [dns]
    std::optional<Endpoint> nameserver;

    // [limits]
    std::size_t max_stanza_bytes = 256 * 1024;
    unsigned max_depth = 32;
    unsigned max_attrs = 64;
    std::size_t max_queue_stanzas = 10000;   // per pending route
    std::uint32_t connect_timeout_ms = 30000; // resolve + connect + TLS + auth
    std::uint32_t auth_timeout_ms = 30000;    // unauthenticated incoming stream
    std::uint32_t queue_timeout_ms = 60000;   // stanza waiting for a route
    std::uint32_t drain_timeout_ms = 10000;   // SIGTERM: time for queues to empty before closing
    std::uint32_t keepalive_ms = 60000;       // whitespace on an authenticated stream idle this long (0: never)
    std::uint32_t dead_peer_ms = 180000;      // mux stream silent this long: closed (0: never)
    std::uint32_t upstream_idle_ms = 600000;  // upstream stream without a stanza this long: closed (0: never)
    std::size_t stream_write_buffer = 1024 * 1024;     // unsent output of one stream that pauses its sources
    std::size_t max_buffered_bytes = 64 * 1024 * 1024; // the same over all streams: pauses every source

    // [stream_management]: XEP-0198 acks on remote streams and toward the
    // local server, so that a broken stream's undelivered stanzas are known
    bool sm_enabled = true;
    std::size_t sm_max_unacked_bytes = 64u << 20; // per stream; beyond, <resource-constraint/>
    std::uint32_t sm_resume_s = 60;               // a broken multiplexed stream may be resumed this long (0: never)

    // [mux]: one multiplexed stream per remote s2smux gateway
    bool mux_enabled = true;          // offer / request multiplexing
    bool mux_strict = false;          // a stanza for a pair that was not multiplexed closes the stream
    std::size_t mux_max_domains = 10000; // peer domains accepted per stream
    std::size_t mux_max_pending = 1000;  // peer adds being verified at once
    double mux_add_rate = 2000;       // peer adds per second per stream ...
    double mux_add_burst = 12000;     // ... and burst

    // [metrics]: Prometheus text on a loopback HTTP port (no authentication)
    std::optional<Endpoint> metrics_listen;

    // [log]
    std::string log_level = "info";
    std::string log_file; // empty: stderr
};

Result<Config> parse_config(std::string_view toml_text, const std::string& path);
Result<Config> load_config(const std::string& path);

} // namespace s2smux
