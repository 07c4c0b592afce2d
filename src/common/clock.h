// Time as the sans-I/O core sees it: milliseconds on a monotonic clock,
// always supplied by the caller (libuv's uv_now() in the daemon, a virtual
// clock in tests and replay).
#pragma once

#include <chrono>
#include <cstdint>

namespace s2smux {

using TimeMs = std::int64_t;
constexpr TimeMs kNever = INT64_MAX;

// Unix time in milliseconds, for the I/O shell to turn certificate dates
// into the core's clock (offset = wall_clock_ms() - uv_now()).
inline std::int64_t wall_clock_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

} // namespace s2smux
