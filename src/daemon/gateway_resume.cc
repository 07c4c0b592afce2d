// Resumption of multiplexed streams (XEP-0198 <resume/>): a broken stream's
// multiplexing state and unacknowledged stanzas are kept (parked) for
// [stream_management] resume_timeout; the initiator reconnects and resumes,
// both sides send again what the other did not get, and every certificate
// accepted on the broken stream stays accepted.

#include "daemon/gateway.h"
#include "daemon/mux_peer.h"

#include "common/log.h"

#include <fmt/format.h>

namespace s2smux {

using net::Stream;
using net::StreamKind;

namespace {
constexpr const char* kCtx = "[gateway]";
} // namespace

void Gateway::merge_mux_stats(const mux::MuxSession& m) {
    const auto& ms = m.stats();
    stats_.mux_adds_ok += ms.adds_ok;
    stats_.mux_adds_failed += ms.adds_failed;
    stats_.mux_peer_adds_ok += ms.peer_adds_ok;
    stats_.mux_peer_adds_failed += ms.peer_adds_failed;
    for (const auto& [r, n] : ms.failures) stats_.mux_add_failures[r] += n;
    for (const auto& [r, n] : ms.peer_failures) stats_.mux_peer_add_failures[r] += n;
    stats_.mux_add_round_trip.merge(ms.add_round_trip);
}

bool Gateway::park(Stream& s, std::unique_ptr<MuxPeer>& peer, const xmpp::CloseInfo& info) {
    auto& sess = s.session();
    // Only a connection that broke: a stream closed on purpose (stream
    // error, </stream:stream>) ends the session for good.
    if (!info.transport || sess.resume_id().empty() || stopping_ || draining_ || cfg_.sm_resume_s == 0) return false;
    const bool initiator = s.kind() == StreamKind::OuterOut;
    if (initiator && !s.target()) return false;
    Parked pk;
    pk.state = sess.take_resume_state();
    pk.peer = std::move(peer);
    pk.peer->mux->detach();
    pk.peer->stream = nullptr;
    pk.old_id = s.id();
    pk.remote = sess.remote_domain();
    pk.initiator = initiator;
    if (initiator) {
        pk.target = *s.target();
        pk.from = sess.config().from;
        pk.to = sess.config().to;
    }
    pk.expires = now_ms() + static_cast<TimeMs>(cfg_.sm_resume_s) * 1000;
    std::string id = pk.state.id;
    log::warn(sess.log_context(), "multiplexed stream {} with {} broke ({}); kept {} s for resumption, {} stanza(s) "
              "unacknowledged{}", id, pk.remote, info.reason, cfg_.sm_resume_s, pk.state.sm.unacked(),
              initiator ? "; reconnecting" : "; the peer may resume it");
    auto [it, fresh] = parked_.insert_or_assign(id, std::move(pk));
    (void)fresh;
    if (initiator) resume_connect(it->second, id);
    return true;
}

void Gateway::resume_connect(Parked& pk, const std::string& id) {
    auto cfg = session_config(StreamKind::OuterOut, pk.from, pk.to);
    cfg.resume_previd = id;
    cfg.resume_h = pk.state.sm.h_in();
    std::uint64_t sid = next_id_++;
    Stream* s = Stream::connect(ctx_, StreamKind::OuterOut, std::move(cfg), {pk.target}, sid, cfg_.connect_timeout_ms);
    ++stats_.streams_connected;
    streams_[sid] = s;
    pk.resuming = sid;
    // Routes resolving to the same server wait for this stream.
    outgoing_by_target_[fmt::format("{}:{}", pk.target.address, pk.target.port)] = sid;
}

void Gateway::drop_parked(std::map<std::string, Parked, std::less<>>::iterator it, const std::string& why) {
    Parked pk = std::move(it->second);
    parked_.erase(it);
    log::info(kCtx, "stream {} with {} will not be resumed: {}", pk.state.id, pk.remote, why);
    if (pk.resuming) {
        if (auto st = streams_.find(pk.resuming); st != streams_.end() && !st->second->finished() &&
                                                  !st->second->session().ready())
            st->second->session().close();
    }
    merge_mux_stats(*pk.peer->mux);
    pk.peer->closed = true;
    mux_graveyard_.push_back(std::move(pk.peer));
    requeue(pk.state.sm.take_unacked(), kCtx);
    reevaluate_waiters(pk.old_id);
}

void Gateway::parked_tick(TimeMs now) {
    for (auto it = parked_.begin(); it != parked_.end();) {
        auto next = std::next(it);
        Parked& pk = it->second;
        if (now >= pk.expires) {
            drop_parked(it, fmt::format("not resumed within {} s", cfg_.sm_resume_s));
        } else if (pk.initiator && !pk.resuming && now >= pk.retry_at) {
            resume_connect(pk, it->first);
        }
        it = next;
    }
}

xmpp::ResumeState* Gateway::stream_resume(Stream& s, std::string_view previd) {
    auto& sess = s.session();
    auto it = parked_.find(previd);
    if (it == parked_.end() && sess.role() == xmpp::Role::Receiver) {
        // The broken stream may still look alive here (its end not read
        // yet): the peer knows better. It ends now, and is parked.
        for (auto& [id, st] : streams_) {
            if (st == &s || st->finished() || st->session().resume_id() != previd) continue;
            if (st->session().remote_domain() != sess.remote_domain()) break;
            st->session().abandon("resumed by the peer on a new connection");
            break;
        }
        it = parked_.find(previd);
    }
    if (it == parked_.end()) return nullptr;
    Parked& pk = it->second;
    // Only the same peer, authenticated again, in the same role.
    if (pk.remote != sess.remote_domain()) {
        log::warn(sess.log_context(), "resumption of {} refused: it was {}'s stream, this is {}", previd, pk.remote,
                  sess.remote_domain());
        return nullptr;
    }
    if (pk.initiator != (sess.role() == xmpp::Role::Initiator) || (pk.initiator && pk.resuming != s.id()))
        return nullptr;
    return &pk.state;
}

void Gateway::stream_resumed(Stream& s) {
    auto& sess = s.session();
    auto it = parked_.find(sess.resume_id());
    if (it == parked_.end()) return; // cannot happen: stream_resume() handed its state
    Parked pk = std::move(it->second);
    parked_.erase(it);
    TimeMs now = now_ms();
    std::unique_ptr<MuxPeer> peer = std::move(pk.peer);
    std::unique_ptr<mux::MuxSession> old = std::move(peer->mux);
    peer->stream = &s;
    peer->id = s.id();
    peer->mux = std::make_unique<mux::MuxSession>(sess, *peer, mux::MuxSession::Binding::of(sess, wall_clock_ms() - now),
                                                  mux_limits(), now, std::move(*old));
    sess.set_mux(peer->mux.get());
    old.reset();
    MuxPeer& p = *peer;
    muxes_[s.id()] = std::move(peer);
    ++stats_.mux_resumed;
    p.mux->reissue_pending(now);
    add_local_certs(p, now, false);
    log::info(sess.log_context(), "mux: stream {} resumed with {} ({} of our and {} of the peer's certificates kept)",
              sess.resume_id(), pk.remote, p.mux->ours().size(), p.mux->peer().size());
    reevaluate_waiters(pk.old_id);
}

void Gateway::stream_resume_failed(Stream& s, std::string_view previd) {
    auto it = parked_.find(previd);
    if (it == parked_.end()) return;
    // The peer lost the state (it restarted). This stream goes on and
    // multiplexes anew; once it does, stream_mux_enabled() drops the parked
    // state and its stanzas go on it. No further attempt.
    log::info(s.session().log_context(), "the peer cannot resume {}: multiplexing anew", previd);
    it->second.resuming = 0;
    it->second.retry_at = it->second.expires;
}

} // namespace s2smux
