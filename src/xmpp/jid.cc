#include "xmpp/jid.h"

#include "xml/writer.h"

#include <cctype>

namespace s2smux::xmpp {

namespace {

constexpr std::size_t kMaxPart = 1023;

bool valid_local(std::string_view s) {
    if (s.empty() || s.size() > kMaxPart) return false;
    for (unsigned char c : s) {
        // RFC 7622 §3.3.1: these are disallowed in localparts.
        if (c <= 0x20 || c == 0x7f || c == '"' || c == '&' || c == '\'' || c == '/' || c == ':' ||
            c == '<' || c == '>' || c == '@')
            return false;
    }
    return xml::valid_xml_utf8(s);
}

bool valid_resource(std::string_view s) {
    if (s.empty() || s.size() > kMaxPart) return false;
    for (unsigned char c : s)
        if (c < 0x20 || c == 0x7f) return false;
    return xml::valid_xml_utf8(s);
}

} // namespace

bool valid_domain(std::string_view d) {
    if (d.empty() || d.size() > kMaxPart) return false;
    if (d.back() == '.') d.remove_suffix(1); // a trailing dot is allowed and ignored
    if (d.empty()) return false;
    if (d.front() == '[') { // IPv6 literal
        if (d.back() != ']' || d.size() < 4) return false;
        for (char c : d.substr(1, d.size() - 2))
            if (!(std::isxdigit(static_cast<unsigned char>(c)) || c == ':' || c == '.')) return false;
        return true;
    }
    std::size_t label = 0;
    bool non_ascii = false;
    for (unsigned char c : d) {
        if (c == '.') {
            if (label == 0) return false;
            label = 0;
            continue;
        }
        if (++label > 63) return false;
        if (c >= 0x80) { // UTF-8 of an internationalised label, checked below
            non_ascii = true;
            continue;
        }
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '_';
        if (!ok) return false;
    }
    // A name from base64 (SASL authzid) was never checked by the XML parser.
    return label != 0 && (!non_ascii || xml::valid_xml_utf8(d));
}

bool parse_jid(std::string_view jid, JidParts& out) {
    out = {};
    std::string_view rest = jid;
    if (auto slash = rest.find('/'); slash != std::string_view::npos) {
        out.resource = rest.substr(slash + 1);
        out.has_resource = true;
        rest = rest.substr(0, slash);
        if (!valid_resource(out.resource)) return false;
    }
    if (auto at = rest.find('@'); at != std::string_view::npos) {
        out.local = rest.substr(0, at);
        out.has_local = true;
        rest = rest.substr(at + 1);
        if (!valid_local(out.local)) return false;
    }
    out.domain = rest;
    return valid_domain(out.domain);
}

bool needs_lowercase(std::string_view d) {
    for (char c : d)
        if (c >= 'A' && c <= 'Z') return true;
    return !d.empty() && d.back() == '.';
}

std::string lowercase_domain(std::string_view d) {
    if (!d.empty() && d.back() == '.') d.remove_suffix(1);
    std::string s(d);
    for (char& c : s)
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    return s;
}

std::string jid_domain(std::string_view jid) {
    JidParts p;
    if (!parse_jid(jid, p)) return {};
    return lowercase_domain(p.domain);
}

} // namespace s2smux::xmpp
