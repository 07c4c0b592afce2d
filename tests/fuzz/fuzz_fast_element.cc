// libFuzzer target for parse_fast_element() (built with -Dfuzz=true, see
// tests/fuzz/README.md): the fast path must never accept what libxml2
// refuses, and must build the very tree libxml2's events build.
//
// Input: byte 0 picks the limits (small or default) and the stream's
// default namespace; the rest begins with a top-level element. Whenever
// parse_fast_element() accepts one, its bytes after a stream header,
// fed so that StreamParser gives them to libxml2 (the element begins in an
// earlier chunk), must yield exactly one element, no error, and the same
// dump.
#include "xml/arena.h"
#include "xml/fast_element.h"
#include "tests/support/xml_dump.h"
#include "xml/stream_parser.h"

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

using namespace s2smux::xml;

namespace {

void check(bool ok) {
    if (!ok) std::abort();
}

void dump(std::string& o, const Node& n) { s2smux::testing::dump_tree(o, n); }

struct Libxml : ParserHandler {
    std::string d;
    int elements = 0;
    bool failed = false;
    bool on_stream_open(const StreamHeader&) override { return true; }
    bool on_element(const Node& el) override {
        ++elements;
        dump(d, el);
        return true;
    }
    void on_stream_close() override {}
    void on_parse_error(ParseError, std::string_view) override { failed = true; }
};

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 2) return 0;
    Limits lim;
    if (data[0] & 1) {
        lim.max_depth = 4;
        lim.max_attrs = 4;
        lim.max_attr_value = 16;
    }
    const bool server_ns = (data[0] & 2) == 0;
    std::string_view el(reinterpret_cast<const char*>(data + 1), size - 1);

    Arena arena;
    std::size_t len = 0;
    const Node* fast = parse_fast_element(el, server_ns ? "jabber:server" : "", lim, arena, &len);
    if (!fast) return 0;
    check(len >= 4 && len <= el.size());
    el = el.substr(0, len); // what follows is not its business
    std::string want;
    dump(want, *fast);

    Libxml h;
    StreamParser p(h, lim);
    p.feed(server_ns ? "<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams'>"
                     : "<stream:stream xmlns:stream='http://etherx.jabber.org/streams'>");
    p.feed(el.substr(0, 1));
    p.feed(el.substr(1));
    check(!h.failed);
    check(h.elements == 1);
    check(h.d == want);
    return 0;
}
