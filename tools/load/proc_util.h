// Small helpers shared by the load tool's multi-process topologies
// (mux_bench.cc, fault_run.cc): run a helper program, read a log's tail,
// parse an admin `stats` reply, read a process's RSS, JSON values.
#pragma once

#include "admin/protocol.h"

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace s2smux::load {

// Runs argv, output to `log`, waits. Empty string: success.
std::string run_program(const std::vector<std::string>& argv, const std::string& log);

// The last `bytes` of a file ("" if unreadable).
std::string tail_of(const std::string& path, std::size_t bytes = 3000);

// "name value" lines with a numeric value.
std::map<std::string, std::uint64_t> parse_stats(const admin::Reply& r);
std::uint64_t stat_of(const std::map<std::string, std::uint64_t>& m, const char* k);
// Two gateways' `stats` after a run in which nothing may be bounced,
// dropped or refused: empty, or the first counter that is not 0.
std::string unclean_stats(const std::map<std::string, std::uint64_t>& a, const std::map<std::string, std::uint64_t>& b);

// JSON number (null if not finite) and string.
std::string json_num(double v);
std::string json_str(std::string_view s);

// VmRSS of a process in KiB (0 if unreadable).
std::uint64_t rss_kb(pid_t pid);

// An executable named `name` on PATH, then in /usr/sbin and /usr/local/sbin; "" if none.
std::string find_executable(const std::string& name);

// A command-line count (decimal, no sign), or nullopt.
std::optional<std::uint64_t> parse_count(const char* s);
// The directory of this executable (the build tree's tools/).
std::string exe_dir();
// The 1-, 5- and 15-minute load averages: "0.52 0.80 1.10".
std::string loadavg();

// utime + stime of this process, in seconds.
double self_cpu_s();

// The q-quantile (nearest rank) of sorted nanoseconds, in milliseconds; 0 if empty.
double percentile_ms(const std::vector<std::uint64_t>& sorted, double q);

// Established TCP connections (IPv4 and IPv6) whose local port is `port`:
// on loopback, the connections accepted by the listener on that port.
std::uint64_t count_established(std::uint16_t port);

} // namespace s2smux::load
