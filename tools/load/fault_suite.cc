#include "tools/load/fault_suite.h"

#include "common/log.h"
#include "s2smux_version.h"
#include "tls/channel.h"
#include "tools/load/cli_args.h"
#include "tools/load/fault_run.h"
#include "tools/load/proc_util.h"

#include <fmt/format.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>
#include <vector>

namespace s2smux::load {

namespace {

void usage(std::FILE* f) {
    std::fputs(
        "usage: s2smux-load --topology faults [options]\n"
        "\n"
        "The mux topology (generator -> gateway A ==mux==> gateway B -> sink), fresh\n"
        "processes per fault; `window` stanzas in flight when the fault is made, an\n"
        "open loop at --rate while it lasts and after it healed; then every stanza must\n"
        "be delivered to the sink or bounced back to a.test's local server (this tool).\n"
        "Faults: kill9, blackhole, slow-reader, local-restart, dns-fail, cert-expiry.\n"
        "\n"
        "  --faults LIST       comma-separated (default: all)\n"
        "  --window N          closed loop before the fault: in flight (default 10000)\n"
        "  --rate R            open loop from the fault on, stanzas/s (default 2000)\n"
        "  --pre S             closed loop before the fault (default 3 s; cert-expiry: until it expires)\n"
        "  --post S            open loop after the fault healed (default 5 s)\n"
        "  --settle S          then wait at most S for every stanza (default 60 s) ...\n"
        "  --quiet S           ... or until none was accounted for during S (default 20 s)\n"
        "  --queue-timeout S   the gateways' [limits] queue_timeout (default 10 s)\n"
        "  --cert-life S       cert-expiry: validity of b.test's certificate (default 20 s)\n"
        "  --max-inflight N    open loop cap (default 50000)\n"
        "  --quick             CI: window 2000, rate 1000, pre 1.5 s, post 2 s, cert life 8 s\n"
        "  --s2smuxd PATH  --gencerts PATH  --gw-log-level L  --ascii  --keep  --no-progress  -v\n"
        "\n"
        "Exit status: 0 no stanza lost, corrupted, or delivered twice (a duplicate is\n"
        "tolerated, and shown, only where the receiving gateway was killed); 1\n"
        "otherwise or if a scenario could not run; 2 bad usage. Timing is reported,\n"
        "never enforced.\n",
        f);
}

std::string mib(std::uint64_t kb) { return fmt::format("{:.0f}", double(kb) / 1024); }

std::string by_condition(const FaultResult& r) {
    std::string s;
    for (const auto& [c, n] : r.bounced_by) s += fmt::format("{}{} {}", s.empty() ? "" : ", ", c, n);
    return s.empty() ? "-" : s;
}

void print_table(const std::vector<FaultResult>& rs) {
    std::printf("\n%-13s %7s %7s %9s %8s %5s %7s %6s %9s %9s %13s  %s\n", "fault", "sent", "fly@f", "delivered",
                "bounced", "dup", "dlv+bnc", "lost", "recover s", "settled s", "peak MiB A/B", "bounced by condition");
    for (const auto& r : rs) {
        std::string dup = std::to_string(r.dup) + (r.dup && r.dup_tolerated() ? "*" : "");
        std::printf("%-13s %7llu %7llu %9llu %8llu %5s %7llu %6llu %9s %9s %13s  %s%s\n", to_string(r.fault),
                    static_cast<unsigned long long>(r.sent), static_cast<unsigned long long>(r.inflight_at_fault),
                    static_cast<unsigned long long>(r.delivered), static_cast<unsigned long long>(r.bounced),
                    dup.c_str(), static_cast<unsigned long long>(r.both), static_cast<unsigned long long>(r.lost),
                    r.recover_s < 0 ? "-" : fmt::format("{:.2f}", r.recover_s).c_str(),
                    r.settle_s < 0 ? "never" : fmt::format("{:.2f}", r.settle_s).c_str(),
                    (mib(r.a_peak_kb) + " / " + mib(r.b_peak_kb)).c_str(), by_condition(r).c_str(),
                    r.passed() ? "" : "   <- FAILED");
    }
    std::printf("(fly@f: sent and not yet accounted for when the fault was made; dlv+bnc: delivered AND bounced;\n"
                " recover: fault -> first delivery of a stanza sent after it; settled: fault healed -> every\n"
                " stanza accounted for; peak: VmRSS polled every 100 ms; dup*: tolerated, the receiving gateway\n"
                " was killed: it lost the state that resumption needs; acknowledgements in flight when it died)\n");
}

const char* kCounters[] = {"stanzas.accepted", "streams.mux_resumed_total", "stanzas.in_flight", "stanzas.queued_now",
                           "stanzas.requeued", "stanzas.routed",    "stanzas.queued",    "stanzas.bounced",
                           "stanzas.dropped",  "mux.refused_in",    "mux.refused_out"};

std::string counters(const std::map<std::string, std::uint64_t>& st) {
    if (st.empty()) return "(no stats)";
    std::string s;
    for (const char* k : kCounters)
        if (st.count(k)) s += fmt::format("{}{} {}", s.empty() ? "" : ", ", k, stat_of(st, k));
    return s;
}

void print_details(const std::vector<FaultResult>& rs) {
    for (const auto& r : rs) {
        std::printf("\n%s: %s\n", to_string(r.fault), r.method.c_str());
        if (!r.error.empty()) std::printf("  ERROR: %s\n", r.error.c_str());
        if (r.corrupt) std::printf("  CORRUPT: %llu, first: %s\n", static_cast<unsigned long long>(r.corrupt),
                                   r.first_corrupt.c_str());
        if (r.dup_bounces) std::printf("  bounced twice: %llu\n", static_cast<unsigned long long>(r.dup_bounces));
        if (r.dup) std::printf("  delivered twice: %llu (%s)\n", static_cast<unsigned long long>(r.dup),
                               r.dup_tolerated() ? "tolerated: gateway B was killed with acknowledgements in "
                                                   "flight; resumption needs the state it lost"
                                                 : "NOT tolerated");
        std::printf("  sink streams from gateway B: %llu opened, %llu closed during the run; RSS at start A %s, B %s "
                    "MiB\n",
                    static_cast<unsigned long long>(r.sink_streams), static_cast<unsigned long long>(r.sink_closed),
                    mib(r.a_start_kb).c_str(), mib(r.b_start_kb).c_str());
        std::printf("  gateway A: %s\n    invariant: %s\n", counters(r.a_stats).c_str(), r.a_invariant.c_str());
        std::printf("  gateway B%s: %s\n    invariant: %s\n", r.fault == Fault::Kill9 ? " (the restarted process)" : "",
                    counters(r.b_stats).c_str(), r.b_invariant.c_str());
    }
}

std::string result_json(const FaultResult& r) {
    std::string by = "{";
    for (const auto& [c, n] : r.bounced_by) by += fmt::format("{}{}:{}", by.size() > 1 ? "," : "", json_str(c), n);
    by += "}";
    auto stats = [](const std::map<std::string, std::uint64_t>& st) {
        std::string j = "{";
        for (const char* k : kCounters)
            if (st.count(k)) j += fmt::format("{}{}:{}", j.size() > 1 ? "," : "", json_str(k), stat_of(st, k));
        return j + "}";
    };
    return fmt::format(
        "{{\"fault\":{},\"passed\":{},\"sent\":{},\"inflight_at_fault\":{},\"delivered\":{},\"bounced\":{},"
        "\"bounced_by\":{},\"dup\":{},\"dup_tolerated\":{},\"dup_bounces\":{},\"delivered_and_bounced\":{},"
        "\"lost\":{},\"corrupt\":{},\"recover_s\":{},\"fault_s\":{},\"settle_s\":{},\"a_peak_rss_kb\":{},"
        "\"b_peak_rss_kb\":{},\"a_stats\":{},\"b_stats\":{},\"a_invariant\":{},\"b_invariant\":{},\"method\":{},"
        "\"error\":{}}}",
        json_str(to_string(r.fault)), r.passed() ? "true" : "false", r.sent, r.inflight_at_fault, r.delivered,
        r.bounced, by, r.dup, r.dup_tolerated() ? "true" : "false", r.dup_bounces, r.both, r.lost, r.corrupt,
        r.recover_s < 0 ? "null" : json_num(r.recover_s), json_num(r.fault_s),
        r.settle_s < 0 ? "null" : json_num(r.settle_s), r.a_peak_kb, r.b_peak_kb, stats(r.a_stats), stats(r.b_stats),
        json_str(r.a_invariant), json_str(r.b_invariant), json_str(r.method), json_str(r.error));
}

std::optional<double> number(const char* s) {
    char* end = nullptr;
    double d = std::strtod(s, &end);
    if (!end || *end != '\0' || !(d >= 0) || !std::isfinite(d)) return std::nullopt;
    return d;
}

} // namespace

int fault_suite_main(int argc, char** argv, const std::string& exe_dir) {
    FaultOptions o;
    std::vector<Fault> faults(std::begin(kAllFaults), std::end(kAllFaults));
    bool quick = false, keep = false, ascii = false, verbose = false;
    std::optional<double> window, rate, pre, post, settle, quiet, qt, life, cap;
    std::string s2smuxd, gencerts;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        auto value = [&]() -> const char* {
            if (i + 1 >= argc) {
                std::fprintf(stderr, "s2smux-load: %s needs a value\n", a.c_str());
                std::exit(2);
            }
            return argv[++i];
        };
        auto num = [&](std::optional<double>& dst) {
            const char* v = value();
            dst = number(v);
            if (!dst) {
                std::fprintf(stderr, "s2smux-load: %s: not a number >= 0: '%s'\n", a.c_str(), v);
                std::exit(2);
            }
        };
        if (a == "--topology") value();
        else if (a == "--faults") {
            faults.clear();
            std::string list = value();
            for (std::size_t b = 0; b <= list.size();) {
                std::size_t e = std::min(list.find(',', b), list.size());
                auto f = parse_fault(std::string_view(list).substr(b, e - b));
                if (!f) {
                    std::fprintf(stderr, "s2smux-load: --faults: unknown fault '%s'\n", list.substr(b, e - b).c_str());
                    return 2;
                }
                faults.push_back(*f);
                b = e + 1;
            }
        } else if (a == "--window") num(window);
        else if (a == "--rate") num(rate);
        else if (a == "--pre") num(pre);
        else if (a == "--post") num(post);
        else if (a == "--settle") num(settle);
        else if (a == "--quiet") num(quiet);
        else if (a == "--queue-timeout") num(qt);
        else if (a == "--cert-life") num(life);
        else if (a == "--max-inflight") num(cap);
        else if (a == "--quick") quick = true;
        else if (a == "--s2smuxd") s2smuxd = value();
        else if (a == "--gencerts") gencerts = value();
        else if (a == "--gw-log-level") o.gw_log_level = value();
        else if (a == "--ascii") ascii = true;
        else if (a == "--keep") keep = true;
        else if (a == "--no-progress") o.progress = false;
        else if (a == "-v" || a == "--verbose") verbose = true;
        else if (a == "-h" || a == "--help") {
            usage(stdout);
            return 0;
        } else {
            std::fprintf(stderr, "s2smux-load: --topology faults: unknown argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    o.window = static_cast<std::uint64_t>(window.value_or(quick ? 2000 : 10000));
    o.rate = rate.value_or(quick ? 1000 : 2000);
    o.pre_s = pre.value_or(quick ? 1.5 : 3);
    o.post_s = post.value_or(quick ? 2 : 5);
    o.settle_s = settle.value_or(60);
    o.quiet_s = quiet.value_or(20);
    o.queue_timeout_s = static_cast<int>(qt.value_or(10));
    o.cert_life_s = static_cast<int>(life.value_or(quick ? 8 : 20));
    o.max_inflight = static_cast<std::uint64_t>(cap.value_or(50000));
    if (o.window == 0 || o.rate <= 0 || o.queue_timeout_s < 1 || o.max_inflight < o.window ||
        o.quiet_s <= o.queue_timeout_s) {
        std::fputs("s2smux-load: --window and --rate must be positive, --queue-timeout >= 1, --max-inflight >= "
                   "--window, --quiet > --queue-timeout\n",
                   stderr);
        return 2;
    }

    namespace fs = std::filesystem;
    std::error_code ec;
    if (s2smuxd.empty()) s2smuxd = exe_dir + "/../s2smuxd";
    if (gencerts.empty()) gencerts = exe_dir + "/../bench/s2smux-gencerts";
    o.gencerts = fs::weakly_canonical(gencerts, ec).string();
    const std::string daemon = fs::weakly_canonical(s2smuxd, ec).string();
    if (::access(daemon.c_str(), X_OK) != 0) {
        std::fprintf(stderr, "s2smux-load: s2smuxd not found or not executable at %s (use --s2smuxd)\n", daemon.c_str());
        return 1;
    }

    std::signal(SIGPIPE, SIG_IGN);
    log::set_level(verbose ? log::Level::Info : log::Level::Warn);
    tls::global_init();
    xmpp::DialbackKeys keys = xmpp::DialbackKeys::random();
    TextPool pool(0x5325'4d55'584c'4f41ULL, ascii);
    const std::string work_dir = make_work_dir("s2smux-load", "s2smux-faults");
    if (work_dir.empty()) return 1;
    Env env{nullptr, nullptr, &keys, &pool, daemon, {}, work_dir};

    std::printf("s2smux-load %s: topology faults (generator -> gateway A ==mux==> gateway B -> sink; bounces -> "
                "a.test's local server), window %llu before the fault, then open loop %.0f stanzas/s; pre %.1f s, "
                "post %.1f s, queue_timeout %d s, settle <= %.0f s (quiet %.0f s)\n",
                S2SMUX_VERSION, static_cast<unsigned long long>(o.window), o.rate, o.pre_s, o.post_s,
                o.queue_timeout_s, o.settle_s, o.quiet_s);
    std::fflush(stdout);
    std::vector<FaultResult> results;
    bool all = true;
    for (Fault f : faults) {
        FaultRun run(env, o, f);
        results.push_back(run.run());
        const FaultResult& r = results.back();
        all = all && r.passed();
        if (!r.error.empty() && !r.log_tail.empty())
            std::fprintf(stderr, "--- %s: end of the gateways' logs (%s/%s) ---\n%s\n---\n", to_string(f),
                         env.work_dir.c_str(), to_string(f), r.log_tail.c_str());
    }
    print_table(results);
    print_details(results);
    std::string j = fmt::format("{{\"tool\":\"s2smux-load\",\"version\":\"{}\",\"topology\":\"faults\",\"ok\":{},"
                                "\"window\":{},\"rate\":{},\"pre_s\":{},\"post_s\":{},\"queue_timeout_s\":{},"
                                "\"faults\":[",
                                S2SMUX_VERSION, all ? "true" : "false", o.window, json_num(o.rate), json_num(o.pre_s),
                                json_num(o.post_s), o.queue_timeout_s);
    for (std::size_t i = 0; i < results.size(); ++i) j += (i ? "," : "") + result_json(results[i]);
    std::printf("\n%s]}\n", j.c_str());
    if (all && !keep) fs::remove_all(env.work_dir, ec);
    else std::fprintf(stderr, "s2smux-load: configs, logs and certificates kept in %s\n", env.work_dir.c_str());
    return all ? 0 : 1;
}

} // namespace s2smux::load
