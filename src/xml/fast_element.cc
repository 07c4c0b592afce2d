// The element is parsed where it lies, in the caller's buffer; names,
// plain values and text are views into it, and what holds references is
// decoded into the arena. Once the element is complete, its bytes are
// copied into the arena in one piece and the views moved there.
#include "xml/fast_element.h"
#include "xml/writer.h"

#include <libxml/uri.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

namespace s2smux::xml {

namespace {

constexpr std::string_view kXmlNs = "http://www.w3.org/XML/1998/namespace";
constexpr std::string_view kXmlnsNs = "http://www.w3.org/2000/xmlns/";

// Bounds of the fixed tables below; an element past them is declined.
constexpr unsigned kMaxOpen = 64;
constexpr unsigned kMaxDecls = 64;
constexpr unsigned kMaxTagAttrs = 64;

enum : unsigned char { kNameChar = 1, kNameStart = 2 };
struct NameTable {
    unsigned char v[256] = {};
    constexpr NameTable() {
        for (int c = 'a'; c <= 'z'; ++c) v[c] = kNameChar | kNameStart;
        for (int c = 'A'; c <= 'Z'; ++c) v[c] = kNameChar | kNameStart;
        v[static_cast<unsigned char>('_')] = kNameChar | kNameStart;
        for (int c = '0'; c <= '9'; ++c) v[c] = kNameChar;
        v[static_cast<unsigned char>('-')] = kNameChar;
        v[static_cast<unsigned char>('.')] = kNameChar;
    }
};
constexpr NameTable kNames;

inline unsigned char uc(char c) { return static_cast<unsigned char>(c); }
inline bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

inline std::size_t put_utf8(char* out, std::uint32_t cp) {
    if (cp < 0x80) {
        out[0] = static_cast<char>(cp);
        return 1;
    }
    if (cp < 0x800) {
        out[0] = static_cast<char>(0xC0 | cp >> 6);
        out[1] = static_cast<char>(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = static_cast<char>(0xE0 | cp >> 12);
        out[1] = static_cast<char>(0x80 | (cp >> 6 & 0x3F));
        out[2] = static_cast<char>(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = static_cast<char>(0xF0 | cp >> 18);
    out[1] = static_cast<char>(0x80 | (cp >> 12 & 0x3F));
    out[2] = static_cast<char>(0x80 | (cp >> 6 & 0x3F));
    out[3] = static_cast<char>(0x80 | (cp & 0x3F));
    return 4;
}

// XML 1.0 Char production.
inline bool xml_char(std::uint32_t cp) {
    return cp == 0x9 || cp == 0xA || cp == 0xD || (cp >= 0x20 && cp <= 0xD7FF) || (cp >= 0xE000 && cp <= 0xFFFD) ||
           (cp >= 0x10000 && cp <= 0x10FFFF);
}

// A reference at p (just past its '&'), up to its ';': the decoded
// character, or 0 when it is not one this parser takes. *len: its bytes
// after the '&', the ';' included.
std::uint32_t reference(const char* p, const char* end, std::size_t* len) {
    const auto n = static_cast<std::size_t>(end - p);
    auto is = [&](std::string_view s) { return n >= s.size() && std::memcmp(p, s.data(), s.size()) == 0; };
    if (n >= 3 && p[0] != '#') {
        std::uint32_t c = 0;
        std::size_t l = 0;
        if (is("lt;")) c = '<', l = 3;
        else if (is("gt;")) c = '>', l = 3;
        else if (is("amp;")) c = '&', l = 4;
        else if (is("quot;")) c = '"', l = 5;
        else if (is("apos;")) c = '\'', l = 5;
        *len = l;
        return c;
    }
    if (n < 3 || p[0] != '#') return 0;
    const bool hex = p[1] == 'x';
    std::size_t i = hex ? 2 : 1;
    const std::size_t digits_from = i;
    std::uint32_t cp = 0;
    // Eight digits reach past U+10FFFF in either base; longer is declined.
    for (; i < n && i - digits_from < 8; ++i) {
        const char c = p[i];
        unsigned d;
        if (c >= '0' && c <= '9') d = static_cast<unsigned>(c - '0');
        else if (hex && c >= 'a' && c <= 'f') d = static_cast<unsigned>(c - 'a' + 10);
        else if (hex && c >= 'A' && c <= 'F') d = static_cast<unsigned>(c - 'A' + 10);
        else break;
        cp = cp * (hex ? 16 : 10) + d;
    }
    if (i == digits_from || i >= n || p[i] != ';' || !xml_char(cp)) return 0;
    *len = i + 1;
    return cp;
}

// libxml2 refuses a namespace name xmlParseURI() cannot parse, so the same
// function judges here; names already accepted are remembered (stanzas
// use a handful), which also spares libxml2's allocations per call.
bool valid_ns_name(std::string_view uri) {
    if (uri.empty()) return true; // xmlns='' (prefixed ones are refused before)
    // libxml2 checks '&' as "&#38;", as it passes it on.
    if (uri.find('&') != uri.npos || uri.size() >= 512) return false;
    static thread_local std::string known[32];
    static thread_local unsigned next = 0;
    for (const std::string& k : known)
        if (k.size() == uri.size() && k == uri) return true;
    char z[512];
    std::memcpy(z, uri.data(), uri.size());
    z[uri.size()] = '\0';
    xmlURIPtr parsed = xmlParseURI(z);
    if (!parsed) return false;
    xmlFreeURI(parsed);
    known[next++ % 32].assign(uri);
    return true;
}

class FastParser {
public:
    struct Scratch;
    FastParser(const char* p, std::size_t n, std::string_view default_ns, const Limits& lim, Arena& arena,
               Scratch& s)
        : begin_(p), p_(p), end_(p + n), default_ns_(default_ns), lim_(lim), arena_(arena), s_(s) {}

    const Node* run(std::size_t* len);

private:
    struct Decl {
        std::string_view prefix; // empty: the default namespace
        std::string_view uri;
    };
    struct Open {
        std::string_view qname;
        unsigned decls; // decls_ in scope before its start tag
        Node* node;
    };
    struct TagAttr {
        std::string_view prefix, local, value, ns;
    };

    bool skip_ws() {
        const char* s = p_;
        while (p_ < end_ && is_ws(*p_)) ++p_;
        return p_ != s;
    }
    bool qname(std::string_view& prefix, std::string_view& local);
    bool ncname() {
        if (p_ >= end_ || !(kNames.v[uc(*p_)] & kNameStart)) return false;
        ++p_;
        while (p_ < end_ && (kNames.v[uc(*p_)] & kNameChar)) ++p_;
        return true;
    }
    bool lookup(std::string_view prefix, std::string_view& uri) const {
        for (unsigned i = ndecls_; i-- > 0;)
            if (decls_[i].prefix == prefix) {
                uri = decls_[i].uri;
                return true;
            }
        return false;
    }
    bool declare(std::string_view prefix, std::string_view uri, unsigned mark);
    bool attr_value(std::string_view& value);
    std::string_view decode(const char* from, const char* to, const char* first_ref);
    void rebase(Node* n, const char* copy);
    bool start_tag(Node* parent, bool& empty);
    bool end_tag();
    bool text(Node* parent);
    static void append(Node* parent, Node* n) {
        n->parent = parent;
        if (parent->last)
            parent->last->next = n;
        else
            parent->first = n;
        parent->last = n;
    }

public:
    // The tables, kept per thread: constructing them per element would
    // clear kilobytes each time.
    struct Scratch {
        Decl decls[kMaxDecls];
        Open open[kMaxOpen];
        TagAttr tag[kMaxTagAttrs];
    };

private:
    const char* const begin_;
    const char* p_;
    const char* const end_;
    std::string_view default_ns_;
    const Limits& lim_;
    Arena& arena_;
    Scratch& s_;
    Decl* const decls_ = s_.decls;
    Open* const open_ = s_.open;
    TagAttr* const tag_ = s_.tag;
    unsigned ndecls_ = 0;
    unsigned depth_ = 0;
    Node* root_ = nullptr;
};

bool FastParser::qname(std::string_view& prefix, std::string_view& local) {
    const char* s = p_;
    if (!ncname()) return false;
    if (p_ < end_ && *p_ == ':') {
        prefix = {s, static_cast<std::size_t>(p_ - s)};
        ++p_;
        const char* l = p_;
        if (!ncname() || (p_ < end_ && *p_ == ':')) return false;
        local = {l, static_cast<std::size_t>(p_ - l)};
    } else {
        prefix = {};
        local = {s, static_cast<std::size_t>(p_ - s)};
    }
    return true;
}

bool FastParser::declare(std::string_view prefix, std::string_view uri, unsigned mark) {
    // Reserved prefixes and namespaces, and empty prefixed bindings, are
    // errors (or at least libxml2's business).
    if (prefix == "xml" || prefix == "xmlns" || uri == kXmlNs || uri == kXmlnsNs) return false;
    if ((!prefix.empty() && uri.empty()) || !valid_ns_name(uri)) return false;
    if (ndecls_ == kMaxDecls) return false;
    for (unsigned i = mark; i < ndecls_; ++i)
        if (decls_[i].prefix == prefix) return false; // declared twice in one tag
    decls_[ndecls_++] = {prefix, uri};
    return true;
}

// Text or a value holding references, decoded into the arena (a decoded
// reference is never longer than the reference).
std::string_view FastParser::decode(const char* from, const char* to, const char* first_ref) {
    char* const buf = static_cast<char*>(arena_.alloc(static_cast<std::size_t>(to - from), 1));
    std::memcpy(buf, from, static_cast<std::size_t>(first_ref - from));
    char* out = buf + (first_ref - from);
    for (const char* q = first_ref; q < to;) {
        std::size_t len = 0;
        out += put_utf8(out, reference(q + 1, to, &len));
        q += 1 + len;
        const void* amp = std::memchr(q, '&', static_cast<std::size_t>(to - q));
        const char* next = amp ? static_cast<const char*>(amp) : to;
        std::memcpy(out, q, static_cast<std::size_t>(next - q));
        out += next - q;
        q = next;
    }
    return {buf, static_cast<std::size_t>(out - buf)};
}

// A quoted value at p_ (on the quote).
bool FastParser::attr_value(std::string_view& value) {
    const char quote = *p_++;
    const char* const start = p_;
    const char* first_ref = nullptr;
    for (;;) {
        if (p_ >= end_) return false;
        const char c = *p_;
        if (c == quote) break;
        const unsigned char u = uc(c);
        if (u >= 0x20 && u < 0x80 && c != '<' && c != '&') {
            ++p_;
            continue;
        }
        if (u >= 0x80) {
            const std::size_t len = xml_utf8_char_len(reinterpret_cast<const unsigned char*>(p_),
                                                      static_cast<std::size_t>(end_ - p_));
            if (len == 0) return false;
            p_ += len;
            continue;
        }
        if (c != '&') return false; // '<', and tab, LF, CR (normalized by libxml2) or other controls
        std::size_t len = 0;
        if (reference(p_ + 1, end_, &len) == 0) return false;
        if (!first_ref) first_ref = p_;
        p_ += 1 + len;
    }
    value = first_ref ? decode(start, p_, first_ref) : std::string_view(start, static_cast<std::size_t>(p_ - start));
    ++p_; // the closing quote
    return true;
}

// A start tag at p_ (on its '<'): its element, appended to parent (the
// root when parent is null) and opened unless empty.
bool FastParser::start_tag(Node* parent, bool& empty) {
    if (depth_ + 1 > lim_.max_depth || depth_ + 1 > kMaxOpen) return false;
    ++p_;
    const char* qstart = p_;
    std::string_view prefix, local;
    if (!qname(prefix, local)) return false;
    const std::string_view qn(qstart, static_cast<std::size_t>(p_ - qstart));
    const unsigned mark = ndecls_;
    unsigned nattr = 0;
    for (;;) {
        const bool ws = skip_ws();
        if (p_ >= end_) return false;
        if (*p_ == '>') {
            ++p_;
            empty = false;
            break;
        }
        if (*p_ == '/') {
            if (end_ - p_ < 2 || p_[1] != '>') return false;
            p_ += 2;
            empty = true;
            break;
        }
        if (!ws) return false;
        std::string_view ap, al, value;
        if (!qname(ap, al)) return false;
        skip_ws();
        if (p_ >= end_ || *p_ != '=') return false;
        ++p_;
        skip_ws();
        if (p_ >= end_ || (*p_ != '"' && *p_ != '\'')) return false;
        if (!attr_value(value)) return false;
        if (ap.empty() && al == "xmlns") {
            if (!declare({}, value, mark)) return false;
        } else if (ap == "xmlns") {
            if (!declare(al, value, mark)) return false;
        } else {
            if (nattr == kMaxTagAttrs || value.size() > lim_.max_attr_value) return false;
            tag_[nattr++] = {ap, al, value, {}};
        }
    }
    if (nattr + (ndecls_ - mark) > lim_.max_attrs) return false;

    Node* n = arena_.make<Node>();
    n->name = local;
    if (prefix.empty()) {
        if (!lookup({}, n->ns)) n->ns = default_ns_;
    } else if (!lookup(prefix, n->ns)) {
        return false; // unbound here, or bound on the stream header
    }
    Attr** tail = &n->attrs;
    for (unsigned i = 0; i < nattr; ++i) {
        TagAttr& a = tag_[i];
        if (a.prefix.empty())
            a.ns = {};
        else if (a.prefix == "xml")
            a.ns = kXmlNs;
        else if (!lookup(a.prefix, a.ns))
            return false;
        for (unsigned j = 0; j < i; ++j) // same name, or same namespace and local name
            if (tag_[j].local == a.local && (tag_[j].prefix == a.prefix || (!a.prefix.empty() && tag_[j].ns == a.ns)))
                return false;
        Attr* at = arena_.make<Attr>();
        at->ns = a.ns;
        at->name = a.local;
        at->value = a.value;
        *tail = at;
        tail = &at->next;
    }
    if (parent) append(parent, n);
    if (empty) {
        ndecls_ = mark;
    } else {
        open_[depth_++] = {qn, mark, n};
    }
    if (!parent) root_ = n;
    return true;
}

// An end tag at p_ (on its '<'), closing the innermost element.
bool FastParser::end_tag() {
    const Open& o = open_[depth_ - 1];
    p_ += 2;
    if (static_cast<std::size_t>(end_ - p_) < o.qname.size() || std::memcmp(p_, o.qname.data(), o.qname.size()) != 0)
        return false;
    p_ += o.qname.size();
    skip_ws();
    if (p_ >= end_ || *p_ != '>') return false;
    ++p_;
    ndecls_ = o.decls;
    --depth_;
    return true;
}

// Character data from p_ up to the next '<', as a Text node of parent.
bool FastParser::text(Node* parent) {
    const char* const start = p_;
    const char* first_ref = nullptr;
    for (;;) {
#ifdef __SSE2__
        // Skip to the next '<', '&', ']', control or non-ASCII byte.
        while (end_ - p_ >= 16) {
            const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p_));
            const __m128i hit = _mm_or_si128(
                _mm_or_si128(_mm_cmplt_epi8(v, _mm_set1_epi8(0x20)), _mm_cmpeq_epi8(v, _mm_set1_epi8('<'))),
                _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('&')), _mm_cmpeq_epi8(v, _mm_set1_epi8(']'))));
            const auto m = static_cast<unsigned>(_mm_movemask_epi8(hit));
            if (m == 0) {
                p_ += 16;
                continue;
            }
            p_ += __builtin_ctz(m);
            break;
        }
#endif
        if (p_ >= end_) return false; // an element ends with an end tag
        const char c = *p_;
        const unsigned char u = uc(c);
        if (c == '<') break;
        if (u >= 0x20 && u < 0x80) {
            if (c == '&') {
                std::size_t len = 0;
                if (reference(p_ + 1, end_, &len) == 0) return false;
                if (!first_ref) first_ref = p_;
                p_ += 1 + len;
            } else if (c == ']' && end_ - p_ >= 3 && p_[1] == ']' && p_[2] == '>') {
                return false;
            } else {
                ++p_;
            }
        } else if (u >= 0x80) {
            const std::size_t len = xml_utf8_char_len(reinterpret_cast<const unsigned char*>(p_),
                                                      static_cast<std::size_t>(end_ - p_));
            if (len == 0) return false;
            p_ += len;
        } else if (c == '\t' || c == '\n') {
            ++p_;
        } else {
            return false; // CR (libxml2 folds CR LF) or another control
        }
    }
    if (p_ == start) return true;
    Node* t = arena_.make<Node>();
    t->kind = Node::Kind::Text;
    t->text = first_ref ? decode(start, p_, first_ref) : std::string_view(start, static_cast<std::size_t>(p_ - start));
    append(parent, t);
    return true;
}

// Views into the caller's buffer move to the copy of the element.
void FastParser::rebase(Node* n, const char* copy) {
    auto move = [&](std::string_view& v) {
        if (v.data() >= begin_ && v.data() < p_) v = {copy + (v.data() - begin_), v.size()};
    };
    for (; n; n = n->next) {
        move(n->ns);
        move(n->name);
        move(n->text);
        for (Attr* a = n->attrs; a; a = a->next) {
            move(a->ns);
            move(a->name);
            move(a->value);
        }
        rebase(n->first, copy);
    }
}

const Node* FastParser::run(std::size_t* len) {
    if (end_ - p_ < 2 || *p_ != '<') return nullptr;
    bool empty = false;
    if (!start_tag(nullptr, empty)) return nullptr;
    while (depth_ > 0) {
        if (!text(open_[depth_ - 1].node)) return nullptr; // stops on a '<'
        if (end_ - p_ < 2) return nullptr;
        const char c = p_[1];
        if (c == '/') {
            if (!end_tag()) return nullptr;
        } else if (c == '!' || c == '?') {
            return nullptr; // CDATA, or what the framer refuses anyway
        } else if (!start_tag(open_[depth_ - 1].node, empty)) {
            return nullptr;
        }
    }
    *len = static_cast<std::size_t>(p_ - begin_);
    char* copy = static_cast<char*>(arena_.alloc(*len, 1));
    std::memcpy(copy, begin_, *len);
    rebase(root_, copy);
    return root_;
}

} // namespace

const Node* parse_fast_element(std::string_view bytes, std::string_view default_ns, const Limits& lim,
                               Arena& arena, std::size_t* len) {
    static thread_local FastParser::Scratch scratch;
    const std::string_view ns = arena.copy(default_ns);
    FastParser fp(bytes.data(), std::min(bytes.size(), lim.max_stanza_bytes), ns, lim, arena, scratch);
    return fp.run(len);
}

} // namespace s2smux::xml
