// s2smux-bench's standard-S2S baseline with real Prosody: runs
// bench/clouds_bench.py (written separately) and reads back its JSON:
//   {"pairs": int, "modes": [{"mode": "prosody-direct"|"gateway-standard"|"gateway-mux", "ok": bool,
//     "connections": int, "stanzas": int, "seconds": float, "stanzas_per_s": float, "p50_ms": float,
//     "p99_ms": float, "error": str?}]}
// A failing run is a result with `error`, never fatal to the bench.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace s2smux::load {

struct CloudsMode {
    std::string mode;
    bool ok = false;
    double connections = 0, stanzas = 0, seconds = 0, stanzas_per_s = 0, p50_ms = 0, p99_ms = 0;
    std::string error;
};

struct CloudsResult {
    bool ran = false;         // false: skipped (skip_reason)
    std::string skip_reason;
    std::string error;        // the script failed or its JSON is unreadable
    double pairs = 0;
    std::vector<CloudsMode> modes;
    std::string json;         // the script's JSON as is (embedded in s2smux-bench's)
    double seconds = 0;
};

// /usr/bin/python3 SCRIPT --local N --remote M --json TMPFILE [--quick]
CloudsResult run_clouds(const std::string& script, std::uint64_t local, std::uint64_t remote, bool quick,
                        const std::string& work_dir);

// Cold adds: bench/mux_adds.py adds `count` domains on one idle mux stream
// (no traffic) and prints a JSON line last; the figures read from it.
struct ColdAddsResult {
    bool ran = false;
    std::string skip_reason, error;
    double count = 0, adds_ok = 0, adds_failed = 0, adds_per_s = 0, adds_per_cpu_s = 0, bytes_per_domain = 0;
    double connections = 0, b_cpu_ms_per_add = 0, seconds = 0;
};

// /usr/bin/python3 SCRIPT --count N --build BUILD_DIR (BUILD_DIR holds s2smuxd and bench/s2smux-gencerts)
ColdAddsResult run_cold_adds(const std::string& script, std::uint64_t count, const std::string& build_dir,
                             const std::string& work_dir);

} // namespace s2smux::load
