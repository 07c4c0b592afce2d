#define BOOST_TEST_MODULE metrics
#include <boost/test/unit_test.hpp>

#include "common/metrics.h"

#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

using namespace s2smux::metrics;

namespace {

struct Sample {
    std::string name;
    std::map<std::string, std::string> labels; // unescaped values
    std::string value;
};

std::string unescape(const std::string& v) {
    std::string out;
    for (std::size_t i = 0; i < v.size(); ++i) {
        if (v[i] != '\\') {
            out += v[i];
            continue;
        }
        char n = v.at(++i);
        out += n == 'n' ? '\n' : n;
    }
    return out;
}

// A strict reader of the 0.0.4 text format (what the writer must produce):
// HELP then TYPE, then the family's samples, families never interleaved.
// Throws on anything else. Returns the samples with their family's type.
std::vector<std::pair<std::string, Sample>> parse(const std::string& text) {
    static const std::regex help(R"(# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*))");
    static const std::regex type(R"(# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram))");
    static const std::regex sample(
        R"(([a-zA-Z_:][a-zA-Z0-9_:]*)(\{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*",?)*)\})? (\S+))");
    static const std::regex label(R"(([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)\")");
    std::vector<std::pair<std::string, Sample>> out;
    std::set<std::string> done;
    std::string family, ftype, helped;
    BOOST_REQUIRE(!text.empty() && text.back() == '\n');
    std::istringstream in(text);
    std::string l;
    while (std::getline(in, l)) {
        std::smatch m;
        if (std::regex_match(l, m, help)) {
            if (!family.empty()) done.insert(family);
            if (done.count(m[1])) throw std::runtime_error("family repeated: " + l);
            helped = m[1];
            family.clear();
        } else if (std::regex_match(l, m, type)) {
            if (m[1] != helped) throw std::runtime_error("TYPE without its HELP: " + l);
            family = m[1];
            ftype = m[2];
        } else if (std::regex_match(l, m, sample)) {
            std::string n = m[1];
            std::string base = n;
            for (const char* suf : {"_bucket", "_sum", "_count"})
                if (ftype == "histogram" && n.size() > std::string(suf).size() && n.ends_with(suf))
                    base = n.substr(0, n.size() - std::string(suf).size());
            if (family.empty() || base != family) throw std::runtime_error("sample outside its family: " + l);
            if (ftype == "histogram" && base == n) throw std::runtime_error("bare histogram sample: " + l);
            Sample s{n, {}, m[4]};
            std::string ls = m[3];
            for (std::sregex_iterator it(ls.begin(), ls.end(), label), end; it != end; ++it)
                s.labels[(*it)[1]] = unescape((*it)[2]);
            std::size_t pos = 0;
            std::stod(s.value == "+Inf" ? "inf" : s.value, &pos);
            out.emplace_back(ftype, s);
        } else {
            throw std::runtime_error("unparsable line: " + l);
        }
    }
    return out;
}

} // namespace

BOOST_AUTO_TEST_CASE(label_values_and_help_are_escaped) {
    BOOST_TEST(escape_label_value(R"(a\b"c)" "\nd") == R"(a\\b\"c\nd)");
    BOOST_TEST(escape_help("x\\y\nz\"") == "x\\\\y\\nz\"");
    std::string out;
    Writer w(out);
    w.family("s2smux_test_total", Type::Counter, "line one\nline \\two").sample({{"reason", "bad \"x\"\n\\"}}, 3u);
    BOOST_TEST(out == "# HELP s2smux_test_total line one\\nline \\\\two\n"
                      "# TYPE s2smux_test_total counter\n"
                      "s2smux_test_total{reason=\"bad \\\"x\\\"\\n\\\\\"} 3\n");
    auto parsed = parse(out);
    BOOST_REQUIRE(parsed.size() == 1);
    BOOST_TEST(parsed[0].second.labels.at("reason") == "bad \"x\"\n\\");
}

BOOST_AUTO_TEST_CASE(values) {
    BOOST_TEST(format_value(1.0) == "1");
    BOOST_TEST(format_value(0.005) == "0.005");
    BOOST_TEST(format_value(1.0 / 0.0) == "+Inf");
    BOOST_TEST(format_value(-1.0 / 0.0) == "-Inf");
    BOOST_TEST(format_value(0.0 / 0.0) == "NaN");
    BOOST_TEST(std::stod(format_value(0.1 + 0.2)) == 0.1 + 0.2);
}

BOOST_AUTO_TEST_CASE(families_in_order_samples_grouped) {
    std::string out;
    Writer w(out);
    w.family("s2smux_b", Type::Gauge, "b").sample({}, 2u).sample({{"kind", "x"}, {"state", "y"}}, 1.5);
    w.family("s2smux_a_total", Type::Counter, "a").sample({{"k", "1"}}, 7u);
    auto p = parse(out);
    BOOST_REQUIRE(p.size() == 3);
    BOOST_TEST(p[0].second.name == "s2smux_b");
    BOOST_TEST(p[0].second.labels.empty());
    BOOST_TEST(p[1].second.value == "1.5");
    BOOST_TEST(p[2].first == "counter");
    BOOST_TEST(out.find("s2smux_b{kind=\"x\",state=\"y\"} 1.5\n") != std::string::npos);
    // Writing order is output order.
    BOOST_TEST(out.find("# HELP s2smux_b ") < out.find("# HELP s2smux_a_total "));
}

BOOST_AUTO_TEST_CASE(programming_errors_are_caught) {
    std::string out;
    Writer w(out);
    BOOST_CHECK_THROW(w.sample({}, 1u), std::logic_error); // no family yet
    BOOST_CHECK_THROW(w.family("1bad", Type::Gauge, ""), std::logic_error);
    w.family("s2smux_x", Type::Gauge, "x");
    BOOST_CHECK_THROW(w.family("s2smux_x", Type::Gauge, "x"), std::logic_error);
    BOOST_CHECK_THROW(w.sample({{"bad-label", "v"}}, 1u), std::logic_error);
    BOOST_CHECK_THROW(w.sample({{"__reserved", "v"}}, 1u), std::logic_error);
    BOOST_CHECK_THROW(w.sample({}, Histogram()), std::logic_error);
    w.family("s2smux_h_seconds", Type::Histogram, "h");
    BOOST_CHECK_THROW(w.sample({}, 1u), std::logic_error);
    BOOST_CHECK_THROW(w.sample({{"le", "1"}}, Histogram()), std::logic_error);
    static constexpr double unsorted[] = {1, 0.5};
    BOOST_CHECK_THROW(Histogram{unsorted}, std::logic_error);
}

BOOST_AUTO_TEST_CASE(histogram_buckets_are_cumulative) {
    static constexpr double bounds[] = {0.01, 0.1, 1};
    Histogram h(bounds);
    for (double v : {0.005, 0.01, 0.05, 0.5, 0.5, 2.0, 100.0}) h.observe(v);
    h.observe_ms(20); // 0.02 s
    BOOST_TEST(h.count() == 8u);
    BOOST_TEST(h.cumulative(0) == 2u); // 0.005, 0.01 (le is inclusive)
    BOOST_TEST(h.cumulative(1) == 4u); // + 0.05, 0.02
    BOOST_TEST(h.cumulative(2) == 6u); // + 0.5 x2
    BOOST_TEST(h.cumulative(3) == 8u); // +Inf
    BOOST_TEST(h.sum() == 0.005 + 0.01 + 0.05 + 0.5 + 0.5 + 2.0 + 100.0 + 0.02, boost::test_tools::tolerance(1e-9));

    Histogram other(bounds);
    other.observe(0.001);
    h.merge(other);
    BOOST_TEST(h.cumulative(0) == 3u);
    BOOST_TEST(h.count() == 9u);
    Histogram different; // default latency buckets
    BOOST_CHECK_THROW(h.merge(different), std::logic_error);

    std::string out;
    Writer(out).family("s2smux_wait_seconds", Type::Histogram, "w").sample({{"kind", "k"}}, h);
    auto p = parse(out);
    BOOST_REQUIRE(p.size() == 3 + 1 + 2);
    std::uint64_t prev = 0;
    std::vector<std::string> les;
    for (std::size_t i = 0; i < 4; ++i) {
        const Sample& s = p[i].second;
        BOOST_TEST(s.name == "s2smux_wait_seconds_bucket");
        BOOST_TEST(s.labels.at("kind") == "k");
        les.push_back(s.labels.at("le"));
        std::uint64_t v = std::stoull(s.value);
        BOOST_TEST(v >= prev);
        prev = v;
    }
    BOOST_TEST(les == (std::vector<std::string>{"0.01", "0.1", "1", "+Inf"}), boost::test_tools::per_element());
    BOOST_TEST(p[4].second.name == "s2smux_wait_seconds_sum");
    BOOST_TEST(p[5].second.name == "s2smux_wait_seconds_count");
    BOOST_TEST(p[5].second.value == p[3].second.value); // _count == le="+Inf"
    BOOST_TEST(p[5].second.value == "9");
}

BOOST_AUTO_TEST_CASE(empty_histogram) {
    Histogram h;
    BOOST_TEST(h.bounds().size() == std::size(kLatencyBuckets));
    std::string out;
    Writer(out).family("s2smux_e_seconds", Type::Histogram, "e").sample({}, h);
    auto p = parse(out);
    BOOST_TEST(p.size() == std::size(kLatencyBuckets) + 3);
    BOOST_TEST(out.find("s2smux_e_seconds_bucket{le=\"+Inf\"} 0\n") != std::string::npos);
    BOOST_TEST(out.find("s2smux_e_seconds_sum 0\n") != std::string::npos);
}
