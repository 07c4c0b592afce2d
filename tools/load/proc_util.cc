#include "tools/load/proc_util.h"

#include "tools/load/gateway_process.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <sstream>

namespace s2smux::load {

// Runs argv, output to `log`, waits. Empty string: success.
std::string run_program(const std::vector<std::string>& argv, const std::string& log) {
    std::fflush(nullptr);
    pid_t pid = ::fork();
    if (pid < 0) return fmt::format("fork: {}", std::strerror(errno));
    if (pid == 0) {
        int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            ::dup2(fd, 1);
            ::dup2(fd, 2);
            ::close(fd);
        }
        std::vector<char*> a;
        for (const auto& s : argv) a.push_back(const_cast<char*>(s.c_str()));
        a.push_back(nullptr);
        ::execv(a[0], a.data());
        std::fprintf(stderr, "exec %s: %s\n", a[0], std::strerror(errno));
        ::_exit(127);
    }
    int st = 0;
    while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0) return {};
    return fmt::format("{} failed ({}); see {}", argv[0],
                       WIFEXITED(st) ? fmt::format("exit status {}", WEXITSTATUS(st))
                                     : fmt::format("signal {}", WTERMSIG(st)),
                       log);
}

std::string tail_of(const std::string& path, std::size_t bytes) {
    FILE* f = std::fopen(path.c_str(), "rb");
    if (!f) return {};
    std::string s;
    char buf[8192];
    std::size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) s.append(buf, n);
    std::fclose(f);
    if (s.size() > bytes) s.erase(0, s.size() - bytes);
    return s;
}

std::map<std::string, std::uint64_t> parse_stats(const admin::Reply& r) {
    std::map<std::string, std::uint64_t> m;
    for (const auto& line : r.lines) {
        std::istringstream is(line);
        std::string k, v;
        if (is >> k >> v && !v.empty() && std::all_of(v.begin(), v.end(), [](unsigned char ch) { return std::isdigit(ch) != 0; })) m[k] = std::stoull(v);
    }
    return m;
}

std::uint64_t stat_of(const std::map<std::string, std::uint64_t>& m, const char* k) {
    auto it = m.find(k);
    return it == m.end() ? 0 : it->second;
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

std::uint64_t rss_kb(pid_t pid) {
    auto st = read_proc_stats(pid);
    return st ? st->rss_kb : 0;
}

std::string find_executable(const std::string& name) {
    std::string dirs = std::getenv("PATH") ? std::getenv("PATH") : "";
    dirs += ":/usr/sbin:/usr/local/sbin";
    std::istringstream is(dirs);
    for (std::string d; std::getline(is, d, ':');) {
        if (d.empty()) continue;
        std::string p = d + "/" + name;
        if (::access(p.c_str(), X_OK) == 0) return p;
    }
    return {};
}

std::string unclean_stats(const std::map<std::string, std::uint64_t>& a, const std::map<std::string, std::uint64_t>& b) {
    for (const auto* st : {&a, &b})
        for (const char* k : {"stanzas.bounced", "stanzas.dropped", "mux.refused_in", "mux.refused_out"})
            if (stat_of(*st, k) != 0) return fmt::format("gateway {}: {} = {}", st == &a ? "A" : "B", k, stat_of(*st, k));
    return {};
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

// The 1-, 5- and 15-minute load averages: "0.52 0.80 1.10".
std::string loadavg() {
    std::FILE* f = std::fopen("/proc/loadavg", "r");
    if (!f) return "?";
    char buf[128] = {};
    if (!std::fgets(buf, sizeof buf, f)) buf[0] = '\0';
    std::fclose(f);
    std::string s(buf);
    std::size_t n = 0, pos = 0;
    while (n < 3 && pos != std::string::npos) {
        pos = s.find(' ', pos + (n ? 1 : 0));
        ++n;
    }
    return pos == std::string::npos ? s : s.substr(0, pos);
}

double self_cpu_s() {
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

double percentile_ms(const std::vector<std::uint64_t>& sorted, double q) {
    if (sorted.empty()) return 0;
    auto idx = static_cast<std::size_t>(std::ceil(q * static_cast<double>(sorted.size())));
    idx = std::clamp<std::size_t>(idx, 1, sorted.size()) - 1;
    return static_cast<double>(sorted[idx]) / 1e6;
}

std::uint64_t count_established(std::uint16_t port) {
    std::uint64_t n = 0;
    for (const char* path : {"/proc/net/tcp", "/proc/net/tcp6"}) {
        std::FILE* f = std::fopen(path, "r");
        if (!f) continue;
        char line[512];
        bool header = true;
        while (std::fgets(line, sizeof line, f)) {
            if (header) {
                header = false;
                continue;
            }
            // "  sl  local_address rem_address   st ...": "0: 0100007F:1F90 0100007F:C350 01 ..."
            char local[64], remote[64];
            unsigned st = 0;
            if (std::sscanf(line, " %*[^:]: %63s %63s %x", local, remote, &st) != 3) continue;
            const char* colon = std::strrchr(local, ':');
            if (st == 1 && colon && std::strtoul(colon + 1, nullptr, 16) == port) ++n;
        }
        std::fclose(f);
    }
    return n;
}

} // namespace s2smux::load
