#include "net/backpressure.h"

#include <algorithm>
#include <utility>

namespace s2smux::net {

bool PauseRegistry::hold(std::uint64_t dest, std::uint64_t src_id, Pausable& src) {
    auto& held = holds_[dest];
    if (std::find(held.begin(), held.end(), src_id) != held.end()) return false;
    held.push_back(src_id);
    auto it = sources_.try_emplace(src_id, Source{&src, 0}).first;
    if (++it->second.reasons == 1) {
        ++episodes_;
        src.pause_reading();
    }
    return true;
}

void PauseRegistry::release(std::uint64_t dest) {
    auto h = holds_.find(dest);
    if (h == holds_.end()) return;
    std::vector<std::uint64_t> held = std::move(h->second);
    holds_.erase(h);
    for (std::uint64_t id : held) {
        auto s = sources_.find(id);
        if (s == sources_.end()) continue; // forgotten
        if (--s->second.reasons > 0) continue;
        Pausable* p = s->second.p;
        sources_.erase(s);
        p->resume_reading();
    }
}

void PauseRegistry::forget(std::uint64_t id) {
    sources_.erase(id);
    release(id);
}

} // namespace s2smux::net
