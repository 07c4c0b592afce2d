// The s2smux capture format, version 1 (s2smux-capture(5)): one record per
// line, so captures diff, grep and edit like text.
//
//   s2smux-capture 1 <start, RFC 3339 UTC>
//   # a comment
//   S <ms> <stream> key=value...     a stream: kind, peer, session configuration
//   < <ms> <stream> <bytes>          from the peer, after TLS
//   > <ms> <stream> <bytes>          written by the session, before TLS
//   ! <ms> <stream> <call> <arg>...  the host calls the session
//   ~ <ms> <stream> <call> <arg>...  the same, from inside the callback before it
//   @ <ms> <stream> <callback> <arg>...  the session calls its host
//   ? <ms> <stream> <query> <arg>... = <answer>   what the session was told
//   E <ms> <stream> <why>            the capture of this stream ends
//
// <ms> counts milliseconds from the capture's start; <stream> is the
// daemon's stream id. Bytes and arguments are escaped: \xNN for bytes below
// 0x20, 0x7f, '\' and bytes from 0x80 (arguments also escape the space and a
// lone '=' or '-'); an empty argument is '-'.
#pragma once

#include "common/result.h"

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

namespace s2smux::capture {

inline constexpr std::string_view kMagic = "s2smux-capture";
inline constexpr int kVersion = 1;

enum class Kind : char {
    Stream = 'S',
    In = '<',
    Out = '>',
    Call = '!',
    Nested = '~',
    Callback = '@',
    Answer = '?',
    End = 'E',
};

struct Record {
    Kind kind = Kind::In;
    std::uint64_t ms = 0;
    std::uint64_t stream = 0;
    std::string data;              // In, Out: the bytes
    std::string name;              // Call, Nested, Callback, Answer: what; End: why
    std::vector<std::string> args; // Stream: key=value tokens; others: arguments
    std::string answer;            // Answer
    std::size_t line = 0;          // 1-based line in the file (errors, diffs)
};

// Escaping. `arg` also escapes what separates tokens.
void escape(std::string& out, std::string_view bytes, bool arg);
Result<std::string> unescape(std::string_view s);

// One line, without the newline.
std::string header_line(std::string_view start_rfc3339);
void format_bytes(std::string& out, Kind k, std::uint64_t ms, std::uint64_t stream, std::string_view bytes);
void format_call(std::string& out, Kind k, std::uint64_t ms, std::uint64_t stream, std::string_view name,
                 std::initializer_list<std::string_view> args);
void format_call(std::string& out, Kind k, std::uint64_t ms, std::uint64_t stream, std::string_view name,
                 const std::vector<std::string>& args);
void format_answer(std::string& out, std::uint64_t ms, std::uint64_t stream, std::string_view query,
                   std::initializer_list<std::string_view> args, std::string_view answer);

// A whole capture: the header is checked, comments and blank lines skipped.
struct Capture {
    std::string start; // from the header
    std::vector<Record> records;
};
Result<Capture> parse(std::string_view text);
Result<Record> parse_record(std::string_view line, std::size_t lineno);
// Serializes records back (s2smux-replay --rewrite, tests).
std::string format_record(const Record& r);

// "key=value" tokens of an S record.
std::string_view token_value(const std::vector<std::string>& tokens, std::string_view key,
                             std::string_view fallback = {});

} // namespace s2smux::capture
