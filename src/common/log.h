// Logging: one line per event, "<time> <level> [<context>] <message>".
// Context identifies the stream (id, kind, peer, domains) so operators can grep.
#pragma once

#include <fmt/format.h>

#include <cstdio>
#include <string>
#include <string_view>

namespace s2smux::log {

enum class Level { Debug = 0, Info = 1, Warn = 2, Error = 3 };

void set_level(Level lvl);
Level level();
bool parse_level(std::string_view name, Level& out);
// Directs output to a file (appending) instead of stderr; "" means stderr.
bool set_file(const std::string& path, std::string* err = nullptr);
// Re-opens the log file (SIGUSR1).
bool reopen(std::string* err = nullptr);
// Captures log lines into a string instead of writing them (tests).
void capture(std::string* sink);

void write(Level lvl, std::string_view ctx, std::string_view msg);

inline bool enabled(Level lvl) { return lvl >= level(); }

template <class... Args>
void logf(Level lvl, std::string_view ctx, fmt::format_string<Args...> f, Args&&... args) {
    if (!enabled(lvl)) return;
    write(lvl, ctx, fmt::format(f, std::forward<Args>(args)...));
}

template <class... Args>
void debug(std::string_view ctx, fmt::format_string<Args...> f, Args&&... a) { logf(Level::Debug, ctx, f, std::forward<Args>(a)...); }
template <class... Args>
void info(std::string_view ctx, fmt::format_string<Args...> f, Args&&... a) { logf(Level::Info, ctx, f, std::forward<Args>(a)...); }
template <class... Args>
void warn(std::string_view ctx, fmt::format_string<Args...> f, Args&&... a) { logf(Level::Warn, ctx, f, std::forward<Args>(a)...); }
template <class... Args>
void error(std::string_view ctx, fmt::format_string<Args...> f, Args&&... a) { logf(Level::Error, ctx, f, std::forward<Args>(a)...); }

} // namespace s2smux::log
