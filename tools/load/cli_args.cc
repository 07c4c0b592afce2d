#include "tools/load/cli_args.h"

#include "tools/load/proc_util.h"

#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

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

std::string make_work_dir(const char* tool, const char* prefix) {
    const char* tmp = std::getenv("TMPDIR");
    std::string tmpl = std::string(tmp && *tmp ? tmp : "/tmp") + "/" + prefix + "-XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    if (!::mkdtemp(buf.data())) {
        std::fprintf(stderr, "%s: mkdtemp %s: %s\n", tool, tmpl.c_str(), std::strerror(errno));
        return {};
    }
    return buf.data();
}

} // namespace s2smux::load
