#include "common/log.h"

#include <chrono>
#include <cstring>
#include <ctime>

namespace s2smux::log {

namespace {
Level g_level = Level::Info;
std::FILE* g_file = nullptr; // nullptr: stderr
std::string g_path;
std::string* g_capture = nullptr;

const char* level_name(Level l) {
    switch (l) {
    case Level::Debug: return "debug";
    case Level::Info: return "info";
    case Level::Warn: return "warn";
    case Level::Error: return "error";
    }
    return "?";
}
} // namespace

void set_level(Level lvl) { g_level = lvl; }
Level level() { return g_level; }

bool parse_level(std::string_view name, Level& out) {
    if (name == "debug") out = Level::Debug;
    else if (name == "info") out = Level::Info;
    else if (name == "warn" || name == "warning") out = Level::Warn;
    else if (name == "error") out = Level::Error;
    else return false;
    return true;
}

bool set_file(const std::string& path, std::string* err) {
    if (g_file) {
        std::fclose(g_file);
        g_file = nullptr;
    }
    g_path = path;
    if (path.empty()) return true;
    g_file = std::fopen(path.c_str(), "a");
    if (!g_file) {
        if (err) *err = fmt::format("cannot open log file {}: {}", path, std::strerror(errno));
        return false;
    }
    return true;
}

bool reopen(std::string* err) { return set_file(g_path, err); }

void capture(std::string* sink) { g_capture = sink; }

void write(Level lvl, std::string_view ctx, std::string_view msg) {
    using namespace std::chrono;
    auto now = system_clock::now();
    auto secs = time_point_cast<seconds>(now);
    auto ms = duration_cast<milliseconds>(now - secs).count();
    std::time_t t = system_clock::to_time_t(secs);
    std::tm tm{};
    gmtime_r(&t, &tm);
    char ts[32];
    std::strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    std::string line = ctx.empty()
        ? fmt::format("{}.{:03}Z {} {}\n", ts, ms, level_name(lvl), msg)
        : fmt::format("{}.{:03}Z {} [{}] {}\n", ts, ms, level_name(lvl), ctx, msg);
    if (g_capture) {
        g_capture->append(line);
        return;
    }
    std::FILE* f = g_file ? g_file : stderr;
    std::fwrite(line.data(), 1, line.size(), f);
    std::fflush(f);
}

} // namespace s2smux::log
