// A parsed top-level element (stanza, stream feature, dialback, SASL, ...) as
// a tiny DOM living in the parser's Arena. Views stay valid until the parser
// delivers the next top-level element; copy what must outlive that.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace s2smux::xml {

struct Attr {
    std::string_view ns;    // namespace URI, empty for unqualified attributes
    std::string_view name;  // local name
    std::string_view value; // unescaped
    Attr* next = nullptr;
};

struct Node {
    enum class Kind : std::uint8_t { Element, Text };
    Kind kind = Kind::Element;
    Node* next = nullptr;  // next sibling
    Node* parent = nullptr;

    // Element
    std::string_view ns;   // namespace URI
    std::string_view name; // local name
    Attr* attrs = nullptr;
    Node* first = nullptr; // first child
    Node* last = nullptr;

    // Text (unescaped character data)
    std::string_view text;

    bool is(std::string_view ns_, std::string_view name_) const {
        return kind == Kind::Element && name == name_ && ns == ns_;
    }

    // Unqualified attribute value, or empty view when absent.
    std::string_view attr(std::string_view local) const {
        for (const Attr* a = attrs; a; a = a->next)
            if (a->ns.empty() && a->name == local) return a->value;
        return {};
    }
    bool has_attr(std::string_view local) const {
        for (const Attr* a = attrs; a; a = a->next)
            if (a->ns.empty() && a->name == local) return true;
        return false;
    }
    std::string_view attr_ns(std::string_view ns_, std::string_view local) const {
        for (const Attr* a = attrs; a; a = a->next)
            if (a->ns == ns_ && a->name == local) return a->value;
        return {};
    }

    // First child element with this namespace and name (nullptr if none).
    const Node* child(std::string_view ns_, std::string_view name_) const {
        for (const Node* c = first; c; c = c->next)
            if (c->is(ns_, name_)) return c;
        return nullptr;
    }
    // First child element in a namespace, any name.
    const Node* child_in(std::string_view ns_) const {
        for (const Node* c = first; c; c = c->next)
            if (c->kind == Kind::Element && c->ns == ns_) return c;
        return nullptr;
    }
    // Concatenated direct text children.
    std::string text_content() const {
        std::string s;
        for (const Node* c = first; c; c = c->next)
            if (c->kind == Kind::Text) s.append(c->text);
        return s;
    }
};

} // namespace s2smux::xml
