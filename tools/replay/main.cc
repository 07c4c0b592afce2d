// s2smux-replay: replays captures made by s2smuxd (s2smux-replay(1)).
//
//   s2smux-replay [--exact] [--stream ID] [--quiet] CAPTURE...
//   s2smux-replay --live HOST:PORT [--stream ID] [--speed X] [--cert PEM --key PEM]
//                 [--sni NAME] [--all-output] [--linger S] CAPTURE
//
// Deterministic mode: every stream of every capture is re-run through the
// sans-I/O session (virtual clock, no sockets) and its output compared with
// the recording. Live mode (live.h): one stream's peer side is played
// against a running gateway. Exit status: 0 same, 1 a stream differed,
// 2 usage, unreadable capture or no connection.
#include "capture/format.h"
#include "common/log.h"
#include "capture/replay.h"
#include "live.h"

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
    "       s2smux-replay --live HOST:PORT [--stream ID] [--speed X] [--cert PEM --key PEM]\n"
    "                     [--sni NAME] [--all-output] [--linger SECONDS] CAPTURE\n"
    "  Replays each capture's streams through the session core and compares\n"
    "  what it writes with the recording; --live plays the peer's side of one\n"
    "  stream against a running gateway (see s2smux-replay(1)).\n"
    "  --exact       compare bytes as recorded (no normalisation of ids/keys)\n"
    "  --stream ID   only this stream id\n"
    "  --quiet       only failures and the summary\n"
    "  --verbose     also the session core's log lines\n"
    "  --speed X     live: X times the recorded pace (0: no waiting; default 1)\n"
    "  --cert, --key live: our certificate for TLS (SASL EXTERNAL)\n"
    "  --all-output  live: also compare stanzas (routed by the servers behind)\n";

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
    replay::LiveOptions live;
    bool live_mode = false;
    bool quiet = false;
    std::vector<const char*> files;
    log::set_level(log::Level::Error); // the replayed core's own log lines are noise here
    for (int i = 1; i < argc; ++i) {
        std::string_view a = argv[i];
        if (a == "--exact") {
            opt.exact = true;
        } else if (a == "--verbose" || a == "-v") {
            log::set_level(log::Level::Debug);
        } else if (a == "--quiet" || a == "-q") {
            quiet = true;
        } else if (a == "--stream" && i + 1 < argc) {
            opt.only = live.stream = std::strtoull(argv[++i], nullptr, 10);
        } else if (a == "--live" && i + 1 < argc) {
            live_mode = true;
            std::string hp = argv[++i];
            auto colon = hp.rfind(':');
            if (colon == std::string::npos) {
                fmt::print(stderr, "s2smux-replay: --live wants HOST:PORT, not '{}'\n", hp);
                return 2;
            }
            live.host = hp.substr(0, colon);
            if (live.host.size() > 2 && live.host.front() == '[') live.host = live.host.substr(1, live.host.size() - 2);
            live.port = hp.substr(colon + 1);
        } else if (a == "--speed" && i + 1 < argc) {
            live.speed = std::strtod(argv[++i], nullptr);
        } else if (a == "--linger" && i + 1 < argc) {
            live.linger_s = std::strtod(argv[++i], nullptr);
        } else if (a == "--cert" && i + 1 < argc) {
            live.cert = argv[++i];
        } else if (a == "--key" && i + 1 < argc) {
            live.key = argv[++i];
        } else if (a == "--sni" && i + 1 < argc) {
            live.server_name = argv[++i];
        } else if (a == "--all-output") {
            live.all_output = true;
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
    if (live_mode) {
        if (files.size() != 1 || live.cert.empty() != live.key.empty()) {
            std::fputs(kUsage, stderr);
            return 2;
        }
        std::string text;
        if (!read_file(files[0], text)) {
            fmt::print(stderr, "s2smux-replay: {}: {}\n", files[0], std::strerror(errno));
            return 2;
        }
        auto cap = capture::parse(text);
        if (!cap) {
            fmt::print(stderr, "s2smux-replay: {}: {}\n", files[0], cap.error());
            return 2;
        }
        return replay::run_live(*cap, live);
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
