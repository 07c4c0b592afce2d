#include "common/metrics.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace s2smux::metrics {

namespace {

bool name_char(char c, bool first, bool colon) {
    bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (colon && c == ':');
    return alpha || (!first && c >= '0' && c <= '9');
}

bool valid_name(std::string_view n, bool colon) {
    if (n.empty()) return false;
    for (std::size_t i = 0; i < n.size(); ++i)
        if (!name_char(n[i], i == 0, colon)) return false;
    return true;
}

const char* type_name(Type t) {
    switch (t) {
    case Type::Counter: return "counter";
    case Type::Gauge: return "gauge";
    case Type::Histogram: return "histogram";
    }
    return "untyped";
}

} // namespace

// ------------------------------------------------------------ Histogram

Histogram::Histogram(std::span<const double> bounds) : bounds_(bounds) {
    if (bounds.size() > kMaxBuckets) throw std::logic_error("histogram: too many buckets");
    for (std::size_t i = 1; i < bounds.size(); ++i)
        if (!(bounds[i - 1] < bounds[i])) throw std::logic_error("histogram: bounds must increase");
}

void Histogram::observe(double value) {
    // Bucket i holds bounds[i-1] < value <= bounds[i] ("le" is inclusive).
    auto it = std::lower_bound(bounds_.begin(), bounds_.end(), value);
    ++counts_[static_cast<std::size_t>(it - bounds_.begin())];
    ++count_;
    sum_ += value;
}

void Histogram::merge(const Histogram& other) {
    if (other.bounds_.data() != bounds_.data() && !std::equal(bounds_.begin(), bounds_.end(), other.bounds_.begin(),
                                                              other.bounds_.end()))
        throw std::logic_error("histogram: merging different bounds");
    for (std::size_t i = 0; i <= bounds_.size(); ++i) counts_[i] += other.counts_[i];
    count_ += other.count_;
    sum_ += other.sum_;
}

std::uint64_t Histogram::cumulative(std::size_t i) const {
    std::uint64_t n = 0;
    for (std::size_t k = 0; k <= i && k <= bounds_.size(); ++k) n += counts_[k];
    return n;
}

// ------------------------------------------------------------ text format

namespace {
// The text format escapes \ and newline everywhere, " in label values only.
std::string escape(std::string_view v, bool quote) {
    std::string out;
    out.reserve(v.size());
    for (char c : v) {
        if (c == '\\') out += "\\\\";
        else if (c == '\n') out += "\\n";
        else if (c == '"' && quote) out += "\\\"";
        else out += c;
    }
    return out;
}
} // namespace

std::string escape_label_value(std::string_view v) { return escape(v, true); }
std::string escape_help(std::string_view v) { return escape(v, false); }

std::string format_value(double v) {
    if (std::isnan(v)) return "NaN";
    if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
    return fmt::format("{}", v); // shortest round-trip form: "0.005", "1", "1e-05"
}

Writer& Writer::family(std::string_view name, Type type, std::string_view help) {
    if (!valid_name(name, true)) throw std::logic_error(fmt::format("metrics: invalid metric name '{}'", name));
    if (!families_.emplace(name).second) throw std::logic_error(fmt::format("metrics: family {} declared twice", name));
    current_ = name;
    type_ = type;
    out_ += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, escape_help(help), name, type_name(type));
    return *this;
}

void Writer::line(std::string_view suffix, Labels labels, std::string_view le, std::string_view value) {
    if (current_.empty()) throw std::logic_error("metrics: sample before any family");
    out_ += current_;
    out_ += suffix;
    bool any = labels.size() != 0 || !le.empty();
    if (any) out_ += '{';
    bool first = true;
    for (const Label& l : labels) {
        if (!valid_name(l.name, false) || l.name.substr(0, 2) == "__" || (type_ == Type::Histogram && l.name == "le"))
            throw std::logic_error(fmt::format("metrics: invalid label name '{}' on {}", l.name, current_));
        if (!first) out_ += ',';
        first = false;
        out_ += l.name;
        out_ += "=\"";
        out_ += escape_label_value(l.value);
        out_ += '"';
    }
    if (!le.empty()) {
        if (!first) out_ += ',';
        out_ += "le=\"";
        out_ += le;
        out_ += '"';
    }
    if (any) out_ += '}';
    out_ += ' ';
    out_ += value;
    out_ += '\n';
}

Writer& Writer::sample_u64(Labels labels, std::uint64_t value) {
    if (type_ == Type::Histogram) throw std::logic_error(fmt::format("metrics: {} is a histogram", current_));
    line({}, labels, {}, std::to_string(value));
    return *this;
}

Writer& Writer::sample(Labels labels, double value) {
    if (type_ == Type::Histogram) throw std::logic_error(fmt::format("metrics: {} is a histogram", current_));
    line({}, labels, {}, format_value(value));
    return *this;
}

Writer& Writer::sample(Labels labels, const Histogram& h) {
    if (type_ != Type::Histogram) throw std::logic_error(fmt::format("metrics: {} is not a histogram", current_));
    auto bounds = h.bounds();
    for (std::size_t i = 0; i < bounds.size(); ++i)
        line("_bucket", labels, format_value(bounds[i]), std::to_string(h.cumulative(i)));
    line("_bucket", labels, "+Inf", std::to_string(h.count()));
    line("_sum", labels, {}, format_value(h.sum()));
    line("_count", labels, {}, std::to_string(h.count()));
    return *this;
}

} // namespace s2smux::metrics
