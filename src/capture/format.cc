#include "capture/format.h"

#include <fmt/format.h>

#include <charconv>

namespace s2smux::capture {

namespace {

constexpr char kHex[] = "0123456789abcdef";

bool needs_escape(unsigned char c, bool arg) {
    return c < 0x20 || c == 0x7f || c == '\\' || c >= 0x80 || (arg && c == ' ');
}

int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

void prefix(std::string& out, Kind k, std::uint64_t ms, std::uint64_t stream) {
    out += static_cast<char>(k);
    out += ' ';
    fmt::format_to(std::back_inserter(out), "{} {}", ms, stream);
}

void arg(std::string& out, std::string_view a) {
    out += ' ';
    if (a.empty()) {
        out += '-';
    } else if (a == "-" || a == "=") {
        out += "\\x";
        out += kHex[static_cast<unsigned char>(a[0]) >> 4];
        out += kHex[static_cast<unsigned char>(a[0]) & 15];
    } else {
        escape(out, a, true);
    }
}

bool parse_u64(std::string_view s, std::uint64_t& v) {
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    return ec == std::errc() && p == s.data() + s.size() && !s.empty();
}

// Splits at single spaces (escaping keeps spaces out of tokens).
std::vector<std::string_view> split(std::string_view s) {
    std::vector<std::string_view> out;
    while (!s.empty()) {
        auto sp = s.find(' ');
        out.push_back(s.substr(0, sp));
        if (sp == std::string_view::npos) break;
        s.remove_prefix(sp + 1);
    }
    return out;
}

Result<std::string> unescape_arg(std::string_view t) {
    if (t == "-") return std::string();
    return unescape(t);
}

bool known_kind(char c) {
    switch (static_cast<Kind>(c)) {
    case Kind::Stream:
    case Kind::In:
    case Kind::Out:
    case Kind::Call:
    case Kind::Nested:
    case Kind::Callback:
    case Kind::Answer:
    case Kind::End: return true;
    }
    return false;
}

} // namespace

void escape(std::string& out, std::string_view bytes, bool as_arg) {
    for (unsigned char c : bytes) {
        if (needs_escape(c, as_arg)) {
            out += "\\x";
            out += kHex[c >> 4];
            out += kHex[c & 15];
        } else {
            out += static_cast<char>(c);
        }
    }
}

Result<std::string> unescape(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] != '\\') {
            out += s[i];
            continue;
        }
        if (i + 3 >= s.size()) return make_error("truncated escape");
        if (s[i + 1] != 'x') return make_error("bad escape (only \\xNN)");
        int hi = hexval(s[i + 2]), lo = hexval(s[i + 3]);
        if (hi < 0 || lo < 0) return make_error("bad escape (only \\xNN)");
        out += static_cast<char>(hi << 4 | lo);
        i += 3;
    }
    return out;
}

std::string header_line(std::string_view start) { return fmt::format("{} {} {}", kMagic, kVersion, start); }

void format_bytes(std::string& out, Kind k, std::uint64_t ms, std::uint64_t stream, std::string_view bytes) {
    prefix(out, k, ms, stream);
    out += ' ';
    escape(out, bytes, false);
}

void format_call(std::string& out, Kind k, std::uint64_t ms, std::uint64_t stream, std::string_view name,
                 std::initializer_list<std::string_view> args) {
    prefix(out, k, ms, stream);
    arg(out, name);
    for (auto a : args) arg(out, a);
}

void format_call(std::string& out, Kind k, std::uint64_t ms, std::uint64_t stream, std::string_view name,
                 const std::vector<std::string>& args) {
    prefix(out, k, ms, stream);
    arg(out, name);
    for (const auto& a : args) arg(out, a);
}

void format_answer(std::string& out, std::uint64_t ms, std::uint64_t stream, std::string_view query,
                   std::initializer_list<std::string_view> args, std::string_view answer) {
    format_call(out, Kind::Answer, ms, stream, query, args);
    out += " =";
    arg(out, answer);
}

std::string format_record(const Record& r) {
    std::string out;
    switch (r.kind) {
    case Kind::In:
    case Kind::Out: format_bytes(out, r.kind, r.ms, r.stream, r.data); break;
    case Kind::Stream:
        prefix(out, r.kind, r.ms, r.stream);
        for (const auto& t : r.args) arg(out, t);
        break;
    case Kind::End:
        prefix(out, r.kind, r.ms, r.stream);
        arg(out, r.name);
        break;
    case Kind::Answer:
        format_call(out, r.kind, r.ms, r.stream, r.name, r.args);
        out += " =";
        arg(out, r.answer);
        break;
    default: format_call(out, r.kind, r.ms, r.stream, r.name, r.args); break;
    }
    return out;
}

Result<Record> parse_record(std::string_view line, std::size_t lineno) {
    auto bad = [&](std::string_view why) {
        return make_error(fmt::format("line {}: {}", lineno, why));
    };
    Record r;
    r.line = lineno;
    if (line.size() < 2 || !known_kind(line[0]) || line[1] != ' ') return bad("unknown record type");
    r.kind = static_cast<Kind>(line[0]);
    line.remove_prefix(2);
    auto sp1 = line.find(' ');
    if (sp1 == std::string_view::npos || !parse_u64(line.substr(0, sp1), r.ms)) return bad("bad time");
    line.remove_prefix(sp1 + 1);
    auto sp2 = line.find(' ');
    if (!parse_u64(line.substr(0, sp2), r.stream)) return bad("bad stream id");
    line = sp2 == std::string_view::npos ? std::string_view() : line.substr(sp2 + 1);
    if (r.kind == Kind::In || r.kind == Kind::Out) {
        auto d = unescape(line);
        if (!d) return bad(d.error());
        r.data = std::move(*d);
        return r;
    }
    auto toks = split(line);
    if (r.kind == Kind::Stream) {
        for (auto t : toks) {
            auto v = unescape_arg(t);
            if (!v) return bad(v.error());
            r.args.push_back(std::move(*v));
        }
        return r;
    }
    if (toks.empty()) return bad("missing name");
    auto name = unescape_arg(toks[0]);
    if (!name) return bad(name.error());
    r.name = std::move(*name);
    if (r.kind == Kind::End) return r;
    std::size_t n = toks.size();
    if (r.kind == Kind::Answer) {
        if (n < 3 || toks[n - 2] != "=") return bad("answer without ' = <answer>'");
        auto a = unescape_arg(toks[n - 1]);
        if (!a) return bad(a.error());
        r.answer = std::move(*a);
        n -= 2;
    }
    for (std::size_t i = 1; i < n; ++i) {
        auto v = unescape_arg(toks[i]);
        if (!v) return bad(v.error());
        r.args.push_back(std::move(*v));
    }
    return r;
}

Result<Capture> parse(std::string_view text) {
    Capture c;
    std::size_t lineno = 0;
    bool header = false;
    while (!text.empty()) {
        auto nl = text.find('\n');
        std::string_view line = text.substr(0, nl);
        text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
        ++lineno;
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        if (line.empty() || line[0] == '#') continue;
        if (!header) {
            auto toks = split(line);
            if (toks.size() < 2 || toks[0] != kMagic)
                return make_error(fmt::format("line {}: not an s2smux capture (no '{} {}' header)", lineno,
                                              kMagic, kVersion));
            if (toks[1] != std::to_string(kVersion))
                return make_error(fmt::format("line {}: capture format version {} (this build reads {})", lineno,
                                              toks[1], kVersion));
            if (toks.size() > 2) c.start = std::string(toks[2]);
            header = true;
            continue;
        }
        auto r = parse_record(line, lineno);
        if (!r) return make_error(r.error());
        c.records.push_back(std::move(*r));
    }
    if (!header) return make_error("empty file: not an s2smux capture");
    return c;
}

std::string_view token_value(const std::vector<std::string>& tokens, std::string_view key, std::string_view fallback) {
    for (const auto& t : tokens)
        if (t.size() > key.size() && t.compare(0, key.size(), key) == 0 && t[key.size()] == '=')
            return std::string_view(t).substr(key.size() + 1);
    return fallback;
}

} // namespace s2smux::capture
