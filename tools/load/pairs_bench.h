// s2smux-bench's N x M section: traffic over every domain pair of two
// clouds through ONE multiplexed stream.
//
//   generator --ONE S2S stream, N x M piggybacked dialback pairs--> [gateway A inner]
//     ==ONE mux stream==> [gateway B outer] --upstream S2S, one stream per pair--> sink
//
// Gateway A serves d1..dN.bench.test, gateway B d(N+1)..d(N+M).bench.test
// (one ECDSA P-256 certificate each, from s2smux-gencerts); both add every
// domain to the mux stream when it is enabled. Stanza k goes from local
// k mod N to remote (k / N) mod M, so N x M consecutive stanzas cover every
// pair once. The sink checks every stanza (content, addresses, order within
// its pair) and its latency.
//
// Phases: setup (gateways up, every domain on the mux stream), pairs (one
// stanza per pair: gateway B opens its upstream stream for each pair),
// measure (closed loop, `window` in flight), drain. TCP connections are
// counted from /proc/net/tcp at the end of the measured phase.
//
// Gateway B piggybacks pairs on its upstream streams (dialback, one pair
// per remote domain on each: 1,000 streams for 1,000 x 1,000). Beyond
// `max_inner` pairs (only when given) the sink closes each upstream stream
// once a stanza arrived on it, and every pair carries exactly one stanza
// (no separate measured phase: the pairs phase is measured).
#pragma once

#include "net/stream.h"
#include "tls/certs.h"
#include "tls/trust.h"
#include "tools/load/admin_client.h"
#include "tools/load/bench.h"
#include "tools/load/gateway_pair.h"
#include "tools/load/gateway_process.h"
#include "tools/load/loop_util.h"

#include <uv.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace s2smux::load {

struct PairsOptions {
    std::uint64_t local = 100, remote = 100; // N, M
    std::uint64_t stanzas = 200000;          // measured, over all pairs in turn
    std::uint64_t window = 5000;             // stanzas in flight at most
    std::uint64_t max_inner = UINT64_MAX;    // pairs beyond which the sink closes streams once used
    bool inner_tls = true;                   // generator takes STARTTLS on A's inner listener
    double stall_timeout_s = 30;
    double setup_timeout_s = 600;            // every domain on the mux stream
    bool progress = true;
    std::string gencerts;
};

struct Conns {
    std::uint64_t a_b = 0;       // established TCP connections between gateway A and B's outer listener
    std::uint64_t gen_a = 0;     // generator -> gateway A's inner listener
    std::uint64_t b_sink = 0;    // gateway B -> the sink (upstream: B's local server)
    std::uint64_t b_sink_max = 0; // at most during the run (sampled every 100 ms)
};

struct PairsResult {
    bool ok = false;
    std::string error;
    std::uint64_t local = 0, remote = 0, pairs = 0;
    bool close_done = false;          // pair streams closed once done (pairs > max_inner)
    double certgen_s = 0;
    double domains_s = 0;             // gateways started -> every domain on the mux stream
    double pairs_s = 0;               // first stanza of the pairs phase -> one stanza of every pair received
    std::uint64_t stanzas = 0, bytes = 0; // measured phase, received and verified
    double seconds = 0;
    double p50_ms = 0, p99_ms = 0, p999_ms = 0, max_ms = 0;
    double a_cpu_s = 0, b_cpu_s = 0, tool_cpu_s = 0, other_cpu_s = 0;
    std::uint64_t total_received = 0;  // every phase
    Conns conns;
    std::uint64_t a_rss_kb = 0, b_rss_kb = 0;
    Stats a_stats, b_stats;
    std::string a_exit, b_exit, log_tail;
};

class PairsBench final : public LoopDriver {
public:
    PairsBench(const Env& env, PairsOptions opts);
    ~PairsBench() override;

    PairsResult run();

private:
    enum class Phase : std::uint8_t { Starting, Connecting, Pairs, Measure, Drain, Finishing, Closing, Closed };

    // net::StreamOwner (the rest: LoopDriver's defaults; the sink has no certificate)
    bool stream_hosts(net::Stream& s, std::string_view domain) override;
    xmpp::DialbackVerdict stream_dialback_request(net::Stream& s, const xmpp::DialbackRequest& r) override;
    void stream_authenticated(net::Stream& s, std::string_view from, std::string_view to, bool dir_in,
                              xmpp::AuthMethod m) override;
    void stream_stanza(net::Stream& s, const xml::Node& el, const xmpp::StanzaRoute& r) override;
    void stream_closed(net::Stream& s, const xmpp::CloseInfo& info) override;

    std::string domain(std::uint64_t i) const; // 0-based: locals first, then remotes
    std::uint64_t pair_of(std::uint64_t seq) const { return seq % res_.pairs; }
    static std::pair<std::string, std::string> jids(const void* self, std::uint64_t seq);
    std::string prepare_certs();
    std::string start_gateways();
    void poll_setup();
    void start_generator();
    void on_accept();
    void pump();
    void tick();
    void enter(Phase p);
    void finish();
    void fail(std::string why);
    void teardown();
    AdminClient* admin(const std::string& path, const char* who);

    const Env& env_;
    PairsOptions o_;
    PairsResult res_;
    tls::CertStore certs_;
    tls::TrustStore trust_;
    std::string certs_dir_;
    uv_tcp_t listener_{};
    std::uint16_t sink_port_ = 0, a_inner_ = 0, b_outer_ = 0;
    GatewayPair gws_{&loop_};
    bool poll_inflight_ = false;

    Phase phase_ = Phase::Starting;
    net::Stream* gen_ = nullptr;
    std::vector<net::Stream*> sinks_;
    std::uint64_t next_id_ = 1;
    std::string scratch_;

    std::uint64_t sent_ = 0, received_ = 0, pairs_end_ = 0, total_ = 0;
    std::vector<std::uint64_t> next_seq_;   // per pair: the seq it must receive next
    std::vector<std::uint64_t> lat_ns_;     // measured phase
    std::uint64_t measure_bytes_ = 0;
    std::uint64_t t_start_ = 0, t_pairs_ = 0, t_measure_ = 0, t_end_ = 0;
    double a_cpu0_ = 0, b_cpu0_ = 0, tool_cpu0_ = 0, machine0_ = 0;
    std::uint64_t last_progress_ns_ = 0, last_report_ns_ = 0, closing_ns_ = 0;
};

} // namespace s2smux::load
