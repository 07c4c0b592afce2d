#include "tools/load/payload.h"

#include "xml/writer.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>

namespace s2smux::load {

namespace {

constexpr std::string_view kServerNs = "jabber:server";
constexpr std::size_t kPoolBytes = 256 * 1024;
constexpr std::uint32_t kMaxText = 4096;

std::uint64_t mix(std::uint64_t x) { // splitmix64 finaliser
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

// Text that exercises the gateway's unescape/re-escape path: markup
// characters, quotes, "]]>", and (after kAsciiSpecial) 2-, 3- and 4-byte UTF-8.
constexpr std::array<std::string_view, 14> kSpecial = {
    ", ", ". ", "\n", "& ", "<b> ", "x > y ", "'q' ", "\"dq\" ", "]]> ", "\t",
    "\xc3\xa9 ", "stra\xc3\x9f" "e ", "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e ", "\xf0\x9f\x99\x82 ",
};
constexpr std::size_t kAsciiSpecial = 10;

void put_u64(std::string& out, std::uint64_t v) {
    char buf[24];
    auto r = std::to_chars(buf, buf + sizeof buf, v);
    out.append(buf, static_cast<std::size_t>(r.ptr - buf));
}

bool parse_u64(std::string_view s, std::uint64_t& v) {
    auto r = std::from_chars(s.data(), s.data() + s.size(), v);
    return r.ec == std::errc() && r.ptr == s.data() + s.size() && !s.empty();
}

bool text_equals(const xml::Node& el, std::string_view want) {
    // The parser may split character data into several text nodes.
    if (el.first && !el.first->next && el.first->kind == xml::Node::Kind::Text) return el.first->text == want;
    std::size_t off = 0;
    for (const xml::Node* c = el.first; c; c = c->next) {
        if (c->kind != xml::Node::Kind::Text) return false;
        if (want.substr(off, c->text.size()) != c->text) return false;
        off += c->text.size();
    }
    return off == want.size();
}

} // namespace

TextPool::TextPool(std::uint64_t seed, bool ascii) : seed_(seed) {
    const std::size_t specials = ascii ? kAsciiSpecial : kSpecial.size();
    std::uint64_t state = seed;
    raw_.reserve(kPoolBytes + 64);
    raw_off_.push_back(0);
    esc_off_.push_back(0);
    while (raw_.size() < kPoolBytes) {
        std::uint64_t r = mix(state++);
        std::size_t before = raw_.size();
        if (r % 100 < 88) {
            std::size_t n = 1 + (r >> 8) % 10;
            for (std::size_t i = 0; i < n; ++i) raw_ += static_cast<char>('a' + (r >> (16 + 4 * i)) % 26);
            raw_ += ' ';
        } else {
            raw_ += kSpecial[(r >> 8) % specials];
        }
        xml::escape_text(esc_, std::string_view(raw_).substr(before));
        raw_off_.push_back(static_cast<std::uint32_t>(raw_.size()));
        esc_off_.push_back(static_cast<std::uint32_t>(esc_.size()));
    }
    const std::uint32_t limit = static_cast<std::uint32_t>(raw_.size()) - kMaxText - 64;
    max_start_ = static_cast<std::uint32_t>(std::upper_bound(raw_off_.begin(), raw_off_.end(), limit) -
                                            raw_off_.begin() - 1);
}

Plan TextPool::plan(std::uint64_t seq) const {
    std::uint64_t r = mix(seq ^ seed_);
    Plan p;
    std::uint32_t len;
    if (r % 100 < 30) {
        p.kind = Kind::Presence;
        len = 60 + static_cast<std::uint32_t>((r >> 8) % 61);
    } else {
        p.kind = Kind::Message;
        double u = static_cast<double>((r >> 16) & 0xFFFFF) / double(1 << 20);
        len = static_cast<std::uint32_t>(200.0 * std::exp(u * std::log(double(kMaxText) / 200.0)));
    }
    p.tok_begin = static_cast<std::uint32_t>(mix(r) % (std::uint64_t(max_start_) + 1));
    std::uint32_t target = raw_off_[p.tok_begin] + len;
    auto it = std::upper_bound(raw_off_.begin() + p.tok_begin, raw_off_.end(), target);
    p.tok_end = static_cast<std::uint32_t>(it - raw_off_.begin() - 1);
    if (p.tok_end <= p.tok_begin) p.tok_end = p.tok_begin + 1;
    return p;
}

void write_stanza(std::string& out, const TextPool& pool, std::uint64_t seq, std::uint64_t ts_ns) {
    write_stanza(out, pool, seq, ts_ns, kFromJid, kToJid);
}

void write_stanza(std::string& out, const TextPool& pool, std::uint64_t seq, std::uint64_t ts_ns,
                  std::string_view from_jid, std::string_view to_jid) {
    Plan p = pool.plan(seq);
    const bool msg = p.kind == Kind::Message;
    out += msg ? "<message from='" : "<presence from='";
    out += from_jid;
    out += "' to='";
    out += to_jid;
    out += msg ? "' type='chat' id='l" : "' id='l";
    put_u64(out, seq);
    out += msg ? "'><body>" : "'><show>away</show><status>";
    out += pool.escaped(p);
    out += msg ? "</body><load xmlns='" : "</status><load xmlns='";
    out += kLoadNs;
    out += "' seq='";
    put_u64(out, seq);
    out += "' ts='";
    put_u64(out, ts_ns);
    out += msg ? "'/></message>" : "'/></presence>";
}

std::string check_stanza(const xml::Node& el, const TextPool& pool, Stamp& got) {
    return check_stanza(el, pool, got, [](const void*, std::uint64_t) {
        return std::pair<std::string, std::string>(kFromJid, kToJid);
    }, nullptr);
}

std::string check_stanza(const xml::Node& el, const TextPool& pool, Stamp& got, JidsOf jids, const void* ctx) {
    const xml::Node* stamp = el.child(kLoadNs, "load");
    if (!stamp) return fmt::format("<{}/> without the <load/> stamp", el.name);
    if (!parse_u64(stamp->attr("seq"), got.seq) || !parse_u64(stamp->attr("ts"), got.ts_ns))
        return fmt::format("bad stamp seq='{}' ts='{}'", stamp->attr("seq"), stamp->attr("ts"));
    Plan p = pool.plan(got.seq);
    const bool msg = p.kind == Kind::Message;
    if (el.ns != kServerNs || el.name != (msg ? "message" : "presence"))
        return fmt::format("seq {}: got <{}/> in '{}', expected <{}/>", got.seq, el.name, el.ns,
                           msg ? "message" : "presence");
    const auto [from_jid, to_jid] = jids(ctx, got.seq);
    if (el.attr("from") != from_jid || el.attr("to") != to_jid)
        return fmt::format("seq {}: from='{}' to='{}'", got.seq, el.attr("from"), el.attr("to"));
    std::string_view id = el.attr("id");
    std::uint64_t idn = 0;
    if (id.size() < 2 || id[0] != 'l' || !parse_u64(id.substr(1), idn) || idn != got.seq)
        return fmt::format("seq {}: id='{}'", got.seq, id);
    if (msg && el.attr("type") != "chat") return fmt::format("seq {}: type='{}'", got.seq, el.attr("type"));
    const xml::Node* text = el.child(kServerNs, msg ? "body" : "status");
    if (!text) return fmt::format("seq {}: no <{}/>", got.seq, msg ? "body" : "status");
    std::string_view want = pool.raw(p);
    if (!text_equals(*text, want)) {
        std::string have = text->text_content();
        auto diff = std::mismatch(have.begin(), have.end(), want.begin(), want.end());
        return fmt::format("seq {}: text differs ({} bytes received, {} expected, first difference at byte {})",
                           got.seq, have.size(), want.size(), diff.first - have.begin());
    }
    return {};
}

std::string check_in_order(const xml::Node& el, std::string_view from_domain, std::string_view to_domain,
                           const TextPool& pool, std::uint64_t expected, Stamp& got) {
    if (from_domain != "a.test" || to_domain != "b.test")
        return fmt::format("stanza from {} to {}, expected a.test -> b.test", from_domain, to_domain);
    if (std::string err = check_stanza(el, pool, got); !err.empty())
        return fmt::format("stanza #{} received: {}", expected, err);
    if (got.seq != expected)
        return got.seq > expected
                   ? fmt::format("stanza(s) missing: expected seq {}, received seq {}", expected, got.seq)
                   : fmt::format("reordered or duplicated: expected seq {}, received seq {}", expected, got.seq);
    return {};
}

} // namespace s2smux::load
