// The two-gateway topology of the load tool (--topology mux): stanza
// latency on one busy multiplexed stream while domains are added to it.
//
//   generator --S2S (dialback)--> [gateway A inner] ==ONE mux stream==> [gateway B outer]
//             --upstream S2S (dialback)--> sink (gateway B's local server)
//
// Gateway A serves a.test, gateway B serves b.test; A has a preconnected
// [[route]] to B, so the mux stream exists before the first stanza. Both
// trust a bench CA; s2smux-gencerts makes a.test, b.test and the extra
// domains d1..dN.bench.test in a temporary directory.
//
// Timeline (one run):
//   warm-up      closed loop, opens B's upstream stream to the sink
//   capacity     closed loop with `window` in flight: the saturated rate
//   settle       open loop at `rate` (default: rate_fraction x capacity)
//   idle         open loop, no adds                     -- measured
//   adds         N `cert add` pipelined to A's admin    -- measured
//                socket; ends with the N-th answer
//   after        open loop, no adds                     -- measured
//   drain        nothing sent; every stanza must arrive
// The generator is open-loop from `settle` on: stanza k is due at
// t0 + k/rate and carries that due time as its timestamp, so a stall
// anywhere (gateways or this tool) shows as latency instead of slowing the
// sender down (no coordinated omission). Latency is attributed to the
// phase in which the stanza was due to be sent.
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

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace s2smux::load {

inline constexpr int kSchedIdle = 100;

struct MuxOptions {
    std::uint64_t adds = 1000;        // domains d1..dN added during the add phase
    std::size_t add_conns = 1;        // admin connections the adds are spread over (1: one pipelined connection)
    double rate = -1;                 // stanzas/s: < 0 auto (rate_fraction x capacity), 0 closed loop (window)
    double rate_fraction = 0.6;
    double capacity_s = 4;            // closed-loop phase that measures the capacity (auto rate only)
    double settle_s = 2;
    double idle_s = 10;
    double after_s = 10;
    std::uint64_t window = 10000;     // closed loop: in flight at most
    std::uint64_t max_inflight = 400000; // open loop: safety cap (~440 MB of stanzas)
    std::uint64_t warmup = 100;
    bool inner_tls = true;
    bool dialback_verify = true;      // sink verifies B's dialback key via B's inner listener (else: accepts it)
    std::string gw_log_level = "info";
    double stall_timeout_s = 20;
    bool progress = true;
    std::string gencerts;             // s2smux-gencerts binary
    double bucket_s = 0.5;            // timeline bucket (by due time)
    unsigned pace_us = 200;           // open loop: the sender wakes at least this often
    int nice_pool = 0;                // experiment: nice value for the gateways' thread-pool threads (0: untouched,
                                      // kSchedIdle: SCHED_IDLE)
};

struct PhaseStats {
    std::string name;
    double seconds = 0;                // wall time of the phase
    std::uint64_t stanzas = 0;         // sent (due) during the phase, all received
    double p50_ms = 0, p99_ms = 0, p999_ms = 0, max_ms = 0;
    double lag_p99_ms = 0, lag_max_ms = 0; // generator behind its schedule (open loop)
    double gw_a_cpu_s = 0, gw_b_cpu_s = 0, tool_cpu_s = 0, other_cpu_s = 0;
    double gw_a_loop_s = 0, gw_b_loop_s = 0; // of which the event-loop thread (the rest: thread pool)
    std::uint64_t max_inflight = 0;    // stanzas sent and not yet received, at most
    std::uint64_t end_inflight = 0;    // at the end of the phase
};

struct Bucket {
    double t_s = 0;                    // start, from the beginning of the idle phase
    std::string phase;
    std::uint64_t stanzas = 0;
    double p99_ms = 0, max_ms = 0;
    std::uint64_t adds_answered = 0;
};

struct MuxResult {
    bool ok = false;
    std::string error;
    double capacity = 0;               // stanzas/s, closed loop, measured
    double rate = 0;                   // stanzas/s used (0: closed loop)
    std::uint64_t window = 0;
    std::vector<PhaseStats> phases;    // idle, adds, after
    double ratio_p99 = 0;              // adds p99 / idle p99
    double ratio_p99_after = 0;        // after p99 / idle p99
    std::uint64_t stanzas_total = 0;   // received and verified (all phases)
    std::uint64_t cap_limited = 0;     // times the in-flight cap held the generator back
    bool saturated = false;            // the backlog grew: more offered than carried (see compute())
    // adds
    std::uint64_t adds = 0, adds_ok = 0, adds_failed = 0;
    double add_phase_s = 0, adds_per_s = 0;
    double add_first_ms = 0;           // first answer after the commands were written
    double add_gap_p50_ms = 0, add_gap_p99_ms = 0, add_gap_max_ms = 0; // between consecutive answers
    std::string first_add_error;
    std::map<std::string, std::uint64_t> a_stats, b_stats; // `stats` at the end
    std::uint64_t a_rss0_kb = 0, a_rss1_kb = 0, b_rss0_kb = 0, b_rss1_kb = 0; // idle start / after end
    std::string sink_stream;           // "TLS1.3 ..., dialback (verified)"
    std::string a_exit, b_exit;
    std::string log_tail;              // on failure
    std::vector<Bucket> timeline;
    double certgen_s = 0;
};

class MuxBench final : public LoopDriver {
public:
    MuxBench(const Env& env, MuxOptions opts);
    ~MuxBench() override;

    MuxResult run();

private:
    enum class Phase : std::uint8_t {
        Starting, Connecting, Warmup, Capacity, Settle, Idle, Adds, After, Drain, Finishing, Closing, Closed
    };
    static constexpr int kMeasured = 3; // Idle, Adds, After
    struct Snapshot {
        double a_cpu = 0, b_cpu = 0, tool_cpu = 0, machine = 0;
        double a_loop = 0, b_loop = 0; // the gateways' event-loop threads
        std::uint64_t t_ns = 0, seq = 0, inflight = 0;
    };
    struct Verify {
        net::Stream* requester = nullptr;
        std::string remote, local, id, key;
    };

    // net::StreamOwner (stream_mux_enabled: LoopDriver's)
    bool stream_hosts(net::Stream& s, std::string_view domain) override;
    bool stream_has_cert(std::string_view domain) override;
    xmpp::DialbackVerdict stream_dialback_request(net::Stream& s, const xmpp::DialbackRequest& r) override;
    void stream_authenticated(net::Stream& s, std::string_view from, std::string_view to, bool dir_in,
                              xmpp::AuthMethod m) override;
    void stream_verify_answer(net::Stream& s, std::string_view from, std::string_view to, std::string_view id,
                              bool valid) override;
    void stream_ready(net::Stream& s) override;
    void stream_stanza(net::Stream& s, const xml::Node& el, const xmpp::StanzaRoute& r) override;
    void stream_closed(net::Stream& s, const xmpp::CloseInfo& info) override;

    std::string prepare_certs();
    std::string start_gateways();
    void on_accept();
    AdminClient* admin(const std::string& path, const char* who);
    void close_admins();
    void poll_mux();
    void start_generator();
    std::string renice_pools();
    void pump();
    void send_one(std::uint64_t ts_ns);
    void advance(std::uint64_t now);
    void enter(Phase p, std::uint64_t now);
    void start_adds();
    void on_add_reply(const admin::Reply& r, std::uint64_t t_ns);
    void query_stats();
    void finish();
    void tick();
    void fail(std::string why);
    void teardown();
    Snapshot snapshot(std::uint64_t now) const;
    void compute();
    void start_pacer();
    void stop_pacer();

    const Env& env_;
    MuxOptions o_;
    MuxResult res_;
    tls::CertStore certs_;
    tls::TrustStore trust_;
    std::string certs_dir_;
    uv_tcp_t listener_{};
    uv_poll_t pacer_{};    // timerfd every pace_us: wakes the loop for the open-loop sender
    int pacer_fd_ = -1;
    bool pacer_on_ = false;
    bool key_verified_ = false;
    bool handles_ = false;
    std::uint16_t sink_port_ = 0, a_inner_ = 0, b_inner_ = 0;
    GatewayPair gws_{&loop_};
    AdminClient* poller_ = nullptr;
    bool poll_inflight_ = false;

    Phase phase_ = Phase::Starting;
    net::Stream* gen_ = nullptr;
    std::vector<net::Stream*> sinks_;
    std::map<net::Stream*, Verify> verifies_;
    std::uint64_t next_id_ = 1;
    std::string scratch_;
    std::string sink_auth_;

    std::uint64_t sent_ = 0, received_ = 0;
    std::vector<std::uint64_t> due_ns_, lat_ns_, lag_ns_; // by sequence number
    // open-loop pacing
    double rate_ = 0;
    std::uint64_t pace_t0_ = 0, pace_seq0_ = 0;
    // capacity phase
    std::uint64_t cap_t0_ = 0, cap_recv0_ = 0;
    // phase boundaries: [0] idle start, [1] adds start, [2] after start, [3] end
    std::array<Snapshot, kMeasured + 1> marks_{};
    std::array<std::uint64_t, kMeasured> max_inflight_{};
    std::uint64_t phase_t0_ = 0;
    // adds
    std::uint64_t adds_sent_t_ = 0;
    std::vector<std::uint64_t> add_reply_ns_;
    std::uint64_t adds_answered_ = 0;

    std::uint64_t start_ns_ = 0, last_progress_ns_ = 0, last_report_ns_ = 0, last_report_recv_ = 0;
    std::uint64_t closing_ns_ = 0;
};

} // namespace s2smux::load
