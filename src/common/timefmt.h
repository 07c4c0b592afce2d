// Time formats shown to operators and peers.
#pragma once

#include <cstdint>
#include <string>

namespace s2smux {

// "2027-11-23T18:18:19Z" for unix seconds; "-" for 0 (unknown / none).
std::string iso8601_utc(std::int64_t unix_seconds);

} // namespace s2smux
