#include "xml/fragments.h"

#include "xml/stream_parser.h"

namespace s2smux::xml {

namespace {

struct Collector final : ParserHandler {
    const std::function<void(const Node&)>& fn;
    std::string* error;
    bool failed = false;
    Collector(const std::function<void(const Node&)>& f, std::string* e) : fn(f), error(e) {}
    bool on_stream_open(const StreamHeader&) override { return true; }
    bool on_element(const Node& el) override {
        fn(el);
        return true;
    }
    void on_stream_close() override {}
    void on_parse_error(ParseError err, std::string_view detail) override {
        failed = true;
        if (error) *error = std::string(parse_error_condition(err)) + ": " + std::string(detail);
    }
};

} // namespace

bool for_each_element(std::string_view xml, const std::function<void(const Node&)>& fn, std::string* error) {
    Collector c(fn, error);
    Limits lim;
    lim.max_stanza_bytes = 1u << 30; // our own output: already within the limits it was sent under
    lim.max_depth = 1000;
    lim.max_attrs = 10000;
    lim.max_attr_value = 1u << 30;
    StreamParser p(c, lim);
    p.feed("<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams'>");
    if (!c.failed) p.feed(xml);
    return !c.failed;
}

} // namespace s2smux::xml
