// s2smux-bench's results: every section of one run, printed as one table
// (with issue 8's targets last) and as JSON.
#pragma once

#include "tools/load/bench.h"
#include "tools/load/clouds_run.h"
#include "tools/load/idle_streams.h"
#include "tools/load/mux_bench.h"
#include "tools/load/pairs_bench.h"

#include <cstdio>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace s2smux::load {

struct BenchReport {
    std::string date, loadavg0, loadavg1, command;
    bool quick = false;
    std::uint64_t hop_stanzas = 0;
    std::vector<std::pair<Mode, BenchResult>> hop;   // empty: section not run
    std::string haproxy_note;                        // why the haproxy baseline was skipped
    std::optional<PairsResult> pairs;
    std::optional<IdleResult> idle;
    std::optional<MuxResult> adds;
    std::optional<ColdAddsResult> cold_adds;
    std::optional<CloudsResult> clouds;

    // Every stanza verified and every daemon ended cleanly, in every
    // section that ran (clouds excepted: a failing baseline is reported, not fatal).
    bool ok() const;
    void print(std::FILE* f) const;
    std::string json() const;
};

} // namespace s2smux::load
