// s2smux-bench's memory section, per stream: K idle authenticated S2S
// streams to one standard (non-mux) s2smuxd, and its RSS before and after.
//
//   K x local server a.test --S2S (STARTTLS as offered, dialback)--> [s2smuxd inner]
//
// Each stream authenticates a.test -> b.test and then stays silent; the
// gateway opens nothing outward for them. The figure is the RSS delta over
// K; TLS state included when the gateway offers STARTTLS (it does, having
// a certificate for a.test).
#pragma once

#include "net/stream.h"
#include "tools/load/bench.h"
#include "tools/load/gateway_process.h"
#include "tools/load/loop_util.h"

#include <uv.h>

#include <cstdint>
#include <string>
#include <vector>

namespace s2smux::load {

struct IdleOptions {
    std::uint64_t streams = 200; // K
    bool inner_tls = true;
    double settle_s = 1;         // before each RSS reading
    double timeout_s = 60;       // every stream authenticated
    bool progress = true;
};

struct IdleResult {
    bool ok = false;
    std::string error;
    std::uint64_t streams = 0;          // authenticated and still open at the second reading
    std::uint64_t rss0_kb = 0, rss1_kb = 0;
    double bytes_per_stream = 0;
    std::uint64_t established = 0;      // TCP connections to the inner listener at the second reading
    std::string tls;                    // of the first stream: "TLS1.3 AES-256-GCM" or "plaintext"
    std::string gw_exit;
};

class IdleStreams final : public LoopDriver {
public:
    IdleStreams(const Env& env, IdleOptions opts);
    ~IdleStreams() override;

    IdleResult run();

private:
    // net::StreamOwner (the rest: LoopDriver's defaults; nothing is accepted)
    void stream_authenticated(net::Stream& s, std::string_view from, std::string_view to, bool dir_in,
                              xmpp::AuthMethod m) override;
    void stream_stanza(net::Stream&, const xml::Node& el, const xmpp::StanzaRoute&) override;
    void stream_closed(net::Stream& s, const xmpp::CloseInfo& info) override;

    void tick();
    void fail(std::string why);
    void close_all();

    const Env& env_;
    IdleOptions o_;
    IdleResult res_;
    GatewayProcess gw_;
    std::vector<net::Stream*> streams_;
    std::uint64_t authenticated_ = 0;
    std::uint64_t t0_ = 0, t_all_ = 0, t_close_ = 0;
    bool closing_ = false, term_sent_ = false;
};

} // namespace s2smux::load
