// Prometheus metrics, sans-I/O: a histogram cheap enough for the data path,
// and a writer for the text exposition format 0.0.4
// (https://prometheus.io/docs/instrumenting/exposition_formats/).
//
// Counters and gauges are plain integers owned by whoever counts; only at
// scrape time are they written out. A histogram observe is a search over a
// fixed array of at most kMaxBuckets bounds: no allocation, no lock (it
// belongs to the loop thread like everything it measures).
#pragma once

#include <array>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <set>
#include <span>
#include <string>
#include <string_view>

namespace s2smux::metrics {

// Latency buckets (seconds) from 1 ms to 1 min, for everything the gateway times.
inline constexpr double kLatencyBuckets[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                             0.25,  0.5,    1,     2.5,  5,     10,   30, 60};

class Histogram {
public:
    static constexpr std::size_t kMaxBuckets = 16;

    // `bounds`: strictly increasing upper bounds (+Inf is implicit), static storage.
    explicit Histogram(std::span<const double> bounds = kLatencyBuckets);

    void observe(double value);
    void observe_ms(std::int64_t ms) { observe(static_cast<double>(ms) / 1000.0); }
    // Adds another histogram's observations (same bounds), e.g. of a closed stream.
    void merge(const Histogram& other);

    std::span<const double> bounds() const { return bounds_; }
    // Observations <= bounds()[i] (cumulative, as exposed); i == bounds().size() is +Inf.
    std::uint64_t cumulative(std::size_t i) const;
    std::uint64_t count() const { return count_; }
    double sum() const { return sum_; }

private:
    std::span<const double> bounds_;
    std::array<std::uint64_t, kMaxBuckets + 1> counts_{}; // per bucket, not cumulative
    std::uint64_t count_ = 0;
    double sum_ = 0;
};

struct Label {
    std::string_view name;
    std::string_view value;
};
using Labels = std::initializer_list<Label>;

enum class Type { Counter, Gauge, Histogram };

// Appends the exposition text to a string. Each family (name, type, help)
// is declared once, then its samples follow: the format requires a family's
// samples to be contiguous. Invalid names and a family declared twice are
// programming errors (std::logic_error).
class Writer {
public:
    explicit Writer(std::string& out) : out_(out) {}

    // "# HELP" and "# TYPE" lines; the samples below belong to this family.
    Writer& family(std::string_view name, Type type, std::string_view help);
    // A counter or gauge sample of the current family.
    template <std::unsigned_integral T>
    Writer& sample(Labels labels, T value) {
        return sample_u64(labels, value);
    }
    Writer& sample(Labels labels, double value);
    // The _bucket (cumulative, le="+Inf" last), _sum and _count samples of
    // the current (histogram) family.
    Writer& sample(Labels labels, const Histogram& h);

private:
    Writer& sample_u64(Labels labels, std::uint64_t value);
    void line(std::string_view suffix, Labels labels, std::string_view extra_label, std::string_view value);

    std::string& out_;
    std::string current_;
    Type type_ = Type::Counter;
    std::set<std::string, std::less<>> families_; // declared so far (duplicate check)
};

// Label values: backslash, double quote and newline escaped.
std::string escape_label_value(std::string_view v);
// HELP text: backslash and newline escaped.
std::string escape_help(std::string_view v);
// A sample value: integers as such, "+Inf", "-Inf", "NaN", else the shortest
// representation that reads back exactly.
std::string format_value(double v);

} // namespace s2smux::metrics
