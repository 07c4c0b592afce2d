// Deterministic replay of a capture (s2smux-replay(1)): each recorded stream
// is re-run through the sans-I/O session with a virtual clock, no sockets
// and no sleeping. The recorded inputs are fed back in order, every question
// the session asks gets the recorded answer, and what it writes after each
// input is compared with what it wrote then.
#pragma once

#include "capture/format.h"

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace s2smux::capture {

struct ReplayOptions {
    bool exact = false;         // compare bytes as they are (no normalisation)
    std::uint64_t only = 0;     // replay this stream id only (0: all)
    std::size_t context = 3;    // diff lines of context
};

struct StreamOutcome {
    enum Status { Passed, Failed, Skipped } status = Passed;
    std::uint64_t stream = 0;
    std::string title;        // "12 outer-in 127.0.0.1:5269 receiver"
    std::size_t inputs = 0;   // inputs replayed (bytes, calls)
    std::size_t bytes_out = 0;
    std::string report;       // why it failed or was skipped, with a diff
};

std::vector<StreamOutcome> replay(const Capture& c, const ReplayOptions& opt);

// What legitimately varies between two runs of the same exchange, replaced
// by '*': stream ids, dialback keys and the ids they are bound to, mux
// proofs and signatures. Used by both modes (the live one above all).
std::string normalise(std::string_view xml);

// A readable line diff of two XML byte streams, one element or text per
// line ("- recorded" / "+ replayed"); empty when equal.
std::string xml_diff(std::string_view recorded, std::string_view replayed, std::size_t context);

} // namespace s2smux::capture
