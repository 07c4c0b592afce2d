// s2smux-bench: issue 8's measurements in one run, one table and one JSON
// document (bench/RESULTS.md, "s2smux-bench"). Each section reuses a piece
// of the load tool: load::Bench (hop), PairsBench (N x M pairs),
// IdleStreams and MuxBench (memory, adds), run_clouds (Prosody baseline).
#include "common/log.h"
#include "tls/channel.h"
#include "tools/load/bench_report.h"
#include "tools/load/cli_args.h"
#include "tools/load/haproxy_process.h"
#include "tools/load/proc_util.h"

#include <fmt/format.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <string>
#include <vector>

using namespace s2smux;
using namespace s2smux::load;

namespace {

void usage(std::FILE* f) {
    std::fputs(
        "usage: s2smux-bench [options]\n"
        "\n"
        "Runs every measurement of issue 8 on loopback and prints one table (stdout),\n"
        "progress on stderr. Sections (--sections, default all):\n"
        "  hop     one hop, same stanzas: direct (the tool's ceiling), s2smuxd in standard\n"
        "          (non-mux) mode, HAProxy relaying TLS without parsing XML (skipped if not\n"
        "          installed): stanzas/s, MB/s, per hop CPU-second, p50/p99/p99.9, ratios\n"
        "  pairs   gateway A serving N local domains, B serving M remote ones, ONE mux stream;\n"
        "          the generator (A's local server, one stream, N x M piggybacked dialback\n"
        "          pairs) sends over every pair, the sink (B's local server) checks every\n"
        "          stanza: stanzas/s and MB/s per CPU-second of A and of B, latency, TCP\n"
        "          connections A <-> B and on the inner sides, pair setup time\n"
        "  memory  RSS per idle authenticated S2S stream (K streams to one s2smuxd)\n"
        "  adds    domain adds/s on one stream that carries traffic (ECDSA P-256) and p99\n"
        "          latency while they run vs idle (s2smux-load --topology mux); also RSS per\n"
        "          mux domain; then cold adds on an idle stream and memory per domain\n"
        "          once settled (bench/mux_adds.py)\n"
        "  clouds  Prosody <-> Prosody direct and through the gateways (bench/clouds_bench.py)\n"
        "Then issue 8's targets: measured, met or not. Timing never fails a run.\n"
        "\n"
        "  --local N          local domains on gateway A (default 100)\n"
        "  --remote M         remote domains on gateway B (default 100)\n"
        "  --pair-stanzas S   measured stanzas over all pairs in turn (default 200000)\n"
        "  --max-inner P      beyond P pairs, the sink closes each upstream stream once a\n"
        "                     stanza arrived on it and every pair carries one stanza (default:\n"
        "                     never; gateway B piggybacks pairs on its upstream streams)\n"
        "  --stanzas S        hop section: measured stanzas per mode (default 200000)\n"
        "  --window W         stanzas in flight at most (default 5000)\n"
        "  --idle-streams K   memory section: idle streams (default 200)\n"
        "  --adds A           adds section: domains added (default 1000)\n"
        "  --cold-adds C      adds section, then: C domains added on an idle stream by\n"
        "                     bench/mux_adds.py (default 10000, 20 with --quick)\n"
        "  --sections LIST    comma-separated: hop,pairs,memory,adds,clouds\n"
        "  --clouds PATH      the Prosody baseline script (default: bench/clouds_bench.py of\n"
        "                     the source tree, if present and prosody is installed)\n"
        "  --no-clouds        skip it\n"
        "  --clouds-local N   its domains per side (default 20 x 20, 3 x 3 with --quick: Prosody\n"
        "  --clouds-remote M  and the standard-mode gateways need a connection per pair)\n"
        "  --haproxy PATH     haproxy binary (default: on PATH, then /usr/sbin)\n"
        "  --s2smuxd PATH     daemon (default: s2smuxd in the build directory above this tool)\n"
        "  --gencerts PATH    s2smux-gencerts (default: bench/s2smux-gencerts in the build directory)\n"
        "  --certs DIR        test PKI with a.test, b.test and ca.pem (default: ./certs, then the\n"
        "                     source tree's)\n"
        "  --json FILE        write the results as JSON too\n"
        "  --quick            CI smoke test: N = M = 5, few thousand stanzas, 20 adds, 20 idle\n"
        "                     streams, clouds --quick; fails only on a lost or corrupted stanza,\n"
        "                     a refused add or a daemon that dies, never on timing\n"
        "  --keep             keep the temporary directory (configs, logs, certificates)\n"
        "  --no-progress      no progress lines on stderr\n"
        "  -h, --help\n"
        "\n"
        "Exit status: 0 every section that ran verified all its stanzas and adds and its\n"
        "daemons exited cleanly (the clouds baseline is reported, not fatal), 1 otherwise,\n"
        "2 bad usage.\n",
        f);
}

std::string utc_now() {
    std::time_t t = std::time(nullptr);
    char buf[64];
    std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", std::gmtime(&t));
    return buf;
}

// A script of the source tree's bench/ (`arg` when given).
std::string bench_script(const std::string& name, const std::string& arg = {}) {
    namespace fs = std::filesystem;
    if (!arg.empty()) return arg;
    for (const std::string& p : {"bench/" + name, exe_dir() + "/../../bench/" + name})
        if (fs::exists(p)) return fs::weakly_canonical(p).string();
    return {};
}

} // namespace

int main(int argc, char** argv) {
    bool quick = false, keep = false, progress = true, no_clouds = false;
    std::optional<std::uint64_t> local, remote, pair_stanzas, max_inner, stanzas, window, idle_k, adds_n;
    std::optional<std::uint64_t> clouds_local, clouds_remote, cold_adds_n;
    std::string s2smuxd, gencerts, certs = "certs", haproxy_arg, clouds_arg, json_path, sections_arg;
    bool certs_given = false;
    std::string command = "s2smux-bench";
    for (int i = 1; i < argc; ++i) command += std::string(" ") + argv[i];
    ArgReader args(argc, argv, "s2smux-bench");
    while (args.next()) {
        const std::string& a = args.arg();
        auto value = [&] { return args.value(); };
        auto count = [&](std::optional<std::uint64_t>& dst) { args.count(dst); };
        if (a == "--local") count(local);
        else if (a == "--remote") count(remote);
        else if (a == "--pair-stanzas") count(pair_stanzas);
        else if (a == "--max-inner") count(max_inner);
        else if (a == "--stanzas") count(stanzas);
        else if (a == "--window") count(window);
        else if (a == "--idle-streams") count(idle_k);
        else if (a == "--adds") count(adds_n);
        else if (a == "--cold-adds") count(cold_adds_n);
        else if (a == "--sections") sections_arg = value();
        else if (a == "--clouds") clouds_arg = value();
        else if (a == "--no-clouds") no_clouds = true;
        else if (a == "--clouds-local") count(clouds_local);
        else if (a == "--clouds-remote") count(clouds_remote);
        else if (a == "--haproxy") haproxy_arg = value();
        else if (a == "--s2smuxd") s2smuxd = value();
        else if (a == "--gencerts") gencerts = value();
        else if (a == "--certs") {
            certs = value();
            certs_given = true;
        } else if (a == "--json") json_path = value();
        else if (a == "--quick") quick = true;
        else if (a == "--keep") keep = true;
        else if (a == "--no-progress") progress = false;
        else if (a == "-h" || a == "--help") {
            usage(stdout);
            return 0;
        } else {
            std::fprintf(stderr, "s2smux-bench: unknown argument '%s'\n", a.c_str());
            usage(stderr);
            return 2;
        }
    }
    std::set<std::string> sections{"hop", "pairs", "memory", "adds", "clouds"};
    if (!sections_arg.empty()) {
        std::set<std::string> want;
        std::size_t at = 0;
        while (at <= sections_arg.size()) {
            std::size_t end = sections_arg.find(',', at);
            std::string s = sections_arg.substr(at, end == std::string::npos ? std::string::npos : end - at);
            if (!sections.count(s)) {
                std::fprintf(stderr, "s2smux-bench: --sections: '%s' is not one of hop, pairs, memory, adds, clouds\n",
                             s.c_str());
                return 2;
            }
            want.insert(s);
            if (end == std::string::npos) break;
            at = end + 1;
        }
        sections = want;
    }
    if (no_clouds) sections.erase("clouds");
    const std::uint64_t window_n = window.value_or(quick ? 500 : 5000);
    if (window_n == 0 || local.value_or(1) == 0 || remote.value_or(1) == 0) {
        std::fputs("s2smux-bench: --window, --local and --remote must be positive\n", stderr);
        return 2;
    }

    namespace fs = std::filesystem;
    std::error_code ec;
    if (s2smuxd.empty()) s2smuxd = exe_dir() + "/../s2smuxd";
    if (gencerts.empty()) gencerts = exe_dir() + "/../bench/s2smux-gencerts";
    if (!certs_given && !fs::exists(fs::path(certs) / "ca.pem")) certs = exe_dir() + "/../../certs";
    const std::string daemon_abs = fs::weakly_canonical(s2smuxd, ec).string();
    const std::string gencerts_abs = fs::weakly_canonical(gencerts, ec).string();
    const std::string certs_abs = fs::weakly_canonical(certs, ec).string();
    if (::access(daemon_abs.c_str(), X_OK) != 0) {
        std::fprintf(stderr, "s2smux-bench: s2smuxd not found or not executable at %s (use --s2smuxd)\n",
                     daemon_abs.c_str());
        return 1;
    }
    if ((sections.count("pairs") || sections.count("adds")) && ::access(gencerts_abs.c_str(), X_OK) != 0) {
        std::fprintf(stderr, "s2smux-bench: s2smux-gencerts not found at %s (use --gencerts; it is built with the "
                             "tests, -Dtests=enabled)\n", gencerts_abs.c_str());
        return 1;
    }

    std::signal(SIGPIPE, SIG_IGN);
    log::set_level(log::Level::Error);
    tls::global_init();
    tls::CertStore store;
    tls::TrustStore trust;
    if (sections.count("hop") || sections.count("memory")) {
        for (const char* d : {"a.test", "b.test"}) {
            auto lc = tls::load_cert_files(certs_abs + "/" + d + ".pem", certs_abs + "/" + d + ".key");
            if (!lc) {
                std::fprintf(stderr, "s2smux-bench: certificate %s in %s: %s (use --certs)\n", d, certs_abs.c_str(),
                             lc.error().c_str());
                return 1;
            }
            store.add(std::move(*lc));
        }
        if (auto r = trust.add_ca_file(certs_abs + "/ca.pem"); !r) {
            std::fprintf(stderr, "s2smux-bench: %s/ca.pem: %s\n", certs_abs.c_str(), r.error().c_str());
            return 1;
        }
    }
    xmpp::DialbackKeys keys = xmpp::DialbackKeys::random();
    TextPool pool(0x5325'4d55'584c'4f41ULL, false);
    const std::string work_dir = make_work_dir("s2smux-bench", "s2smux-bench");
    if (work_dir.empty()) return 1;
    const std::string haproxy = find_haproxy(haproxy_arg);
    Env env{&store, &trust, &keys, &pool, daemon_abs, certs_abs, work_dir, haproxy};

    BenchReport rep;
    rep.date = utc_now();
    rep.quick = quick;
    rep.command = command;
    rep.loadavg0 = loadavg();
    auto say = [&](const char* what) {
        if (progress) std::fprintf(stderr, "s2smux-bench: %s\n", what);
    };

    if (sections.count("hop")) {
        rep.hop_stanzas = stanzas.value_or(quick ? 5000 : 200000);
        std::vector<Mode> modes{Mode::Direct, Mode::Gateway};
        if (!haproxy.empty()) modes.push_back(Mode::Haproxy);
        else
            rep.haproxy_note = haproxy_arg.empty() ? "haproxy not installed (Debian: apt-get install haproxy)"
                                                   : haproxy_arg + " is not an executable";
        for (Mode m : modes) {
            say(fmt::format("1. hop, mode {}", to_string(m)).c_str());
            BenchOptions o;
            o.mode = m;
            o.stanzas = rep.hop_stanzas;
            o.window = window_n;
            o.warmup = quick ? 20 : 100;
            o.progress = progress;
            Bench b(env, o);
            rep.hop.emplace_back(m, b.run());
        }
    }
    if (sections.count("pairs")) {
        PairsOptions o;
        o.local = local.value_or(quick ? 5 : 100);
        o.remote = remote.value_or(quick ? 5 : 100);
        o.stanzas = pair_stanzas.value_or(quick ? 2000 : 200000);
        o.max_inner = max_inner.value_or(UINT64_MAX);
        o.window = window_n;
        o.progress = progress;
        o.gencerts = gencerts_abs;
        say(fmt::format("2. {} x {} pairs over one multiplexed stream", o.local, o.remote).c_str());
        PairsBench b(env, o);
        rep.pairs = b.run();
    }
    if (sections.count("memory")) {
        IdleOptions o;
        o.streams = idle_k.value_or(quick ? 20 : 200);
        o.progress = progress;
        o.settle_s = quick ? 0.3 : 1;
        say(fmt::format("3. memory: {} idle streams", o.streams).c_str());
        IdleStreams b(env, o);
        rep.idle = b.run();
    }
    if (sections.count("adds")) {
        MuxOptions o;
        o.adds = adds_n.value_or(quick ? 20 : 1000);
        o.capacity_s = quick ? 1 : 4;
        o.settle_s = quick ? 0.5 : 2;
        o.idle_s = quick ? 1 : 10;
        o.after_s = quick ? 1 : 10;
        o.warmup = quick ? 20 : 100;
        o.gw_log_level = "warn";
        o.progress = progress;
        o.gencerts = gencerts_abs;
        say(fmt::format("4. {} domain adds on one stream, with traffic", o.adds).c_str());
        MuxBench b(env, o);
        rep.adds = b.run();
        // Cold: adds on an idle stream, and memory per domain once settled.
        ColdAddsResult c;
        const std::string script = bench_script("mux_adds.py");
        const std::string build_dir = fs::path(daemon_abs).parent_path().string();
        if (script.empty()) c.skip_reason = "bench/mux_adds.py not found";
        else if (!fs::exists(fs::path(build_dir) / "bench" / "s2smux-gencerts"))
            c.skip_reason = "s2smuxd is not in a build directory with bench/s2smux-gencerts";
        if (c.skip_reason.empty()) {
            const std::uint64_t n = cold_adds_n.value_or(quick ? 20 : 10000);
            say(fmt::format("4. {} cold domain adds on an idle stream: {}", n, script).c_str());
            c = run_cold_adds(script, n, build_dir, env.work_dir);
        }
        rep.cold_adds = std::move(c);
    }
    if (sections.count("clouds")) {
        CloudsResult c;
        const std::string script = bench_script("clouds_bench.py", clouds_arg);
        if (script.empty()) c.skip_reason = "bench/clouds_bench.py not found (--clouds PATH)";
        else if (clouds_arg.empty() && find_executable("prosody").empty()) c.skip_reason = "prosody not installed";
        if (c.skip_reason.empty()) {
            say(fmt::format("5. Prosody baseline: {}", script).c_str());
            // Real Prosody with one c2s user per domain and standard S2S per
            // pair: 20 x 20 by default, what runs in minutes on 2 cores.
            c = run_clouds(script, clouds_local.value_or(quick ? 3 : 20), clouds_remote.value_or(quick ? 3 : 20), quick,
                           env.work_dir);
        }
        rep.clouds = std::move(c);
    }
    rep.loadavg1 = loadavg();

    rep.print(stdout);
    std::fflush(stdout);
    if (!json_path.empty()) {
        std::ofstream f(json_path, std::ios::trunc);
        f << rep.json() << "\n";
        if (!f) std::fprintf(stderr, "s2smux-bench: cannot write %s\n", json_path.c_str());
    }
    const bool ok = rep.ok();
    auto tail = [&](const char* what, const std::string& err, const std::string& logs) {
        if (err.empty()) return;
        std::fprintf(stderr, "s2smux-bench: %s FAILED: %s\n", what, err.c_str());
        if (!logs.empty()) std::fprintf(stderr, "%s\n", logs.c_str());
    };
    for (const auto& [m, r] : rep.hop) tail(to_string(m), r.error, r.gateway_log);
    if (rep.pairs) tail("pairs", rep.pairs->error, rep.pairs->log_tail);
    if (rep.idle) tail("idle streams", rep.idle->error, "");
    if (rep.adds) tail("adds", rep.adds->error, rep.adds->log_tail);
    const bool clouds_failed = rep.clouds && !rep.clouds->error.empty(); // its log is in the work directory
    if (ok && !keep && !clouds_failed) fs::remove_all(env.work_dir, ec);
    else std::fprintf(stderr, "s2smux-bench: configs, logs and certificates kept in %s\n", env.work_dir.c_str());
    return ok ? 0 : 1;
}
