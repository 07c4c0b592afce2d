// Backpressure bookkeeping, sans I/O: which sources a full destination has
// paused, and how many destinations hold each source.
//
// A destination (a stream whose output is above its high mark, a route
// queue, the global buffer cap) holds the sources that fed it; it registers
// a source at most once per episode and releases all of them at once when
// it drains below its low mark or goes away. A source reads again when the
// last destination holding it lets go. Everything is keyed by id (stream ids
// are never reused), so a source or destination that goes away leaves no
// dangling pointer: forget() drops its pointer, stale ids are ignored.
#pragma once

#include <cstddef>
#include <cstdint>
#include <unordered_map>
#include <vector>

namespace s2smux::net {

// What a source does when held or released (net::Stream: uv_read_stop/start).
class Pausable {
public:
    virtual void pause_reading() = 0;
    virtual void resume_reading() = 0;

protected:
    ~Pausable() = default;
};

class PauseRegistry {
public:
    // `dest` is full and `src` fed it: `src` stops reading unless something
    // already holds it. Returns true when `dest` did not hold `src` yet.
    bool hold(std::uint64_t dest, std::uint64_t src_id, Pausable& src);
    // `dest` drained (or went away): every source it held loses one reason;
    // those left with none read again.
    void release(std::uint64_t dest);
    // `id` went away: releases what it held and is never resumed.
    void forget(std::uint64_t id);

    bool holding(std::uint64_t dest) const { return holds_.count(dest) != 0; }
    bool paused(std::uint64_t src) const { return sources_.count(src) != 0; }
    std::size_t paused_count() const { return sources_.size(); }
    std::uint64_t episodes() const { return episodes_; } // sources paused so far

private:
    struct Source {
        Pausable* p;
        unsigned reasons;
    };
    std::unordered_map<std::uint64_t, Source> sources_;              // paused sources
    std::unordered_map<std::uint64_t, std::vector<std::uint64_t>> holds_; // dest -> sources it holds
    std::uint64_t episodes_ = 0;
};

// Output figures: a stream above `high` pauses its sources; they resume
// below high / 2. All streams together above `global_high` pause whatever
// delivers; resumed below global_high / 2.
struct BufferLimits {
    std::size_t high = 1024 * 1024;
    std::size_t global_high = 64 * 1024 * 1024;
    std::size_t low() const { return high / 2; }
    std::size_t global_low() const { return global_high / 2; }
};

// The destination id of the global cap (stream ids start at 1).
inline constexpr std::uint64_t kGlobalHold = 0;

} // namespace s2smux::net
