#include "admin/protocol.h"

#include <fmt/format.h>

#include <algorithm>
#include <exception>

namespace s2smux::admin {

namespace {

bool is_space(char c) { return c == ' ' || c == '\t'; }
bool is_control(char c) {
    auto u = static_cast<unsigned char>(c);
    return (u < 0x20 && c != '\t') || u == 0x7f;
}

std::string join_words(const std::vector<std::string>& words, std::size_t n) {
    std::string out;
    for (std::size_t i = 0; i < n && i < words.size(); ++i) {
        if (i) out += ' ';
        out += words[i];
    }
    return out;
}

// For error messages and logs: control characters as '?', at most `max` bytes.
std::string printable(std::string_view s, std::size_t max = 512) {
    std::string out;
    out.reserve(std::min(s.size(), max));
    for (char c : s) {
        if (out.size() >= max) {
            out += "...";
            break;
        }
        out += is_control(c) ? '?' : c;
    }
    return out;
}

bool starts_with(const std::vector<std::string>& words, const std::vector<std::string>& prefix) {
    if (prefix.size() > words.size()) return false;
    return std::equal(prefix.begin(), prefix.end(), words.begin());
}

} // namespace

// --- Requests ---------------------------------------------------------------

Result<std::vector<std::string>> parse_command_line(std::string_view line) {
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.size() > kMaxLineBytes)
        return make_error(fmt::format("line too long ({} bytes, at most {})", line.size(), kMaxLineBytes));
    std::vector<std::string> words;
    std::size_t i = 0;
    const std::size_t n = line.size();
    while (true) {
        while (i < n && is_space(line[i])) ++i;
        if (i == n) break;
        std::string w;
        if (line[i] == '"') {
            std::size_t start = i++;
            bool closed = false;
            while (i < n) {
                char c = line[i];
                if (c == '"') {
                    closed = true;
                    ++i;
                    break;
                }
                if (c == '\\') {
                    if (i + 1 < n && (line[i + 1] == '"' || line[i + 1] == '\\')) {
                        w += line[i + 1];
                        i += 2;
                        continue;
                    }
                    if (i + 1 >= n) return make_error(fmt::format("unterminated quote at column {}", start + 1));
                    return make_error(fmt::format("bad escape '\\{}' at column {} (only \\\" and \\\\ are allowed)",
                                                  printable(line.substr(i + 1, 1)), i + 1));
                }
                if (is_control(c)) return make_error(fmt::format("control character at column {}", i + 1));
                w += c;
                ++i;
            }
            if (!closed) return make_error(fmt::format("unterminated quote at column {}", start + 1));
            if (i < n && !is_space(line[i]))
                return make_error(fmt::format("unexpected character after closing quote at column {}", i + 1));
        } else {
            while (i < n && !is_space(line[i])) {
                char c = line[i];
                if (c == '"')
                    return make_error(fmt::format("unexpected quote inside a word at column {} "
                                                  "(quote the whole word)", i + 1));
                if (is_control(c)) return make_error(fmt::format("control character at column {}", i + 1));
                w += c;
                ++i;
            }
        }
        words.push_back(std::move(w));
    }
    return words;
}

std::string quote_word(std::string_view word) {
    bool plain = !word.empty() &&
                 std::none_of(word.begin(), word.end(), [](char c) { return is_space(c) || c == '"' || c == '\\'; });
    if (plain) return std::string(word);
    std::string out = "\"";
    for (char c : word) {
        if (c == '"' || c == '\\') out += '\\';
        out += c;
    }
    out += '"';
    return out;
}

Result<std::string> format_command_line(const std::vector<std::string>& words) {
    std::string line;
    for (std::size_t i = 0; i < words.size(); ++i) {
        const auto& w = words[i];
        if (std::any_of(w.begin(), w.end(), is_control))
            return make_error(fmt::format("argument {} ('{}') contains a control character", i + 1, printable(w, 64)));
        if (i) line += ' ';
        line += quote_word(w);
    }
    if (line.size() > kMaxLineBytes)
        return make_error(fmt::format("command too long ({} bytes, at most {})", line.size(), kMaxLineBytes));
    return line;
}

// --- Replies ----------------------------------------------------------------

std::string escape_data_line(std::string_view line) {
    bool esc = line.empty() || line == "OK" || line.substr(0, 3) == "ERR" || line[0] == ' ';
    std::string out;
    out.reserve(line.size() + 1);
    if (esc) out += ' ';
    out += line;
    return out;
}

std::string_view unescape_data_line(std::string_view line) {
    if (!line.empty() && line[0] == ' ') line.remove_prefix(1);
    return line;
}

std::string format_reply(const Reply& reply) {
    std::string out;
    for (const auto& l : reply.lines) {
        std::string_view rest = l;
        while (true) {
            auto nl = rest.find('\n');
            out += escape_data_line(rest.substr(0, nl));
            out += '\n';
            if (nl == std::string_view::npos) break;
            rest.remove_prefix(nl + 1);
        }
    }
    if (reply.error.empty()) {
        out += "OK\n";
    } else {
        out += "ERR ";
        for (char c : reply.error) out += (c == '\n' || c == '\r') ? ' ' : c;
        out += '\n';
    }
    return out;
}

void ReplyReader::feed(std::string_view bytes) {
    if (failed()) return;
    buf_.append(bytes);
    std::size_t pos = 0;
    while (true) {
        auto nl = buf_.find('\n', pos);
        if (nl == std::string::npos) break;
        if (nl - pos > max_line_) {
            error_ = fmt::format("reply line too long ({} bytes, at most {})", nl - pos, max_line_);
            buf_.clear();
            return;
        }
        take_line(std::string_view(buf_).substr(pos, nl - pos));
        pos = nl + 1;
    }
    buf_.erase(0, pos);
    if (buf_.size() > max_line_) {
        error_ = fmt::format("reply line too long (more than {} bytes)", max_line_);
        buf_.clear();
    }
}

void ReplyReader::take_line(std::string_view line) {
    if (!line.empty() && line[0] == ' ') {
        in_reply_ = true;
        current_.lines.emplace_back(unescape_data_line(line));
        return;
    }
    if (line == "OK") {
        current_.error.clear();
    } else if (line.substr(0, 3) == "ERR") {
        std::string_view msg = line.substr(3);
        if (!msg.empty() && msg[0] == ' ') msg.remove_prefix(1);
        current_.error = msg.empty() ? "unspecified error" : std::string(msg);
    } else {
        // Not escaped although it needed no escape: a data line.
        in_reply_ = true;
        current_.lines.emplace_back(line);
        return;
    }
    done_.push_back(std::move(current_));
    current_ = Reply{};
    in_reply_ = false;
}

std::optional<Reply> ReplyReader::next() {
    if (done_.empty()) return std::nullopt;
    Reply r = std::move(done_.front());
    done_.pop_front();
    return r;
}

// --- Commands ---------------------------------------------------------------

std::string Command::usage() const {
    std::string u = join_words(words, words.size());
    if (!params.empty()) u += ' ' + params;
    return u;
}

Dispatcher::Dispatcher(bool standard_commands) {
    if (standard_commands) add_standard();
}

// The standard commands. To add one: a row here (and a Backend method if it
// needs the daemon), a section in man/s2smuxctl.8.scd, a test in test_admin.
void Dispatcher::add_standard() {
    add({{"domains"}, "", "local domains and their state on each mux stream", 0, 0,
         [](const Args&, Backend& b, Done d) { b.domains(std::move(d)); }});
    add({{"certs"}, "", "local and accepted peer certificates: subject, names, expiry", 0, 0,
         [](const Args&, Backend& b, Done d) { b.certs(std::move(d)); }});
    add({{"streams"}, "", "streams: peer, direction, TLS, mux, domains, stanzas and bytes", 0, 0,
         [](const Args&, Backend& b, Done d) { b.streams(std::move(d)); }});
    add({{"stats"}, "", "counters", 0, 0, [](const Args&, Backend& b, Done d) { b.stats(std::move(d)); }});
    add({{"metrics"}, "", "counters, gauges and histograms in the Prometheus text format", 0, 0,
         [](const Args&, Backend& b, Done d) { b.metrics(std::move(d)); }});
    add({{"cert", "add"}, "CERT KEY", "load a certificate and key (PEM files), serve its names on every stream", 2, 2,
         [](const Args& a, Backend& b, Done d) { b.cert_add(a[0], a[1], false, std::move(d)); }});
    add({{"cert", "replace"}, "CERT KEY", "replace the certificate with the same subject, with no gap", 2, 2,
         [](const Args& a, Backend& b, Done d) { b.cert_add(a[0], a[1], true, std::move(d)); }});
    add({{"cert", "remove"}, "DOMAIN", "remove the certificate serving DOMAIN and its names", 1, 1,
         [](const Args& a, Backend& b, Done d) { b.cert_remove(a[0], std::move(d)); }});
    add({{"cert", "new"}, "NAME", "open a certificate transaction NAME (then cert set, cert commit)", 1, 1,
         [](const Args& a, Backend& b, Done d) { b.cert_new(a[0], std::move(d)); }});
    add({{"cert", "set"}, "NAME CERT KEY", "stage a certificate and key in transaction NAME, validated at once", 3, 3,
         [](const Args& a, Backend& b, Done d) { b.cert_set(a[0], a[1], a[2], std::move(d)); }});
    add({{"cert", "commit"}, "NAME", "make the staged certificate live (add or replace), all or nothing", 1, 1,
         [](const Args& a, Backend& b, Done d) { b.cert_commit(a[0], std::move(d)); }});
    add({{"cert", "abort"}, "NAME", "drop transaction NAME, changing nothing", 1, 1,
         [](const Args& a, Backend& b, Done d) { b.cert_abort(a[0], std::move(d)); }});
    add({{"cert", "show"}, "[NAME]", "transactions and live certificates (NAME: a transaction or a domain)", 0, 1,
         [](const Args& a, Backend& b, Done d) { b.cert_show(a.empty() ? std::string() : a[0], std::move(d)); }});
    add({{"reload"}, "", "re-read the configuration and apply it to live streams (an invalid one changes nothing)", 0, 0,
         [](const Args&, Backend& b, Done d) { b.reload(std::move(d)); }});
    add({{"close"}, "PEER [CONDITION]", "close the streams of PEER (sN, domain or address) with a stream error "
         "(default system-shutdown)", 1, 2,
         [](const Args& a, Backend& b, Done d) { b.close_stream(a[0], a.size() > 1 ? a[1] : std::string(), std::move(d)); }});
    add({{"resolve"}, "DOMAIN", "where the gateway would connect for DOMAIN (route, SRV, A/AAAA) and why", 1, 1,
         [](const Args& a, Backend& b, Done d) { b.resolve(a[0], std::move(d)); }});
    add({{"capture", "start"}, "PEER FILE", "record the streams of PEER (domain, *.domain, IP, IP:PORT or *) into FILE "
         "(s2smux-replay(1))", 2, 2,
         [](const Args& a, Backend& b, Done d) { b.capture_start(a[0], a[1], std::move(d)); }});
    add({{"capture", "stop"}, "[FILE|PEER]", "stop the captures into FILE or of PEER (default: all) and close their files",
         0, 1, [](const Args& a, Backend& b, Done d) { b.capture_stop(a.empty() ? std::string() : a[0], std::move(d)); }});
    add({{"captures"}, "", "active captures: file, peer, streams, bytes written and dropped", 0, 0,
         [](const Args&, Backend& b, Done d) { b.captures(std::move(d)); }});
    add({{"help"}, "[COMMAND]", "list the commands (those starting with COMMAND)", 0, kAnyArgs,
         [this](const Args& a, Backend&, Done d) {
             auto lines = help_lines(a);
             if (lines.empty())
                 d(Reply::fail(fmt::format("unknown command '{}' (try 'help')", printable(join_words(a, a.size())))));
             else
                 d(Reply::ok(std::move(lines)));
         }});
}

void Dispatcher::add(Command cmd) {
    for (auto& c : commands_) {
        if (c.words == cmd.words) {
            c = std::move(cmd);
            return;
        }
    }
    commands_.push_back(std::move(cmd));
}

const Command* Dispatcher::find(const std::vector<std::string>& words) const {
    const Command* best = nullptr;
    for (const auto& c : commands_) {
        if (starts_with(words, c.words) && (!best || c.words.size() > best->words.size())) best = &c;
    }
    return best;
}

void Dispatcher::dispatch(const std::vector<std::string>& words, Backend& backend, Done done) const {
    if (words.empty()) {
        done(Reply::fail("empty command (try 'help')"));
        return;
    }
    const Command* cmd = find(words);
    if (!cmd) {
        // How many of the words name a command group ("cert" of "cert bogus").
        std::size_t depth = 0;
        for (const auto& c : commands_) {
            std::size_t k = 0;
            while (k < words.size() && k < c.words.size() && words[k] == c.words[k]) ++k;
            depth = std::max(depth, k);
        }
        if (depth == words.size()) {
            auto group = join_words(words, depth);
            done(Reply::fail(fmt::format("incomplete command '{}' (try 'help {}')", printable(group),
                                         printable(group))));
            return;
        }
        done(Reply::fail(fmt::format("unknown command '{}' (try 'help')", printable(join_words(words, depth + 1)))));
        return;
    }
    Args args(words.begin() + static_cast<std::ptrdiff_t>(cmd->words.size()), words.end());
    if (args.size() < cmd->min_args || args.size() > cmd->max_args) {
        done(Reply::fail("usage: " + cmd->usage()));
        return;
    }
    try {
        cmd->handler(args, backend, done);
    } catch (const std::exception& e) {
        done(Reply::fail(fmt::format("internal error: {}", e.what())));
    }
}

std::string Dispatcher::describe(const std::vector<std::string>& words) const {
    const Command* cmd = find(words);
    std::vector<std::string> shown = words;
    std::string tail;
    if (cmd && !cmd->log_args && words.size() > cmd->words.size()) {
        tail = fmt::format(" ({} argument(s) not logged)", words.size() - cmd->words.size());
        shown.resize(cmd->words.size());
    }
    std::string line;
    for (std::size_t i = 0; i < shown.size(); ++i) {
        if (i) line += ' ';
        line += quote_word(shown[i]);
    }
    return printable(line) + tail;
}

std::vector<std::string> Dispatcher::help_lines(const std::vector<std::string>& prefix) const {
    Table t({"", ""});
    for (const auto& c : commands_) {
        if (starts_with(c.words, prefix)) t.add({c.usage(), c.summary});
    }
    return t.render();
}

// --- Listings ---------------------------------------------------------------

Table& Table::add(std::vector<std::string> row) {
    row.resize(columns_.size());
    rows_.push_back(std::move(row));
    return *this;
}

std::vector<std::string> Table::render() const {
    const std::size_t ncol = columns_.size();
    bool header = std::any_of(columns_.begin(), columns_.end(), [](const Column& c) { return !c.header.empty(); });
    auto cell = [](const std::string& s) -> std::string_view { return s.empty() ? std::string_view("-") : s; };
    std::vector<std::size_t> width(ncol, 0);
    for (std::size_t i = 0; i < ncol; ++i) {
        if (header) width[i] = columns_[i].header.size();
        for (const auto& r : rows_) width[i] = std::max(width[i], cell(r[i]).size());
    }
    auto line = [&](auto get) {
        std::string out;
        for (std::size_t i = 0; i < ncol; ++i) {
            std::string_view s = get(i);
            if (i) out += "  ";
            std::size_t pad = width[i] - std::min(width[i], s.size());
            if (columns_[i].align == Align::Right) out.append(pad, ' ');
            out += s;
            if (columns_[i].align == Align::Left) out.append(pad, ' ');
        }
        while (!out.empty() && out.back() == ' ') out.pop_back();
        return out;
    };
    std::vector<std::string> out;
    out.reserve(rows_.size() + 1);
    if (header) out.push_back(line([&](std::size_t i) -> std::string_view { return columns_[i].header; }));
    for (const auto& r : rows_) out.push_back(line([&](std::size_t i) { return cell(r[i]); }));
    return out;
}

} // namespace s2smux::admin
