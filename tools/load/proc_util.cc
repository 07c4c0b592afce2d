#include "tools/load/proc_util.h"

#include "tools/load/gateway_process.h"

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
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

} // namespace s2smux::load
