// One measured run of the load tool, on its own libuv loop:
//
//   generator --S2S--> [s2smuxd inner] ==> [s2smuxd outer-out] --TLS S2S--> sink   (Mode::Gateway)
//   generator --TLS S2S (STARTTLS + SASL EXTERNAL as a.test)--------------> sink   (Mode::Direct)
//   generator --direct TLS--> [haproxy, mode tcp] --direct TLS, a.test cert--> sink (Mode::Haproxy)
//
// Generator and sink are net::Streams of this process (the daemon's own I/O
// layer and sans-I/O session), with the Bench as their StreamOwner. The
// generator keeps at most `window` stanzas in flight, advancing on the sink's
// receive count; the sink checks order and content of every stanza and
// records its latency from the send timestamp it carries.
#pragma once

#include "net/stream.h"
#include "tls/certs.h"
#include "tls/trust.h"
#include "tools/load/gateway_process.h"
#include "tools/load/loop_util.h"
#include "tools/load/payload.h"
#include "xmpp/dialback.h"

#include <uv.h>

#include <cstdint>
#include <string>
#include <vector>

namespace s2smux::load {

enum class Mode : std::uint8_t { Direct, Gateway, Haproxy };
const char* to_string(Mode m);

struct Env {
    const tls::CertStore* certs = nullptr; // a.test and b.test
    const tls::TrustStore* trust = nullptr; // the test CA
    const xmpp::DialbackKeys* keys = nullptr;
    const TextPool* pool = nullptr;
    std::string s2smuxd;   // binary
    std::string certs_dir; // absolute, for the daemon's config
    std::string work_dir;  // temporary directory for the daemon's config and log
    std::string haproxy;   // binary (Mode::Haproxy)
};

struct BenchOptions {
    Mode mode = Mode::Gateway;
    std::uint64_t stanzas = 200000; // measured
    std::uint64_t warmup = 100;     // sent and checked first, not measured (opens the gateway's route)
    std::uint64_t window = 10000;   // stanzas in flight at most
    bool inner_tls = true;          // generator takes the STARTTLS the inner listener offers
    double stall_timeout_s = 20;    // no stanza received for this long: failure
    bool progress = true;           // a line per second on stderr
};

struct BenchResult {
    bool ok = false;
    std::string error;              // first failure
    std::uint64_t stanzas = 0;      // measured stanzas received and verified
    std::uint64_t bytes = 0;        // their size as serialized by the generator
    std::uint64_t wire_bytes = 0;   // bytes the sink read from its socket(s) while measuring
    double seconds = 0;
    double p50_ms = 0, p99_ms = 0, p999_ms = 0, max_ms = 0;
    bool hop = false;               // a hop process was measured (s2smuxd or haproxy): the gw_ fields
    double gw_cpu_s = 0;            // its utime + stime while measuring
    ProcStats gw_end;               // at the end of the measured interval
    std::string gw_exit;            // how it ended after its stop signal
    double tool_cpu_s = 0;          // this process, same interval
    double other_cpu_s = 0;         // every other process on the machine, same interval (noise)
    std::string sink_tls;           // "TLS1.3 AES-256-GCM, SASL-EXTERNAL"
    std::string gen_tls;            // the generator's first hop: "TLS1.3 AES-256-GCM" or "none"
    std::string gateway_log;        // tail of the hop's log, on failure
};

class Bench final : public LoopDriver {
public:
    Bench(const Env& env, BenchOptions opts);
    ~Bench() override;

    BenchResult run();

private:
    enum class Phase : std::uint8_t { Connecting, Warmup, Measure, Draining, Closed };

    // net::StreamOwner (the rest: LoopDriver's defaults; the sink does not offer dialback)
    bool stream_hosts(net::Stream& s, std::string_view domain) override;
    bool stream_has_cert(std::string_view domain) override;
    void stream_authenticated(net::Stream& s, std::string_view from, std::string_view to, bool dir_in,
                              xmpp::AuthMethod m) override;
    void stream_stanza(net::Stream& s, const xml::Node& el, const xmpp::StanzaRoute& r) override;
    void stream_closed(net::Stream& s, const xmpp::CloseInfo& info) override;

    xmpp::SessionConfig generator_config() const;
    xmpp::SessionConfig sink_config() const;
    void on_accept();
    void pump();  // uv_prepare / uv_check: top up the window, flush dirty streams
    void top_up();
    void tick();  // every 100 ms: gateway liveness, stall, progress, draining
    void begin_measure();
    void finish_measure();
    void fail(std::string why);
    void teardown();
    std::uint64_t sink_bytes_in() const;
    bool has_hop() const { return o_.mode != Mode::Direct; }

    const Env& env_;
    BenchOptions o_;
    BenchResult res_;
    uv_tcp_t listener_{};
    std::uint16_t sink_port_ = 0;
    GatewayProcess gw_; // the hop: s2smuxd or haproxy

    Phase phase_ = Phase::Connecting;
    net::Stream* gen_ = nullptr;
    std::vector<net::Stream*> sinks_;
    std::uint64_t next_id_ = 1;
    std::string scratch_;

    std::uint64_t sent_ = 0, received_ = 0;
    std::uint64_t bytes_ = 0;
    std::vector<std::uint64_t> lat_ns_;
    std::uint64_t t0_ns_ = 0, t1_ns_ = 0;
    double gw_cpu0_ = 0, tool_cpu0_ = 0, machine_cpu0_ = 0;
    std::uint64_t wire0_ = 0;
    std::uint64_t start_ns_ = 0, last_progress_ns_ = 0, last_report_ns_ = 0, last_report_recv_ = 0;
    std::uint64_t drain_start_ns_ = 0;
    bool term_sent_ = false;
    std::string sink_auth_;
};

} // namespace s2smux::load
