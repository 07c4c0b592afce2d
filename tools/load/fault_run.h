// One scenario of the fault suite (s2smux-load --topology faults): the mux
// topology with fresh processes, one fault injected while the generator
// keeps `window` stanzas in flight, and an end-to-end account of every
// stanza by its sequence number:
//
//   generator --S2S--> [gateway A] ==mux stream==> [gateway B] --upstream--> sink (b.test's local server)
//        bounces for a.test: [gateway A] --upstream--> a.test's local server (this tool too)
//
//   delivered  reached the sink, byte-exact (twice: counted in `dup`)
//   bounced    an error stanza with its id reached a.test's local server
//   lost       neither, once the scenario has settled
//
// Timeline: start-up (mux stream up, generator authenticated); `pre`:
// closed loop, `window` in flight; the fault; open loop at `rate` until
// `post_s` after the fault healed; then nothing is sent and the run waits
// until every stanza is accounted for, nothing was accounted for during
// `quiet_s` (longer than the gateways' queue timeout) or `settle_s` passed.
// Both local servers accept dialback keys without verifying them (they
// trust their own gateways).
#pragma once

#include "net/stream.h"
#include "tls/certs.h"
#include "tls/trust.h"
#include "tools/load/admin_client.h"
#include "tools/load/bench.h"
#include "tools/load/gateway_pair.h"
#include "tools/load/gateway_process.h"
#include "tools/load/loop_util.h"
#include "tools/load/tcp_relay.h"

#include <uv.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace s2smux::load {

enum class Fault : std::uint8_t { Kill9, Blackhole, SlowReader, LocalRestart, DnsFail, CertExpiry };
inline constexpr Fault kAllFaults[] = {Fault::Kill9,        Fault::Blackhole, Fault::SlowReader,
                                       Fault::LocalRestart, Fault::DnsFail,   Fault::CertExpiry};
const char* to_string(Fault f); // "kill9", "blackhole", ...
std::optional<Fault> parse_fault(std::string_view s);

struct FaultOptions {
    std::uint64_t window = 10000;        // closed loop before the fault: stanzas in flight
    double pre_s = 3;                    // closed loop before the fault (cert-expiry: until the expiry)
    double rate = 2000;                  // stanzas/s, open loop from the fault on
    double post_s = 5;                   // open loop after the fault healed
    std::uint64_t max_inflight = 50000;  // open loop: cap
    double settle_s = 60;                // after the last stanza was sent: at most
    double quiet_s = 20;                 // settled: nothing accounted for during this long
    int queue_timeout_s = 10;            // the gateways' [limits] queue_timeout
    int cert_life_s = 20;                // cert-expiry: b.test's certificate validity from its issue
    std::string gencerts;
    std::string gw_log_level = "info";
    bool progress = true;
};

struct FaultResult {
    Fault fault = Fault::Kill9;
    std::string method;                  // how the fault was made
    std::string error;                   // the scenario could not run as planned
    std::uint64_t sent = 0, delivered = 0, bounced = 0, lost = 0;
    std::uint64_t dup = 0;               // delivered more than once
    std::uint64_t dup_bounces = 0;       // bounced more than once
    std::uint64_t both = 0;              // delivered and bounced
    std::uint64_t corrupt = 0;           // reached a local server, but not byte-exact / not ours
    std::string first_corrupt;
    std::map<std::string, std::uint64_t> bounced_by; // by error condition
    std::uint64_t inflight_at_fault = 0; // sent, not yet accounted for, when the fault was made
    double recover_s = -1;               // fault -> first delivery of a stanza sent after it (-1: none)
    double fault_s = 0;                  // fault -> healed
    double settle_s = -1;                // healed -> every stanza accounted for (-1: never)
    std::uint64_t a_peak_kb = 0, b_peak_kb = 0, a_start_kb = 0, b_start_kb = 0; // VmRSS
    std::uint64_t sink_streams = 0, sink_closed = 0; // streams from gateway B to the sink
    std::map<std::string, std::uint64_t> a_stats, b_stats; // `stats` after settling
    std::string a_invariant, b_invariant; // "OK", "VIOLATED: ...", "n/a"
    std::string a_exit, b_exit;
    std::string log_tail;                // on error
    bool dup_tolerated() const { return fault == Fault::Kill9; } // the receiving gateway died
    bool passed() const {
        return error.empty() && lost == 0 && corrupt == 0 && (dup == 0 || dup_tolerated()) &&
               a_invariant.rfind("VIOLATED", 0) != 0 && b_invariant.rfind("VIOLATED", 0) != 0;
    }
};

class FaultRun final : public LoopDriver {
public:
    FaultRun(const Env& env, const FaultOptions& opts, Fault fault);
    ~FaultRun() override;

    FaultResult run();

private:
    enum class Phase : std::uint8_t { Starting, Connecting, Pre, Fault, Post, Settle, Stats, Closing, Closed };

    // net::StreamOwner (the rest: LoopDriver's defaults)
    bool stream_hosts(net::Stream& s, std::string_view domain) override;
    bool stream_has_cert(std::string_view domain) override;
    xmpp::DialbackVerdict stream_dialback_request(net::Stream& s, const xmpp::DialbackRequest& r) override;
    void stream_authenticated(net::Stream& s, std::string_view from, std::string_view to, bool dir_in,
                              xmpp::AuthMethod m) override;
    void stream_stanza(net::Stream& s, const xml::Node& el, const xmpp::StanzaRoute& r) override;
    void stream_closed(net::Stream& s, const xmpp::CloseInfo& info) override;

    std::string setup();
    std::string prepare_certs();
    std::string listen(uv_tcp_t& l, std::uint16_t port, std::uint16_t* bound);
    std::string write_configs();
    void on_accept(uv_tcp_t* l);
    void poll_mux();
    void start_generator();
    void pump();
    void send_one();
    void on_delivered(const xml::Node& el);
    void on_bounce(const xml::Node& el);
    void account(std::uint64_t seq);
    void inject();
    void heal();
    void stop_sink();
    std::string restart_sink();
    void query_stats();
    void finish();
    void tick();
    void fail(std::string why);
    void teardown();
    void close_streams(std::string_view why);
    void log(const std::string& line) const;

    const Env& env_;
    FaultOptions o_;
    Fault fault_;
    FaultResult res_;
    tls::CertStore certs_;
    tls::TrustStore trust_;
    std::string dir_, certs_dir_;
    std::int64_t cert_not_after_ = 0;    // cert-expiry: b.test's notAfter (unix seconds)

    uv_tcp_t sink_l_{}, bounce_l_{};     // b.test's and a.test's local servers
    bool sink_listening_ = false;        // the sink's listener handle is open (or closing)
    std::uint16_t sink_port_ = 0, bounce_port_ = 0;
    TcpRelay relay_;                     // slow-reader: between gateway B and the sink
    uv_timer_t pace_{};                  // 1 ms: wakes the loop for the open-loop sender

    GatewayPair gws_{&loop_};
    bool b_expected_down_ = false;       // kill9: between the kill and the restart
    AdminClient* poller_ = nullptr;
    bool poll_inflight_ = false;

    Phase phase_ = Phase::Starting;
    net::Stream* gen_ = nullptr;
    std::vector<net::Stream*> sinks_, bouncers_; // accepted streams of each local server
    std::map<net::Stream*, bool> is_sink_;
    std::uint64_t next_id_ = 1;
    std::string scratch_;

    std::uint64_t sent_ = 0, accounted_ = 0;
    std::vector<std::uint8_t> delivered_, bounced_; // by sequence number (saturating counts)
    std::uint64_t seq_at_fault_ = 0;
    std::uint64_t start_ns_ = 0, phase_ns_ = 0, fault_ns_ = 0, heal_ns_ = 0, last_account_ns_ = 0,
                  last_report_ns_ = 0, closing_ns_ = 0;
    std::uint64_t pace_t0_ = 0, pace_seq0_ = 0;
    bool healed_ = false;
};

} // namespace s2smux::load
