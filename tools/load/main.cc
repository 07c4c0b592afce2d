// s2smux-load: stanzas per second through one s2smuxd hop on loopback,
// against a direct connection between the same generator and sink as the
// tool's own ceiling. See bench/RESULTS.md for figures and how to run it.
#include "common/log.h"
#include "s2smux_version.h"
#include "tls/channel.h"
#include "tools/load/bench.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <climits>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

using namespace s2smux;
using namespace s2smux::load;

namespace {

void usage(std::FILE* f) {
    std::fputs(
        "usage: s2smux-load [options]\n"
        "\n"
        "Sends N stanzas a.test -> b.test from a generator to a sink (both in this\n"
        "process), once directly (TLS + SASL EXTERNAL) and once through s2smuxd,\n"
        "checks that all arrive in order and intact, and reports throughput,\n"
        "latency and the daemon's CPU and memory.\n"
        "\n"
        "  --stanzas N       measured stanzas per mode (default 200000)\n"
        "  --window W        stanzas in flight at most (default 10000: enough to keep both\n"
        "                    processes busy; use e.g. 100 to measure latency under light load)\n"
        "  --warmup K        unmeasured stanzas first, to open the routes (default 100)\n"
        "  --mode M          both, gateway or direct (default both)\n"
        "  --inner-plain     generator -> s2smuxd in plaintext (default: STARTTLS, as offered)\n"
        "  --ascii           ASCII-only text (default: some 2- to 4-byte UTF-8 characters too)\n"
        "  --quick           CI smoke test: 5000 stanzas, window 500; checks delivery, not timing\n"
        "  --s2smuxd PATH    daemon binary (default: s2smuxd in the build directory above this tool)\n"
        "  --certs DIR       test PKI with a.test, b.test and ca.pem (default: ./certs)\n"
        "  --stall-timeout S fail when nothing arrives for S seconds (default 20)\n"
        "  --keep            keep the temporary directory (daemon config and log)\n"
        "  --no-progress     no per-second progress lines on stderr\n"
        "  -v, --verbose     log the streams' events (info level)\n"
        "  -h, --help\n"
        "\n"
        "Exit status: 0 all stanzas arrived intact and in order, 1 otherwise\n"
        "(or s2smuxd died or did not shut down cleanly), 2 bad usage.\n",
        f);
}

std::optional<std::uint64_t> parse_count(const char* s) {
    char* end = nullptr;
    errno = 0;
    unsigned long long v = std::strtoull(s, &end, 10);
    if (errno != 0 || !end || *end != '\0' || s[0] == '-' || s[0] == '\0') return std::nullopt;
    return v;
}

std::string exe_dir() {
    std::error_code ec;
    auto p = std::filesystem::read_symlink("/proc/self/exe", ec);
    return ec ? std::string(".") : p.parent_path().string();
}

std::string json_num(double v) { return std::isfinite(v) ? fmt::format("{:.6g}", v) : "null"; }

std::string json_str(std::string_view s) {
    std::string o = "\"";
    for (char c : s) {
        if (c == '"' || c == '\\') o += '\\', o += c;
        else if (static_cast<unsigned char>(c) < 0x20) o += fmt::format("\\u{:04x}", c);
        else o += c;
    }
    return o + "\"";
}

double rate(double n, double secs) { return secs > 0 ? n / secs : 0; }

std::string result_json(const BenchResult& r) {
    std::string j = fmt::format(
        "{{\"ok\":{},\"stanzas\":{},\"seconds\":{},\"stanzas_per_s\":{},\"mb_per_s\":{},\"wire_mb_per_s\":{},"
        "\"p50_ms\":{},\"p99_ms\":{},\"p999_ms\":{},\"max_ms\":{},\"tool_cpu_s\":{},\"other_cpu_s\":{}",
        r.ok ? "true" : "false", r.stanzas, json_num(r.seconds), json_num(rate(double(r.stanzas), r.seconds)),
        json_num(rate(double(r.bytes) / 1e6, r.seconds)), json_num(rate(double(r.wire_bytes) / 1e6, r.seconds)),
        json_num(r.p50_ms), json_num(r.p99_ms), json_num(r.p999_ms), json_num(r.max_ms), json_num(r.tool_cpu_s),
        json_num(r.other_cpu_s));
    if (r.gateway)
        j += fmt::format(",\"gw_cpu_s\":{},\"stanzas_per_gw_cpu_s\":{},\"gw_rss_kb\":{},\"gw_hwm_kb\":{},\"gw_exit\":{}",
                         json_num(r.gw_cpu_s), json_num(rate(double(r.stanzas), r.gw_cpu_s)), r.gw_end.rss_kb,
                         r.gw_end.hwm_kb, json_str(r.gw_exit));
    if (!r.sink_tls.empty()) j += fmt::format(",\"sink_tls\":{}", json_str(r.sink_tls));
    if (!r.ok) j += fmt::format(",\"error\":{}", json_str(r.error));
    return j + "}";
}

} // namespace

int main(int argc, char** argv) {
    BenchOptions o;
    bool quick = false, keep = false, verbose = false, ascii = false;
    std::optional<std::uint64_t> stanzas, window, warmup;
    std::string mode = "both", s2smuxd, certs = "certs";
    bool certs_given = false;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        auto value = [&]() -> const char* {
            if (i + 1 >= argc) {
                std::fprintf(stderr, "s2smux-load: %s needs a value\n", a.c_str());
                std::exit(2);
            }
            return argv[++i];
        };
        auto count = [&](std::optional<std::uint64_t>& dst) {
            const char* v = value();
            dst = parse_count(v);
            if (!dst) {
                std::fprintf(stderr, "s2smux-load: %s: not a count: '%s'\n", a.c_str(), v);
                std::exit(2);
            }
        };
        if (a == "--stanzas") count(stanzas);
        else if (a == "--window") count(window);
        else if (a == "--warmup") count(warmup);
        else if (a == "--mode") mode = value();
        else if (a == "--inner-plain") o.inner_tls = false;
        else if (a == "--ascii") ascii = true;
        else if (a == "--quick") quick = true;
        else if (a == "--s2smuxd") s2smuxd = value();
        else if (a == "--certs") {
            certs = value();
            certs_given = true;
        } else if (a == "--stall-timeout") o.stall_timeout_s = std::atof(value());
        else if (a == "--keep") keep = true;
        else if (a == "--no-progress") o.progress = false;
        else if (a == "-v" || a == "--verbose") verbose = true;
        else if (a == "-h" || a == "--help") {
            usage(stdout);
            return 0;
        } else {
            std::fprintf(stderr, "s2smux-load: unknown argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    o.stanzas = stanzas.value_or(quick ? 5000 : 200000);
    o.window = window.value_or(quick ? 500 : 10000);
    o.warmup = warmup.value_or(quick ? 20 : 100);
    if (o.stanzas == 0 || o.window == 0 || o.stall_timeout_s <= 0) {
        std::fputs("s2smux-load: --stanzas, --window and --stall-timeout must be positive\n", stderr);
        return 2;
    }
    std::vector<Mode> modes;
    if (mode == "both") modes = {Mode::Direct, Mode::Gateway};
    else if (mode == "direct") modes = {Mode::Direct};
    else if (mode == "gateway") modes = {Mode::Gateway};
    else {
        std::fprintf(stderr, "s2smux-load: --mode: '%s' is not one of both, gateway, direct\n", mode.c_str());
        return 2;
    }

    namespace fs = std::filesystem;
    std::error_code ec;
    if (s2smuxd.empty()) s2smuxd = exe_dir() + "/../s2smuxd";
    // A build directory inside the source tree finds the PKI from anywhere.
    if (!certs_given && !fs::exists(fs::path(certs) / "ca.pem")) certs = exe_dir() + "/../../certs";
    std::string certs_abs = fs::weakly_canonical(certs, ec).string();
    std::string daemon_abs = fs::weakly_canonical(s2smuxd, ec).string();
    bool want_gateway = std::find(modes.begin(), modes.end(), Mode::Gateway) != modes.end();
    if (want_gateway && ::access(daemon_abs.c_str(), X_OK) != 0) {
        std::fprintf(stderr, "s2smux-load: s2smuxd not found or not executable at %s (use --s2smuxd)\n",
                     daemon_abs.c_str());
        return 1;
    }

    std::signal(SIGPIPE, SIG_IGN);
    log::set_level(verbose ? log::Level::Info : log::Level::Warn);
    tls::global_init();

    tls::CertStore store;
    for (const char* d : {"a.test", "b.test"}) {
        auto lc = tls::load_cert_files(certs_abs + "/" + d + ".pem", certs_abs + "/" + d + ".key");
        if (!lc) {
            std::fprintf(stderr, "s2smux-load: certificate %s in %s: %s (use --certs)\n", d, certs_abs.c_str(),
                         lc.error().c_str());
            return 1;
        }
        store.add(std::move(*lc));
    }
    tls::TrustStore trust;
    if (auto r = trust.add_ca_file(certs_abs + "/ca.pem"); !r) {
        std::fprintf(stderr, "s2smux-load: %s/ca.pem: %s\n", certs_abs.c_str(), r.error().c_str());
        return 1;
    }
    xmpp::DialbackKeys keys = xmpp::DialbackKeys::random();
    TextPool pool(0x5325'4d55'584c'4f41ULL, ascii);

    const char* tmp = std::getenv("TMPDIR");
    std::string tmpl = std::string(tmp && *tmp ? tmp : "/tmp") + "/s2smux-load-XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    if (!::mkdtemp(buf.data())) {
        std::fprintf(stderr, "s2smux-load: mkdtemp %s: %s\n", tmpl.c_str(), std::strerror(errno));
        return 1;
    }
    Env env{&store, &trust, &keys, &pool, daemon_abs, certs_abs, buf.data()};

    std::printf("s2smux-load %s: %llu stanzas per mode (+%llu warm-up), window %llu, inner hop %s, %s text\n",
                S2SMUX_VERSION, static_cast<unsigned long long>(o.stanzas), static_cast<unsigned long long>(o.warmup),
                static_cast<unsigned long long>(o.window), o.inner_tls ? "STARTTLS" : "plaintext",
                ascii ? "ASCII" : "UTF-8");
    std::fflush(stdout);

    std::vector<std::pair<Mode, BenchResult>> results;
    bool all_ok = true;
    for (Mode m : modes) {
        BenchOptions mo = o;
        mo.mode = m;
        BenchResult r;
        {
            Bench b(env, mo);
            r = b.run();
        }
        if (!r.ok) {
            all_ok = false;
            std::fprintf(stderr, "s2smux-load: %s: FAILED: %s\n", to_string(m), r.error.c_str());
            if (!r.gateway_log.empty())
                std::fprintf(stderr, "--- end of s2smuxd log (%s/s2smuxd.log) ---\n%s\n---\n", env.work_dir.c_str(),
                             r.gateway_log.c_str());
        }
        results.emplace_back(m, std::move(r));
    }

    std::printf("\n%-8s %9s %11s %7s %8s %8s %9s %9s %11s %10s %10s %11s\n", "mode", "stanzas", "stanzas/s", "MB/s",
                "p50 ms", "p99 ms", "p99.9 ms", "gw CPU s", "st/gwCPU-s", "gw RSS MiB", "tool CPU s", "other CPU s");
    const BenchResult* direct = nullptr;
    const BenchResult* gateway = nullptr;
    for (const auto& [m, r] : results) {
        (m == Mode::Direct ? direct : gateway) = &r;
        if (!r.ok) {
            std::printf("%-8s FAILED: %s\n", to_string(m), r.error.c_str());
            continue;
        }
        std::string gw_cpu = "-", per_cpu = "-", rss = "-";
        if (r.gateway) {
            gw_cpu = fmt::format("{:.2f}", r.gw_cpu_s);
            per_cpu = fmt::format("{:.0f}", rate(double(r.stanzas), r.gw_cpu_s));
            rss = fmt::format("{:.1f}", double(r.gw_end.rss_kb) / 1024);
        }
        std::printf("%-8s %9llu %11.0f %7.1f %8.2f %8.2f %9.2f %9s %11s %10s %10.2f %11.2f\n", to_string(m),
                    static_cast<unsigned long long>(r.stanzas), rate(double(r.stanzas), r.seconds),
                    rate(double(r.bytes) / 1e6, r.seconds), r.p50_ms, r.p99_ms, r.p999_ms, gw_cpu.c_str(),
                    per_cpu.c_str(), rss.c_str(), r.tool_cpu_s, r.other_cpu_s);
    }
    std::string ratio_json;
    if (direct && gateway && direct->ok && gateway->ok) {
        double thr = rate(double(gateway->stanzas), gateway->seconds) / rate(double(direct->stanzas), direct->seconds);
        std::printf("gateway/direct: throughput %.2fx, p50 latency %.2fx, p99 latency %.2fx\n", thr,
                    gateway->p50_ms / direct->p50_ms, gateway->p99_ms / direct->p99_ms);
        ratio_json = fmt::format(",\"ratio_gateway_direct\":{{\"throughput\":{},\"p50\":{},\"p99\":{}}}",
                                 json_num(thr), json_num(gateway->p50_ms / direct->p50_ms),
                                 json_num(gateway->p99_ms / direct->p99_ms));
    }
    for (const auto& [m, r] : results)
        if (r.ok && !r.sink_tls.empty()) std::printf("%s: sink stream %s\n", to_string(m), r.sink_tls.c_str());

    std::string json = fmt::format("{{\"tool\":\"s2smux-load\",\"version\":\"{}\",\"ok\":{},\"stanzas\":{},"
                                   "\"warmup\":{},\"window\":{},\"inner_tls\":{},\"ascii\":{}",
                                   S2SMUX_VERSION, all_ok ? "true" : "false", o.stanzas, o.warmup, o.window,
                                   o.inner_tls ? "true" : "false", ascii ? "true" : "false");
    for (const auto& [m, r] : results) json += fmt::format(",\"{}\":{}", to_string(m), result_json(r));
    json += ratio_json + "}";
    std::printf("%s\n", json.c_str());

    if (all_ok && !keep) {
        fs::remove_all(env.work_dir, ec);
    } else if (want_gateway) {
        std::fprintf(stderr, "s2smux-load: s2smuxd config and log kept in %s\n", env.work_dir.c_str());
    }
    return all_ok ? 0 : 1;
}
