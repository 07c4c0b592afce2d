#include "tools/load/clouds_run.h"

#include "tools/load/proc_util.h"

#include <uv.h>

#include <fmt/format.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string_view>
#include <utility>

namespace s2smux::load {

namespace {

// Just enough JSON for the script's flat objects: the value after "key":
// in `obj`, as raw text (a number, true/false, or a string without its
// quotes; escapes kept as written).
std::string field(std::string_view obj, std::string_view key) {
    const std::string k = fmt::format("\"{}\"", key);
    std::size_t at = obj.find(k);
    if (at == std::string_view::npos) return {};
    at = obj.find(':', at + k.size());
    if (at == std::string_view::npos) return {};
    ++at;
    while (at < obj.size() && (obj[at] == ' ' || obj[at] == '\n' || obj[at] == '\t')) ++at;
    if (at < obj.size() && obj[at] == '"') {
        std::string s;
        for (std::size_t i = at + 1; i < obj.size() && obj[i] != '"'; ++i) {
            if (obj[i] == '\\' && i + 1 < obj.size()) ++i;
            s += obj[i];
        }
        return s;
    }
    std::size_t end = obj.find_first_of(",}]", at);
    std::string v(obj.substr(at, end == std::string_view::npos ? std::string_view::npos : end - at));
    while (!v.empty() && (v.back() == ' ' || v.back() == '\n')) v.pop_back();
    return v;
}

double num(std::string_view obj, std::string_view key) { return std::atof(field(obj, key).c_str()); }

// Offset just past the JSON value (object or array) opening at `at`, or npos.
std::size_t value_end(std::string_view j, std::size_t at) {
    int depth = 0;
    bool in_str = false;
    for (std::size_t i = at; i < j.size(); ++i) {
        const char c = j[i];
        if (in_str) {
            if (c == '\\') ++i;
            else if (c == '"') in_str = false;
        } else if (c == '"') {
            in_str = true;
        } else if (c == '{' || c == '[') {
            ++depth;
        } else if ((c == '}' || c == ']') && --depth == 0) {
            return i + 1;
        }
    }
    return std::string_view::npos;
}

} // namespace

CloudsResult run_clouds(const std::string& script, std::uint64_t local, std::uint64_t remote, bool quick,
                        const std::string& work_dir) {
    CloudsResult r;
    r.ran = true;
    const std::string out = work_dir + "/clouds.json", log = work_dir + "/clouds.log";
    std::vector<std::string> argv{"/usr/bin/python3", script, "--local", std::to_string(local), "--remote",
                                  std::to_string(remote), "--json", out};
    if (quick) argv.push_back("--quick");
    const std::uint64_t t0 = uv_hrtime();
    std::string err = run_program(argv, log);
    r.seconds = static_cast<double>(uv_hrtime() - t0) / 1e9;
    std::ifstream f(out);
    std::stringstream ss;
    ss << f.rdbuf();
    r.json = ss.str();
    const std::size_t modes = r.json.find("\"modes\"");
    if (!f || modes == std::string::npos) {
        r.error = err.empty() ? fmt::format("{} wrote no readable JSON", script) : err;
        r.error += fmt::format("; end of its output: {}", tail_of(log, 400));
        r.json.clear();
        return r;
    }
    if (!err.empty()) r.error = err; // its JSON still says which modes ran
    r.pairs = num(std::string_view(r.json).substr(0, modes), "pairs");
    // Each mode is one {...} of the "modes" array; the objects nested in
    // it (per-process CPU) come after the fields read here.
    const std::string_view j(r.json);
    const std::size_t arr = j.find('[', modes);
    const std::size_t arr_end = arr == std::string_view::npos ? arr : value_end(j, arr);
    if (arr_end == std::string_view::npos) {
        r.error = fmt::format("{}: malformed \"modes\" in its JSON", script);
        return r;
    }
    for (std::size_t at = j.find('{', arr); at < arr_end; at = j.find('{', at)) {
        const std::size_t end = value_end(j, at);
        if (end == std::string_view::npos || end > arr_end) break;
        std::string_view o = j.substr(at, end - at);
        CloudsMode m;
        m.mode = field(o, "mode");
        m.ok = field(o, "ok") == "true";
        m.connections = num(o, "connections");
        m.stanzas = num(o, "stanzas");
        m.seconds = num(o, "seconds");
        m.stanzas_per_s = num(o, "stanzas_per_s");
        m.p50_ms = num(o, "p50_ms");
        m.p99_ms = num(o, "p99_ms");
        m.error = field(o, "error");
        r.modes.push_back(std::move(m));
        at = end;
    }
    return r;
}

ColdAddsResult run_cold_adds(const std::string& script, std::uint64_t count, const std::string& build_dir,
                             const std::string& work_dir) {
    ColdAddsResult r;
    r.ran = true;
    const std::string log = work_dir + "/mux_adds.log";
    const std::uint64_t t0 = uv_hrtime();
    const std::string err =
        run_program({"/usr/bin/python3", script, "--count", std::to_string(count), "--build", build_dir}, log);
    r.seconds = static_cast<double>(uv_hrtime() - t0) / 1e9;
    std::ifstream f(log);
    std::string line, last;
    while (std::getline(f, line))
        if (line.rfind("{\"domains\"", 0) == 0) last = line;
    if (last.empty()) {
        r.error = (err.empty() ? script + " printed no JSON line" : err) + "; end of its output: " + tail_of(log, 400);
        return r;
    }
    if (!err.empty()) r.error = err;
    // The script's key for each figure.
    static constexpr std::pair<const char*, double ColdAddsResult::*> kKeys[] = {
        {"domains", &ColdAddsResult::count},
        {"adds_ok", &ColdAddsResult::adds_ok},
        {"adds_failed", &ColdAddsResult::adds_failed},
        {"adds_per_s", &ColdAddsResult::adds_per_s},
        {"adds_per_cpu_s_b", &ColdAddsResult::adds_per_cpu_s},
        {"gw_b_bytes_per_domain", &ColdAddsResult::bytes_per_domain},
        {"connections", &ColdAddsResult::connections},
        {"gw_b_cpu_ms_per_add", &ColdAddsResult::b_cpu_ms_per_add},
    };
    for (const auto& [key, member] : kKeys) r.*member = num(last, key);
    return r;
}

} // namespace s2smux::load
