// A multiplexed stream as the gateway sees it: the MuxSession of one stream
// plus the services it needs (crypto on the thread pool, routing callbacks).
#pragma once

#include "daemon/gateway.h"
#include "mux/mux_session.h"

#include <memory>

namespace s2smux {

struct Gateway::MuxPeer final : mux::MuxHost {
    MuxPeer(Gateway& gw, net::Stream& s) : gw(gw), stream(&s), id(s.id()) {}
    ~MuxPeer() override;

    Gateway& gw;
    net::Stream* stream;
    std::uint64_t id;
    std::unique_ptr<mux::MuxSession> mux;
    bool closed = false;

    // The peer's adds being verified on the pool. Above kVerifyHigh the
    // stream stops reading (TCP holds the rest of a burst at the peer) and
    // reads again at half of it: the pool stays busy, and a burst of
    // thousands of adds never sits parsed in memory at once (freed, that
    // memory stays scattered among what the accepted domains keep).
    static constexpr std::size_t kVerifyHigh = 64;
    struct VerifyGate {
        std::size_t in_flight = 0;
        std::uint64_t hold_id = 0; // a destination id for net::PauseRegistry, 0 = none yet
    };
    std::shared_ptr<VerifyGate> gate = std::make_shared<VerifyGate>(); // shared with pool continuations

    // mux::MuxHost
    void mux_sign(std::shared_ptr<const tls::LocalCert> cert, std::string message,
                  std::function<void(Result<mux::Signature>)> done) override;
    void mux_verify(mux::AddCheckInput in, std::function<void(mux::AddCheckResult)> done) override;
    bool mux_is_local(std::string_view domain) override;
    void mux_names_changed() override;
    void mux_add_answered(std::string_view domain, bool ok, mux::AddFailure why, std::string_view text) override;
    void mux_refused(const xmpp::StanzaHead& head, mux::Refusal why, std::string_view text) override;
    void mux_refusing(const xmpp::StanzaHead& head, mux::Refusal why) override;
};

} // namespace s2smux
