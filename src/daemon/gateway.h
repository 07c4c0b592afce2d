// The gateway: owns listeners, streams, routes and the resolver, and decides
// where every stanza goes (router).
//
// Fronting model: the local server sends its outbound S2S to the inner
// listener (trusted, dialback accepted for local domains); the gateway opens
// authenticated streams to remote servers (outer-out) and accepts theirs
// (outer-in); inbound stanzas are delivered to the local server over
// upstream-out streams authenticated by dialback, whose keys the local server
// verifies by calling back through the inner listener; one such stream
// carries many domain pairs (dialback piggybacking, gateway_upstream.cc).
//
// A stanza is delivered on an authenticated stream or queued (bounded in
// count and time) while one is established; if that fails it is bounced to
// its sender with a stanza error. Nothing is dropped silently: every drop is
// logged and counted.
#pragma once

#include "admin/backend.h"
#include "admin/http_metrics.h"
#include "admin/server.h"
#include "common/metrics.h"
#include "daemon/captures.h"
#include "daemon/config.h"
#include "mux/mux_session.h"
#include "net/listener.h"
#include "net/stream.h"
#include "route/resolver.h"
#include "tls/certs.h"
#include "tls/trust.h"
#include "xmpp/dialback.h"

#include <uv.h>

#include <array>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <random>
#include <set>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace s2smux {

// Array sizes for counters indexed by an enum (its last value + 1).
inline constexpr std::size_t kStanzaErrors = static_cast<std::size_t>(xmpp::StanzaError::UndefinedCondition) + 1;
inline constexpr std::size_t kRefusals = static_cast<std::size_t>(mux::Refusal::ToNotAccepted) + 1;

struct GatewayStats {
    std::uint64_t mux_streams = 0;      // streams on which multiplexing was enabled
    std::uint64_t mux_resumed = 0;      // broken multiplexed streams resumed (XEP-0198)
    std::uint64_t mux_refused_in = 0;   // stanzas we refused on mux streams (never delivered)
    std::uint64_t mux_refused_out = 0;  // our stanzas a peer refused (bounced to the sender)
    std::uint64_t mux_adds_ok = 0, mux_adds_failed = 0;           // ours, on streams now closed
    std::uint64_t mux_peer_adds_ok = 0, mux_peer_adds_failed = 0; // the peers', on streams now closed
    // Accounting: every stanza accepted (received from a stream, or a
    // stanza of ours the peer did not acknowledge before its stream broke,
    // taken back: requeued) is, exactly once, sent (routed), dropped,
    // refused, or still queued; a bounce sends an error in its place.
    std::uint64_t stanzas_accepted = 0; // received from either side (and refusal notices of mux peers)
    std::uint64_t stanzas_requeued = 0; // unacknowledged on a broken stream: queued again
    std::uint64_t stanzas_routed = 0;   // delivered onto an authenticated stream
    std::uint64_t stanzas_queued = 0;   // had to wait for a stream
    std::uint64_t stanzas_bounced = 0;  // answered with an error to their sender
    std::uint64_t stanzas_dropped = 0;  // could not even be bounced (logged)
    std::uint64_t streams_accepted = 0;
    std::uint64_t streams_connected = 0;
    // Upstream: pairs requested on an authenticated stream (piggybacking),
    // those that went to a stream of their own instead, idle streams closed.
    std::uint64_t upstream_piggybacked = 0;
    std::uint64_t upstream_piggyback_failed = 0;
    std::uint64_t upstream_idle_closed = 0;

    // For the metrics (gateway_metrics.cc); the rest of the totals live where
    // they are counted (net::Context, live sessions and mux streams).
    std::array<std::uint64_t, net::kStreamKinds> stanzas_in{}, stanzas_out{}; // of closed streams, by kind
    std::array<std::uint64_t, kStanzaErrors> bounced_by{};                    // by condition
    std::array<std::uint64_t, kRefusals> mux_refused_in_by{}, mux_refused_out_by{}; // by mux::Refusal
    std::map<std::string, std::uint64_t, std::less<>> mux_add_failures, mux_peer_add_failures; // closed streams
    metrics::Histogram mux_add_round_trip; // closed streams
    metrics::Histogram queue_wait;         // queued stanzas, enqueued -> sent
    metrics::Histogram mux_verify;         // a peer's add (chain + proof) on the thread pool
};

class Gateway final : public net::StreamOwner, public admin::Backend {
public:
    Gateway(uv_loop_t* loop, Config cfg);
    ~Gateway() override;

    // Loads certificates and trust anchors, starts listeners and the resolver.
    Result<void> start();
    // Stops listening, closes streams gracefully; `done` runs when every
    // handle is closed (then uv_run returns).
    void stop();
    // SIGTERM: stops accepting remote streams, lets queued stanzas go out
    // for at most [limits] drain_timeout, then stop() (which bounces the rest
    // to their senders and closes every stream with <system-shutdown/>).
    void drain();
    // Runs once, at the end of stop() (main closes its signal handles).
    void on_stopped(std::function<void()> fn) { on_stopped_ = std::move(fn); }
    std::size_t queued_stanzas() const;

    // Re-reads the configuration file (off the loop) and applies it to live
    // streams (gateway_reload.cc); an invalid file changes nothing. SIGHUP
    // and `s2smuxctl reload`. `done` gets the outcome, one line per change.
    void reload(admin::Done done) override;
    // One line for systemd's STATUS= and logs: streams, mux, domains, stanzas.
    std::string status_line() const;

    const GatewayStats& stats() const { return stats_; }
    // The Prometheus exposition (gateway_metrics.cc): `s2smuxctl metrics`, [metrics] listen.
    std::string metrics_text() const;
    const Config& config() const { return cfg_; }
    bool is_local(std::string_view domain) const;
    // A local domain, or a wildcard ("*.x.test") covering one.
    bool is_local_pattern(std::string_view name) const;

private:
    struct MuxPeer;
    friend struct MuxPeer;
    struct Queued {
        std::string xml;          // serialized stanza
        std::string name, from, to, id, type;
        TimeMs at = 0;
        std::size_t payload_begin = 0, payload_end = 0; // inner XML inside `xml`
        net::StanzaOrigin origin;  // whom to tell once it left
    };
    struct Route {
        std::string from, to;
        bool upstream = false;          // to the local server
        net::Stream* ready = nullptr;   // a stream that can send (from, to)
        net::Stream* pending = nullptr; // a stream being established for it
        bool resolving = false;
        std::deque<Queued> queue;
        std::uint64_t sent = 0;
        int failures = 0;               // consecutive establishment failures
        TimeMs retry_at = 0;            // no new stream before (exponential backoff with jitter)
        std::uint64_t waiting_on = 0;   // stream id whose multiplexing may carry it soon
        std::uint64_t hold_id = 0;      // backpressure: its id as a destination (0: none yet)
        // Upstream: `pending` is an established stream on which the pair was
        // requested (dialback piggybacking), since `requested_at`.
        bool piggybacked = false;
        TimeMs requested_at = 0;
    };
    // How a mux stream can serve a domain pair right now.
    struct MuxVerdict {
        enum Kind { None, Send, Wait, Refuse } kind = None;
        net::Stream* stream = nullptr; // Send
        std::uint64_t peer = 0;        // Wait: stream id
        std::string reason;            // Refuse
        xmpp::StanzaError cond = xmpp::StanzaError::RemoteServerTimeout; // Refuse
    };
    struct PendingVerify {
        std::uint64_t requester = 0;    // stream id of the incoming stream
        std::string remote, local, id, key;
        bool sent = false;
    };

    // net::StreamOwner
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
    void stream_mux_enabled(net::Stream& s) override;
    void stream_opened(net::Stream& s) override;
    void stream_pair_refused(net::Stream& s, std::string_view from, std::string_view to, bool error_answer,
                             std::string_view reason) override;
    // Resumption of multiplexed streams (gateway_resume.cc).
    xmpp::ResumeState* stream_resume(net::Stream& s, std::string_view previd) override;
    void stream_resumed(net::Stream& s) override;
    void stream_resume_failed(net::Stream& s, std::string_view previd) override;
    // A stanza from a stream-managed stream is acknowledged to its sender
    // only once it left: written onward (stream_forwarded), bounced or
    // dropped (origin_done). origin_ is the one being handled right now.
    void stream_forwarded(const std::vector<net::StanzaOrigin>& done) override;
    void origin_done(net::StanzaOrigin o);

    // admin::Backend (gateway_admin.cc)
    void domains(admin::Done done) override;
    void certs(admin::Done done) override;
    void streams(admin::Done done) override;
    void stats(admin::Done done) override;
    void metrics(admin::Done done) override;
    void cert_add(std::string cert_path, std::string key_path, bool replace, admin::Done done) override;
    void cert_remove(std::string domain, admin::Done done) override;
    // Transactions (gateway_cert_tx.cc).
    void cert_new(std::string name, admin::Done done) override;
    void cert_set(std::string name, std::string cert_path, std::string key_path, admin::Done done) override;
    void cert_commit(std::string name, admin::Done done) override;
    void cert_abort(std::string name, admin::Done done) override;
    void cert_show(std::string name, admin::Done done) override;
    // gateway_reload.cc
    void close_stream(std::string peer, std::string condition, admin::Done done) override;
    void resolve(std::string domain, admin::Done done) override;
    // Captures (gateway_capture.cc).
    void capture_start(std::string peer, std::string file, admin::Done done) override;
    void capture_stop(std::string what, admin::Done done) override;
    void captures(admin::Done done) override;

    // [[route]] capture: starts those of `routes` not running, stops the
    // route captures of `old` that `routes` no longer has. One line per change.
    std::vector<std::string> apply_route_captures(const std::vector<RouteConfig>& old,
                                                  const std::vector<RouteConfig>& routes);
    std::string capture_path(const std::string& file) const; // absolute, or relative to base_dir
    static std::string capture_wall_clock(); // now, RFC 3339 UTC with milliseconds

    // A staged certificate transaction (empty until `cert set`).
    struct CertTx {
        std::shared_ptr<tls::LocalCert> cert;
        std::string chain; // how the chain verified, for `cert show`
        bool busy = false; // a `cert set` is loading files on the pool
    };
    std::shared_ptr<tls::LocalCert> cert_by_subject(const std::string& subject) const;
    static std::vector<std::string> domain_names(const tls::LocalCert& cert); // its names, wildcards left out
    // Makes `cert` live in place of `old` (same subject, may be null): serves
    // its names (as local domains when `make_local`), and adds it to every
    // live mux stream when it serves a local domain. Returns those streams.
    std::vector<std::uint64_t> swap_cert(std::shared_ptr<tls::LocalCert> cert, std::shared_ptr<tls::LocalCert> old,
                                         bool make_local);
    // Withdraws `cert` from every mux stream and stops serving it.
    std::vector<std::string> drop_cert(const std::shared_ptr<tls::LocalCert>& cert, bool remove_names);
    // Withdraws `cert` from every mux stream (it stays loaded). One line per stream.
    std::vector<std::string> mux_withdraw(const tls::LocalCert& cert);
    void apply_config(Config nc, std::vector<std::shared_ptr<tls::LocalCert>> loaded, admin::Done done);

    // A `cert add` waiting for the mux peers' answers.
    struct AdminAdd {
        admin::Done done;
        std::string domain;
        std::map<std::uint64_t, std::string> waiting; // stream id -> peer description
        std::vector<std::string> lines;
        TimeMs started = 0;
    };
    void admin_add_answered(std::uint64_t stream_id, std::string_view domain, bool ok, std::string_view why);
    void admin_add_finish(AdminAdd& a);
    void admin_tick(TimeMs now);
    void install_cert(std::shared_ptr<tls::LocalCert> cert, bool replace, admin::Done done);

    mux::Limits mux_limits() const;
    xmpp::SessionConfig session_config(net::StreamKind kind, std::string_view from = {},
                                       std::string_view to = {}) const;
    xmpp::TlsPolicy policy_for(std::string_view remote) const;
    void on_accept(uv_stream_t* server, net::StreamKind kind, bool direct_tls);

    Route& route_for(std::string_view from, std::string_view to);
    // Delivers a parsed stanza or a serialized one (bounces) on (from, to).
    // With both, `raw` (its bytes as received) is written when it goes out
    // at once; a queued stanza is serialized from `el`.
    // `to_local_server`: deliver on the upstream side (default: when `to_dom` is local).
    void deliver(std::string_view from_dom, std::string_view to_dom, const xml::Node* el,
                 std::string_view raw, const xmpp::StanzaHead& head, std::optional<bool> to_local_server = {});
    void enqueue(Route& r, const xml::Node* el, std::string_view raw, const xmpp::StanzaHead& head);
    Queued make_queued(const xml::Node* el, std::string_view raw, const xmpp::StanzaHead& head) const;
    // A broken stream's stanzas that the peer did not acknowledge (stream
    // management) go back to the front of their routes' queues, in order.
    void requeue_unacked(net::Stream& s);
    void requeue(std::string bytes, const std::string& ctx); // serialized stanzas, oldest first

    // A multiplexed stream that broke, kept for resumption (XEP-0198):
    // the initiator reconnects and resumes it, the receiver waits for that;
    // routes that it carried wait meanwhile (classify()). Expired, or
    // refused by the peer, it is dropped: its unacknowledged stanzas are
    // queued again as for any broken stream.
    struct Parked {
        xmpp::ResumeState state;
        std::unique_ptr<MuxPeer> peer;   // its multiplexing state (no stream)
        std::uint64_t old_id = 0;        // the broken stream's id: what routes wait on
        std::string remote;              // the peer's authenticated domain
        bool initiator = false;          // we resume it; the peer waits
        route::Target target;            // initiator: where to reconnect
        std::string from, to;            // initiator: the stream's domains
        TimeMs expires = 0, retry_at = 0;
        int failures = 0;
        std::uint64_t resuming = 0;      // initiator: the stream trying to resume it
    };
    // Parks `s` (a mux stream that broke) if it can be resumed. False: not resumable.
    bool park(net::Stream& s, std::unique_ptr<MuxPeer>& peer, const xmpp::CloseInfo& info);
    void resume_connect(Parked& pk, const std::string& id);
    void drop_parked(std::map<std::string, Parked, std::less<>>::iterator it, const std::string& why);
    void parked_tick(TimeMs now);
    void merge_mux_stats(const mux::MuxSession& m);
    // Adds every local certificate the peer does not have yet (on enable,
    // and after a resumption: the operator may have added domains meanwhile).
    void add_local_certs(MuxPeer& peer, TimeMs now, bool announce_always);
    // Stanzas sent on live streams and not yet acknowledged.
    std::size_t in_flight_stanzas() const;
    void establish(Route& r);
    MuxVerdict classify(std::string_view from, std::string_view to);
    void reevaluate(Route& r);
    void wait_on(Route& r, std::uint64_t stream_id);
    void reevaluate_waiters(std::uint64_t stream_id);
    void connect_route(const xmpp::DomainPair& key, std::vector<route::Target> targets);
    // Upstream (gateway_upstream.cc): requests the pair on an authenticated
    // upstream stream with room for it, or waits for one being opened.
    // False: it needs a stream of its own.
    bool piggyback(Route& r);
    // The local server did not take a piggybacked pair: from now on one
    // stream per pair toward it, unless it accepted one before (then the
    // failure is about that pair or that moment: a slow verification, a
    // stream closed for idleness).
    void piggyback_refused(const std::string& why);
    // Opens a stream of its own for the pair (never the same stream again:
    // it would refuse it again, at once).
    void piggyback_failed(Route& r, const std::string& why);
    route::Target upstream_target() const; // [upstream] address
    // Upstream streams that carried no stanza for [limits] upstream_idle_timeout are closed.
    void upstream_tick(TimeMs now);
    // Routes of closed upstream streams (forget_) that have nothing queued
    // are forgotten, from tick() (nothing holds a Route& there); a later
    // stanza establishes them again.
    void forget_upstream_routes();
    void flush_queue(Route& r);
    // Backpressure (gateway_backpressure.cc).
    void apply_buffer_limits();
    std::size_t queue_pause_mark() const;
    void queue_grew(Route& r);   // after a delivery that queued
    void queue_shrunk(Route& r); // after stanzas left the queue
    void fail_queue(Route& r, xmpp::StanzaError cond, const std::string& reason);
    void bounce(const xmpp::StanzaHead& head, xmpp::StanzaError cond, std::string_view text,
                std::string_view payload = {}, std::optional<bool> to_local_server = {});
    void start_verify(std::uint64_t requester, const xmpp::DialbackRequest& r);
    void verify_failed(std::uint64_t verify_stream, const std::string& reason);
    void flush_dirty();
    void tick();
    // Route <-> stream links, indexed so a close touches only its routes.
    void bind_ready(Route& r, net::Stream* s);
    void bind_pending(Route& r, net::Stream* s);
    // Another attempt failed: 1, 2, 4 ... 60 s, each drawn in [d/2, d] so
    // that routes (and gateways) that failed together do not retry together.
    TimeMs backoff(int failures);
    void add_local(const std::string& d);
    void remove_local(const std::string& d);
    TimeMs now_ms() const { return static_cast<TimeMs>(uv_now(loop_)); }
    void preconnect();

    uv_loop_t* loop_;
    Config cfg_;
    tls::CertStore certs_;
    tls::TrustStore trust_;
    // Chains that verified (thread-safe): a re-add after a reconnect skips
    // chain verification, never the name check or the proof.
    mux::ChainCache mux_chains_{trust_};
    std::unique_ptr<xmpp::DialbackKeys> keys_;
    std::unique_ptr<route::Resolver> resolver_;
    net::Context ctx_;
    std::vector<std::unique_ptr<net::Listener>> listeners_;
    std::unordered_map<std::uint64_t, net::Stream*> streams_;
    std::map<xmpp::DomainPair, Route, xmpp::DomainPairLess> routes_;
    std::set<std::string, std::less<>> local_domains_;
    std::map<std::string, int, std::less<>> local_parents_; // "x.test" -> local domains directly under it
    std::unordered_map<std::uint64_t, std::unique_ptr<MuxPeer>> muxes_;   // by stream id
    std::map<std::string, Parked, std::less<>> parked_;                     // by resumption id
    std::vector<std::unique_ptr<MuxPeer>> mux_graveyard_;                   // freed outside callbacks
    std::unordered_map<std::uint64_t, std::vector<xmpp::DomainPair>> waiters_; // routes waiting on a stream
    std::unordered_map<std::uint64_t, std::vector<xmpp::DomainPair>> stream_routes_; // routes a stream is ready/pending for
    std::unordered_map<std::string, std::uint64_t> outgoing_by_target_;   // "addr:port" -> outer-out stream id
    std::unordered_map<std::uint64_t, PendingVerify> verifies_; // by verify stream id
    // Upstream streams (to the local server) by id: the stanza count last
    // seen and since when it did not change (idle timeout).
    struct UpstreamUse {
        std::uint64_t stanzas = 0;
        TimeMs since = 0;
        std::string address; // [upstream] address it went to (a reload may change it)
    };
    std::map<std::uint64_t, UpstreamUse> upstreams_;
    std::vector<xmpp::DomainPair> forget_; // routes of closed upstream streams, for forget_upstream_routes()
    std::string piggyback_refused_; // the [upstream] address that refused a piggybacked pair ("": none)
    std::string piggyback_works_;   // the [upstream] address that accepted one ("": none yet)
    net::StanzaOrigin origin_;
    std::uint64_t next_id_ = 1;
    std::minstd_rand rng_{std::random_device{}()};
    GatewayStats stats_;
    net::Stream* current_source_ = nullptr; // whose stanza is being delivered (backpressure)
    bool stopping_ = false;
    bool handles_ = false; // prepare_/check_/tick_ initialised
    std::unique_ptr<admin::Server> admin_;
    std::map<std::string, CertTx> cert_tx_; // by transaction name
    std::vector<std::shared_ptr<tls::LocalCert>> config_certs_; // live ones that came from [[cert]]
    bool reloading_ = false;
    bool draining_ = false;
    std::function<void()> on_stopped_;
    TimeMs drain_deadline_ = 0;
    bool drain_bounced_ = false; // drain timed out once: remote queues bounced
    std::unique_ptr<admin::HttpMetricsServer> metrics_http_; // [metrics] listen
    std::vector<std::shared_ptr<AdminAdd>> admin_adds_;
    Captures captures_{loop_}; // s2smuxctl capture, [[route]] capture

    uv_prepare_t prepare_{};
    uv_check_t check_{};
    uv_timer_t tick_{};
};

} // namespace s2smux
