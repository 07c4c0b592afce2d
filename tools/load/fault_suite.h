// s2smux-load --topology faults: runs one FaultRun (fault_run.h) per fault,
// each with fresh gateways, and prints one line per fault:
// sent / delivered / bounced (by condition) / dup / lost / time to recover,
// the gateways' counters, and a JSON summary. Exit status 1 when a stanza
// was lost or corrupted, or delivered twice where that is not tolerated.
#pragma once

#include <string>

namespace s2smux::load {

// argv as given to s2smux-load (it contains --topology faults).
int fault_suite_main(int argc, char** argv, const std::string& exe_dir);

} // namespace s2smux::load
