// s2smux-replay --live: plays the peer's side of one recorded stream against
// a running gateway over TCP (and TLS, where the recording started it), at
// the recorded pace or faster, and compares what the gateway answers with
// what it answered then (normalised: ids, dialback keys, proofs vary).
#pragma once

#include "capture/format.h"

#include <cstdint>
#include <string>

namespace s2smux::replay {

struct LiveOptions {
    std::string host = "127.0.0.1";
    std::string port = "5269";
    std::uint64_t stream = 0;   // 0: the first complete stream the gateway accepted
    double speed = 1.0;         // 2 = twice as fast; 0 = as fast as possible
    std::string cert, key;      // our certificate (PEM chain, key) for TLS, e.g. for SASL EXTERNAL
    std::string server_name;    // SNI (default: the recorded stream's 'to', else its local domain)
    bool all_output = false;    // also compare what the gateway sent on its own (routed stanzas)
    double linger_s = 2.0;      // wait this long for the last answers
    std::size_t context = 3;
};

// 0: same answers; 1: they differ (a diff is printed); 2: cannot run.
int run_live(const capture::Capture& cap, const LiveOptions& opt);

} // namespace s2smux::replay
