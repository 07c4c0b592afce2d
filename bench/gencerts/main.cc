// s2smux-gencerts: many domain certificates, fast, for benchmarks.
//
//   s2smux-gencerts --out DIR --count N [--suffix bench.test] [--prefix d] [--also NAME]...
//                   [--also-short NAME SECONDS]...
//
// Writes DIR/ca.pem, DIR/<prefix><i>.<suffix>.pem and .key (ECDSA P-256,
// dNSName + SRVName, CN = the domain so every subject differs), and
// DIR/domains.toml: a TOML fragment with `domains = [...]` under
// [gateway] and one [[cert]] per domain, for an s2smuxd configuration.
// --also-short: like --also, but the certificate expires SECONDS from now
// (the fault suite's certificate-expiry scenario, tools/load/fault_run.cc).
// TEST ONLY: the CA key never leaves memory, the leaf keys are unencrypted.
#include "tests/support/test_certs.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

namespace {

bool write_file(const std::string& path, const std::string& data) {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f << data;
    return static_cast<bool>(f);
}

int usage() {
    std::fputs("usage: s2smux-gencerts --out DIR --count N [--suffix bench.test] [--prefix d] [--also NAME]...\n"
               "                       [--also-short NAME SECONDS]...\n", stderr);
    return 2;
}

} // namespace

int main(int argc, char** argv) {
    std::string out, suffix = "bench.test", prefix = "d";
    std::vector<std::string> also; // extra single certificates (not listed in domains.toml)
    std::vector<std::pair<std::string, long>> also_short; // the same, expiring SECONDS from now
    long count = 0;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (a == "--out" && i + 1 < argc) out = argv[++i];
        else if (a == "--count" && i + 1 < argc) count = std::strtol(argv[++i], nullptr, 10);
        else if (a == "--suffix" && i + 1 < argc) suffix = argv[++i];
        else if (a == "--prefix" && i + 1 < argc) prefix = argv[++i];
        else if (a == "--also" && i + 1 < argc) also.push_back(argv[++i]);
        else if (a == "--also-short" && i + 2 < argc) {
            std::string name = argv[++i];
            also_short.emplace_back(name, std::strtol(argv[++i], nullptr, 10));
        }
        else return usage();
    }
    if (out.empty() || count <= 0) return usage();
    auto t0 = std::chrono::steady_clock::now();
    s2smux::test::TestCa ca("s2smux bench CA (TEST ONLY)");
    if (!write_file(out + "/ca.pem", ca.cert_pem())) {
        std::fprintf(stderr, "s2smux-gencerts: cannot write %s/ca.pem: %s\n", out.c_str(), std::strerror(errno));
        return 1;
    }
    for (const auto& d : also) {
        auto spec = s2smux::test::xmpp_server(d);
        spec.cn = d;
        auto c = ca.issue(spec);
        if (!write_file(out + "/" + d + ".pem", c.chain_pem) || !write_file(out + "/" + d + ".key", c.key_pem)) return 1;
    }
    for (const auto& [d, secs] : also_short) {
        auto spec = s2smux::test::xmpp_server(d);
        spec.cn = d;
        spec.not_after = s2smux::test::now() + secs;
        auto c = ca.issue(spec);
        if (!write_file(out + "/" + d + ".pem", c.chain_pem) || !write_file(out + "/" + d + ".key", c.key_pem)) return 1;
    }
    std::string domains = "domains = [", certs;
    for (long i = 1; i <= count; ++i) {
        std::string d = prefix + std::to_string(i) + "." + suffix;
        auto spec = s2smux::test::xmpp_server(d);
        spec.cn = d;
        auto c = ca.issue(spec);
        std::string base = out + "/" + d;
        if (!write_file(base + ".pem", c.chain_pem) || !write_file(base + ".key", c.key_pem)) {
            std::fprintf(stderr, "s2smux-gencerts: cannot write %s.pem: %s\n", base.c_str(), std::strerror(errno));
            return 1;
        }
        domains += (i > 1 ? ", \"" : "\"") + d + "\"";
        certs += "\n[[cert]]\ncert = \"" + base + ".pem\"\nkey = \"" + base + ".key\"\n";
    }
    domains += "]\n";
    if (!write_file(out + "/domains.toml", domains + certs)) return 1;
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("s2smux-gencerts: %ld certificates in %s in %.2f s\n", count, out.c_str(), s);
    return 0;
}
