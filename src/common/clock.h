// Time as the sans-I/O core sees it: milliseconds on a monotonic clock,
// always supplied by the caller (libuv's uv_now() in the daemon, a virtual
// clock in tests and replay).
#pragma once

#include <cstdint>

namespace s2smux {

using TimeMs = std::int64_t;
constexpr TimeMs kNever = INT64_MAX;

} // namespace s2smux
