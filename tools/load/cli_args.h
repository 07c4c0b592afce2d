// Command-line reading shared by s2smux-load and s2smux-bench: one option
// at a time; a missing or malformed value ends the program with status 2.
// Also the start-up steps their mains share.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace s2smux::load {

class ArgReader {
public:
    ArgReader(int argc, char** argv, const char* tool) : argc_(argc), argv_(argv), tool_(tool) {}
    // Advances to the next option; false at the end.
    bool next();
    const std::string& arg() const { return arg_; }
    // The option's value (the next argument).
    const char* value();
    void count(std::optional<std::uint64_t>& dst);
    void seconds(std::optional<double>& dst); // finite, >= 0

private:
    [[noreturn]] void bad(const char* what, const char* v) const;

    int argc_;
    char** argv_;
    const char* tool_;
    int i_ = 0;
    std::string arg_;
};

// A new private directory $TMPDIR/<prefix>-XXXXXX (/tmp without TMPDIR) for
// a run's configs and logs; "" after "<tool>: mkdtemp ...: why" on stderr.
std::string make_work_dir(const char* tool, const char* prefix);

} // namespace s2smux::load
