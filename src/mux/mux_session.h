// The multiplexing extension on one stream between two s2smux gateways
// (namespace urn:s2smux:mux:0, man/s2smux-protocol.7). Sans-I/O: elements
// in, elements out through the xmpp::Session, crypto through MuxHost.
//
// Each side keeps two sets of certificates for the stream:
//   ours  - certificates we added and the peer accepted (we may send FROM their names)
//   peer  - certificates the peer added and we accepted (we may send TO their names)
// The TLS certificates of the handshake are the first entry of each set
// (both were verified: the stream is mutually X.509-authenticated before
// mux is enabled). A stanza from A to B may be sent when A is in ours and B
// in peer; a received one must have its from in peer and its to in ours,
// otherwise it is refused (never delivered).
//
// <add/> carries a chain and a proof (mux/proof.h); add ids are decimal and
// strictly increasing per sender per stream, so a replayed add is detected
// with one comparison. A failed add never ends the stream.
#pragma once

#include "common/clock.h"
#include "common/metrics.h"
#include "mux/add_check.h"
#include "mux/proof.h"
#include "tls/certs.h"
#include "xml/element.h"
#include "xmpp/session.h"

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <algorithm>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace s2smux::mux {

inline constexpr std::string_view kNs = "urn:s2smux:mux:0";

struct Limits {
    std::size_t max_domains = 10000;       // peer names accepted on one stream
    std::size_t max_pending = 1000;        // peer adds being verified at once (queue bound)
    double add_rate = 2000;                // peer adds per second (token bucket) ...
    double add_burst = 12000;              // ... and burst (covers a whole initial sync)
    std::size_t max_chain_bytes = 64 * 1024;
    TimeMs add_timeout_ms = 30000;         // our add unanswered -> failed
    bool strict = false;                   // a refused stanza closes the stream instead
};

// One accepted certificate on one side.
struct CertEntry {
    std::string subject;
    std::vector<std::string> names;
    std::int64_t not_after = 0;            // unix seconds
    std::string add_id;                    // "tls" for the handshake certificate
};

enum class Refusal : std::uint8_t { None, FromNotAccepted, ToNotAccepted };
const char* to_string(Refusal r); // wire names: "from-not-multiplexed", "to-not-multiplexed"

struct MuxStats {
    std::uint64_t adds_sent = 0, adds_ok = 0, adds_failed = 0;          // ours, answered by the peer
    std::uint64_t peer_adds = 0, peer_adds_ok = 0, peer_adds_failed = 0; // the peer's, decided by us
    std::uint64_t refused_in = 0;   // stanzas we refused
    std::uint64_t refused_out = 0;  // our stanzas the peer refused
    std::map<std::string, std::uint64_t, std::less<>> peer_failures; // by reason
    // Our failed adds by reason (wire name, "timeout", "signing-failed"). Never
    // decremented, unlike adds_failed: a timed-out add later accepted stays here.
    std::map<std::string, std::uint64_t, std::less<>> failures;
    metrics::Histogram add_round_trip; // our add started (signing included) -> the peer's answer
};

// What the daemon provides: crypto off the loop, local knowledge, and
// notifications for the router.
class MuxHost {
public:
    virtual ~MuxHost() = default;
    virtual void mux_sign(std::shared_ptr<const tls::LocalCert> cert, std::string message,
                          std::function<void(Result<Signature>)> done) = 0;
    virtual void mux_verify(AddCheckInput in, std::function<void(AddCheckResult)> done) = 0;
    // Is this name (or, for "*.x", any name it covers) one of our domains?
    virtual bool mux_is_local(std::string_view name) = 0;
    // A set changed (names added, replaced, removed): re-evaluate waiting routes.
    virtual void mux_names_changed() = 0;
    // The peer answered one of our adds (ok) or it failed/timed out.
    virtual void mux_add_answered(std::string_view domain, bool ok, AddFailure why, std::string_view text) = 0;
    // The peer refused a stanza we sent: bounce it to its local sender.
    virtual void mux_refused(const xmpp::StanzaHead& head, Refusal why, std::string_view text) = 0;
    // We refused a stanza (already answered with <refused/>): count and log.
    virtual void mux_refusing(const xmpp::StanzaHead& head, Refusal why) = 0;
};

class MuxSession final : public xmpp::MuxHandler {
public:
    struct Binding {
        std::string exporter;     // RFC 9266 tls-exporter value of the TLS session
        std::string stream_id;    // the receiving entity's id of the current stream
        xmpp::Role role;          // our role on the stream
        tls::Identity our_tls;    // our handshake certificate
        tls::Identity peer_tls;   // the peer's handshake certificate (verified)
        std::int64_t unix_offset_ms = 0; // unix time = monotonic now + offset (expiry checks)

        // What a session that just enabled multiplexing binds the mux to.
        static Binding of(const xmpp::Session& s, std::int64_t unix_offset_ms) {
            return Binding{s.tls().exporter, std::string(s.receiver_stream_id()), s.role(), s.tls().local,
                           s.tls().peer.identity, unix_offset_ms};
        }
    };

    MuxSession(xmpp::Session& s, MuxHost& host, Binding b, Limits limits, TimeMs now);
    // A resumed stream (XEP-0198): takes over `prev`'s accepted certificate
    // sets, ids, announcements and counters; `prev` belonged to the broken
    // stream and is dead from now on (its pending async work is dropped).
    // Our adds that were waiting for an answer: reissue_pending().
    MuxSession(xmpp::Session& s, MuxHost& host, Binding b, Limits limits, TimeMs now, MuxSession&& prev);
    ~MuxSession() override;
    // Sends again, bound to this stream, our adds the broken stream left unanswered.
    void reissue_pending(TimeMs now);
    // The stream is gone (kept for resumption): async work finishing now is dropped.
    void detach() { *alive_ = false; }

    // Sends an announcement of the domains we are about to add (a routing
    // hint: the peer may hold stanzas for them instead of connecting).
    void announce(const std::vector<std::string>& domains);
    // Adds a local certificate, proving possession for `domain` (one of its names).
    void add(std::shared_ptr<const tls::LocalCert> cert, const std::string& domain, TimeMs now);
    // Withdraws the certificate carrying our `domain` (all its names),
    // including an add of it still waiting for its answer.
    bool remove(std::string_view domain, TimeMs now);

    // Routing.
    bool ours_has(std::string_view domain) const;
    bool peer_has(std::string_view domain) const;
    bool ours_pending(std::string_view domain) const;   // an add of ours is in flight
    bool peer_expected(std::string_view domain) const;  // announced or being verified
    // Why our last add for it failed (nullptr: it did not).
    const std::string* ours_failure(std::string_view domain) const;
    bool peer_announce_complete() const { return peer_announce_complete_; }
    // The peer withdrew this name on this stream (and did not add it back):
    // its gateway no longer serves it to us; do not look elsewhere.
    bool peer_withdrew(std::string_view domain) const;

    const std::vector<CertEntry>& ours() const { return ours_; }
    const std::vector<CertEntry>& peer() const { return peer_; }
    const MuxStats& stats() const { return stats_; }
    // New limits (reload): apply to the next peer add; the token bucket is
    // clamped to the new burst.
    void set_limits(const Limits& l) {
        limits_ = l;
        deadline_dirty_ = true; // add_timeout_ms may have changed
        tokens_ = std::min(tokens_, l.add_burst);
    }
    std::size_t pending_verifications() const { return verifying_; }

    // xmpp::MuxHandler
    void mux_element(const xml::Node& el, TimeMs now) override;
    bool mux_send_allowed(std::string_view from, std::string_view to) const override;
    bool mux_check_receive(std::string_view from, std::string_view to, const char** reason) const override;
    void mux_refuse(const xml::Node& el, const xmpp::StanzaRoute& r, const char* reason) override;
    void mux_timer(TimeMs now) override;
    TimeMs mux_deadline() const override;

private:
    struct NameIndex {
        std::unordered_map<std::string, int> count; // name (may be "*.x") -> certificates providing it
        void add(const std::vector<std::string>& names);
        void remove(const std::vector<std::string>& names);
        bool has(std::string_view domain) const;      // exact, or a wildcard for its parent
    };
    // Heterogeneous lookups by string_view: routing asks per stanza.
    struct SvHash {
        using is_transparent = void;
        std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
    };
    // Position of each certificate in ours_ / peer_ by subject (a renewal
    // replaces the entry with the same subject): found without scanning
    // thousands of entries per add. Keyed by the subject's hash, confirmed
    // against the entry; empty subjects are not indexed (never replaced).
    struct SubjectIndex {
        std::unordered_multimap<std::size_t, std::size_t> at;
        static constexpr std::size_t npos = static_cast<std::size_t>(-1);
        std::size_t find(const std::vector<CertEntry>& v, std::string_view subject) const;
        void insert(std::string_view subject, std::size_t idx);
        // Before v.erase(v.begin() + idx): forget idx, shift the later ones.
        void erase(const std::vector<CertEntry>& v, std::size_t idx);
    };
    struct PendingAdd {
        std::string domain;
        std::shared_ptr<const tls::LocalCert> cert;
        TimeMs sent_at = 0;
        bool timed_out = false; // reported failed; a late <added/> is still honoured
    };
    // RFC 6125 names only: "*.x.y" with at least two labels after the wildcard.
    static std::vector<std::string> usable_names(const std::vector<std::string>& names);

    void recv_add(const xml::Node& el, TimeMs now);
    void recv_added(const xml::Node& el);
    void recv_failed(const xml::Node& el);
    void recv_remove(const xml::Node& el);
    void recv_removed(const xml::Node& el);
    void recv_revoke(const xml::Node& el);
    void recv_announce(const xml::Node& el);
    void recv_refused(const xml::Node& el);
    void send_failed(std::string_view id, std::string_view domain, AddFailure why, std::string_view text);
    void accept_peer(std::string id, std::string domain, AddCheckResult res);
    // pending_out_ with pending_domains_ kept in step.
    void pending_insert(const std::string& id, PendingAdd pa);
    void pending_erase(std::map<std::string, PendingAdd, std::less<>>::iterator it);
    void pending_timed_out(PendingAdd& pa);
    // A deadline was added: the cached one can only move earlier (removals
    // leave it early, which costs one spurious timer, never a late one).
    void lower_deadline(TimeMs t) const {
        if (!deadline_dirty_) deadline_cache_ = std::min(deadline_cache_, t);
    }
    void drop_peer_cert(std::size_t idx, const char* why);
    void drop_our_cert(std::size_t idx);
    void refill(TimeMs now);
    // Outgoing elements that carry an id leave in id order, although their
    // signatures complete on the thread pool in any order: the peer only
    // has to check that ids increase.
    std::uint64_t reserve_id();
    void emit(std::uint64_t id, std::string xml); // "" = nothing to send for this id
    std::int64_t unix_now() const;
    TimeMs mono_from_unix(std::int64_t unix_s) const;

    xmpp::Session* session_;
    MuxHost& host_;
    Binding bind_;
    Limits limits_;
    std::shared_ptr<bool> alive_; // continuations of async work check it

    std::vector<CertEntry> ours_, peer_;
    NameIndex ours_names_, peer_names_;
    SubjectIndex ours_subjects_, peer_subjects_;
    std::map<std::string, PendingAdd, std::less<>> pending_out_;   // by add id
    std::unordered_map<std::string, int, SvHash, std::equal_to<>> pending_domains_; // not timed out, by domain
    std::unordered_map<std::string, std::string> failed_ours_;     // domain -> reason
    std::unordered_map<std::string, int> expected_peer_;           // announced / verifying
    std::unordered_map<std::string, std::string> withdrawn_peer_;  // name -> why (removed, expired)
    std::unordered_map<std::string, std::uint64_t> removed_at_;    // name -> id of the peer's last <remove/>
    std::uint64_t out_id_ = 0;                      // last id reserved
    std::uint64_t sent_id_ = 0;                     // last id emitted in order
    std::map<std::uint64_t, std::string> outbox_;   // completed, waiting for earlier ids
    std::uint64_t last_peer_id_ = 0;
    bool peer_announce_complete_ = false;
    std::size_t peer_name_total_ = 0;
    // mux_deadline() is asked after every read: cache it, recompute after changes.
    mutable TimeMs deadline_cache_ = kNever;
    mutable bool deadline_dirty_ = true;
    std::size_t verifying_ = 0;
    double tokens_;
    TimeMs last_refill_ = 0;
    TimeMs now_ = 0;
    MuxStats stats_;
};

} // namespace s2smux::mux
