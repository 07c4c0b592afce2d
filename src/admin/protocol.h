// The admin socket's line protocol (sans-I/O), shared by the daemon and
// s2smuxctl.
//
// Request: one line of at most kMaxLineBytes bytes (not counting the "\n"; a
// "\r" before it is ignored), words separated by spaces or tabs. A word may
// be double-quoted to hold spaces; inside quotes \" and \\ are the only
// escapes. Blank lines are ignored (they get no reply).
//
// Reply: zero or more data lines, then exactly one terminator line, "OK" or
// "ERR <message>". A data line that is empty, equals "OK", starts with "ERR"
// or starts with a space is sent with one extra leading space, so a reader
// takes the first line that does not start with a space as the terminator
// and removes one leading space from every data line.
//
// Requests on one connection are answered one at a time, in order.
#pragma once

#include "admin/backend.h"
#include "common/result.h"

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace s2smux::admin {

constexpr std::size_t kMaxLineBytes = 4096;

// --- Requests ---------------------------------------------------------------

// Splits a request line into words. Errors: unterminated quote, bad escape,
// a quote inside an unquoted word or right after a closing quote, control
// characters, longer than kMaxLineBytes. A blank line gives no words.
Result<std::vector<std::string>> parse_command_line(std::string_view line);

// A word as it must appear on a request line: unchanged when it is plain,
// otherwise double-quoted with " and \ escaped.
std::string quote_word(std::string_view word);

// The request line for `words` (without the "\n"); fails when a word holds a
// control character (a newline would split the request) or the line would be
// longer than kMaxLineBytes.
Result<std::string> format_command_line(const std::vector<std::string>& words);

// --- Replies ----------------------------------------------------------------

// One data line as sent (without the "\n"), see the escaping rule above.
std::string escape_data_line(std::string_view line);
// The reverse: removes one leading space, if any.
std::string_view unescape_data_line(std::string_view line);

// The complete reply text, every line ending in "\n". Data lines holding "\n"
// are sent as several lines; newlines in the error message become spaces. An
// error reply's data lines are sent before its ERR line.
std::string format_reply(const Reply& reply);

// Client side: feed received bytes, take replies as their terminators arrive
// (several, if requests were pipelined).
class ReplyReader {
public:
    explicit ReplyReader(std::size_t max_line = 1 << 20) : max_line_(max_line) {}

    // Appends bytes. After an error (a line longer than max_line) further
    // input is ignored.
    void feed(std::string_view bytes);
    // The next complete reply, oldest first.
    std::optional<Reply> next();

    bool failed() const { return !error_.empty(); }
    const std::string& error() const { return error_; }
    // Nothing of an unfinished reply is buffered (EOF here is a clean end).
    bool idle() const { return buf_.empty() && current_.lines.empty() && !in_reply_; }

private:
    void take_line(std::string_view line);

    std::size_t max_line_;
    std::string buf_;
    Reply current_;
    bool in_reply_ = false; // data lines of current_ received
    std::deque<Reply> done_;
    std::string error_;
};

// --- Commands ---------------------------------------------------------------

using Args = std::vector<std::string>;
// Must call `done` exactly once, now or later, on the loop thread.
using Handler = std::function<void(const Args& args, Backend& backend, Done done)>;

constexpr std::size_t kAnyArgs = std::numeric_limits<std::size_t>::max();

struct Command {
    std::vector<std::string> words; // {"cert", "add"}
    std::string params;             // usage text after the words: "CERT KEY"
    std::string summary;            // one line for `help`
    std::size_t min_args = 0;
    std::size_t max_args = 0;       // kAnyArgs: no limit
    Handler handler;
    bool log_args = true;           // false: the log names the command only (secrets, PEM text)

    std::string usage() const;      // "cert add CERT KEY"
};

// The command table. Built with the standard commands (domains, certs,
// streams, stats, metrics, cert ..., reload, close, resolve, capture ...,
// captures, help); add() more or replace one.
// Not copyable: `help` refers to the table it belongs to.
class Dispatcher {
public:
    explicit Dispatcher(bool standard_commands = true);
    Dispatcher(const Dispatcher&) = delete;
    Dispatcher& operator=(const Dispatcher&) = delete;

    // Adds a command, or replaces the one with the same words.
    void add(Command cmd);
    const std::vector<Command>& commands() const { return commands_; }

    // The command `words` start with (the longest match), or nullptr.
    const Command* find(const std::vector<std::string>& words) const;

    // Runs the command: answers usage and lookup errors itself, otherwise
    // calls its handler (an exception from it becomes "ERR internal error").
    void dispatch(const std::vector<std::string>& words, Backend& backend, Done done) const;

    // The command as it may be logged: quoted, control characters replaced,
    // arguments left out for commands with log_args = false, at most 512 bytes.
    std::string describe(const std::vector<std::string>& words) const;

    // `help` output: "USAGE  SUMMARY" lines, aligned, for the commands whose
    // words start with `prefix` (all for an empty prefix).
    std::vector<std::string> help_lines(const std::vector<std::string>& prefix = {}) const;

private:
    void add_standard();
    std::vector<Command> commands_;
};

// --- Listings ---------------------------------------------------------------

// Aligned text columns for reply data lines, the way every listing is shown:
//
//   PEER            DIR  TLS      MUX  STANZAS_IN  STANZAS_OUT
//   b.test          out  TLS1.3   on          120           98
//
// Columns are separated by two spaces; an empty cell is shown as "-" so the
// output stays splittable on whitespace (cells should not hold spaces). The
// header line is left out when every header is empty (key/value listings).
class Table {
public:
    enum class Align { Left, Right };
    static constexpr Align Left = Align::Left;
    static constexpr Align Right = Align::Right;
    struct Column {
        Column(const char* h, Align a = Align::Left) : header(h), align(a) {}
        Column(std::string h, Align a = Align::Left) : header(std::move(h)), align(a) {}
        std::string header;
        Align align;
    };

    Table(std::initializer_list<Column> columns) : columns_(columns) {}
    explicit Table(std::vector<Column> columns) : columns_(std::move(columns)) {}

    // Missing cells are empty; extra cells are ignored.
    Table& add(std::vector<std::string> row);
    std::size_t rows() const { return rows_.size(); }

    std::vector<std::string> render() const;

private:
    std::vector<Column> columns_;
    std::vector<std::vector<std::string>> rows_;
};

} // namespace s2smux::admin
