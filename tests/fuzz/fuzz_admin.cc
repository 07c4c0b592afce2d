// libFuzzer target: the admin socket's line protocol (admin/protocol.h).
//
// Input: the first line is a request line; byte 0 also seeds the chunk
// sizes; every line after the first is a data line of the backend's reply.
// Invariants, on top of the sanitizers:
//  - parse_command_line() accepts what format_command_line() makes of the
//    words it returned, and gives back the same words; quote_word() of one
//    word parses back to that word;
//  - Dispatcher::dispatch() answers exactly once (the stub backend answers
//    at once), describe() stays short and printable;
//  - format_reply() read back by a ReplyReader, in any chunking, is the
//    same reply (data lines split at "\n", newlines in the error as spaces);
//  - a ReplyReader fed the raw input gives the same replies in any chunking.
#include "admin/protocol.h"
#include "fuzz_common.h"

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

using namespace s2smux;
using namespace s2smux::admin;

namespace {

struct StubBackend final : Backend {
    std::vector<std::string> lines;
    bool fail = false;
    int calls = 0;
    void answer(const Done& done) {
        ++calls;
        done(fail ? Reply::fail(lines.empty() ? "failed" : lines.front()) : Reply::ok(lines));
    }
    void domains(Done d) override { answer(d); }
    void certs(Done d) override { answer(d); }
    void streams(Done d) override { answer(d); }
    void stats(Done d) override { answer(d); }
    void cert_add(std::string, std::string, bool, Done d) override { answer(d); }
    void cert_remove(std::string, Done d) override { answer(d); }
    void metrics(Done d) override { answer(d); }
    void cert_new(std::string, Done d) override { answer(d); }
    void cert_set(std::string, std::string, std::string, Done d) override { answer(d); }
    void cert_commit(std::string, Done d) override { answer(d); }
    void cert_abort(std::string, Done d) override { answer(d); }
    void cert_show(std::string, Done d) override { answer(d); }
    void reload(Done d) override { answer(d); }
    void close_stream(std::string, std::string, Done d) override { answer(d); }
    void resolve(std::string, Done d) override { answer(d); }
    void capture_start(std::string, std::string, Done d) override { answer(d); }
    void capture_stop(std::string, Done d) override { answer(d); }
    void captures(Done d) override { answer(d); }
};

bool printable(std::string_view s) {
    for (char c : s) {
        auto u = static_cast<unsigned char>(c);
        if ((u < 0x20 && c != '\t') || u == 0x7f) return false;
    }
    return true;
}

// All replies a reader gives for `bytes` fed in chunks from `seed` (0: at once).
std::vector<Reply> read_replies(std::string_view bytes, unsigned seed, bool* failed, std::size_t max_line = 256) {
    ReplyReader rr(max_line);
    std::vector<Reply> out;
    while (!bytes.empty()) {
        std::size_t n = bytes.size();
        if (seed) {
            seed = seed * 1103515245u + 12345u;
            n = std::min<std::size_t>(n, 1 + (seed >> 16) % 17);
        }
        rr.feed(bytes.substr(0, n));
        bytes.remove_prefix(n);
        while (auto r = rr.next()) out.push_back(std::move(*r));
    }
    *failed = rr.failed();
    return out;
}

bool same(const Reply& a, const Reply& b) { return a.lines == b.lines && a.error == b.error; }

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::string_view in(reinterpret_cast<const char*>(data), size);
    const unsigned seed = size ? 1u + data[0] : 1u;
    auto nl = in.find('\n');
    std::string_view line = in.substr(0, nl);

    StubBackend backend;
    if (nl != std::string_view::npos) {
        std::string_view rest = in.substr(nl + 1);
        while (!rest.empty()) {
            auto e = rest.find('\n');
            backend.lines.emplace_back(rest.substr(0, e));
            rest.remove_prefix(e == std::string_view::npos ? rest.size() : e + 1);
        }
    }
    backend.fail = seed & 1;

    // Requests.
    auto words = parse_command_line(line);
    if (words) {
        for (const auto& w : *words) {
            FUZZ_CHECK(!w.empty() || line.find("\"\"") != std::string_view::npos, "empty word from", line);
            auto one = parse_command_line(quote_word(w));
            FUZZ_CHECK(one && one->size() == 1 && (*one)[0] == w, "quote_word does not round-trip:", w);
        }
        auto formatted = format_command_line(*words);
        if (formatted) {
            auto again = parse_command_line(*formatted);
            FUZZ_CHECK(again && *again == *words, "format_command_line does not round-trip:", *formatted);
        }

        Dispatcher d;
        int answers = 0;
        Reply got;
        d.dispatch(*words, backend, [&](Reply r) {
            ++answers;
            got = std::move(r);
        });
        FUZZ_CHECK(answers == 1, "dispatch did not answer exactly once:", line);
        FUZZ_CHECK(backend.calls <= 1);
        std::string desc = d.describe(*words);
        FUZZ_CHECK(desc.size() <= 512 + 3 && printable(desc), "describe:", desc);

        // The reply as the client reads it.
        std::string wire = format_reply(got);
        Reply want;
        for (const auto& l : got.lines) {
            std::string_view rest = l;
            for (;;) {
                auto e = rest.find('\n');
                want.lines.emplace_back(rest.substr(0, e));
                if (e == std::string_view::npos) break;
                rest.remove_prefix(e + 1);
            }
        }
        for (char c : got.error) want.error += c == '\n' || c == '\r' ? ' ' : c;
        bool failed = false;
        auto replies = read_replies(wire, seed, &failed, 1 << 20);
        FUZZ_CHECK(!failed && replies.size() == 1 && same(replies[0], want), "reply does not round-trip:", wire);
    }

    // Raw bytes as a reply stream: chunking never changes what is read.
    bool failed_whole = false, failed_chunked = false;
    auto whole = read_replies(in, 0, &failed_whole);
    auto chunked = read_replies(in, seed, &failed_chunked);
    FUZZ_CHECK(failed_whole == failed_chunked, "reader failure depends on chunking");
    if (!failed_whole) {
        FUZZ_CHECK(whole.size() == chunked.size(), "reply count depends on chunking");
        for (std::size_t i = 0; i < whole.size(); ++i) FUZZ_CHECK(same(whole[i], chunked[i]), "reply depends on chunking");
    }
    return 0;
}
