// libFuzzer target for StreamParser (built with -Dfuzz=true, see tests/fuzz/README.md).
//
// Input: byte 0 seeds the chunk sizes, byte 1 picks which element suspends,
// the rest follows a stream header (or replaces it when byte 1 is odd, to
// fuzz the prolog too). Properties checked, on top of the sanitizers and
// the parser's own assertions:
//  - any chunking yields the same events, errors and suspension point;
//  - every delivered element serializes to XML that parses back to the
//    same tree;
//  - its raw bytes (element_raw(), what the gateway forwards), when given,
//    parse back to the same tree too, and are the same for any chunking.
#include "tests/support/xml_dump.h"
#include "xml/stream_parser.h"
#include "xml/writer.h"

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

using namespace s2smux::xml;

namespace {

const std::string_view kHeader =
    "<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams'"
    " xmlns:db='jabber:server:dialback' to='b.example'>";

void check(bool ok) {
    if (!ok) std::abort();
}

void dump(std::string& o, const Node& n) { s2smux::testing::dump_tree(o, n); }

Limits small_limits() {
    Limits l;
    l.max_stanza_bytes = 2048;
    l.max_header_bytes = 512;
    l.max_depth = 6;
    l.max_attrs = 8;
    l.max_attr_value = 128;
    return l;
}

// Re-parses one serialized element and returns its dump ("" on error).
std::string reparse(const std::string& xml) {
    struct One : ParserHandler {
        std::string d;
        bool failed = false;
        bool on_stream_open(const StreamHeader&) override { return true; }
        bool on_element(const Node& el) override {
            dump(d, el);
            return true;
        }
        void on_stream_close() override {}
        void on_parse_error(ParseError, std::string_view) override { failed = true; }
    } h;
    Limits l; // serializing may add declarations: no small limits here
    StreamParser p(h, l);
    p.feed(kHeader);
    p.feed(xml);
    return h.failed ? std::string() : h.d;
}

struct Run : ParserHandler {
    std::string log;
    int suspend_at;   // index of the element whose delivery suspends
    int seen = 0;
    const StreamParser* parser = nullptr;
    bool server_ns = false;
    std::uint64_t suspended_at = 0; // stream offset just past that element
    bool suspended = false;

    explicit Run(int k) : suspend_at(k) {}
    bool on_stream_open(const StreamHeader& h) override {
        log += "open ";
        log.append(h.to);
        server_ns = h.default_ns == "jabber:server"; // as sessions require
        log += '\n';
        return true;
    }
    bool on_element(const Node& el) override {
        std::string d;
        dump(d, el);
        log += d;
        log += '\n';
        std::string xml;
        serialize(xml, el);
        check(reparse(xml) == d);
        const std::string_view raw = parser->element_raw();
        if (!raw.empty() && server_ns) check(reparse(std::string(raw)) == d);
        log += "raw ";
        log.append(raw);
        log += '\n';
        return seen++ != suspend_at;
    }
    void on_stream_close() override { log += "close\n"; }
    void on_parse_error(ParseError e, std::string_view) override {
        log += parse_error_condition(e);
        log += '\n';
    }
};

// Feeds `doc` in chunks; `seed` 0 means all at once.
void feed(Run& r, const std::string& doc, unsigned seed) {
    StreamParser p(r, small_limits());
    r.parser = &p;
    std::uint64_t fed = 0;
    for (std::size_t i = 0; i < doc.size();) {
        std::size_t n = doc.size() - i;
        if (seed) {
            seed = seed * 1103515245u + 12345u;
            n = std::min<std::size_t>(n, 1 + (seed >> 16) % 37);
        }
        const FeedResult fr = p.feed(doc.data() + i, n);
        check(fr.trailing <= n);
        i += n;
        fed += n;
        if (fr.suspended) {
            r.suspended = true;
            r.suspended_at = fed - fr.trailing;
            return;
        }
        if (!fr.ok) return;
    }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 2) return 0;
    const unsigned seed = 1u + data[0];
    const int suspend_at = data[1] / 2 % 16;
    std::string doc;
    if ((data[1] & 1) == 0) doc = kHeader;
    doc.append(reinterpret_cast<const char*>(data + 2), size - 2);

    Run whole(suspend_at), chunked(suspend_at);
    feed(whole, doc, 0);
    feed(chunked, doc, seed);
    check(whole.log == chunked.log);
    check(whole.suspended == chunked.suspended);
    check(whole.suspended_at == chunked.suspended_at);
    return 0;
}
