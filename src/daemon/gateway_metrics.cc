// The gateway's Prometheus metrics (man/s2smuxd.8, METRICS). Everything is
// read at scrape time from counters kept elsewhere: GatewayStats (router,
// closed streams), net::Context (bytes, TLS, per kind), the live sessions and
// mux streams. A counter is the closed streams' total plus the live ones', so
// it never goes down when a stream closes.
#include "daemon/gateway.h"
#include "daemon/mux_peer.h"

#include "net/work.h"
#include "s2smux_version.h"
#include "xmpp/errors.h"

namespace s2smux {

using metrics::Type;

namespace {

constexpr const char* kStates[] = {"connecting", "negotiating", "ready"};

const char* state_of(net::Stream& s) {
    if (!s.connected()) return kStates[0];
    // A receiving session has no Ready state: it is ready once a pair is authenticated.
    auto& sess = s.session();
    return sess.ready() || !sess.pairs_in().empty() || !sess.pairs_out().empty() ? kStates[2] : kStates[1];
}

const char* kind_name(std::size_t k) { return net::to_string(static_cast<net::StreamKind>(k)); }

// Known reasons first (zero until they happen, so the series exist), then
// what the live streams add.
using ReasonMap = std::map<std::string, std::uint64_t, std::less<>>;
ReasonMap with_known_reasons(const ReasonMap& closed, bool ours) {
    ReasonMap m = closed;
    for (auto f = static_cast<int>(mux::AddFailure::Malformed); f <= static_cast<int>(mux::AddFailure::PolicyViolation); ++f)
        m.try_emplace(mux::to_string(static_cast<mux::AddFailure>(f)), 0);
    if (ours) {
        m.try_emplace("timeout", 0);
        m.try_emplace("signing-failed", 0);
    }
    return m;
}

} // namespace

std::string Gateway::metrics_text() const {
    std::string out;
    out.reserve(32 * 1024);
    metrics::Writer w(out);

    w.family("s2smux_build_info", Type::Gauge, "Always 1; the version of s2smuxd as a label.")
        .sample({{"version", S2SMUX_VERSION}}, 1u);

    // ------------------------------------------------------------ streams
    std::array<std::array<std::uint64_t, 3>, net::kStreamKinds> by_state{};
    auto stanzas_in = stats_.stanzas_in, stanzas_out = stats_.stanzas_out;
    for (const auto& [id, s] : streams_) {
        std::size_t k = net::index(s->kind());
        const char* st = state_of(*s);
        for (std::size_t i = 0; i < 3; ++i)
            if (st == kStates[i]) ++by_state[k][i];
        stanzas_in[k] += s->session().stanzas_in();
        stanzas_out[k] += s->session().stanzas_out();
    }
    w.family("s2smux_streams", Type::Gauge,
             "Open streams by kind and state (connecting: TCP not up yet; negotiating: TLS and authentication).");
    for (std::size_t k = 0; k < net::kStreamKinds; ++k)
        for (std::size_t i = 0; i < 3; ++i) w.sample({{"kind", kind_name(k)}, {"state", kStates[i]}}, by_state[k][i]);
    w.family("s2smux_streams_accepted_total", Type::Counter, "Incoming connections accepted (outer and inner listeners).")
        .sample({}, stats_.streams_accepted);
    w.family("s2smux_streams_connected_total", Type::Counter,
             "Outgoing streams started to remote servers and to the local server (dialback verification not included).")
        .sample({}, stats_.streams_connected);

    std::uint64_t upstream_pairs = 0;
    for (const auto& [id, use] : upstreams_)
        if (auto it = streams_.find(id); it != streams_.end()) upstream_pairs += it->second->session().pairs_out().size();
    w.family("s2smux_upstream_pairs", Type::Gauge,
             "Domain pairs authenticated on the open streams to the local server (several per stream: piggybacking).")
        .sample({}, upstream_pairs);
    w.family("s2smux_upstream_piggybacked_total", Type::Counter,
             "Domain pairs requested on an authenticated stream to the local server instead of a new one.")
        .sample({}, stats_.upstream_piggybacked);
    w.family("s2smux_upstream_piggyback_failed_total", Type::Counter,
             "Piggybacked pairs the local server refused, left unanswered or lost with their stream: sent on a stream of their own.")
        .sample({}, stats_.upstream_piggyback_failed);
    w.family("s2smux_upstream_piggyback_refused", Type::Gauge,
             "1 once the local server refused piggybacking (one stream per pair since), else 0.")
        .sample({}, cfg_.upstream && piggyback_refused_ == cfg_.upstream->to_string() ? 1u : 0u);
    w.family("s2smux_upstream_idle_closed_total", Type::Counter,
             "Streams to the local server closed after [limits] upstream_idle_timeout without a stanza.")
        .sample({}, stats_.upstream_idle_closed);

    w.family("s2smux_stream_stanzas_total", Type::Counter, "Stanzas received (in) and sent (out) on streams, by kind.");
    for (std::size_t k = 0; k < net::kStreamKinds; ++k) {
        w.sample({{"kind", kind_name(k)}, {"direction", "in"}}, stanzas_in[k]);
        w.sample({{"kind", kind_name(k)}, {"direction", "out"}}, stanzas_out[k]);
    }
    w.family("s2smux_stream_bytes_total", Type::Counter, "Bytes read (in) and written (out) on the wire, by stream kind.");
    for (std::size_t k = 0; k < net::kStreamKinds; ++k) {
        w.sample({{"kind", kind_name(k)}, {"direction", "in"}}, ctx_.totals[k].bytes_in);
        w.sample({{"kind", kind_name(k)}, {"direction", "out"}}, ctx_.totals[k].bytes_out);
    }
    w.family("s2smux_buffered_bytes", Type::Gauge,
             "Output written to streams and not yet on the wire, all streams together (backpressure).")
        .sample({}, ctx_.buffered);
    w.family("s2smux_streams_paused", Type::Gauge,
             "Streams not being read because what they deliver to is full (backpressure).")
        .sample({}, ctx_.pauses.paused_count());
    w.family("s2smux_stream_pauses_total", Type::Counter,
             "Times a stream stopped being read because what it delivers to was full (backpressure).")
        .sample({}, ctx_.pauses.episodes());
    w.family("s2smux_tls_handshakes_total", Type::Counter,
             "TLS handshakes completed (ok) or failed (error, timeout, or the connection ended first), by stream kind.");
    for (std::size_t k = 0; k < net::kStreamKinds; ++k) {
        w.sample({{"kind", kind_name(k)}, {"result", "ok"}}, ctx_.totals[k].tls_ok);
        w.sample({{"kind", kind_name(k)}, {"result", "failed"}}, ctx_.totals[k].tls_failed);
    }
    w.family("s2smux_tls_verify_seconds", Type::Histogram,
             "Verification of a TLS peer's certificate chain on the thread pool.")
        .sample({}, ctx_.tls_verify);

    // ------------------------------------------------------------ router
    w.family("s2smux_stanzas_accepted_total", Type::Counter,
             "Stanzas received from either side (and refusal notices of multiplexing peers).")
        .sample({}, stats_.stanzas_accepted);
    w.family("s2smux_stanzas_requeued_total", Type::Counter,
             "Stanzas sent on a stream that broke before the peer acknowledged them (stream management), queued "
             "again.")
        .sample({}, stats_.stanzas_requeued);
    w.family("s2smux_stanzas_in_flight", Type::Gauge,
             "Stanzas sent on stream-managed streams and not yet acknowledged by the peer.")
        .sample({}, in_flight_stanzas());
    w.family("s2smux_stanzas_routed_total", Type::Counter, "Stanzas delivered onto an authenticated stream.")
        .sample({}, stats_.stanzas_routed);
    w.family("s2smux_stanzas_queued_total", Type::Counter, "Stanzas that had to wait for a stream.")
        .sample({}, stats_.stanzas_queued);
    w.family("s2smux_stanzas_bounced_total", Type::Counter,
             "Stanzas answered with an error to their sender, by stanza error condition.");
    for (std::size_t c = 0; c < kStanzaErrors; ++c)
        w.sample({{"condition", xmpp::condition_name(static_cast<xmpp::StanzaError>(c))}}, stats_.bounced_by[c]);
    w.family("s2smux_stanzas_dropped_total", Type::Counter, "Stanzas that could not even be bounced (logged).")
        .sample({}, stats_.stanzas_dropped);
    std::uint64_t queued = 0;
    for (const auto& [key, r] : routes_) queued += r.queue.size();
    w.family("s2smux_queued_stanzas", Type::Gauge, "Stanzas currently queued, waiting for a stream.").sample({}, queued);
    w.family("s2smux_queue_wait_seconds", Type::Histogram,
             "Time a queued stanza waited for a stream before it was sent (bounced ones are not included).")
        .sample({}, stats_.queue_wait);

    // ------------------------------------------------------------ mux
    std::uint64_t live_ok = 0, live_peer_ok = 0, ours_names = 0, peer_names = 0, verifying = 0;
    ReasonMap ours_failed = with_known_reasons(stats_.mux_add_failures, true);
    ReasonMap peer_failed = with_known_reasons(stats_.mux_peer_add_failures, false);
    metrics::Histogram rtt = stats_.mux_add_round_trip;
    for (const auto& [id, p] : muxes_) {
        const auto& m = *p->mux;
        const auto& ms = m.stats();
        live_ok += ms.adds_ok;
        live_peer_ok += ms.peer_adds_ok;
        for (const auto& [r, n] : ms.failures) ours_failed[r] += n;
        for (const auto& [r, n] : ms.peer_failures) peer_failed[r] += n;
        rtt.merge(ms.add_round_trip);
        verifying += m.pending_verifications();
        if (p->closed) continue;
        for (const auto& e : m.ours()) ours_names += e.names.size();
        for (const auto& e : m.peer()) peer_names += e.names.size();
    }
    w.family("s2smux_mux_streams", Type::Gauge, "Open multiplexed streams.").sample({}, muxes_.size());
    w.family("s2smux_mux_streams_parked", Type::Gauge,
             "Broken multiplexed streams kept for resumption (XEP-0198).").sample({}, parked_.size());
    w.family("s2smux_mux_resumed_total", Type::Counter, "Broken multiplexed streams resumed.")
        .sample({}, stats_.mux_resumed);
    w.family("s2smux_mux_streams_enabled_total", Type::Counter, "Streams on which multiplexing was enabled.")
        .sample({}, stats_.mux_streams);
    w.family("s2smux_local_domains", Type::Gauge, "Domains this gateway serves.")
        .sample({}, local_domains_.size());
    w.family("s2smux_mux_domains", Type::Gauge,
             "Names multiplexed on open streams: ours accepted by peers (local), the peers' accepted by us (peer).")
        .sample({{"side", "local"}}, ours_names)
        .sample({{"side", "peer"}}, peer_names);
    w.family("s2smux_mux_adds_accepted_total", Type::Counter,
             "Certificate adds accepted: ours by a peer (local), a peer's by us (peer).")
        .sample({{"side", "local"}}, stats_.mux_adds_ok + live_ok)
        .sample({{"side", "peer"}}, stats_.mux_peer_adds_ok + live_peer_ok);
    w.family("s2smux_mux_adds_failed_total", Type::Counter,
             "Certificate adds that failed, by reason: ours (local; timeout: no answer in time), a peer's (peer).");
    for (const auto& [r, n] : ours_failed) w.sample({{"side", "local"}, {"reason", r}}, n);
    for (const auto& [r, n] : peer_failed) w.sample({{"side", "peer"}, {"reason", r}}, n);
    w.family("s2smux_mux_refused_stanzas_total", Type::Counter,
             "Stanzas refused on multiplexed streams: the peer's by us (in, never delivered), ours by the peer "
             "(out, bounced), by reason.");
    for (auto why : {mux::Refusal::FromNotAccepted, mux::Refusal::ToNotAccepted}) {
        auto i = static_cast<std::size_t>(why);
        w.sample({{"direction", "in"}, {"reason", mux::to_string(why)}}, stats_.mux_refused_in_by[i]);
        w.sample({{"direction", "out"}, {"reason", mux::to_string(why)}}, stats_.mux_refused_out_by[i]);
    }
    w.family("s2smux_mux_add_round_trip_seconds", Type::Histogram,
             "Our certificate adds, from the start (signing included) to the peer's added or failed answer.")
        .sample({}, rtt);
    w.family("s2smux_mux_verify_seconds", Type::Histogram,
             "Verification of a peer's certificate add (chain and proof) on the thread pool.")
        .sample({}, stats_.mux_verify);
    w.family("s2smux_mux_verifications_pending", Type::Gauge, "Peer certificate adds being verified.")
        .sample({}, verifying);
    w.family("s2smux_pool_jobs", Type::Gauge,
             "Jobs queued or running on the thread pool (certificate verification, signing, loading).")
        .sample({}, net::pool_jobs.load());
    return out;
}

void Gateway::metrics(admin::Done done) {
    std::string text = metrics_text();
    std::vector<std::string> lines;
    std::size_t pos = 0;
    while (pos < text.size()) {
        std::size_t nl = text.find('\n', pos);
        lines.emplace_back(text, pos, nl - pos);
        pos = nl + 1; // the text always ends with "\n"
    }
    done(admin::Reply::ok(std::move(lines)));
}

} // namespace s2smux
