// Streams to the local server (upstream): several domain pairs share one
// stream by dialback piggybacking (XEP-0220), bounded by [upstream]
// max_pairs_per_stream, and idle ones are closed ([limits]
// upstream_idle_timeout).
#include "daemon/gateway.h"

#include "common/log.h"

#include <fmt/format.h>

namespace s2smux {

using net::Stream;
using xmpp::DomainPair;

namespace {
constexpr const char* kCtx = "gateway";
} // namespace

bool Gateway::piggyback(Route& r) {
    if (!cfg_.upstream || cfg_.upstream_max_pairs <= 1) return false;
    const std::string address = cfg_.upstream->to_string();
    if (piggyback_refused_ == address) return false;
    Stream* opening = nullptr;
    for (const auto& [id, use] : upstreams_) {
        if (use.address != address) continue; // before a reload changed it
        auto it = streams_.find(id);
        if (it == streams_.end()) continue;
        Stream* s = it->second;
        xmpp::Session& sess = s->session();
        if (s->finished() || sess.closed()) continue;
        // One pair per originating domain on a stream: Prosody 0.12
        // (mod_dialback) forgets that a domain is authenticated on a stream
        // when another <db:result/> from it arrives there, and closes the
        // stream (not-authorized) on its next stanza until that one is
        // verified.
        if (sess.config().from == r.from || sess.has_from(r.from)) continue;
        if (!sess.ready()) {
            // Being established: wait for it rather than open another one.
            auto w = waiters_.find(id);
            std::size_t n = 1 + (w == waiters_.end() ? 0 : w->second.size());
            if (!opening && n < cfg_.upstream_max_pairs) opening = s;
            continue;
        }
        if (sess.pairs_out().size() + sess.pairs_requested().size() >= cfg_.upstream_max_pairs) continue;
        if (!sess.request_pair(r.from, r.to)) continue;
        bind_pending(r, s);
        ++stats_.upstream_piggybacked;
        r.piggybacked = true;
        r.requested_at = now_ms();
        return true;
    }
    if (!opening) return false;
    wait_on(r, opening->id());
    return true;
}

void Gateway::piggyback_refused(const std::string& why) {
    if (!cfg_.upstream) return;
    const std::string address = cfg_.upstream->to_string();
    if (piggyback_refused_ == address || piggyback_works_ == address) return;
    piggyback_refused_ = address;
    log::warn(kCtx, "the local server does not take further domain pairs on an upstream stream ({}): one stream "
                    "per domain pair from now on",
              why);
}

void Gateway::piggyback_failed(Route& r, const std::string& why) {
    ++stats_.upstream_piggyback_failed;
    r.pending = nullptr;
    r.piggybacked = false;
    log::info(kCtx, "{} -> {}: {}; on a stream of its own", r.from, r.to, why);
    if (!r.queue.empty() && !stopping_ && cfg_.upstream) connect_route({r.from, r.to}, {upstream_target()});
}

route::Target Gateway::upstream_target() const {
    route::Target t;
    t.address = cfg_.upstream->host;
    t.port = cfg_.upstream->port;
    t.source = "upstream";
    return t;
}

void Gateway::stream_pair_refused(Stream& s, std::string_view from, std::string_view to, bool error_answer,
                                  std::string_view reason) {
    std::string why = fmt::format("local server refused {} -> {} on stream {}: {}", from, to, s.id(), reason);
    // Our keys are always valid (the local server verifies them through the
    // inner listener): 'invalid' means it cannot verify a piggybacked pair.
    // An error answers for this pair only (e.g. ejabberd's s2s access rules),
    // and a stream of its own gets the same answer, which bounces its queue.
    if (!error_answer) piggyback_refused(why);
    auto it = routes_.find(std::pair<std::string_view, std::string_view>(from, to));
    if (it == routes_.end() || it->second.pending != &s) return;
    piggyback_failed(it->second, why);
}

void Gateway::upstream_tick(TimeMs now) {
    std::vector<Stream*> idle;
    std::vector<DomainPair> unanswered;
    for (auto& [id, use] : upstreams_) {
        auto it = streams_.find(id);
        if (it == streams_.end() || it->second->finished()) continue;
        xmpp::Session& sess = it->second->session();
        for (const auto& p : sess.pairs_requested()) {
            auto rt = routes_.find(p);
            if (rt != routes_.end() && rt->second.piggybacked && rt->second.pending == it->second &&
                now - rt->second.requested_at >= static_cast<TimeMs>(cfg_.connect_timeout_ms))
                unanswered.push_back(p);
        }
        std::uint64_t n = sess.stanzas_in() + sess.stanzas_out();
        if (n != use.stanzas || !sess.ready() || !sess.pairs_requested().empty()) {
            use.stanzas = n;
            use.since = now;
            continue;
        }
        if (cfg_.upstream_idle_ms && now - use.since >= static_cast<TimeMs>(cfg_.upstream_idle_ms) && !sess.closed())
            idle.push_back(it->second);
    }
    for (const auto& k : unanswered) {
        std::string why = fmt::format("no answer to the dialback request for {} -> {} within {} s", k.first,
                                      k.second, cfg_.connect_timeout_ms / 1000);
        piggyback_refused(why);
        if (auto rt = routes_.find(k); rt != routes_.end()) piggyback_failed(rt->second, why);
    }
    for (Stream* s : idle) {
        log::info(s->session().log_context(), "no stanza for {} s: closing the idle upstream stream ({} pair(s))",
                  cfg_.upstream_idle_ms / 1000, s->session().pairs_out().size());
        ++stats_.upstream_idle_closed;
        s->session().close();
    }
    forget_upstream_routes();
}

void Gateway::forget_upstream_routes() {
    for (const auto& k : forget_) {
        auto it = routes_.find(k);
        if (it == routes_.end()) continue;
        Route& r = it->second;
        if (!r.upstream || !r.queue.empty() || r.ready || r.pending || r.resolving || r.waiting_on) continue;
        if (r.hold_id && ctx_.pauses.holding(r.hold_id)) ctx_.pauses.release(r.hold_id);
        routes_.erase(it);
    }
    forget_.clear();
}

} // namespace s2smux
