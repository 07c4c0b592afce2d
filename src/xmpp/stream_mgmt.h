// Stream management (XEP-0198, urn:xmpp:sm:3) bookkeeping, sans-I/O.
//
// Each direction is counted on its own, so it works on bidi streams too:
// the outbound side starts when we send <enable/> or <enabled/>, the inbound
// side when we receive one. Outbound stanzas are kept, serialized, until the
// peer's <a h='…'/> covers them; when the stream breaks, what is left is
// exactly what the peer may not have received (retried or bounced by the
// host, never dropped). Counters wrap at 2^32 as the XEP requires.
//
// The kept stanzas live in one byte buffer plus a length per stanza: no
// allocation per stanza once the buffer has grown.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>
#include <string_view>
#include <vector>

namespace s2smux::xmpp {

class StreamMgmt {
public:
    // --- outbound: what we sent and the peer has not acknowledged
    void start_out();            // counting from 0, nothing kept
    bool out_active() const { return out_active_; }
    void stop_out();             // the peer refused (<failed/>): nothing is kept any more
    void sent(std::string_view stanza);
    // The peer's <a h='h'/>. False (nothing changed) when h acknowledges
    // more than we sent: <handled-count-too-high/>.
    bool acked(std::uint32_t h);
    std::size_t unacked() const { return lens_.size(); }
    std::size_t unacked_bytes() const { return buf_.size() - head_; }
    std::uint32_t out_count() const { return out_count_; }
    // The unacknowledged stanzas, oldest first (views into the buffer, valid
    // until the next sent()/acked()).
    std::vector<std::string_view> unacked_stanzas() const;
    // Takes them all out: the host retries or bounces them.
    std::string take_unacked();  // concatenated, oldest first

    // Ack requests: stanzas sent since the last <r/>.
    std::size_t unrequested() const { return out_count_ - requested_at_; }
    void requested() { requested_at_ = out_count_; }

    // --- inbound: stanzas handled, for our <a h='…'/>
    void start_in() { in_active_ = true; h_in_ = 0; }
    bool in_active() const { return in_active_; }
    void received() { if (in_active_) ++h_in_; }
    std::uint32_t h_in() const { return h_in_; }

private:
    bool out_active_ = false, in_active_ = false;
    std::uint32_t out_count_ = 0;    // stanzas sent since start_out (mod 2^32)
    std::uint32_t acked_ = 0;        // the peer's last h
    std::uint32_t requested_at_ = 0; // out_count_ at our last <r/>
    std::uint32_t h_in_ = 0;
    std::string buf_;                // kept stanzas from head_ on
    std::size_t head_ = 0;
    std::deque<std::uint32_t> lens_; // one per kept stanza
};

} // namespace s2smux::xmpp
