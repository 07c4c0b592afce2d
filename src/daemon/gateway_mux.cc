// Multiplexing in the gateway: enabling it on a stream, the crypto it needs
// (on the thread pool), and the router's view of mux streams.
#include "daemon/gateway.h"
#include "daemon/mux_peer.h"

#include "common/log.h"
#include "net/work.h"
#include "xmpp/jid.h"

#include <fmt/format.h>

#include <malloc.h>

#include <chrono>

namespace s2smux {

using net::Stream;
using xmpp::DomainPair;
using xmpp::StanzaError;

// ------------------------------------------------------------ MuxPeer

void Gateway::MuxPeer::mux_sign(std::shared_ptr<const tls::LocalCert> cert, std::string message,
                                std::function<void(Result<mux::Signature>)> done) {
    struct Out {
        std::optional<Result<mux::Signature>> r;
    };
    auto out = std::make_shared<Out>();
    net::run_in_pool(
        gw.loop_, [cert = std::move(cert), message = std::move(message), out] { out->r = mux::sign_proof(*cert, message); },
        [out, done = std::move(done)] { done(std::move(*out->r)); });
}

namespace {

// A burst of adds (a whole cloud after a connect) queues thousands of
// verifications, each with its chain, proof and result: megabytes that
// malloc keeps once freed, scattered among what the accepted domains keep.
// When such a burst is over, hand the free pages back to the kernel (on the
// pool: malloc_trim walks every arena). Loop thread only.
constexpr std::size_t kTrimAfterVerifications = 256;
std::size_t verifications_in_flight = 0, verified_since_trim = 0;

void verification_done(uv_loop_t* loop) {
    ++verified_since_trim;
    if (--verifications_in_flight != 0 || verified_since_trim < kTrimAfterVerifications) return;
    verified_since_trim = 0;
    net::run_in_pool(loop, [] { malloc_trim(0); }, [] {});
}

} // namespace

void Gateway::MuxPeer::mux_verify(mux::AddCheckInput in, std::function<void(mux::AddCheckResult)> done) {
    struct Out {
        mux::AddCheckResult res;
        double seconds = 0; // measured on the pool thread
    };
    auto out = std::make_shared<Out>();
    const tls::TrustStore* trust = &gw.trust_;
    mux::ChainCache* cache = &gw.mux_chains_;
    GatewayStats* stats = &gw.stats_; // the gateway outlives its pool jobs (uv_run drains them)
    uv_loop_t* loop = gw.loop_;
    ++verifications_in_flight;
    if (++gate->in_flight >= kVerifyHigh && stream && !stream->finished()) {
        if (!gate->hold_id) gate->hold_id = gw.next_id_++; // shares the stream id space: never a stream's
        gw.ctx_.pauses.hold(gate->hold_id, stream->id(), *stream);
    }
    net::PauseRegistry* pauses = &gw.ctx_.pauses;
    net::run_in_pool(
        gw.loop_,
        [trust, cache, in = std::move(in), out] {
            auto t0 = std::chrono::steady_clock::now();
            out->res = mux::check_add(*trust, in, cache);
            out->seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        },
        [out, stats, loop, pauses, gate = gate, done = std::move(done)] {
            stats->mux_verify.observe(out->seconds);
            if (--gate->in_flight <= kVerifyHigh / 2 && gate->hold_id && pauses->holding(gate->hold_id))
                pauses->release(gate->hold_id);
            done(std::move(out->res));
            verification_done(loop);
        });
}

Gateway::MuxPeer::~MuxPeer() {
    if (gate->hold_id) gw.ctx_.pauses.release(gate->hold_id);
}

bool Gateway::MuxPeer::mux_is_local(std::string_view name) { return gw.is_local_pattern(name); }

void Gateway::MuxPeer::mux_names_changed() { gw.reevaluate_waiters(id); }

void Gateway::MuxPeer::mux_add_answered(std::string_view domain, bool ok, mux::AddFailure why, std::string_view text) {
    if (!ok)
        log::warn(stream->session().log_context(), "mux: {} not multiplexed: {}: {}", domain, mux::to_string(why), text);
    gw.admin_add_answered(id, domain, ok, ok ? std::string_view() : mux::to_string(why));
}

void Gateway::MuxPeer::mux_refused(const xmpp::StanzaHead& head, mux::Refusal why, std::string_view text) {
    ++gw.stats_.stanzas_accepted; // the refusal notice, answered with a bounce
    ++gw.stats_.mux_refused_out;
    ++gw.stats_.mux_refused_out_by[static_cast<std::size_t>(why)];
    if (!gw.is_local(xmpp::jid_domain(head.from))) {
        ++gw.stats_.stanzas_dropped;
        log::warn(stream->session().log_context(), "mux: refusal for a stanza not from us ({}) ignored", head.from);
        return;
    }
    gw.bounce(head, StanzaError::PolicyViolation,
              fmt::format("refused by the remote gateway ({}){}{}", mux::to_string(why), text.empty() ? "" : ": ", text));
}

void Gateway::MuxPeer::mux_refusing(const xmpp::StanzaHead& head, mux::Refusal why) {
    ++gw.stats_.stanzas_accepted; // never routed: answered on the stream
    ++gw.stats_.mux_refused_in;
    ++gw.stats_.mux_refused_in_by[static_cast<std::size_t>(why)];
    log::warn(stream->session().log_context(), "mux: refused <{}/> from {} to {}: {} (not delivered)", head.name,
              head.from, head.to, mux::to_string(why));
}

// ------------------------------------------------------------ Gateway

mux::Limits Gateway::mux_limits() const {
    mux::Limits lim;
    lim.max_domains = cfg_.mux_max_domains;
    lim.max_pending = cfg_.mux_max_pending;
    lim.add_rate = cfg_.mux_add_rate;
    lim.add_burst = cfg_.mux_add_burst;
    lim.strict = cfg_.mux_strict;
    return lim;
}

void Gateway::stream_mux_enabled(Stream& s) {
    auto& sess = s.session();
    auto wall_ms = wall_clock_ms();
    TimeMs now = static_cast<TimeMs>(uv_now(loop_));
    auto b = mux::MuxSession::Binding::of(sess, wall_ms - now);
    auto peer = std::make_unique<MuxPeer>(*this, s);
    peer->mux = std::make_unique<mux::MuxSession>(sess, *peer, std::move(b), mux_limits(), now);
    sess.set_mux(peer->mux.get());
    ++stats_.mux_streams;

    add_local_certs(*peer, now, true);
    log::info(sess.log_context(), "mux: stream enabled");
    muxes_[s.id()] = std::move(peer);
    // A new stream with a peer whose broken one we kept: the peer did not
    // resume it (it restarted). What it kept waiting goes on this one.
    for (auto it = parked_.begin(); it != parked_.end();) {
        auto next = std::next(it);
        if (it->second.remote == sess.remote_domain() && it->second.resuming != s.id())
            drop_parked(it, "the peer opened a new multiplexed stream instead of resuming");
        it = next;
    }
}

void Gateway::add_local_certs(MuxPeer& peer, TimeMs now, bool announce_always) {
    // Add every local certificate that the handshake did not already cover;
    // announce the names first so the peer can hold its stanzas for them.
    std::vector<std::shared_ptr<tls::LocalCert>> to_add;
    std::vector<std::string> announce;
    for (const auto& cert : certs_.all()) {
        std::string first;
        for (const auto& n : cert->identity.names()) {
            if (!is_local(n) || peer.mux->ours_has(n) || peer.mux->ours_pending(n)) continue;
            if (first.empty()) first = n;
            announce.push_back(n);
        }
        if (!first.empty()) to_add.push_back(cert);
    }
    if (announce_always || !announce.empty()) peer.mux->announce(announce);
    for (const auto& cert : to_add) {
        for (const auto& n : cert->identity.names()) {
            if (is_local(n) && !peer.mux->ours_has(n)) {
                peer.mux->add(cert, n, now);
                break;
            }
        }
    }
    log::info(peer.stream->session().log_context(), "mux: adding {} certificate(s) for {} name(s)", to_add.size(),
              announce.size());
}

Gateway::MuxVerdict Gateway::classify(std::string_view from, std::string_view to) {
    for (auto& [id, p] : muxes_) {
        if (p->closed) continue;
        auto& m = *p->mux;
        bool to_ok = m.peer_has(to);
        if (!to_ok && m.peer_withdrew(to))
            // The peer's own decision, not a transient failure: do not retry.
            return {MuxVerdict::Refuse, nullptr, id, fmt::format("{} was withdrawn by its gateway", to),
                    StanzaError::NotAllowed};
        if (!to_ok && !m.peer_expected(to)) continue;
        if (m.ours_has(from)) {
            if (to_ok) return {MuxVerdict::Send, p->stream, id, {}};
            return {MuxVerdict::Wait, nullptr, id, {}};
        }
        if (m.ours_pending(from)) return {MuxVerdict::Wait, nullptr, id, {}};
        if (const std::string* why = m.ours_failure(from))
            return {MuxVerdict::Refuse, nullptr, id, fmt::format("{}'s gateway did not accept {}: {}", to, from, *why)};
        // Never added on this stream (e.g. a domain without certificate at
        // enable time, or a failure the operator fixed since): add it now.
        if (auto cert = certs_.find(from); cert && is_local(from)) {
            m.add(cert, std::string(from), now_ms());
            return {MuxVerdict::Wait, nullptr, id, {}};
        }
        return {MuxVerdict::Refuse, nullptr, id, fmt::format("no certificate for {} to multiplex it", from)};
    }
    // A broken stream that carried the pair and may be resumed: wait for it.
    for (auto& [rid, pk] : parked_) {
        auto& m = *pk.peer->mux;
        if ((m.ours_has(from) || m.ours_pending(from)) && (m.peer_has(to) || m.peer_expected(to)))
            return {MuxVerdict::Wait, nullptr, pk.old_id, {}};
    }
    return {};
}

void Gateway::wait_on(Route& r, std::uint64_t stream_id) {
    r.waiting_on = stream_id;
    waiters_[stream_id].emplace_back(r.from, r.to);
}

void Gateway::reevaluate_waiters(std::uint64_t stream_id) {
    auto it = waiters_.find(stream_id);
    if (it == waiters_.end()) return;
    std::vector<DomainPair> keys = std::move(it->second);
    waiters_.erase(it);
    for (const auto& k : keys) {
        auto rt = routes_.find(k);
        if (rt == routes_.end() || rt->second.waiting_on != stream_id) continue;
        rt->second.waiting_on = 0;
        reevaluate(rt->second);
    }
}

void Gateway::reevaluate(Route& r) {
    if (r.queue.empty() || stopping_) return;
    MuxVerdict v = classify(r.from, r.to);
    switch (v.kind) {
    case MuxVerdict::Send:
        bind_ready(r, v.stream);
        flush_queue(r);
        return;
    case MuxVerdict::Wait:
        // Still expected on that mux stream, unless the peer said it is done
        // announcing and has not even started adding the name.
        wait_on(r, v.peer);
        return;
    case MuxVerdict::Refuse:
        fail_queue(r, v.cond, v.reason);
        return;
    case MuxVerdict::None:
        break;
    }
    // A pending stream we were waiting for ended without carrying it (not
    // multiplexed, or the peer does not serve that domain): standard S2S.
    if (auto p = r.pending; p && !p->finished()) return;
    // Backing off after failures: tick() comes back at retry_at; the
    // stanzas wait (queue_timeout bounds it).
    if (now_ms() < r.retry_at) return;
    if (!r.resolving) establish(r);
}

} // namespace s2smux
