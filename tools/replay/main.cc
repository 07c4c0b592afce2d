// s2smux-replay: replays captures made by s2smuxd (s2smux-replay(1)).
//
//   s2smux-replay [--exact] [--stream ID] [--quiet] CAPTURE...
//
// Deterministic mode: every stream of every capture is re-run through the
// sans-I/O session (virtual clock, no sockets) and its output compared with
// the recording. Exit status: 0 all passed, 1 a stream differed, 2 usage or
// unreadable capture.
#include "capture/format.h"
#include "capture/replay.h"

#include <fmt/format.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

using namespace s2smux;

namespace {

constexpr const char* kUsage =
    "usage: s2smux-replay [--exact] [--stream ID] [--quiet] CAPTURE...\n"
    "  Replays each capture's streams through the session core and compares\n"
    "  what it writes with the recording (see s2smux-replay(1)).\n"
    "  --exact      compare bytes as recorded (no normalisation of ids/keys)\n"
    "  --stream ID  only this stream id\n"
    "  --quiet      only failures and the summary\n";

bool read_file(const char* path, std::string& out) {
    std::ifstream f(path, std::ios::binary);
    if (!f) return false;
    std::ostringstream ss;
    ss << f.rdbuf();
    out = ss.str();
    return true;
}

} // namespace

int main(int argc, char** argv) {
    capture::ReplayOptions opt;
    bool quiet = false;
    std::vector<const char*> files;
    for (int i = 1; i < argc; ++i) {
        std::string_view a = argv[i];
        if (a == "--exact") {
            opt.exact = true;
        } else if (a == "--quiet" || a == "-q") {
            quiet = true;
        } else if (a == "--stream" && i + 1 < argc) {
            opt.only = std::strtoull(argv[++i], nullptr, 10);
        } else if (a == "--help" || a == "-h") {
            std::fputs(kUsage, stdout);
            return 0;
        } else if (!a.empty() && a[0] == '-') {
            fmt::print(stderr, "s2smux-replay: unknown option '{}'\n{}", a, kUsage);
            return 2;
        } else {
            files.push_back(argv[i]);
        }
    }
    if (files.empty()) {
        std::fputs(kUsage, stderr);
        return 2;
    }
    std::size_t passed = 0, failed = 0, skipped = 0;
    for (const char* path : files) {
        std::string text;
        if (!read_file(path, text)) {
            fmt::print(stderr, "s2smux-replay: {}: {}\n", path, std::strerror(errno));
            return 2;
        }
        auto cap = capture::parse(text);
        if (!cap) {
            fmt::print(stderr, "s2smux-replay: {}: {}\n", path, cap.error());
            return 2;
        }
        auto outcomes = capture::replay(*cap, opt);
        if (outcomes.empty()) fmt::print("{}: no streams{}\n", path, opt.only ? " with that id" : "");
        for (const auto& o : outcomes) {
            switch (o.status) {
            case capture::StreamOutcome::Passed:
                ++passed;
                if (!quiet)
                    fmt::print("ok      {}: stream {}: {} inputs, {} bytes out\n", path, o.title, o.inputs, o.bytes_out);
                break;
            case capture::StreamOutcome::Skipped:
                ++skipped;
                if (!quiet) fmt::print("skipped {}: stream {}: {}\n", path, o.title, o.report);
                break;
            case capture::StreamOutcome::Failed:
                ++failed;
                fmt::print("FAILED  {}: stream {}: {}\n", path, o.title, o.report);
                break;
            }
        }
    }
    fmt::print("{} passed, {} failed, {} skipped\n", passed, failed, skipped);
    return failed ? 1 : 0;
}
