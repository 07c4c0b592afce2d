#include "xmpp/stream_mgmt.h"

namespace s2smux::xmpp {

void StreamMgmt::start_out() {
    out_active_ = true;
    out_count_ = acked_ = requested_at_ = 0;
    buf_.clear();
    head_ = 0;
    lens_.clear();
}

void StreamMgmt::stop_out() {
    start_out();
    out_active_ = false;
}

void StreamMgmt::sent(std::string_view stanza) {
    if (!out_active_) return;
    ++out_count_;
    buf_.append(stanza);
    lens_.push_back(static_cast<std::uint32_t>(stanza.size()));
}

bool StreamMgmt::acked(std::uint32_t h) {
    if (!out_active_) return true;
    // Unsigned differences are right across the 2^32 wrap.
    const std::uint32_t newly = h - acked_;
    if (newly > lens_.size()) return false;
    for (std::uint32_t i = 0; i < newly; ++i) {
        head_ += lens_.front();
        lens_.pop_front();
    }
    acked_ = h;
    if (lens_.empty()) {
        buf_.clear();
        head_ = 0;
    } else if (head_ >= 64 * 1024 && head_ * 2 >= buf_.size()) {
        // Compact once the acknowledged prefix is most of the buffer.
        buf_.erase(0, head_);
        head_ = 0;
    }
    return true;
}

std::vector<std::string_view> StreamMgmt::unacked_stanzas() const {
    std::vector<std::string_view> v;
    v.reserve(lens_.size());
    std::size_t at = head_;
    for (std::uint32_t n : lens_) {
        v.emplace_back(buf_.data() + at, n);
        at += n;
    }
    return v;
}

std::string StreamMgmt::take_unacked() {
    std::string s = buf_.substr(head_);
    acked_ += static_cast<std::uint32_t>(lens_.size());
    lens_.clear();
    buf_.clear();
    head_ = 0;
    return s;
}

} // namespace s2smux::xmpp
