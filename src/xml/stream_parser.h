// XMPP XML stream parser over libxml2's push SAX2 API (sans-I/O).
//
// Feeds arbitrary byte chunks; reports the stream header, each complete
// top-level child of <stream:stream> as a Node tree, and the stream close.
// Enforces RFC 6120 §11 restricted XML (no DTD, comments, processing
// instructions, entity declarations or non-predefined entity references)
// and size/shape limits, reporting violations as XMPP stream error
// conditions so the session can answer with the right <stream:error/>.
#pragma once

#include "xml/arena.h"
#include "xml/element.h"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace s2smux::xml {

struct Limits {
    std::size_t max_stanza_bytes = 512 * 1024; // bytes of one top-level element
    std::size_t max_header_bytes = 4096;       // bytes of the stream header
    unsigned max_depth = 32;                   // element depth inside a stanza
    unsigned max_attrs = 64;                   // attributes per element
    std::size_t max_attr_value = 16 * 1024;    // bytes of one attribute value
};

enum class ParseError : std::uint8_t {
    None,
    NotWellFormed,    // <not-well-formed/>
    RestrictedXml,    // <restricted-xml/>: DTD, comment, PI, entity decl/ref
    PolicyViolation,  // <policy-violation/>: a Limits bound was exceeded
    InvalidNamespace, // <invalid-namespace/>: stream element not in the streams namespace
    BadFormat,        // <bad-format/>: e.g. text directly at stream level
};

const char* parse_error_condition(ParseError e); // "not-well-formed", ...

struct StreamHeader {
    std::string_view name;          // local name, must be "stream"
    std::string_view ns;            // namespace URI of the root element
    std::string_view default_ns;    // xmlns='...' declared on the header ("jabber:server")
    std::string_view from, to, id, version, lang;
    bool declares_dialback = false; // xmlns:db='jabber:server:dialback'
};

// Callbacks run inside StreamParser::feed() (within libxml2): they must not
// throw, nor call feed() or reset() on the same parser (do that after feed()
// returns). Header views, like Node views, stay valid until the next
// top-level element starts.
class ParserHandler {
public:
    virtual ~ParserHandler() = default;
    // Return false to suspend: no further events until reset() (used for
    // stream restarts after STARTTLS / SASL success).
    virtual bool on_stream_open(const StreamHeader& hdr) = 0;
    virtual bool on_element(const Node& el) = 0;
    virtual void on_stream_close() = 0;
    virtual void on_parse_error(ParseError err, std::string_view detail) = 0;
};

struct FeedResult {
    bool ok = true;              // false after a parse error (reported via the handler)
    bool suspended = false;      // a handler returned false
    std::size_t trailing = 0;    // bytes of this chunk after the suspending element
    bool trailing_nonspace = false; // those bytes contain non-whitespace
};

class StreamParser {
public:
    StreamParser(ParserHandler& h, Limits limits = {});
    ~StreamParser();
    StreamParser(const StreamParser&) = delete;
    StreamParser& operator=(const StreamParser&) = delete;

    FeedResult feed(const char* data, std::size_t len);
    FeedResult feed(std::string_view s) { return feed(s.data(), s.size()); }

    // Starts a fresh stream (new libxml2 context state, arena kept).
    void reset();

    // Inside on_element(): the element's bytes as received (from its '<' to
    // its last '>'), when they can be written as they are into any stream
    // whose default namespace is jabber:server, i.e. every prefix they use
    // (xml: aside) is declared inside them. Empty otherwise; then the Node
    // must be serialized.
    std::string_view element_raw() const;

    const Limits& limits() const { return limits_; }
    void set_limits(const Limits& l) { limits_ = l; }

    // Memory held by the parser (tests, monitoring). Bounded by the limits:
    // consumed input is not kept, buffers grown for one huge stanza are
    // released after it, and libxml2's context is rebuilt when a peer
    // inflates its name dictionary with ever-new names.
    struct Memory {
        std::size_t arena_used = 0;     // bytes of the current element's tree
        std::size_t arena_reserved = 0; // arena chunks kept for reuse
        std::size_t held_input = 0;     // incomplete markup buffered by feed()
        std::size_t libxml_input = 0;   // bytes in libxml2's input buffer
        std::size_t libxml_dict = 0;    // libxml2 name dictionary
    };
    Memory memory() const;

    struct Impl;

private:
    std::unique_ptr<Impl> impl_;
    Limits limits_;
};

} // namespace s2smux::xml
