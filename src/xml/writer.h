// Streaming XML writer used to build outgoing elements without a DOM, and a
// serializer for parsed Nodes (forwarding stanzas). Output goes straight into
// the caller's buffer. Attribute values use single quotes.
#pragma once

#include "xml/element.h"

#include <cstddef>
#include <string>
#include <string_view>

namespace s2smux::xml {

void escape_text(std::string& out, std::string_view s);
void escape_attr(std::string& out, std::string_view s);
// Strict UTF-8 of XML characters: no overlong forms, surrogates, values
// past U+10FFFF or control characters (tab, LF and CR are allowed).
bool valid_xml_utf8(const unsigned char* s, std::size_t n);
// Length (2-4) of the one non-ASCII XML character encoded at s[0..n) under
// the rules above, or 0 when it is not one (or is cut off at n).
inline std::size_t xml_utf8_char_len(const unsigned char* s, std::size_t n) {
    const unsigned c = n ? s[0] : 0;
    std::size_t len;
    unsigned cp;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
        cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (n < len) return 0;
    for (std::size_t k = 1; k < len; ++k) {
        if ((s[k] & 0xC0) != 0x80) return 0;
        cp = cp << 6 | (s[k] & 0x3F);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF))) return 0;
    if ((cp >= 0xD800 && cp <= 0xDFFF) || cp == 0xFFFE || cp == 0xFFFF) return 0;
    return len;
}
inline bool valid_xml_utf8(std::string_view s) {
    return valid_xml_utf8(reinterpret_cast<const unsigned char*>(s.data()), s.size());
}

// Serializes `el` as it would appear inside a stream whose default namespace
// is `default_ns` ("jabber:server"). Elements in another namespace get an
// xmlns declaration; jabber:server:dialback elements use the "db:" prefix the
// stream header declares; other namespaced attributes (besides xml:) get a
// generated prefix declared on their element.
void serialize(std::string& out, const Node& el, std::string_view default_ns = "jabber:server");

// Serializes only the children of `el` (its inner XML) with the same rules,
// with `el`'s own namespace as the inherited default.
void serialize_children(std::string& out, const Node& el, std::string_view default_ns = "jabber:server");

class Writer {
public:
    explicit Writer(std::string& out) : out_(out) {}

    // Open a start tag: "<name". `name` may carry a prefix ("db:result").
    // At most 32 levels may be open (deeper elements are dropped; asserted).
    Writer& open(std::string_view name);
    // Add an attribute to the tag opened last (skipped when value is empty
    // and skip_empty is true).
    Writer& attr(std::string_view name, std::string_view value, bool skip_empty = false);
    Writer& xmlns(std::string_view uri) { return attr("xmlns", uri); }
    // Add escaped text content (closes the start tag first; empty text adds
    // nothing, so the element can still be written as "<x/>").
    Writer& text(std::string_view s);
    // Add raw, already well-formed XML (closes the start tag first).
    Writer& raw(std::string_view xml);
    // Close the innermost open element ("/>" if it has no content).
    Writer& close();
    // Close everything still open.
    void finish();

private:
    void end_start_tag();
    static constexpr int kMaxDepth = 32;
    std::string& out_;
    struct Frame {
        std::size_t name_pos; // the element name's position in out_ (a
        std::size_t name_len; // caller's view could dangle before close())
        bool has_content;
    };
    Frame stack_[kMaxDepth];
    int depth_ = 0;
    bool in_start_tag_ = false;
};

} // namespace s2smux::xml
