// Deterministic stanza content for the load tool. Both ends derive a
// stanza's kind and text from its sequence number, so the sink checks every
// byte it receives without the generator keeping copies of what is in flight.
#pragma once

#include "xml/element.h"

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace s2smux::load {

inline constexpr std::string_view kFromJid = "gen@a.test/load";
inline constexpr std::string_view kToJid = "sink@b.test";
inline constexpr std::string_view kLoadNs = "urn:s2smux:load";

enum class Kind : std::uint8_t { Presence, Message };

struct Plan {
    Kind kind = Kind::Message;
    std::uint32_t tok_begin = 0, tok_end = 0; // token range of the text in the pool
};

// A pool of UTF-8 text cut into tokens (words, punctuation, markup
// characters, multi-byte characters), kept raw and XML-escaped, so that a
// stanza's text is a slice of each and never splits a character.
class TextPool {
public:
    // ascii: no multi-byte UTF-8 (libxml2 parses pure ASCII character data
    // on a fast path, anything else character by character).
    TextPool(std::uint64_t seed, bool ascii);

    // Mix: 30 % presence with a ~60-120 byte status (~250 B stanza), 70 %
    // messages with a body of 200 B to 4 KiB (log-uniform).
    Plan plan(std::uint64_t seq) const;
    std::string_view raw(const Plan& p) const {
        return std::string_view(raw_).substr(raw_off_[p.tok_begin], raw_off_[p.tok_end] - raw_off_[p.tok_begin]);
    }
    std::string_view escaped(const Plan& p) const {
        return std::string_view(esc_).substr(esc_off_[p.tok_begin], esc_off_[p.tok_end] - esc_off_[p.tok_begin]);
    }

private:
    std::uint64_t seed_;
    std::string raw_, esc_;
    std::vector<std::uint32_t> raw_off_, esc_off_; // token boundaries (tokens + 1 entries)
    std::uint32_t max_start_ = 0;                  // last token a 4 KiB slice may start at
};

// Appends stanza `seq`, stamped with `ts_ns` (uv_hrtime()).
void write_stanza(std::string& out, const TextPool& pool, std::uint64_t seq, std::uint64_t ts_ns);
// The same between other addresses (s2smux-bench's N x M pairs).
void write_stanza(std::string& out, const TextPool& pool, std::uint64_t seq, std::uint64_t ts_ns,
                  std::string_view from_jid, std::string_view to_jid);

struct Stamp {
    std::uint64_t seq = 0;
    std::uint64_t ts_ns = 0;
};

// Checks a received stanza against what its sequence number says it must
// carry: element name, addresses, id and the exact text. Returns an empty
// string and fills `got`, or says what is wrong.
std::string check_stanza(const xml::Node& el, const TextPool& pool, Stamp& got);
// The same; the addresses must be these. (The seq is parsed first: the
// caller may derive them from got.seq, so they are passed as a function.)
using JidsOf = std::pair<std::string, std::string> (*)(const void* ctx, std::uint64_t seq);
std::string check_stanza(const xml::Node& el, const TextPool& pool, Stamp& got, JidsOf jids, const void* ctx);

// The generator's a.test -> b.test stanza number `expected`, received by the
// sink: domains, content (check_stanza) and order. Empty, or what is wrong.
std::string check_in_order(const xml::Node& el, std::string_view from_domain, std::string_view to_domain,
                           const TextPool& pool, std::uint64_t expected, Stamp& got);

} // namespace s2smux::load
