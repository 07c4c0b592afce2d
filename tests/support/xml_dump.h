// One-line canonical form of a parsed element, for comparing trees in tests
// and fuzz targets: {ns}name {attr-ns}attr=value ... [children], text in
// double quotes.
#pragma once

#include "xml/element.h"

#include <string>

namespace s2smux::testing {

inline void dump_tree(std::string& o, const xml::Node& n) {
    if (n.kind == xml::Node::Kind::Text) {
        o += '"';
        o.append(n.text);
        o += '"';
        return;
    }
    o += '{';
    o.append(n.ns);
    o += '}';
    o.append(n.name);
    for (const xml::Attr* a = n.attrs; a; a = a->next) {
        o += " {";
        o.append(a->ns);
        o += '}';
        o.append(a->name);
        o += '=';
        o.append(a->value);
    }
    o += '[';
    for (const xml::Node* c = n.first; c; c = c->next) dump_tree(o, *c);
    o += ']';
}

} // namespace s2smux::testing
