#include "daemon/gateway.h"

#include "xml/fragments.h"
#include "daemon/mux_peer.h"

#include "common/log.h"
#include "xml/writer.h"
#include "xmpp/jid.h"

#include <fmt/format.h>

#include <algorithm>

namespace s2smux {

using net::Stream;
using net::StreamKind;
using xmpp::DomainPair;
using xmpp::StanzaError;

namespace {
constexpr const char* kCtx = "gateway";
constexpr TimeMs kTickMs = 1000;
// A destination holding this much output is written at once instead of at
// the end of the loop iteration: libuv may hand us up to 2 MiB of reads from
// one busy source before the iteration ends, which would otherwise all be
// held back (latency) and written in one burst (lockstep pipelining).
constexpr std::size_t kEarlyFlushBytes = 64 * 1024;
} // namespace

Gateway::Gateway(uv_loop_t* loop, Config cfg) : loop_(loop), cfg_(std::move(cfg)) {
    for (auto& d : cfg_.domains) {
        d = xmpp::lowercase_domain(d);
        add_local(d);
    }
    ctx_.loop = loop_;
    ctx_.certs = &certs_;
    ctx_.trust = &trust_;
    ctx_.owner = this;
    apply_buffer_limits();
}

Gateway::~Gateway() = default;

bool Gateway::is_local(std::string_view domain) const { return local_domains_.count(domain) != 0; }

bool Gateway::is_local_pattern(std::string_view name) const {
    if (name.rfind("*.", 0) == 0) return local_parents_.count(name.substr(2)) != 0;
    return is_local(name);
}

void Gateway::add_local(const std::string& d) {
    if (!local_domains_.insert(d).second) return;
    if (auto dot = d.find('.'); dot != std::string::npos) ++local_parents_[d.substr(dot + 1)];
}

void Gateway::remove_local(const std::string& d) {
    if (!local_domains_.erase(d)) return;
    if (auto dot = d.find('.'); dot != std::string::npos) {
        auto it = local_parents_.find(std::string_view(d).substr(dot + 1));
        if (it != local_parents_.end() && --it->second <= 0) local_parents_.erase(it);
    }
}

Result<void> Gateway::start() {
    keys_ = std::make_unique<xmpp::DialbackKeys>(cfg_.dialback_secret.empty()
                                                     ? xmpp::DialbackKeys::random()
                                                     : xmpp::DialbackKeys(cfg_.dialback_secret));
    ctx_.keys = keys_.get();

    for (const auto& c : cfg_.certs) {
        auto lc = tls::load_cert_files(c.cert, c.key);
        if (!lc) return make_error(fmt::format("[[cert]]: {}", lc.error()));
        std::string names;
        for (const auto& n : (*lc)->identity.names()) names += (names.empty() ? "" : ", ") + n;
        log::info(kCtx, "loaded certificate {} for {}", c.cert, names);
        config_certs_.push_back(*lc);
        certs_.add(std::move(*lc));
    }
    for (const auto& d : cfg_.domains)
        if (!certs_.find(d)) log::warn(kCtx, "no certificate for local domain {}: remotes can only use dialback", d);
    if (!cfg_.ca_file.empty()) {
        if (auto r = trust_.add_ca_file(cfg_.ca_file); !r) return make_error(fmt::format("[tls] ca_file: {}", r.error()));
    }
    if (cfg_.ca_file.empty() || cfg_.system_ca) {
        if (auto r = trust_.add_system(); !r) return make_error(fmt::format("system trust store: {}", r.error()));
    }

    resolver_ = std::make_unique<route::Resolver>(loop_, cfg_.routes, cfg_.nameserver);
    if (auto r = resolver_->init(); !r) return make_error(fmt::format("resolver: {}", r.error()));

    // One origin for the times of every capture of this run; [[route]]
    // captures take streams before the first one opens.
    uv_update_time(loop_);
    captures_.set_origin(static_cast<TimeMs>(uv_now(loop_)), capture_wall_clock());
    apply_route_captures({}, cfg_.routes);

    auto add_listener = [&](const std::optional<Endpoint>& ep, const char* name, StreamKind kind, bool direct) -> Result<void> {
        if (!ep) return {};
        auto l = std::make_unique<net::Listener>(loop_, name, [this, kind, direct](uv_stream_t* server) {
            on_accept(server, kind, direct);
        });
        if (auto r = l->listen(*ep); !r) return r;
        listeners_.push_back(std::move(l));
        return {};
    };
    if (auto r = add_listener(cfg_.outer, "outer", StreamKind::OuterIn, false); !r) return r;
    if (auto r = add_listener(cfg_.outer_tls, "outer_tls", StreamKind::OuterIn, true); !r) return r;
    if (auto r = add_listener(cfg_.inner, "inner", StreamKind::InnerIn, false); !r) return r;

    if (!cfg_.admin_socket.empty()) {
        admin_ = std::make_unique<admin::Server>(loop_, *this);
        if (auto r = admin_->listen(cfg_.admin_socket); !r) return make_error(fmt::format("[gateway] admin_socket: {}", r.error()));
        log::info(kCtx, "admin socket {}", cfg_.admin_socket);
    }
    if (cfg_.metrics_listen) {
        metrics_http_ = std::make_unique<admin::HttpMetricsServer>(loop_, [this] { return metrics_text(); });
        if (auto r = metrics_http_->listen(cfg_.metrics_listen->host, cfg_.metrics_listen->port); !r)
            return make_error(fmt::format("[metrics] listen: {}", r.error()));
    }

    handles_ = true;
    uv_prepare_init(loop_, &prepare_);
    prepare_.data = this;
    uv_prepare_start(&prepare_, [](uv_prepare_t* h) { static_cast<Gateway*>(h->data)->flush_dirty(); });
    uv_check_init(loop_, &check_);
    check_.data = this;
    uv_check_start(&check_, [](uv_check_t* h) { static_cast<Gateway*>(h->data)->flush_dirty(); });
    uv_timer_init(loop_, &tick_);
    tick_.data = this;
    uv_timer_start(&tick_, [](uv_timer_t* h) { static_cast<Gateway*>(h->data)->tick(); }, kTickMs, kTickMs);
    log::info(kCtx, "serving {} local domain(s); TLS policy {}", cfg_.domains.size(), xmpp::to_string(cfg_.policy));
    preconnect();
    return {};
}

void Gateway::preconnect() {
    // Streams to partner clouds opened at start-up (and reopened by tick()
    // when they close), so the first stanza does not wait for a handshake
    // and the multiplexed stream carries every domain from the start.
    if (stopping_ || draining_ || cfg_.domains.empty()) return;
    for (const auto& rc : cfg_.routes) {
        if (!rc.preconnect) continue;
        Route& r = route_for(cfg_.domains.front(), rc.domain);
        if (r.ready || r.pending || r.resolving || r.waiting_on) continue;
        if (static_cast<TimeMs>(uv_now(loop_)) < r.retry_at) continue;
        bool carried = false;
        for (const auto& [id, p] : muxes_)
            if (!p->closed && p->mux->peer_has(rc.domain)) carried = true;
        if (!carried) establish(r);
    }
}

void Gateway::stop() {
    if (stopping_) return;
    stopping_ = true;
    log::info(kCtx, "shutting down: closing {} stream(s)", streams_.size());
    for (auto& l : listeners_) l->close();
    if (admin_) admin_->close();
    if (metrics_http_) metrics_http_->close();
    // Bounce what is still queued (and what broken streams kept for their
    // resumption), then close every stream.
    while (!parked_.empty()) drop_parked(parked_.begin(), "gateway shutting down");
    for (auto& [key, r] : routes_) fail_queue(r, StanzaError::RemoteServerTimeout, "gateway shutting down");
    // Write what is pending first: stanzas that leave now are acknowledged
    // to their senders in the final <a/> of the streams closed below.
    flush_dirty();
    std::vector<Stream*> all;
    for (auto& [id, s] : streams_) all.push_back(s);
    for (Stream* s : all) {
        if (!s->finished()) s->session().close(xmpp::StreamError::SystemShutdown, "gateway shutting down");
    }
    // Every session has written its last bytes: E records, files closed
    // (the loop runs until they are).
    captures_.stop_all();
    flush_dirty();
    if (resolver_) resolver_->shutdown();
    if (on_stopped_) std::exchange(on_stopped_, nullptr)();
    if (!handles_) return; // start() failed before creating them
    uv_prepare_stop(&prepare_);
    uv_check_stop(&check_);
    uv_timer_stop(&tick_);
    uv_close(reinterpret_cast<uv_handle_t*>(&prepare_), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&check_), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&tick_), nullptr);
}

// ------------------------------------------------------------ streams

xmpp::TlsPolicy Gateway::policy_for(std::string_view remote) const {
    if (const RouteConfig* rc = route::find_route(cfg_.routes, remote); rc && rc->policy) return *rc->policy;
    return cfg_.policy;
}

xmpp::SessionConfig Gateway::session_config(StreamKind kind, std::string_view from, std::string_view to) const {
    xmpp::SessionConfig c;
    c.limits.max_stanza_bytes = cfg_.max_stanza_bytes;
    c.limits.max_depth = cfg_.max_depth;
    c.limits.max_attrs = cfg_.max_attrs;
    c.auth_timeout_ms = cfg_.auth_timeout_ms;
    c.keepalive_ms = cfg_.keepalive_ms;
    c.dead_peer_ms = cfg_.dead_peer_ms;
    // Not toward the local server's outbound streams (inner): it would
    // bounce on its own what we did not acknowledge yet.
    c.stream_mgmt = cfg_.sm_enabled && kind != StreamKind::InnerIn && kind != StreamKind::VerifyOut;
    c.max_unacked_bytes = cfg_.sm_max_unacked_bytes;
    if (kind == StreamKind::OuterIn || kind == StreamKind::OuterOut) {
        c.resume_max_s = cfg_.sm_resume_s;
        c.ack_after_forward = true;
    }
    c.from = std::string(from);
    c.to = std::string(to);
    bool have_cert = certs_.any() != nullptr;
    switch (kind) {
    case StreamKind::OuterIn:
        c.role = xmpp::Role::Receiver;
        c.tls_policy = cfg_.policy;
        c.tls_possible = have_cert;
        c.offer_mux = cfg_.mux_enabled;
        break;
    case StreamKind::InnerIn:
        // The local server is trusted: dialback for its domains is accepted
        // as is; TLS is offered when we have a certificate but not required.
        c.role = xmpp::Role::Receiver;
        c.tls_policy = xmpp::TlsPolicy::Optional;
        c.tls_possible = have_cert;
        c.offer_external = false;
        c.offer_bidi = false;
        break;
    case StreamKind::OuterOut:
    case StreamKind::VerifyOut:
        c.role = xmpp::Role::Initiator;
        c.tls_policy = policy_for(to);
        c.verify_peer = c.tls_policy == xmpp::TlsPolicy::Required;
        c.verify_only = kind == StreamKind::VerifyOut;
        c.want_mux = cfg_.mux_enabled && kind == StreamKind::OuterOut;
        c.auth_timeout_ms = cfg_.connect_timeout_ms;
        break;
    case StreamKind::UpstreamOut:
        c.role = xmpp::Role::Initiator;
        c.tls_policy = cfg_.upstream_tls;
        c.verify_peer = false;
        c.use_external = false;
        c.want_bidi = false;
        c.auth_timeout_ms = cfg_.connect_timeout_ms;
        break;
    }
    return c;
}

void Gateway::on_accept(uv_stream_t* server, StreamKind kind, bool direct_tls) {
    if (stopping_) return;
    std::uint64_t id = next_id_++;
    Stream* s = Stream::accept(ctx_, server, kind, direct_tls, session_config(kind), id);
    if (!s) return;
    ++stats_.streams_accepted;
    streams_[id] = s;
}

bool Gateway::stream_hosts(Stream& s, std::string_view domain) {
    switch (s.kind()) {
    case StreamKind::InnerIn:
    case StreamKind::UpstreamOut:
        // Toward the local server we stand in for every remote domain.
        return !is_local(domain) && xmpp::valid_domain(domain);
    default:
        return is_local(domain);
    }
}

bool Gateway::stream_has_cert(std::string_view domain) { return certs_.find(domain) != nullptr; }

xmpp::DialbackVerdict Gateway::stream_dialback_request(Stream& s, const xmpp::DialbackRequest& r) {
    if (s.kind() == StreamKind::InnerIn) {
        if (is_local(r.from)) return xmpp::DialbackVerdict::Valid;
        log::warn(s.session().log_context(), "local server claims non-local domain {}: refused", r.from);
        return xmpp::DialbackVerdict::Invalid;
    }
    if (s.kind() != StreamKind::OuterIn) return xmpp::DialbackVerdict::Invalid;
    if (is_local(r.from)) {
        log::warn(s.session().log_context(), "remote claims our own domain {}: refused", r.from);
        return xmpp::DialbackVerdict::Invalid;
    }
    if (stopping_) return xmpp::DialbackVerdict::Invalid;
    start_verify(s.id(), r);
    return xmpp::DialbackVerdict::Pending;
}

void Gateway::stream_authenticated(Stream& s, std::string_view from, std::string_view to, bool dir_in,
                                   xmpp::AuthMethod) {
    if (dir_in) return; // the session itself checks what it may receive
    Route& r = route_for(from, to);
    if (!r.ready || r.ready->finished()) bind_ready(r, &s);
    if (r.pending == &s && r.piggybacked) {
        if (auto u = upstreams_.find(s.id()); u != upstreams_.end()) piggyback_works_ = u->second.address;
    }
    if (r.pending == &s) r.pending = nullptr, r.piggybacked = false;
    r.failures = 0;
    flush_queue(r);
    // Routes that wait for this upstream stream can be requested on it now.
    if (s.kind() == StreamKind::UpstreamOut) reevaluate_waiters(s.id());
    // Routes that waited for this stream in the hope it would multiplex:
    // a standard stream carries only its own pair, they must connect.
    if (s.kind() == StreamKind::OuterOut && !s.session().mux_enabled()) reevaluate_waiters(s.id());
}

void Gateway::stream_ready(Stream& s) {
    auto it = verifies_.find(s.id());
    if (it == verifies_.end()) {
        s.session().close();
        return;
    }
    PendingVerify& v = it->second;
    s.session().send_db_verify(v.local, v.remote, v.id, v.key);
    v.sent = true;
}

void Gateway::stream_verify_answer(Stream& s, std::string_view from, std::string_view to, std::string_view id,
                                   bool valid) {
    auto it = verifies_.find(s.id());
    if (it == verifies_.end() || it->second.remote != from || it->second.local != to || it->second.id != id) {
        log::debug(s.session().log_context(), "unexpected <db:verify/> answer from {} ignored", from);
        return;
    }
    PendingVerify v = std::move(it->second);
    verifies_.erase(it);
    if (auto rq = streams_.find(v.requester); rq != streams_.end() && !rq->second->finished())
        rq->second->session().dialback_result(v.remote, v.local, valid);
    s.session().close();
}

void Gateway::stream_stanza(Stream& s, const xml::Node& el, const xmpp::StanzaRoute& r) {
    ++stats_.stanzas_accepted;
    // Whoever takes the stanza (a stream, a queue, a bounce) takes this too.
    struct OriginScope {
        net::StanzaOrigin& slot;
        net::StanzaOrigin saved;
        OriginScope(net::StanzaOrigin& s, net::StanzaOrigin o) : slot(s), saved(std::exchange(s, o)) {}
        ~OriginScope() { slot = saved; }
    } scope(origin_, {r.sm_seq ? s.id() : 0, r.sm_seq});
    if (r.to_domain.empty()) {
        bounce(r.head, StanzaError::JidMalformed, fmt::format("malformed 'to' address '{}'", r.head.to));
        return;
    }
    switch (s.kind()) {
    case StreamKind::InnerIn:
        if (!is_local(r.from_domain)) {
            bounce(r.head, StanzaError::NotAllowed,
                   fmt::format("{} is not (or no longer) a domain of this gateway", r.from_domain), {}, true);
            return;
        }
        if (is_local(r.to_domain)) {
            bounce(r.head, StanzaError::ServiceUnavailable, "local domain routed through the gateway");
            return;
        }
        break;
    case StreamKind::OuterIn:
    case StreamKind::OuterOut:
        if (!is_local(r.to_domain)) {
            bounce(r.head, StanzaError::ItemNotFound, "not a domain of this gateway");
            return;
        }
        break;
    default:
        log::warn(s.session().log_context(), "unexpected stanza on a {} stream dropped", net::to_string(s.kind()));
        ++stats_.stanzas_dropped;
        origin_done(std::exchange(origin_, {}));
        return;
    }
    Stream* outer = std::exchange(current_source_, &s);
    deliver(r.from_domain, r.to_domain, &el, r.raw, r.head);
    current_source_ = outer;
}

void Gateway::stream_opened(Stream& s) {
    if (!stopping_) captures_.stream_opened(s);
}

void Gateway::stream_closed(Stream& s, const xmpp::CloseInfo& info) {
    const std::string& ctx = s.session().log_context();
    if (info.error) log::info(ctx, "stream closed: {}", info.reason);
    else log::info(ctx, "stream closed ({})", info.reason);
    if (s.tap()) captures_.stream_closed(s, info.reason);
    streams_.erase(s.id());
    // The session is closed: its stanza counts are final.
    stats_.stanzas_in[net::index(s.kind())] += s.session().stanzas_in();
    stats_.stanzas_out[net::index(s.kind())] += s.session().stanzas_out();
    if (s.kind() == StreamKind::VerifyOut) verify_failed(s.id(), info.reason);
    upstreams_.erase(s.id());
    if (auto m = muxes_.find(s.id()); m != muxes_.end()) {
        s.session().set_mux(nullptr);
        if (!park(s, m->second, info)) {
            // Freed later: we may be inside a call of this very MuxSession.
            m->second->closed = true;
            merge_mux_stats(*m->second->mux);
            mux_graveyard_.push_back(std::move(m->second));
        }
        muxes_.erase(m);
    }
    for (auto& [rid, pk] : parked_) {
        if (pk.resuming != s.id()) continue;
        pk.resuming = 0; // the attempt failed: another one after a while
        pk.retry_at = now_ms() + backoff(++pk.failures);
    }
    for (auto it = outgoing_by_target_.begin(); it != outgoing_by_target_.end();) {
        if (it->second == s.id()) it = outgoing_by_target_.erase(it);
        else ++it;
    }
    auto bound = stream_routes_.find(s.id());
    if (bound != stream_routes_.end()) {
        std::vector<DomainPair> keys = std::move(bound->second);
        stream_routes_.erase(bound);
        for (const auto& k : keys) {
            auto rt = routes_.find(k);
            if (rt == routes_.end()) continue;
            Route& r = rt->second;
            if (r.ready == &s) r.ready = nullptr;
            if (r.pending == &s && r.piggybacked) {
                // Requested on an established stream that ended before the
                // answer: closed by the local server because of the request
                // (it does not support piggybacking), or for another reason.
                if (info.by_peer && !info.transport)
                    piggyback_refused(fmt::format("it closed stream {} while verifying {} -> {}: {}", s.id(),
                                                  r.from, r.to, info.reason));
                r.pending = nullptr;
                r.piggybacked = false;
                ++stats_.upstream_piggyback_failed;
                if (!r.queue.empty() && !stopping_) reevaluate(r);
            } else if (r.pending == &s) {
                r.pending = nullptr;
                ++r.failures;
                r.retry_at = now_ms() + backoff(r.failures);
                // A remote that was reachable and is not (restarting, network
                // cut): its stanzas wait, up to queue_timeout, for a retry.
                // First contact failing, or a refusal: bounced at once.
                if (info.transport && r.sent > 0 && !stopping_ && !r.queue.empty()) {
                    log::info(kCtx, "{} -> {}: {}; {} stanza(s) wait, retry in {:.1f} s", r.from, r.to, info.reason,
                              r.queue.size(), static_cast<double>(r.retry_at - now_ms()) / 1000);
                } else {
                    fail_queue(r, info.bounce, info.reason);
                }
            } else if (!r.ready && !r.resolving && !r.waiting_on && !r.queue.empty() && !stopping_) {
                reevaluate(r); // the carrying stream went away with stanzas waiting
            }
        }
        if (s.kind() == StreamKind::UpstreamOut) forget_.insert(forget_.end(), keys.begin(), keys.end());
    }
    if (info.transport && !info.authenticated &&
        (s.kind() == StreamKind::OuterOut || s.kind() == StreamKind::UpstreamOut)) {
        // Routes that waited for this connection to the same server back
        // off with it instead of each trying the dead address in turn.
        if (auto w = waiters_.find(s.id()); w != waiters_.end()) {
            for (const auto& k : w->second) {
                auto rt = routes_.find(k);
                if (rt == routes_.end() || rt->second.waiting_on != s.id()) continue;
                ++rt->second.failures;
                rt->second.retry_at = now_ms() + backoff(rt->second.failures);
            }
        }
    }
    reevaluate_waiters(s.id());
    requeue_unacked(s);
}

void Gateway::origin_done(net::StanzaOrigin o) {
    if (!o.stream) return;
    if (auto it = streams_.find(o.stream); it != streams_.end() && !it->second->finished())
        it->second->session().stanzas_done(&o.seq, 1);
}

void Gateway::stream_forwarded(const std::vector<net::StanzaOrigin>& done) {
    // In runs from the same source: one acknowledgement per run.
    std::vector<std::uint32_t> seqs;
    for (std::size_t i = 0; i < done.size();) {
        const std::uint64_t src = done[i].stream;
        seqs.clear();
        for (; i < done.size() && done[i].stream == src; ++i) seqs.push_back(done[i].seq);
        if (auto it = streams_.find(src); it != streams_.end() && !it->second->finished())
            it->second->session().stanzas_done(seqs.data(), seqs.size());
    }
}

TimeMs Gateway::backoff(int failures) {
    TimeMs d = std::min<TimeMs>(60000, 1000LL << std::clamp(failures - 1, 0, 6));
    return d / 2 + static_cast<TimeMs>(rng_() % static_cast<std::uint32_t>(d / 2 + 1));
}

// ------------------------------------------------------------- routing

void Gateway::bind_ready(Route& r, Stream* s) {
    if (r.ready == s) return;
    r.ready = s;
    if (s) r.failures = 0, r.retry_at = 0;
    if (s) stream_routes_[s->id()].emplace_back(r.from, r.to);
}

void Gateway::bind_pending(Route& r, Stream* s) {
    r.pending = s;
    if (s) stream_routes_[s->id()].emplace_back(r.from, r.to);
}

Gateway::Route& Gateway::route_for(std::string_view from, std::string_view to) {
    auto it = routes_.find(std::pair<std::string_view, std::string_view>(from, to));
    if (it != routes_.end()) return it->second;
    DomainPair key{std::string(from), std::string(to)};
    Route& r = routes_[key];
    r.from = key.first;
    r.to = key.second;
    r.upstream = is_local(to);
    return r;
}

void Gateway::deliver(std::string_view from_dom, std::string_view to_dom, const xml::Node* el,
                      std::string_view raw, const xmpp::StanzaHead& head, std::optional<bool> to_local_server) {
    Route& r = route_for(from_dom, to_dom);
    if (to_local_server && r.upstream != *to_local_server) {
        // A domain that stopped being local (cert remove) still lives on the
        // local server: answers to its users go upstream.
        r.upstream = *to_local_server;
        r.ready = nullptr;
    }
    if (r.ready && !r.ready->session().can_send(from_dom, to_dom)) r.ready = nullptr;
    if (!r.ready && !r.upstream && !muxes_.empty()) {
        // A multiplexed stream that already carries both names wins.
        MuxVerdict v = classify(from_dom, to_dom);
        if (v.kind == MuxVerdict::Send) bind_ready(r, v.stream);
    }
    if (r.ready && r.queue.empty()) {
        auto& sess = r.ready->session();
        // As received when it can be (no re-serializing); queued stanzas
        // are serialized (make_queued relies on the serializer's form).
        if (!raw.empty()) sess.send_stanza_raw(raw);
        else sess.send_stanza(*el);
        r.ready->note_origin(std::exchange(origin_, {}));
        ++r.sent;
        ++stats_.stanzas_routed;
        Stream* dest = r.ready; // still allocated if the write below fails and unbinds it
        if (sess.out().size() >= kEarlyFlushBytes) dest->write_pending();
        dest->fed_by(current_source_);
        return;
    }
    if (stopping_) {
        bounce(head, StanzaError::RemoteServerTimeout, "gateway shutting down");
        return;
    }
    if (r.queue.size() >= cfg_.max_queue_stanzas) {
        bounce(head, StanzaError::ResourceConstraint,
               fmt::format("queue for {} -> {} is full ({} stanzas)", r.from, r.to, r.queue.size()));
        return;
    }
    enqueue(r, el, raw, head);
    if (r.ready) flush_queue(r);
    else if (!r.pending && !r.resolving && !r.waiting_on) reevaluate(r);
    queue_grew(r);
}

void Gateway::enqueue(Route& r, const xml::Node* el, std::string_view raw, const xmpp::StanzaHead& head) {
    r.queue.push_back(make_queued(el, raw, head));
    origin_ = {}; // the queue has it now
    ++stats_.stanzas_queued;
}

Gateway::Queued Gateway::make_queued(const xml::Node* el, std::string_view raw, const xmpp::StanzaHead& head) const {
    Queued q;
    if (el) xml::serialize(q.xml, *el);
    else q.xml.assign(raw);
    // The serializer escapes '>' in attributes, so the first '>' ends the
    // start tag; an element ending in "/>" there has no children.
    std::size_t gt = q.xml.find('>');
    if (gt != std::string::npos && gt > 0 && q.xml[gt - 1] != '/') {
        q.payload_begin = gt + 1;
        std::size_t end = q.xml.rfind("</");
        q.payload_end = end != std::string::npos && end >= q.payload_begin ? end : q.payload_begin;
    }
    q.name = head.name;
    q.from = head.from;
    q.to = head.to;
    q.id = head.id;
    q.type = head.type;
    q.at = static_cast<TimeMs>(uv_now(loop_));
    q.origin = origin_;
    return q;
}

void Gateway::requeue_unacked(Stream& s) { requeue(s.session().take_unacked(), s.session().log_context()); }

void Gateway::requeue(std::string bytes, const std::string& ctx) {
    if (bytes.empty()) return;
    // By route, in the order they were sent.
    std::map<DomainPair, std::vector<Queued>, xmpp::DomainPairLess> by_route;
    std::size_t n = 0;
    std::string err;
    bool ok = xml::for_each_element(bytes, [&](const xml::Node& el) {
        xmpp::StanzaHead h{el.name, el.attr("from"), el.attr("to"), el.attr("id"), el.attr("type")};
        Queued q = make_queued(&el, {}, h);
        q.origin = {}; // ours to send again; nobody waits for it
        by_route[{xmpp::jid_domain(h.from), xmpp::jid_domain(h.to)}].push_back(std::move(q));
        ++n;
    }, &err);
    if (!ok) // our own serialization: cannot happen; say so loudly if it does
        log::error(ctx, "unacknowledged stanzas after the {}th unreadable: {}", n, err);
    stats_.stanzas_requeued += n;
    log::warn(ctx, "{} stanza(s) sent and not acknowledged by the peer: queued again{}", n,
              stopping_ ? " (shutting down: bounced)" : "");
    for (auto& [key, items] : by_route) {
        Route& r = route_for(key.first, key.second);
        // Older than anything queued since: in front, keeping their order.
        for (auto it = items.rbegin(); it != items.rend(); ++it) r.queue.push_front(std::move(*it));
        if (stopping_) fail_queue(r, StanzaError::RemoteServerTimeout,
                                  "gateway shutting down; not acknowledged by the remote server (may have arrived)");
        else if (r.ready && !r.ready->finished()) flush_queue(r);
        else if (!r.pending && !r.resolving && !r.waiting_on) reevaluate(r);
    }
}

std::size_t Gateway::in_flight_stanzas() const {
    std::size_t n = 0;
    for (const auto& [id, s] : streams_) n += s->session().sm().unacked();
    for (const auto& [id, pk] : parked_) n += pk.state.sm.unacked();
    return n;
}

void Gateway::flush_queue(Route& r) {
    if (!r.ready) return;
    auto& sess = r.ready->session();
    const TimeMs now = now_ms();
    while (!r.queue.empty() && sess.can_send(r.from, r.to)) {
        stats_.queue_wait.observe_ms(now - r.queue.front().at);
        sess.send_stanza_raw(r.queue.front().xml);
        r.ready->note_origin(r.queue.front().origin);
        r.queue.pop_front();
        ++r.sent;
        ++stats_.stanzas_routed;
    }
    queue_shrunk(r);
}

void Gateway::fail_queue(Route& r, StanzaError cond, const std::string& reason) {
    if (r.queue.empty()) return;
    log::warn(kCtx, "{} -> {}: bouncing {} queued stanza(s): {}", r.from, r.to, r.queue.size(), reason);
    std::deque<Queued> q;
    q.swap(r.queue);
    queue_shrunk(r);
    const net::StanzaOrigin saved = origin_;
    for (const Queued& s : q) {
        xmpp::StanzaHead h{s.name, s.from, s.to, s.id, s.type};
        std::string_view payload;
        if (s.payload_end > s.payload_begin)
            payload = std::string_view(s.xml).substr(s.payload_begin, s.payload_end - s.payload_begin);
        origin_ = s.origin;
        bounce(h, cond, reason, payload);
    }
    origin_ = saved;
}

void Gateway::bounce(const xmpp::StanzaHead& head, StanzaError cond, std::string_view text, std::string_view payload,
                     std::optional<bool> to_local_server) {
    // The stanza is answered (or dropped): it has left; its error is a new
    // stanza nobody waits for.
    origin_done(std::exchange(origin_, {}));
    if (!xmpp::may_bounce(head)) {
        ++stats_.stanzas_dropped;
        log::info(kCtx, "dropped <{} type='{}'/> from {} to {} ({}): errors are never answered", head.name,
                  head.type, head.from, head.to, text);
        return;
    }
    std::string from_dom = xmpp::jid_domain(head.to);
    std::string to_dom = xmpp::jid_domain(head.from);
    if (from_dom.empty() || to_dom.empty()) {
        ++stats_.stanzas_dropped;
        log::warn(kCtx, "dropped <{}/> from {} to {}: cannot bounce to a malformed address ({})", head.name,
                  head.from, head.to, text);
        return;
    }
    ++stats_.stanzas_bounced;
    ++stats_.bounced_by[static_cast<std::size_t>(cond)];
    log::info(kCtx, "bounce <{}/> {} -> {}: {} ({})", head.name, head.from, head.to, xmpp::condition_name(cond), text);
    std::string xml;
    xmpp::write_bounce(xml, head, cond, text, payload);
    xmpp::StanzaHead bh{head.name, head.to, head.from, head.id, "error"};
    deliver(from_dom, to_dom, nullptr, xml, bh, to_local_server);
}

void Gateway::establish(Route& r) {
    if (stopping_) return;
    DomainPair key{r.from, r.to};
    if (r.upstream) {
        if (!cfg_.upstream) {
            fail_queue(r, StanzaError::ServiceUnavailable, "no [upstream] address configured");
            return;
        }
        // On a stream the local server already authenticated, if it takes
        // one more pair there (one stream per pair: 10,000 streams for
        // 100 x 100 domains).
        if (piggyback(r)) return;
        connect_route(key, {upstream_target()});
        return;
    }
    r.resolving = true;
    resolver_->resolve(r.to, [this, key](Result<route::Resolution> res) {
        auto it = routes_.find(key);
        if (it == routes_.end()) return;
        Route& rt = it->second;
        rt.resolving = false;
        if (stopping_) return;
        if (!res) {
            ++rt.failures;
            fail_queue(rt, StanzaError::RemoteServerNotFound, res.error());
            return;
        }
        log::debug(kCtx, "{} -> {}: {}", rt.from, rt.to, res->explain);
        // One connection per remote server: if we are already connected (or
        // connecting) to this address and that stream may multiplex, wait
        // for it to tell which domains it carries.
        for (const auto& t : res->targets) {
            auto o = outgoing_by_target_.find(fmt::format("{}:{}", t.address, t.port));
            if (o == outgoing_by_target_.end()) continue;
            auto st = streams_.find(o->second);
            if (st == streams_.end() || st->second->finished()) continue;
            auto m = muxes_.find(o->second);
            bool undecided = m == muxes_.end() ? !st->second->session().ready()
                                               : !m->second->mux->peer_announce_complete();
            if (undecided) {
                wait_on(rt, o->second);
                return;
            }
        }
        connect_route(key, std::move(res->targets));
    });
}

void Gateway::connect_route(const DomainPair& key, std::vector<route::Target> targets) {
    Route& r = routes_.at(key);
    StreamKind kind = r.upstream ? StreamKind::UpstreamOut : StreamKind::OuterOut;
    std::uint64_t id = next_id_++;
    auto cfg = session_config(kind, r.from, r.to);
    if (kind == StreamKind::OuterOut && cfg_.mux_enabled && !targets.empty())
        outgoing_by_target_.try_emplace(fmt::format("{}:{}", targets.front().address, targets.front().port), id);
    Stream* s = Stream::connect(ctx_, kind, std::move(cfg), std::move(targets), id, cfg_.connect_timeout_ms);
    ++stats_.streams_connected;
    streams_[id] = s;
    if (kind == StreamKind::UpstreamOut && cfg_.upstream)
        upstreams_[id] = UpstreamUse{0, now_ms(), cfg_.upstream->to_string()};
    r.piggybacked = false;
    bind_pending(r, s);
}

// --------------------------------------------------------- dialback verify

void Gateway::start_verify(std::uint64_t requester, const xmpp::DialbackRequest& r) {
    PendingVerify v;
    v.requester = requester;
    v.remote = std::string(r.from);
    v.local = std::string(r.to);
    v.id = std::string(r.stream_id);
    v.key = std::string(r.key);
    std::string remote = v.remote;
    resolver_->resolve(remote, [this, v = std::move(v)](Result<route::Resolution> res) mutable {
        if (stopping_) return;
        auto rq = streams_.find(v.requester);
        if (rq == streams_.end() || rq->second->finished()) return;
        if (!res) {
            rq->second->session().dialback_result(v.remote, v.local, false,
                                                  fmt::format("cannot resolve {}: {}", v.remote, res.error()),
                                                  StanzaError::RemoteServerNotFound);
            return;
        }
        std::uint64_t id = next_id_++;
        auto cfg = session_config(StreamKind::VerifyOut, v.local, v.remote);
        verifies_[id] = std::move(v);
        Stream* s = Stream::connect(ctx_, StreamKind::VerifyOut, std::move(cfg), std::move(res->targets), id,
                                    cfg_.connect_timeout_ms);
        streams_[id] = s;
    });
}

void Gateway::verify_failed(std::uint64_t verify_stream, const std::string& reason) {
    auto it = verifies_.find(verify_stream);
    if (it == verifies_.end()) return;
    PendingVerify v = std::move(it->second);
    verifies_.erase(it);
    if (auto rq = streams_.find(v.requester); rq != streams_.end() && !rq->second->finished())
        rq->second->session().dialback_result(
            v.remote, v.local, false, fmt::format("authoritative server unreachable: {}", reason),
            StanzaError::RemoteServerTimeout);
}

// ---------------------------------------------------------------- loop

void Gateway::flush_dirty() {
    if (!mux_graveyard_.empty()) mux_graveyard_.clear();
    if (captures_.has_pending()) captures_.tick(); // never inside a session call
    if (ctx_.dirty.empty()) return;
    std::vector<Stream*> batch;
    batch.swap(ctx_.dirty);
    for (Stream* s : batch) s->flush();
}

std::size_t Gateway::queued_stanzas() const {
    std::size_t n = 0;
    for (const auto& [key, r] : routes_) n += r.queue.size();
    return n;
}

void Gateway::drain() {
    if (stopping_ || draining_) return;
    draining_ = true;
    // Broken streams are not resumed any more: their stanzas join the queues
    // (and go out on other streams, or are bounced at the deadline).
    while (!parked_.empty()) drop_parked(parked_.begin(), "draining");
    // No new remote streams; the inner listener stays open so the local
    // server can still verify the dialback keys of streams that deliver
    // what is queued (bounces included).
    for (auto& l : listeners_)
        if (l->name() != "inner") l->close();
    std::size_t q = queued_stanzas() + in_flight_stanzas();
    if (q == 0 || cfg_.drain_timeout_ms == 0 || !handles_) {
        log::info(kCtx, "draining: nothing queued, closing {} stream(s)", streams_.size());
        return stop();
    }
    drain_deadline_ = now_ms() + cfg_.drain_timeout_ms;
    log::info(kCtx, "draining: stopped accepting remote streams; {} stanza(s) queued, closing streams once they are "
                    "delivered or in at most {} s",
              q, cfg_.drain_timeout_ms / 1000);
    uv_timer_start(&tick_, [](uv_timer_t* h) { static_cast<Gateway*>(h->data)->tick(); }, 100, 100);
}

void Gateway::tick() {
    TimeMs now = static_cast<TimeMs>(uv_now(loop_));
    if (draining_) {
        // Queued, or sent and not yet acknowledged (stream management).
        std::size_t q = queued_stanzas() + in_flight_stanzas();
        if (q == 0) {
            log::info(kCtx, "draining: queues empty; closing streams");
            return stop();
        }
        if (now >= drain_deadline_ && !drain_bounced_) {
            // Bounce what could not go out while the upstream streams still
            // run, then give the bounces a moment to reach the local server.
            log::info(kCtx, "draining: timeout, bouncing {} stanza(s) still queued", q);
            drain_bounced_ = true;
            drain_deadline_ = now + std::min<TimeMs>(5000, cfg_.drain_timeout_ms);
            for (auto& [key, r] : routes_)
                if (!r.upstream) fail_queue(r, StanzaError::RemoteServerTimeout, "gateway shutting down");
            return;
        }
        if (now >= drain_deadline_) {
            log::info(kCtx, "draining: timeout, {} bounce(s) not delivered to the local server; closing streams", q);
            return stop();
        }
    }
    admin_tick(now);
    parked_tick(now);
    upstream_tick(now);
    preconnect();
    // Safety net: a queue that nothing is working on gets a route again.
    for (auto& [key, r] : routes_)
        if (!r.queue.empty() && !r.ready && !r.pending && !r.resolving && !r.waiting_on) reevaluate(r);
    for (auto& [key, r] : routes_) {
        if (r.queue.empty() || now - r.queue.front().at < static_cast<TimeMs>(cfg_.queue_timeout_ms)) continue;
        // Bounce what waited too long; keep the rest queued.
        std::deque<Queued> expired;
        while (!r.queue.empty() && now - r.queue.front().at >= static_cast<TimeMs>(cfg_.queue_timeout_ms)) {
            expired.push_back(std::move(r.queue.front()));
            r.queue.pop_front();
        }
        std::deque<Queued> keep;
        keep.swap(r.queue);
        r.queue.swap(expired);
        fail_queue(r, StanzaError::RemoteServerTimeout,
                   fmt::format("no stream to {} within {} s", r.to, cfg_.queue_timeout_ms / 1000));
        r.queue.swap(keep);
    }
}

} // namespace s2smux
