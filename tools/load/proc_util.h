// Small helpers shared by the load tool's multi-process topologies
// (mux_bench.cc, fault_run.cc): run a helper program, read a log's tail,
// parse an admin `stats` reply, read a process's RSS, JSON values.
#pragma once

#include "admin/protocol.h"

#include <sys/types.h>

#include <cstdint>
#include <map>
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

// JSON number (null if not finite) and string.
std::string json_num(double v);
std::string json_str(std::string_view s);

// VmRSS of a process in KiB (0 if unreadable).
std::uint64_t rss_kb(pid_t pid);

} // namespace s2smux::load
