#include "tools/load/cli_args.h"

#include "tools/load/proc_util.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace s2smux::load {

bool ArgReader::next() {
    if (++i_ >= argc_) return false;
    arg_ = argv_[i_];
    return true;
}

const char* ArgReader::value() {
    if (i_ + 1 >= argc_) {
        std::fprintf(stderr, "%s: %s needs a value\n", tool_, arg_.c_str());
        std::exit(2);
    }
    return argv_[++i_];
}

void ArgReader::count(std::optional<std::uint64_t>& dst) {
    const char* v = value();
    dst = parse_count(v);
    if (!dst) bad("not a count", v);
}

void ArgReader::seconds(std::optional<double>& dst) {
    const char* v = value();
    char* end = nullptr;
    double d = std::strtod(v, &end);
    if (!end || *end != '\0' || !(d >= 0) || !std::isfinite(d)) bad("not a duration in seconds", v);
    dst = d;
}

void ArgReader::bad(const char* what, const char* v) const {
    std::fprintf(stderr, "%s: %s: %s: '%s'\n", tool_, arg_.c_str(), what, v);
    std::exit(2);
}

} // namespace s2smux::load
