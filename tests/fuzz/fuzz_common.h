// Shared by the fuzz targets: invariant checks that abort (so libFuzzer
// saves the input), and a checker for the bytes a Session writes.
#pragma once

#include "xml/stream_parser.h"
#include "xmpp/errors.h"
#include "xmpp/ns.h"
#include "xmpp/session.h"

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace s2smux::fuzz {

[[noreturn]] inline void fail(const char* cond, std::string_view what = {}, std::string_view detail = {},
                              std::string_view more = {}) {
    std::fprintf(stderr, "INVARIANT BROKEN: %s %.*s %.*s %.*s\n", cond, static_cast<int>(what.size()), what.data(),
                 static_cast<int>(detail.size()), detail.data(), static_cast<int>(more.size()), more.data());
    std::abort();
}

#define FUZZ_CHECK(cond, ...) \
    do {                      \
        if (!(cond)) ::s2smux::fuzz::fail("(" #cond ")" __VA_OPT__(, ) __VA_ARGS__); \
    } while (0)

// Parses everything a Session sent, as its peer would: each stream header
// the session writes starts a new parser (stream restarts after STARTTLS and
// SASL). Checks that the output is well-formed, that a <stream:error/> names
// an RFC 6120 condition and is the last thing before </stream:stream>, and
// hands every other top-level element to `on_element_cb`.
class OutputCheck final : public xml::ParserHandler {
public:
    std::function<void(const xml::Node&)> on_element_cb;
    std::string stream_error; // condition of the <stream:error/> received, if any
    bool closed = false;      // </stream:stream> seen in the current generation

    // The stream restarts under TLS: what follows must open a new stream.
    void restart() { parser_.reset(); }
    // A receiver's <success/> is a restart point too: after it, the same
    // output may only carry a stream error (the restart was refused).
    void set_role(xmpp::Role r) { receiver_ = r == xmpp::Role::Receiver; }

    void add(std::string_view out) {
        static constexpr std::string_view kHeader = "<?xml version='1.0'?><stream:stream ";
        while (!out.empty()) {
            auto h = out.find(kHeader, 1);
            std::string_view part = out.substr(0, h);
            if (out.substr(0, kHeader.size()) == kHeader) {
                parser_ = std::make_unique<xml::StreamParser>(*this);
                closed = false;
                stream_error.clear();
            }
            FUZZ_CHECK(parser_, "output where a new stream header must come:", part);
            FUZZ_CHECK(!closed, "output after </stream:stream>:", part);
            parser_->feed(part);
            // Past a restart point only a new stream may follow (or, when the
            // restart is refused, a stream error).
            if (at_restart_ && !closed) parser_.reset();
            at_restart_ = false;
            out.remove_prefix(part.size());
        }
    }
    // A stream is open towards the peer (a header was sent, no restart since).
    bool open() const { return parser_ != nullptr; }

private:
    bool on_stream_open(const xml::StreamHeader&) override { return true; }
    bool on_element(const xml::Node& el) override {
        FUZZ_CHECK(stream_error.empty(), "element after a stream error:", el.name);
        if (el.is(xmpp::ns::kStream, "error")) {
            at_restart_ = false;
            const xml::Node* cond = nullptr;
            for (const xml::Node* c = el.first; c; c = c->next) {
                FUZZ_CHECK(c->kind == xml::Node::Kind::Element && c->ns == xmpp::ns::kStreams,
                           "stream error child outside the streams namespace");
                if (c->name != "text") {
                    FUZZ_CHECK(!cond, "two stream error conditions");
                    cond = c;
                }
            }
            xmpp::StreamError e;
            FUZZ_CHECK(cond && xmpp::parse_stream_error(cond->name, e), "undefined stream error condition");
            stream_error = std::string(cond->name);
            return true;
        }
        FUZZ_CHECK(!at_restart_, "output after a stream restart point:", el.name);
        if (on_element_cb) on_element_cb(el);
        if (receiver_ && el.is(xmpp::ns::kSasl, "success")) at_restart_ = true;
        return true;
    }
    void on_stream_close() override { closed = true; }
    void on_parse_error(xml::ParseError e, std::string_view detail) override {
        fail("the session wrote malformed XML:", xml::parse_error_condition(e), detail);
    }

    std::unique_ptr<xml::StreamParser> parser_;
    bool receiver_ = false;
    bool at_restart_ = false;
};

} // namespace s2smux::fuzz
