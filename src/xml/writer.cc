#include "xml/writer.h"

#include <array>
#include <cassert>
#include <charconv>
#include <cstdint>

namespace s2smux::xml {

namespace {

constexpr std::string_view kDialbackNs = "jabber:server:dialback";
constexpr std::string_view kXmlNs = "http://www.w3.org/XML/1998/namespace";

// Replacement for each byte that needs one, in text (1) or attributes (2).
struct EscapeTable {
    std::array<std::uint8_t, 256> need{};
    std::array<std::string_view, 256> rep{};
    constexpr EscapeTable() {
        set('&', "&amp;", 3);
        set('<', "&lt;", 3);
        set('>', "&gt;", 3);
        // A literal CR would come back as LF (line-end normalisation).
        set('\r', "&#13;", 3);
        set('\'', "&apos;", 2);
        set('"', "&quot;", 2);
        // Attribute-value normalisation turns literal TAB/LF into spaces.
        set('\t', "&#9;", 2);
        set('\n', "&#10;", 2);
    }
    constexpr void set(unsigned char c, std::string_view r, std::uint8_t mask) {
        need[c] = mask;
        rep[c] = r;
    }
};
constexpr EscapeTable kEscape;

void escape(std::string& out, std::string_view s, std::uint8_t mask) {
    std::size_t run = 0; // start of the pending unescaped run
    for (std::size_t i = 0; i < s.size(); ++i) {
        const auto c = static_cast<unsigned char>(s[i]);
        if (!(kEscape.need[c] & mask)) continue;
        out.append(s.data() + run, i - run);
        out.append(kEscape.rep[c]);
        run = i + 1;
    }
    out.append(s.data() + run, s.size() - run);
}

void put_attr(std::string& out, std::string_view prefix, std::string_view name, std::string_view value) {
    out += ' ';
    if (!prefix.empty()) {
        out.append(prefix);
        out += ':';
    }
    out.append(name);
    out += "='";
    escape_attr(out, value);
    out += '\'';
}

// The default namespace in scope inside `el` when it is written where
// `inherited` is the default: dialback elements are prefixed and leave it.
std::string_view inner_default(const Node& el, std::string_view inherited) {
    return el.ns == kDialbackNs ? inherited : el.ns;
}

// Namespaced attributes get an "nsN" prefix, N being the position of the
// first attribute in that namespace, declared on the element before use.
void put_attrs(std::string& out, const Node& el) {
    for (const Attr* a = el.attrs; a; a = a->next) {
        if (a->ns.empty()) {
            put_attr(out, {}, a->name, a->value);
            continue;
        }
        if (a->ns == kXmlNs) {
            put_attr(out, "xml", a->name, a->value);
            continue;
        }
        unsigned idx = 0;
        const Attr* first = el.attrs;
        for (; first != a && first->ns != a->ns; first = first->next) ++idx;
        char prefix[16] = {'n', 's'};
        const auto res = std::to_chars(prefix + 2, prefix + sizeof prefix, idx);
        const std::string_view pfx(prefix, static_cast<std::size_t>(res.ptr - prefix));
        if (first == a) put_attr(out, "xmlns", pfx, a->ns);
        put_attr(out, pfx, a->name, a->value);
    }
}

void put_name(std::string& out, const Node& el) {
    if (el.ns == kDialbackNs) out += "db:";
    out.append(el.name);
}

void put_children(std::string& out, const Node& el, std::string_view inherited);

void put_element(std::string& out, const Node& el, std::string_view inherited) {
    out += '<';
    put_name(out, el);
    if (el.ns != kDialbackNs && el.ns != inherited) put_attr(out, {}, "xmlns", el.ns);
    put_attrs(out, el);
    if (!el.first) {
        out += "/>";
        return;
    }
    out += '>';
    put_children(out, el, inner_default(el, inherited));
    out += "</";
    put_name(out, el);
    out += '>';
}

void put_children(std::string& out, const Node& el, std::string_view inherited) {
    for (const Node* c = el.first; c; c = c->next) {
        if (c->kind == Node::Kind::Text)
            escape_text(out, c->text);
        else
            put_element(out, *c, inherited);
    }
}

} // namespace

bool valid_xml_utf8(const unsigned char* s, std::size_t n) {
    for (std::size_t i = 0; i < n;) {
        const unsigned c = s[i];
        if (c < 0x80) {
            if (c < 0x20 && c != '\t' && c != '\n' && c != '\r') return false;
            ++i;
            continue;
        }
        const std::size_t len = xml_utf8_char_len(s + i, n - i);
        if (len == 0) return false;
        i += len;
    }
    return true;
}

void escape_text(std::string& out, std::string_view s) { escape(out, s, 1); }

void escape_attr(std::string& out, std::string_view s) { escape(out, s, 2); }

void serialize(std::string& out, const Node& el, std::string_view default_ns) {
    if (el.kind == Node::Kind::Text)
        escape_text(out, el.text);
    else
        put_element(out, el, default_ns);
}

void serialize_children(std::string& out, const Node& el, std::string_view default_ns) {
    put_children(out, el, inner_default(el, default_ns));
}

// Frames hold the name's position in `out_`, not the caller's view, so a
// temporary name stays safe. Past kMaxDepth levels elements are dropped
// whole (a programming error; asserted) rather than written unbalanced.
Writer& Writer::open(std::string_view name) {
    assert(depth_ < kMaxDepth);
    if (depth_ >= kMaxDepth) {
        ++depth_;
        return *this;
    }
    end_start_tag();
    if (depth_ > 0) stack_[depth_ - 1].has_content = true;
    out_ += '<';
    stack_[depth_++] = {out_.size(), name.size(), false};
    out_.append(name);
    in_start_tag_ = true;
    return *this;
}

Writer& Writer::attr(std::string_view name, std::string_view value, bool skip_empty) {
    assert(in_start_tag_ || depth_ > kMaxDepth);
    if (!in_start_tag_ || depth_ > kMaxDepth || (skip_empty && value.empty())) return *this;
    put_attr(out_, {}, name, value);
    return *this;
}

Writer& Writer::text(std::string_view s) {
    if (s.empty() || depth_ > kMaxDepth) return *this;
    end_start_tag();
    if (depth_ > 0) stack_[depth_ - 1].has_content = true;
    escape_text(out_, s);
    return *this;
}

Writer& Writer::raw(std::string_view xml) {
    if (xml.empty() || depth_ > kMaxDepth) return *this;
    end_start_tag();
    if (depth_ > 0) stack_[depth_ - 1].has_content = true;
    out_.append(xml);
    return *this;
}

Writer& Writer::close() {
    assert(depth_ > 0);
    if (depth_ == 0) return *this;
    if (depth_ > kMaxDepth) {
        --depth_;
        return *this;
    }
    const Frame& f = stack_[--depth_];
    if (!f.has_content) {
        out_ += "/>";
    } else {
        out_ += "</";
        out_.append(out_, f.name_pos, f.name_len);
        out_ += '>';
    }
    in_start_tag_ = false;
    return *this;
}

void Writer::finish() {
    while (depth_ > 0) close();
}

void Writer::end_start_tag() {
    if (!in_start_tag_) return;
    out_ += '>';
    in_start_tag_ = false;
}

} // namespace s2smux::xml
