// StreamParser: a fast path for whole stanzas, and a byte-level framer in
// front of libxml2's push SAX2 parser for everything else.
//
// Between top-level elements, each element that lies whole in the chunk
// is first offered to parse_fast_element() (fast_element.h): a strict
// one-pass parser for the shape nearly every stanza has, which declines
// anything it does not judge completely. What it takes never reaches the
// framer or libxml2; the rest (the stream header, an element cut by the
// end of a read, anything declined, the stream's end) goes the way below,
// where libxml2 judges it.
//
// The framer walks every byte once, cheaply (memchr over text and attribute
// values). It knows where the stream header and each top-level element end,
// enforces the byte limits at the byte that crosses them, and rejects
// DTDs, comments and processing instructions before libxml2 sees them, so
// libxml2 can never expand or fetch anything. libxml2 is handed input only
// up to the end of the last complete tag; an unfinished tag is held here.
// That keeps libxml2's buffer small, avoids its rescans of an unfinished
// tag on every chunk (quadratic for a peer that drips a huge tag), and
// gives exact stream offsets for suspension. libxml2 does the real parsing
// (well-formedness, UTF-8, namespaces, entities); the SAX callbacks check
// the remaining limits and build Nodes in the arena.
//
// Two shortcuts for forwarding, which would otherwise spend most of its
// time here (bench/RESULTS.md, "Where s2smuxd spends its CPU"):
// * Placeholders. libxml2 2.9 decodes character data one character at a
//   time from the first non-ASCII byte of a text run on, several times
//   slower than its ASCII path. The framer validates those characters
//   itself (strict UTF-8 of XML Chars) and libxml2 is handed a copy in
//   which each is replaced by as many 'x' bytes: well-formedness is judged
//   the same, and on_text() copies the text from the original bytes. A
//   run (up to the next '<' or '&') holding anything that would send
//   libxml2 down its slow path anyway (a CR, an invalid or cut-off
//   sequence) is left as it is: that path copies text into a buffer of its
//   own, which could not be mapped back to the input.
// * Raw elements. The bytes of each top-level element, as received, are
//   reported with it (element_raw()) when they mean the same wherever they
//   are written: no prefix bound outside the element (its default
//   namespace is the stream's, jabber:server). Forwarding them saves
//   re-serializing and re-escaping every stanza.
#include "xml/stream_parser.h"
#include "xml/fast_element.h"
#include "xml/writer.h"

#include <libxml/parser.h>
#include <libxml/dict.h>
#include <libxml/parserInternals.h>
#include <libxml/xmlerror.h>

#include <algorithm>
#include <cassert>
#include <cstdint>
#ifdef __SSE2__
#include <emmintrin.h>
#endif
#include <cstdio>
#include <cstring>
#include <vector>

namespace s2smux::xml {

namespace {

constexpr std::string_view kStreamsNs = "http://etherx.jabber.org/streams";
constexpr std::string_view kDialbackNs = "jabber:server:dialback";
constexpr std::string_view kXmlNs = "http://www.w3.org/XML/1998/namespace";

// libxml2 interns every element/attribute name and namespace URI and never
// frees them; past this size the context is rebuilt by replaying the header.
constexpr std::size_t kDictRebuildBytes = 256 * 1024;
// Buffers that grew for one big stanza are released afterwards: ours, the
// arena's chunks, and libxml2's input buffer (by rebuilding the context).
constexpr std::size_t kKeepHeldCapacity = 64 * 1024;
constexpr std::size_t kKeepPartialCapacity = 16 * 1024;
constexpr std::size_t kKeepArenaBytes = 64 * 1024;
constexpr std::size_t kRebuildAfterFeed = 256 * 1024;

inline bool is_ws(unsigned char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

bool all_ws(const char* p, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i)
        if (!is_ws(static_cast<unsigned char>(p[i]))) return false;
    return true;
}

// Limit messages name the limit and the figure: "stanza exceeds 65536 bytes".
void format_limit(char* buf, std::size_t size, const char* what, std::size_t figure, const char* unit) {
    std::snprintf(buf, size, "%s %zu%s", what, figure, unit);
}

std::string_view sv(const xmlChar* s) {
    return s ? std::string_view(reinterpret_cast<const char*>(s)) : std::string_view();
}

struct ScanResult {
    std::size_t scanned = 0; // bytes consumed (less than given: error or max_ends)
    std::size_t flush = 0;   // bytes up to the last markup boundary
    ParseError err = ParseError::None;
    const char* detail = nullptr;
};

// Tracks just enough XML syntax to find tag boundaries and nesting depth.
// It never judges well-formedness beyond what it needs to stay in sync;
// libxml2 does that on the bytes it is handed.
class Framer {
public:
    // Scans a chunk, stopping at the first error or once `ends` holds
    // max_ends entries. Appends to `ends` the offset just past the stream
    // header and past each top-level element, in order (the order libxml2
    // reports them in).
    ScanResult scan(const char* d, std::size_t n, const Limits& lim, std::vector<std::size_t>& ends,
                    std::size_t max_ends);
    // Bytes between top-level elements that the fast path consumed.
    void skip(std::size_t n) {
        assert(st_ == St::StreamLevel);
        base_ += n;
    }

    std::uint64_t offset() const { return base_; } // stream bytes scanned
    bool header_done() const { return depth_ > 0 || st_ == St::Closed; }
    bool between_elements() const { return st_ == St::StreamLevel; }

    // Placeholders (see the top of this file): whether any recorded
    // character lies before stream offset `end`, and writing them into
    // buf, the copy of stream bytes [at, at + n) libxml2 is to see.
    bool placeholders_before(std::uint64_t end) const { return head_ < runs_.size() && runs_[head_].at < end; }
    void put_placeholders(char* buf, std::uint64_t at, std::size_t n);

private:
    enum class St : std::uint8_t {
        Prolog,      // before the stream header: BOM, XML declaration, whitespace
        XmlDecl,     // inside <?xml ... ?>
        Lt,          // just after '<'
        StartTag,    // inside a start tag, outside attribute values
        AttrValue,   // inside a quoted attribute value
        EndTag,      // inside an end tag
        Bang,        // after "<!": only "<![CDATA[" is allowed
        CData,       // inside a CDATA section
        Text,        // character data inside a top-level element
        Ref,         // after '&' in character data
        StreamLevel, // between top-level elements: whitespace only
        Closed,      // after </stream:stream>
    };

    void open_unit(std::uint64_t at, bool header) {
        in_unit_ = true;
        unit_start_ = at;
        header_unit_ = header;
    }
    void fail(ScanResult& r, ParseError e, const char* why) {
        r.err = e;
        r.detail = why;
    }
    void fail_limit(ScanResult& r, const char* what, std::size_t figure, const char* unit) {
        format_limit(msg_, sizeof msg_, what, figure, unit);
        fail(r, ParseError::PolicyViolation, msg_);
    }

    std::size_t prolog(const char* d, std::size_t i, ScanResult& r);
    std::size_t xml_decl(const char* d, std::size_t i, std::size_t end, ScanResult& r);
    std::size_t after_lt(const char* d, std::size_t i, ScanResult& r);
    std::size_t start_tag(const char* d, std::size_t i, std::size_t end, const Limits& lim, ScanResult& r,
                          std::vector<std::size_t>& ends);
    std::size_t bang(const char* d, std::size_t i, ScanResult& r);
    std::size_t cdata(const char* d, std::size_t i, std::size_t end);
    std::size_t reference(const char* d, std::size_t i, std::size_t end, ScanResult& r);
    void start_tag_done(std::size_t i, bool empty, ScanResult& r, std::vector<std::size_t>& ends);
    void end_tag_done(std::size_t i, ScanResult& r, std::vector<std::size_t>& ends);
    std::size_t text(const char* d, std::size_t i, std::size_t end, std::size_t readable);
    void mark_char(std::size_t i, std::size_t len);
    void end_text_run() {
        run_first_ = runs_.size();
        run_clean_ = true;
    }
    void cancel_text_run() {
        // Its characters lie past the last tag handed to libxml2: none applied yet.
        assert(head_ <= run_first_);
        runs_.resize(run_first_);
        run_clean_ = false;
    }

    struct Run {
        std::uint64_t at;  // stream offset
        std::uint32_t len; // bytes of adjacent non-ASCII characters
    };
    std::vector<Run> runs_;     // in stream order
    std::size_t head_ = 0;      // runs_ before this were applied
    std::size_t run_first_ = 0; // first entry of the text run being scanned
    bool run_clean_ = true;     // that run can take placeholders

    std::uint64_t base_ = 0;       // stream offset of the chunk being scanned
    std::uint64_t unit_start_ = 0; // stream offset where the current unit began
    St st_ = St::Prolog;
    bool in_unit_ = true;          // the header unit is open from offset 0
    bool header_unit_ = true;
    bool at_start_ = false;        // the '<' just seen is the document's first byte
    unsigned depth_ = 0;           // open elements, the stream element included
    unsigned attrs_ = 0;           // quoted values in the current start tag
    unsigned bom_ = 0;             // UTF-8 BOM bytes matched at offset 0
    unsigned match_ = 0;           // "[CDATA[" progress, or ']' run inside CDATA
    char quote_ = 0;
    char prev_ = 0;                // last byte outside quotes (for "/>" and "?>")
    char msg_[96] = {};
};

ScanResult Framer::scan(const char* d, std::size_t n, const Limits& lim, std::vector<std::size_t>& ends,
                        std::size_t max_ends) {
    ScanResult r;
    std::size_t i = 0;
    while (i < n && r.err == ParseError::None && ends.size() < max_ends) {
        // The open unit may take bytes only up to its limit.
        std::size_t end = n;
        if (in_unit_) {
            const std::size_t limit = header_unit_ ? lim.max_header_bytes : lim.max_stanza_bytes;
            const std::uint64_t cap = unit_start_ + limit;
            if (base_ + i >= cap) {
                fail_limit(r, header_unit_ ? "stream header exceeds" : "stanza exceeds", limit, " bytes");
                break;
            }
            end = static_cast<std::size_t>(std::min<std::uint64_t>(n, cap - base_));
        }
        switch (st_) {
        case St::Text:
            i = text(d, i, end, n);
            break;
        case St::Ref:
            i = reference(d, i, end, r);
            break;
        case St::StreamLevel:
            while (i < n && is_ws(static_cast<unsigned char>(d[i]))) ++i;
            r.flush = i;
            if (i == n) break;
            if (d[i] != '<') {
                fail(r, ParseError::BadFormat, "character data at stream level");
                break;
            }
            open_unit(base_ + i, false);
            ++i;
            st_ = St::Lt;
            break;
        case St::Prolog:
            i = prolog(d, i, r);
            break;
        case St::XmlDecl:
            i = xml_decl(d, i, end, r);
            break;
        case St::Lt:
            i = after_lt(d, i, r);
            break;
        case St::StartTag:
            i = start_tag(d, i, end, lim, r, ends);
            break;
        case St::AttrValue: {
            const void* q = std::memchr(d + i, quote_, end - i);
            if (!q) {
                i = end;
            } else {
                i = static_cast<std::size_t>(static_cast<const char*>(q) - d) + 1;
                prev_ = quote_;
                st_ = St::StartTag;
            }
            break;
        }
        case St::EndTag: {
            const void* gt = std::memchr(d + i, '>', end - i);
            if (!gt) {
                i = end;
            } else {
                i = static_cast<std::size_t>(static_cast<const char*>(gt) - d) + 1;
                end_tag_done(i, r, ends);
            }
            break;
        }
        case St::Bang:
            i = bang(d, i, r);
            break;
        case St::CData:
            i = cdata(d, i, end);
            break;
        case St::Closed:
            i = n; // the stream is over; the session closes the connection
            break;
        }
    }
    base_ += i;
    r.scanned = i;
    return r;
}

// Character data up to the next '<' or '&' (d[0, readable) may be read),
// in one pass that also records the non-ASCII characters libxml2 may see
// as placeholders.
std::size_t Framer::text(const char* d, std::size_t i, std::size_t end, std::size_t readable) {
    const auto* s = reinterpret_cast<const unsigned char*>(d);
    while (i < end) {
        // Skip to the next '<', '&', CR or non-ASCII byte, 16 bytes at a time.
#ifdef __SSE2__
        if (readable - i >= 16) {
            const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i));
            const __m128i hit = _mm_or_si128(
                _mm_or_si128(v, _mm_cmpeq_epi8(v, _mm_set1_epi8('<'))),
                _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('&')), _mm_cmpeq_epi8(v, _mm_set1_epi8('\r'))));
            auto m = static_cast<unsigned>(_mm_movemask_epi8(hit));
            if (end - i < 16) m &= (1u << (end - i)) - 1; // past `end`: not ours to look at
            if (m == 0) {
                i = std::min(i + 16, end);
                continue;
            }
            i += static_cast<std::size_t>(__builtin_ctz(m));
        } else
#endif
        {
            while (i < end && s[i] < 0x80 && s[i] != '<' && s[i] != '&' && s[i] != '\r') ++i;
            if (i == end) break;
        }
        switch (s[i]) {
        case '<':
            end_text_run();
            st_ = St::Lt;
            return i + 1;
        case '&':
            end_text_run();
            st_ = St::Ref;
            return i + 1;
        case '\r':
            if (run_clean_) cancel_text_run();
            ++i;
            continue;
        default:
            break;
        }
        const std::size_t len = run_clean_ ? xml_utf8_char_len(s + i, end - i) : 0;
        if (len == 0) {
            if (run_clean_) cancel_text_run(); // libxml2 judges it, on its slow path
            ++i;
            continue;
        }
        mark_char(i, len);
        i += len;
    }
    return i;
}

void Framer::mark_char(std::size_t i, std::size_t len) {
    const std::uint64_t at = base_ + i;
    // Merged only within this chunk: held bytes and the chunk are patched apart.
    if (runs_.size() > run_first_ && runs_.back().at >= base_ && runs_.back().at + runs_.back().len == at)
        runs_.back().len += static_cast<std::uint32_t>(len);
    else
        runs_.push_back({at, static_cast<std::uint32_t>(len)});
}

void Framer::put_placeholders(char* buf, std::uint64_t at, std::size_t n) {
    for (; head_ < runs_.size() && runs_[head_].at < at + n; ++head_) {
        const Run& r = runs_[head_];
        assert(r.at >= at && r.at + r.len <= at + n);
        if (r.at < at || r.at + r.len > at + n) continue; // never: left to libxml2's slow path
        std::memset(buf + (r.at - at), 'x', r.len);
    }
    if (head_ == runs_.size()) {
        assert(run_first_ == runs_.size());
        runs_.clear();
        head_ = run_first_ = 0;
    }
}

std::size_t Framer::prolog(const char* d, std::size_t i, ScanResult& r) {
    static constexpr unsigned char kBom[3] = {0xEF, 0xBB, 0xBF};
    const auto c = static_cast<unsigned char>(d[i]);
    const std::uint64_t pos = base_ + i;
    if (pos < 3 && pos == bom_ && c == kBom[bom_]) {
        ++bom_;
        return i + 1;
    }
    if (bom_ == 1 || bom_ == 2) {
        fail(r, ParseError::NotWellFormed, "invalid byte order mark");
        return i;
    }
    if (is_ws(c)) return i + 1;
    if (c == '<') {
        at_start_ = pos == bom_;
        st_ = St::Lt;
        return i + 1;
    }
    // Also rejects UTF-16/UCS-4 input, which libxml2 would otherwise detect.
    fail(r, ParseError::NotWellFormed,
         pos == bom_ ? "stream does not start with '<' (only UTF-8 is accepted)"
                     : "character data before the stream header");
    return i;
}

std::size_t Framer::xml_decl(const char* d, std::size_t i, std::size_t end, ScanResult& r) {
    for (; i < end; ++i) {
        if (d[i] == '>' && prev_ == '?') {
            st_ = St::Prolog;
            r.flush = i + 1;
            return i + 1;
        }
        prev_ = d[i];
    }
    return i;
}

std::size_t Framer::after_lt(const char* d, std::size_t i, ScanResult& r) {
    const auto c = static_cast<unsigned char>(d[i]);
    switch (c) {
    case '/':
        if (depth_ == 0) {
            fail(r, ParseError::NotWellFormed, "end tag before the stream header");
            return i;
        }
        st_ = St::EndTag;
        return i + 1;
    case '!':
        st_ = St::Bang;
        match_ = 0;
        return i + 1;
    case '?':
        if (depth_ == 0 && at_start_) { // only the XML declaration is allowed
            st_ = St::XmlDecl;
            prev_ = 0;
            return i + 1;
        }
        fail(r, ParseError::RestrictedXml, "processing instruction");
        return i;
    case '<':
    case '>':
    case '=':
    case '"':
    case '\'':
    case '&':
        fail(r, ParseError::NotWellFormed, "invalid character after '<'");
        return i;
    default:
        if (c <= ' ') { // whitespace, controls, NUL (UTF-16 "<\0")
            fail(r, ParseError::NotWellFormed, "invalid character after '<'");
            return i;
        }
        st_ = St::StartTag;
        attrs_ = 0;
        prev_ = static_cast<char>(c);
        return i + 1;
    }
}

std::size_t Framer::start_tag(const char* d, std::size_t i, std::size_t end, const Limits& lim, ScanResult& r,
                              std::vector<std::size_t>& ends) {
    for (; i < end; ++i) {
        const char c = d[i];
        if (c == '>') {
            start_tag_done(i + 1, prev_ == '/', r, ends);
            return i + 1;
        }
        if (c == '"' || c == '\'') {
            // Counted here because libxml2 checks duplicate attributes in
            // O(n^2) before any callback could refuse the element.
            if (++attrs_ > lim.max_attrs) {
                fail_limit(r, "element has more than", lim.max_attrs, " attributes");
                return i;
            }
            quote_ = c;
            st_ = St::AttrValue;
            return i + 1;
        }
        if (c == '<') {
            fail(r, ParseError::NotWellFormed, "'<' inside a tag");
            return i;
        }
        if (static_cast<unsigned char>(c) < 0x20 && !is_ws(static_cast<unsigned char>(c))) {
            // libxml2 would end the tag at this byte and report the element
            // before failing, out of step with the framer's element ends.
            fail(r, ParseError::NotWellFormed, "control character inside a tag");
            return i;
        }
        prev_ = c;
    }
    return i;
}

void Framer::start_tag_done(std::size_t i, bool empty, ScanResult& r, std::vector<std::size_t>& ends) {
    r.flush = i;
    if (depth_ == 0) { // the stream header
        in_unit_ = false;
        ends.push_back(i);
        if (empty) {
            st_ = St::Closed;
        } else {
            depth_ = 1;
            st_ = St::StreamLevel;
        }
        return;
    }
    if (empty) {
        if (depth_ == 1) {
            in_unit_ = false;
            ends.push_back(i);
            st_ = St::StreamLevel;
        } else {
            st_ = St::Text;
        }
        return;
    }
    ++depth_;
    st_ = St::Text;
}

void Framer::end_tag_done(std::size_t i, ScanResult& r, std::vector<std::size_t>& ends) {
    r.flush = i;
    --depth_;
    if (depth_ == 0) {
        in_unit_ = false;
        st_ = St::Closed;
    } else if (depth_ == 1) {
        in_unit_ = false;
        ends.push_back(i);
        st_ = St::StreamLevel;
    } else {
        st_ = St::Text;
    }
}

std::size_t Framer::bang(const char* d, std::size_t i, ScanResult& r) {
    static constexpr char kCdata[] = "[CDATA[";
    const char c = d[i];
    if (match_ == 0) {
        if (c == '-') {
            fail(r, ParseError::RestrictedXml, "comment");
        } else if (c >= 'A' && c <= 'Z') {
            fail(r, ParseError::RestrictedXml, depth_ == 0 ? "document type declaration" : "markup declaration");
        } else if (c != '[') {
            fail(r, ParseError::NotWellFormed, "invalid markup after '<!'");
        } else if (depth_ < 2) {
            fail(r, depth_ == 1 ? ParseError::BadFormat : ParseError::NotWellFormed,
                 "CDATA section outside an element");
        } else {
            match_ = 1;
            return i + 1;
        }
        return i;
    }
    if (c != kCdata[match_]) {
        fail(r, ParseError::NotWellFormed, "invalid CDATA section");
        return i;
    }
    if (++match_ == sizeof kCdata - 1) {
        st_ = St::CData;
        match_ = 0;
    }
    return i + 1;
}

std::size_t Framer::cdata(const char* d, std::size_t i, std::size_t end) {
    for (; i < end; ++i) {
        const char c = d[i];
        if (c == '>' && match_ >= 2) {
            st_ = St::Text;
            return i + 1;
        }
        match_ = c == ']' ? std::min(match_ + 1, 2u) : 0;
    }
    return i;
}

// libxml2 waits for the ';' of a reference in content however much input
// follows, so a stray '&' would make it buffer the rest of the stream.
// Only name characters may come before the ';'.
std::size_t Framer::reference(const char* d, std::size_t i, std::size_t end, ScanResult& r) {
    for (; i < end; ++i) {
        const auto c = static_cast<unsigned char>(d[i]);
        if (c == ';') {
            st_ = St::Text;
            return i + 1;
        }
        const bool name_char = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                               c == '#' || c == '_' || c == ':' || c == '.' || c == '-' || c >= 0x80;
        if (!name_char) {
            fail(r, ParseError::NotWellFormed, "malformed entity or character reference");
            return i;
        }
    }
    return i;
}

// Trampolines; libxml2's user data is the Impl.
void sax_start(void*, const xmlChar*, const xmlChar*, const xmlChar*, int, const xmlChar**, int, int,
               const xmlChar**);
void sax_end(void*, const xmlChar*, const xmlChar*, const xmlChar*);
void sax_text(void*, const xmlChar*, int);
void sax_cdata(void*, const xmlChar*, int);
void sax_error(void*, xmlErrorPtr);
void sax_comment(void*, const xmlChar*);
void sax_pi(void*, const xmlChar*, const xmlChar*);
void sax_subset(void*, const xmlChar*, const xmlChar*, const xmlChar*);
void sax_entity_decl(void*, const xmlChar*, int, const xmlChar*, const xmlChar*, xmlChar*);
void sax_unparsed_entity_decl(void*, const xmlChar*, const xmlChar*, const xmlChar*, const xmlChar*);
void sax_notation_decl(void*, const xmlChar*, const xmlChar*, const xmlChar*);
void sax_attribute_decl(void*, const xmlChar*, const xmlChar*, int, int, const xmlChar*, xmlEnumerationPtr);
void sax_element_decl(void*, const xmlChar*, int, xmlElementContentPtr);
xmlEntityPtr sax_get_entity(void*, const xmlChar*);
xmlParserInputPtr sax_resolve_entity(void*, const xmlChar*, const xmlChar*);
void sax_reference(void*, const xmlChar*);

xmlSAXHandler make_sax() {
    xmlSAXHandler s;
    std::memset(&s, 0, sizeof s);
    s.initialized = XML_SAX2_MAGIC;
    s.startElementNs = sax_start;
    s.endElementNs = sax_end;
    s.characters = sax_text;
    s.ignorableWhitespace = sax_text;
    s.cdataBlock = sax_cdata;
    s.serror = sax_error;
    // Restricted XML (RFC 6120 §11). The framer already rejects the markup
    // that leads to most of these; they stay as a second line of defence.
    s.comment = sax_comment;
    s.processingInstruction = sax_pi;
    s.internalSubset = sax_subset;
    s.externalSubset = sax_subset;
    s.entityDecl = sax_entity_decl;
    s.unparsedEntityDecl = sax_unparsed_entity_decl;
    s.notationDecl = sax_notation_decl;
    s.attributeDecl = sax_attribute_decl;
    s.elementDecl = sax_element_decl;
    s.getEntity = sax_get_entity; // only asked for non-predefined entities
    s.getParameterEntity = sax_get_entity;
    s.resolveEntity = sax_resolve_entity;
    s.reference = sax_reference;
    return s;
}

void init_libxml() {
    static const bool done = [] {
        xmlInitParser();
        return true;
    }();
    (void)done;
}

} // namespace

const char* parse_error_condition(ParseError e) {
    switch (e) {
    case ParseError::NotWellFormed: return "not-well-formed";
    case ParseError::RestrictedXml: return "restricted-xml";
    case ParseError::PolicyViolation: return "policy-violation";
    case ParseError::InvalidNamespace: return "invalid-namespace";
    case ParseError::BadFormat: return "bad-format";
    case ParseError::None: break;
    }
    return "undefined-condition"; // not an error; keeps a caller's output valid
}

struct StreamParser::Impl {
    enum class State : std::uint8_t { Open, Suspended, Failed, Closed };

    Impl(ParserHandler& handler, const Limits& lim) : h(handler), limits(&lim) {
        init_libxml();
        new_context();
    }
    ~Impl() {
        if (ctxt) xmlFreeParserCtxt(ctxt);
    }

    FeedResult feed(const char* d, std::size_t n);
    void reset();
    StreamParser::Memory memory() const;

    void new_context();
    void maybe_rebuild();
    bool fast_ready() const {
        return state == State::Open && depth == 1 && held.empty() && reported_end == handed_end &&
               framer.between_elements();
    }
    std::size_t fast_run(const char* d, std::size_t n);
    void deliver(const Node& el, std::string_view raw_bytes, std::uint64_t end_abs);
    void push(const char* d, std::size_t n);
    void parse(const char* p, std::size_t n);
    void keep_header(const char* d, const ScanResult& s);
    void add_text(const char* p, std::size_t n);
    char* text_space(std::size_t n);
    void add_original(const char* p, std::size_t n);
    std::string_view element_bytes(std::uint64_t end);
    void keep_partial(const char* d, std::size_t n);
    bool bound_inside(const xmlChar* prefix) const;

    // SAX events
    void on_start(const xmlChar* local, const xmlChar* prefix, const xmlChar* uri, int nb_ns, const xmlChar** ns,
                  int nb_attrs, const xmlChar** attrs);
    void on_stream_open(const xmlChar* local, const xmlChar* uri, int nb_ns, const xmlChar** ns, int nb_attrs,
                        const xmlChar** attrs);
    void on_end();
    void on_text(const char* p, std::size_t n);
    void on_error(const xmlError* e);
    void restricted(const char* what) {
        if (state == State::Open) fail(ParseError::RestrictedXml, what);
    }

    bool check_attrs(int nb_ns, int nb_attrs, const xmlChar** attrs);
    std::string_view unescape(const xmlChar* v, const xmlChar* end);
    std::string_view unescape(const xmlChar* v) {
        return v ? unescape(v, v + std::strlen(reinterpret_cast<const char*>(v))) : std::string_view();
    }
    Attr* copy_attrs(int nb_attrs, const xmlChar** attrs);
    std::size_t take_end(bool header);
    void fail(ParseError e, std::string_view detail);
    void fail_limit(const char* what, std::size_t figure, const char* unit);
    void suspend(std::uint64_t end_abs) {
        state = State::Suspended;
        suspend_abs = end_abs;
        ctxt->disableSAX = 1; // libxml2 finishes the chunk silently
    }

    ParserHandler& h;
    const Limits* limits;
    xmlParserCtxtPtr ctxt = nullptr;
    Arena arena;
    Framer framer;
    std::string held;       // bytes of an unfinished tag, not yet given to libxml2
    std::string header_raw; // the stream header as received, for replays
    std::vector<std::size_t> ends;
    std::string stream_ns; // the header's default namespace, for parse_fast_element()
    std::uint64_t handed_end = 0;   // stream offset past the last unit given to libxml2
    std::uint64_t reported_end = 0; // ... and past the last one it reported
    std::size_t next_end = 0;
    std::uint64_t slice_abs = 0; // stream offset of the bytes being handed over
    std::size_t slice_len = 0;
    std::uint64_t doc_delta = 0; // stream offset minus libxml2 document offset
    std::uint64_t suspend_abs = 0; // stream offset where a suspension took effect
    std::size_t fed_peak = 0;    // largest xmlParseChunk since the context was made
    State state = State::Open;
    bool replaying = false;
    unsigned depth = 0; // open elements, the stream element included
    Node* cur = nullptr; // innermost open element of the current stanza
    Node* open_text = nullptr; // Text node the next characters may extend
    std::size_t open_text_cap = 0;
    char detail[256] = {};

    // Raw elements and placeholders (top of this file).
    const char* chunk = nullptr;    // the caller's bytes in feed()
    std::uint64_t chunk_abs = 0;    // their stream offset
    std::size_t chunk_len = 0;
    std::uint64_t elem_start = 0;   // stream offset where the next top-level element's bytes begin
    std::string partial;            // [elem_start, chunk_abs): an element begun in an earlier feed()
    std::string_view raw;           // element_raw() during on_element()
    bool raw_ok = true;             // the current element binds every prefix it uses
    std::vector<std::pair<unsigned, const xmlChar*>> prefixes; // declared in it, with their depth
};

namespace {

StreamParser::Impl* impl(void* ud) { return static_cast<StreamParser::Impl*>(ud); }

void sax_start(void* ud, const xmlChar* local, const xmlChar* prefix, const xmlChar* uri, int nb_ns,
               const xmlChar** ns, int nb_attrs, int, const xmlChar** attrs) {
    impl(ud)->on_start(local, prefix, uri, nb_ns, ns, nb_attrs, attrs);
}
void sax_end(void* ud, const xmlChar*, const xmlChar*, const xmlChar*) { impl(ud)->on_end(); }
void sax_text(void* ud, const xmlChar* p, int n) {
    impl(ud)->on_text(reinterpret_cast<const char*>(p), static_cast<std::size_t>(n));
}
// libxml2 2.9 checks CDATA content with xmlCheckCdataPush, which lets
// overlong UTF-8 through (C0 BC is '<'); forwarding that would get our
// outgoing streams killed by the next hop.
void sax_cdata(void* ud, const xmlChar* p, int n) {
    StreamParser::Impl* self = impl(ud);
    if (self->state != StreamParser::Impl::State::Open) return;
    if (!valid_xml_utf8(p, static_cast<std::size_t>(n)))
        return self->fail(ParseError::NotWellFormed, "invalid UTF-8 in CDATA section");
    self->on_text(reinterpret_cast<const char*>(p), static_cast<std::size_t>(n));
}
void sax_error(void* ud, xmlErrorPtr e) { impl(ud)->on_error(e); }
void sax_comment(void* ud, const xmlChar*) { impl(ud)->restricted("comment"); }
void sax_pi(void* ud, const xmlChar*, const xmlChar*) { impl(ud)->restricted("processing instruction"); }
void sax_subset(void* ud, const xmlChar*, const xmlChar*, const xmlChar*) {
    impl(ud)->restricted("document type declaration");
}
void sax_entity_decl(void* ud, const xmlChar*, int, const xmlChar*, const xmlChar*, xmlChar*) {
    impl(ud)->restricted("entity declaration");
}
void sax_unparsed_entity_decl(void* ud, const xmlChar*, const xmlChar*, const xmlChar*, const xmlChar*) {
    impl(ud)->restricted("entity declaration");
}
void sax_notation_decl(void* ud, const xmlChar*, const xmlChar*, const xmlChar*) {
    impl(ud)->restricted("notation declaration");
}
void sax_attribute_decl(void* ud, const xmlChar*, const xmlChar*, int, int, const xmlChar*,
                        xmlEnumerationPtr tree) {
    xmlFreeEnumeration(tree); // ownership passes to the callback
    impl(ud)->restricted("attribute-list declaration");
}
void sax_element_decl(void* ud, const xmlChar*, int, xmlElementContentPtr) {
    impl(ud)->restricted("element declaration");
}
xmlEntityPtr sax_get_entity(void* ud, const xmlChar*) {
    impl(ud)->restricted("reference to an undefined entity");
    return nullptr;
}
xmlParserInputPtr sax_resolve_entity(void* ud, const xmlChar*, const xmlChar*) {
    impl(ud)->restricted("external entity");
    return nullptr;
}
void sax_reference(void* ud, const xmlChar*) { impl(ud)->restricted("entity reference"); }

} // namespace

void StreamParser::Impl::new_context() {
    static const xmlSAXHandler sax = make_sax();
    if (ctxt) xmlFreeParserCtxt(ctxt);
    // libxml2 copies the handler.
    ctxt = xmlCreatePushParserCtxt(const_cast<xmlSAXHandler*>(&sax), this, nullptr, 0, nullptr);
    fed_peak = 0;
    if (!ctxt) return;
    // No NOENT (entities are never substituted), no HUGE (keep libxml2's own
    // caps), no network; the encoding is UTF-8 whatever the declaration says.
    xmlCtxtUseOptions(ctxt, XML_PARSE_NONET | XML_PARSE_IGNORE_ENC);
}

void StreamParser::Impl::reset() {
    new_context();
    framer = Framer();
    held.clear();
    header_raw.clear();
    stream_ns.clear();
    handed_end = reported_end = 0;
    ends.clear();
    doc_delta = 0;
    state = State::Open;
    depth = 0;
    cur = nullptr;
    open_text = nullptr;
    elem_start = 0;
    partial.clear();
}

FeedResult StreamParser::Impl::feed(const char* d, std::size_t n) {
    FeedResult r;
    if (state == State::Open && !ctxt) fail(ParseError::NotWellFormed, "parser allocation failed");
    switch (state) {
    case State::Failed:
        r.ok = false;
        return r;
    case State::Suspended: // a caller bug: everything is trailing
        r.suspended = true;
        r.trailing = n;
        r.trailing_nonspace = !all_ws(d, n);
        return r;
    case State::Closed:
        return r;
    case State::Open:
        break;
    }
    chunk = d;
    chunk_abs = framer.offset();
    chunk_len = n;
    // The fast path takes what it can; a slice for the framer and libxml2
    // ends after one unit (the fast path may take the next element), at the
    // chunk's end, or at an error.
    for (std::size_t off = 0; off < n && state == State::Open;) {
        maybe_rebuild();
        if (state != State::Open) break;
        if (fast_ready()) {
            off += fast_run(d + off, n - off);
            if (off == n || state != State::Open) break;
        }
        ends.clear();
        next_end = 0;
        slice_abs = framer.offset();
        slice_len = n - off;
        const bool had_header = framer.header_done();
        const ScanResult s = framer.scan(d + off, n - off, *limits, ends, 1);
        if (!had_header) keep_header(d + off, s);
        if (s.flush > 0) {
            if (!ends.empty()) handed_end = slice_abs + ends.back();
            push(d + off, s.flush);
        }
        if (state == State::Open && s.err != ParseError::None) {
            fail(s.err, s.detail);
            xmlStopParser(ctxt);
        }
        if (state != State::Open) break;
        if (s.scanned < n - off) { // stopped right after its unit
            off += s.scanned;
            continue;
        }
        held.append(d + off + s.flush, n - off - s.flush);
        break;
    }
    if (state == State::Suspended) {
        r.suspended = true;
        r.trailing = static_cast<std::size_t>(chunk_abs + n - suspend_abs);
        r.trailing_nonspace = !all_ws(d + n - r.trailing, r.trailing);
        return r;
    }
    if (state == State::Open) keep_partial(d, n);
    chunk = nullptr;
    r.ok = state != State::Failed;
    return r;
}

// An element still open at the end of a chunk: its bytes so far are kept
// (bounded by max_stanza_bytes), for element_raw() and add_original().
void StreamParser::Impl::keep_partial(const char* d, std::size_t n) {
    const std::uint64_t end = chunk_abs + n;
    if (framer.between_elements() || elem_start >= end) {
        elem_start = end; // whitespace between elements is not part of either
        partial.clear();
        if (partial.capacity() > kKeepPartialCapacity) std::string().swap(partial);
        return;
    }
    if (elem_start >= chunk_abs) partial.assign(d + (elem_start - chunk_abs), end - elem_start);
    else partial.append(d, n);
}

// The bytes of the top-level element ending at stream offset `end`.
std::string_view StreamParser::Impl::element_bytes(std::uint64_t end) {
    if (!chunk || end < elem_start || end > chunk_abs + chunk_len) return {};
    std::string_view v;
    if (elem_start >= chunk_abs) {
        v = std::string_view(chunk + (elem_start - chunk_abs), end - elem_start);
    } else {
        if (partial.size() != chunk_abs - elem_start) return {}; // never
        partial.append(chunk, end - chunk_abs);
        v = partial;
    }
    while (!v.empty() && is_ws(static_cast<unsigned char>(v.front()))) v.remove_prefix(1);
    return v;
}

// Text libxml2 reports from its input buffer is copied from the bytes as
// received: libxml2 may have seen placeholders there. A piece may begin in
// an earlier chunk (kept in `partial`) and end in this one.
void StreamParser::Impl::add_original(const char* p, std::size_t n) {
    const xmlParserInputPtr in = ctxt->input;
    const auto* q = reinterpret_cast<const xmlChar*>(p);
    if (!chunk || !in || !in->base || q < in->base || q + n > in->end) return add_text(p, n);
    std::uint64_t at = static_cast<std::uint64_t>(in->consumed) + static_cast<std::uint64_t>(q - in->base) + doc_delta;
    if (at < elem_start || at + n > chunk_abs + chunk_len ||
        (at < chunk_abs && partial.size() != chunk_abs - elem_start)) {
        assert(false);
        return add_text(p, n); // never: libxml2 saw no placeholder where we cannot map
    }
    char* out = text_space(n);
    while (n > 0) {
        const bool early = at < chunk_abs;
        const std::size_t k = early ? static_cast<std::size_t>(std::min<std::uint64_t>(n, chunk_abs - at)) : n;
        const char* o = early ? partial.data() + (at - elem_start) : chunk + (at - chunk_abs);
        assert(o[0] == p[0] || (p[0] == 'x' && static_cast<unsigned char>(o[0]) >= 0x80));
        std::memcpy(out, o, k);
        out += k;
        at += k;
        p += k;
        n -= k;
    }
}

bool StreamParser::Impl::bound_inside(const xmlChar* prefix) const {
    if (!prefix || std::strcmp(reinterpret_cast<const char*>(prefix), "xml") == 0) return true;
    for (const auto& [d, p] : prefixes)
        if (p == prefix || std::strcmp(reinterpret_cast<const char*>(p), reinterpret_cast<const char*>(prefix)) == 0)
            return true;
    return false;
}

void StreamParser::Impl::keep_header(const char* d, const ScanResult& s) {
    if (framer.header_done())
        header_raw.append(d, ends.front());
    else if (s.err == ParseError::None)
        header_raw.append(d, s.scanned); // bounded by max_header_bytes
}

// Top-level elements straight from the chunk, while parse_fast_element()
// takes them; whitespace between them is skipped. Returns the bytes
// consumed. Anything else is left to the framer and libxml2, from its '<'.
std::size_t StreamParser::Impl::fast_run(const char* d, std::size_t n) {
    std::size_t i = 0;
    while (state == State::Open) {
        std::size_t j = i;
        while (j < n && is_ws(static_cast<unsigned char>(d[j]))) ++j;
        framer.skip(j - i);
        doc_delta += j - i; // bytes libxml2 never sees
        i = j;
        if (n - i < 2 || d[i] != '<' || d[i + 1] == '/' || d[i + 1] == '!' || d[i + 1] == '?') break;
        arena.reset_and_trim(kKeepArenaBytes);
        std::size_t len = 0;
        const Node* el = parse_fast_element({d + i, n - i}, stream_ns, *limits, arena, &len);
        if (!el) break;
        framer.skip(len);
        doc_delta += len;
        deliver(*el, {d + i, len}, framer.offset());
        i += len;
    }
    return i;
}

// A top-level element, from either path, whose bytes end at stream offset
// end_abs; raw_bytes: what element_raw() gives meanwhile.
void StreamParser::Impl::deliver(const Node& el, std::string_view raw_bytes, std::uint64_t end_abs) {
    raw = raw_bytes;
    const bool go_on = h.on_element(el);
    raw = {};
    elem_start = end_abs;
    partial.clear();
    if (partial.capacity() > kKeepPartialCapacity) std::string().swap(partial); // an idle stream keeps little
    if (!go_on && state == State::Open) suspend(end_abs);
}

// Hands libxml2 the held bytes and then the chunk's complete part.
void StreamParser::Impl::push(const char* d, std::size_t n) {
    if (!held.empty()) {
        framer.put_placeholders(held.data(), slice_abs - held.size(), held.size());
        parse(held.data(), held.size());
        held.clear();
        if (held.capacity() > kKeepHeldCapacity) std::string().swap(held);
    }
    if (framer.placeholders_before(slice_abs + n)) {
        // One copy per thread, not per stream: libxml2 copies its input
        // before any callback runs, so nothing reads it after parse().
        static thread_local std::string patched;
        patched.assign(d, n);
        framer.put_placeholders(patched.data(), slice_abs, n);
        parse(patched.data(), n);
        if (patched.capacity() > 4 * kKeepHeldCapacity) std::string().swap(patched);
    } else {
        parse(d, n);
    }
    // Halting frees libxml2's buffers, so it is done here, never from a callback.
    if (state == State::Failed || state == State::Suspended) xmlStopParser(ctxt);
}

void StreamParser::Impl::parse(const char* p, std::size_t n) {
    constexpr std::size_t kMaxCall = 1u << 30; // xmlParseChunk takes an int
    fed_peak = std::max(fed_peak, n);
    while (n > 0 && state == State::Open) {
        const std::size_t k = std::min(n, kMaxCall);
        xmlParseChunk(ctxt, p, static_cast<int>(k), 0);
        p += k;
        n -= k;
    }
}

// Between stanzas, replaces a context that holds too much memory (a name
// dictionary inflated by a peer, an input buffer grown for one huge
// stanza) with a fresh one primed with the original header, which
// restores the namespace scope.
void StreamParser::Impl::maybe_rebuild() {
    if (depth != 1 || !framer.between_elements() || !held.empty()) return;
    if (fed_peak <= kRebuildAfterFeed && xmlDictGetUsage(ctxt->dict) < kDictRebuildBytes) return;
    new_context();
    if (!ctxt) return fail(ParseError::NotWellFormed, "parser allocation failed");
    depth = 0;
    replaying = true;
    parse(header_raw.data(), header_raw.size());
    replaying = false;
    if (state == State::Open && depth != 1) fail(ParseError::NotWellFormed, "stream header replay failed");
    doc_delta = framer.offset() - header_raw.size();
}

std::size_t StreamParser::Impl::take_end(bool header) {
    std::size_t off = slice_len;
    if (next_end < ends.size()) off = ends[next_end++];
    reported_end = slice_abs + off;
#ifndef NDEBUG
    // The framer and libxml2 must agree on where the element ended.
    long pos = xmlByteConsumed(ctxt);
    if (header) pos += ctxt->input->cur[0] == '>' ? 1 : 2; // called at the '>'
    assert(pos >= 0 && static_cast<std::uint64_t>(pos) + doc_delta == slice_abs + off);
#else
    (void)header;
#endif
    return off;
}

void StreamParser::Impl::fail(ParseError e, std::string_view why) {
    state = State::Failed;
    if (ctxt) ctxt->disableSAX = 1;
    h.on_parse_error(e, why);
}

void StreamParser::Impl::fail_limit(const char* what, std::size_t figure, const char* unit) {
    format_limit(detail, sizeof detail, what, figure, unit);
    fail(ParseError::PolicyViolation, detail);
}

void StreamParser::Impl::on_error(const xmlError* e) {
    if (e->level == XML_ERR_WARNING || state != State::Open) return;
    std::size_t n = 0;
    for (const char* m = e->message ? e->message : "malformed XML"; *m && n + 1 < sizeof detail; ++m)
        detail[n++] = *m == '\n' ? ' ' : *m;
    while (n > 0 && detail[n - 1] == ' ') --n;
    // The message quotes the peer's bytes and the cut above may split a
    // character: it ends up in a stream error's <text/>, which must stay
    // well-formed, so anything but clean UTF-8 is shown as '?'.
    if (!valid_xml_utf8(reinterpret_cast<const unsigned char*>(detail), n))
        for (std::size_t i = 0; i < n; ++i)
            if (static_cast<unsigned char>(detail[i]) >= 0x80 || static_cast<unsigned char>(detail[i]) < 0x20) detail[i] = '?';
    fail(ParseError::NotWellFormed, std::string_view(detail, n));
}

bool StreamParser::Impl::check_attrs(int nb_ns, int nb_attrs, const xmlChar** attrs) {
    const Limits& lim = *limits;
    // Namespace declarations are attributes too (the framer counts them).
    if (static_cast<std::size_t>(nb_ns) + static_cast<std::size_t>(nb_attrs) > lim.max_attrs) {
        fail_limit("element has more than", lim.max_attrs, " attributes");
        return false;
    }
    for (int i = 0; i < nb_attrs; ++i) {
        // Decoded length: each "&#38;" (how libxml2 passes '&') is one byte.
        const xmlChar* v = attrs[i * 5 + 3];
        const xmlChar* end = attrs[i * 5 + 4];
        std::size_t len = static_cast<std::size_t>(end - v);
        if (len <= lim.max_attr_value) continue;
        const std::string_view raw(reinterpret_cast<const char*>(v), len);
        for (std::size_t p = raw.find("&#38;"); p != raw.npos; p = raw.find("&#38;", p + 5)) len -= 4;
        if (len > lim.max_attr_value) {
            fail_limit("attribute value exceeds", lim.max_attr_value, " bytes");
            return false;
        }
    }
    return true;
}

// Without XML_PARSE_NOENT libxml2 hands '&' in attribute values (namespace
// URIs included) over as the literal "&#38;", for a DOM builder to
// re-parse. Every other reference is already decoded and no other '&' can
// reach us, so undo just that one while copying into the arena.
std::string_view StreamParser::Impl::unescape(const xmlChar* v, const xmlChar* end) {
    const char* s = reinterpret_cast<const char*>(v);
    const auto n = static_cast<std::size_t>(end - v);
    if (!std::memchr(s, '&', n)) return arena.copy(s, n);
    char* out = static_cast<char*>(arena.alloc(n, 1));
    std::size_t o = 0;
    for (std::size_t i = 0; i < n;) {
        if (s[i] == '&' && n - i >= 5 && std::memcmp(s + i, "&#38;", 5) == 0) {
            out[o++] = '&';
            i += 5;
        } else {
            out[o++] = s[i++];
        }
    }
    return {out, o};
}

Attr* StreamParser::Impl::copy_attrs(int nb_attrs, const xmlChar** attrs) {
    Attr* first = nullptr;
    Attr** tail = &first;
    for (int i = 0; i < nb_attrs; ++i) {
        const xmlChar** a = attrs + i * 5; // localname, prefix, URI, value, end
        Attr* at = arena.make<Attr>();
        at->ns = unescape(a[2]);
        at->name = arena.copy(sv(a[0]));
        at->value = unescape(a[3], a[4]);
        *tail = at;
        tail = &at->next;
    }
    return first;
}

void StreamParser::Impl::on_stream_open(const xmlChar* local, const xmlChar* uri, int nb_ns,
                                        const xmlChar** ns, int nb_attrs, const xmlChar** attrs) {
    depth = 1;
    if (replaying) return;
    if (sv(local) != "stream" || sv(uri) != kStreamsNs) // no '&' to decode in either
        return fail(ParseError::InvalidNamespace, "stream element is not <stream xmlns='http://etherx.jabber.org/streams'>");
    if (!check_attrs(nb_ns, nb_attrs, attrs)) return;
    arena.reset_and_trim(kKeepArenaBytes);
    StreamHeader hdr;
    hdr.name = arena.copy(sv(local));
    hdr.ns = arena.copy(sv(uri));
    for (int i = 0; i < nb_ns; ++i) {
        const std::string_view prefix = sv(ns[i * 2]), ns_uri = unescape(ns[i * 2 + 1]);
        if (ns[i * 2] == nullptr) {
            hdr.default_ns = ns_uri;
            stream_ns.assign(ns_uri);
        } else if (prefix == "db" && ns_uri == kDialbackNs)
            hdr.declares_dialback = true;
    }
    for (int i = 0; i < nb_attrs; ++i) {
        const xmlChar** a = attrs + i * 5;
        const std::string_view name = sv(a[0]), attr_ns = unescape(a[2]);
        std::string_view* field = nullptr;
        if (attr_ns.empty()) {
            if (name == "from") field = &hdr.from;
            else if (name == "to") field = &hdr.to;
            else if (name == "id") field = &hdr.id;
            else if (name == "version") field = &hdr.version;
        } else if (attr_ns == kXmlNs && name == "lang") {
            field = &hdr.lang;
        }
        if (field) *field = unescape(a[3], a[4]);
    }
    const std::size_t end = take_end(true);
    elem_start = slice_abs + end;
    partial.clear();
    if (!h.on_stream_open(hdr) && state == State::Open) suspend(slice_abs + end);
}

void StreamParser::Impl::on_start(const xmlChar* local, const xmlChar* prefix, const xmlChar* uri, int nb_ns,
                                  const xmlChar** ns, int nb_attrs, const xmlChar** attrs) {
    if (state != State::Open) return;
    if (depth == 0) return on_stream_open(local, uri, nb_ns, ns, nb_attrs, attrs);
    if (depth == 1) {
        // A new top-level element: the previous one's views expire now.
        arena.reset_and_trim(kKeepArenaBytes);
        cur = nullptr;
        raw_ok = true;
        prefixes.clear();
    }
    open_text = nullptr;
    ++depth;
    for (int i = 0; i < nb_ns; ++i)
        if (ns[i * 2]) prefixes.emplace_back(depth, ns[i * 2]);
    if (!bound_inside(prefix)) raw_ok = false;
    for (int i = 0; i < nb_attrs && raw_ok; ++i)
        if (!bound_inside(attrs[i * 5 + 1])) raw_ok = false;
    if (depth - 1 > limits->max_depth) return fail_limit("element depth exceeds", limits->max_depth, "");
    if (!check_attrs(nb_ns, nb_attrs, attrs)) return;
    Node* n = arena.make<Node>();
    n->ns = unescape(uri);
    n->name = arena.copy(sv(local));
    n->attrs = copy_attrs(nb_attrs, attrs);
    n->parent = cur;
    if (cur) {
        if (cur->last)
            cur->last->next = n;
        else
            cur->first = n;
        cur->last = n;
    }
    cur = n;
}

void StreamParser::Impl::on_end() {
    if (state != State::Open || depth == 0) return;
    if (--depth == 0) {
        state = State::Closed;
        h.on_stream_close();
        return;
    }
    Node* n = cur;
    cur = n->parent;
    open_text = nullptr;
    while (!prefixes.empty() && prefixes.back().first > depth) prefixes.pop_back();
    if (depth == 1) {
        const std::size_t end = take_end(false);
        const std::uint64_t end_abs = slice_abs + end;
        const std::string_view bytes = element_bytes(end_abs);
        deliver(*n, raw_ok ? bytes : std::string_view(), end_abs);
    }
}

void StreamParser::Impl::on_text(const char* p, std::size_t n) {
    if (state != State::Open || n == 0) return;
    if (depth < 2) { // whitespace keepalives between stanzas are fine
        if (!all_ws(p, n)) fail(ParseError::BadFormat, "character data at stream level");
        return;
    }
    add_original(p, n);
}

// libxml2 splits a text run at references, CDATA and every 300 bytes of
// non-ASCII text; the pieces are merged into one Text node whose buffer
// grows by doubling (copying the whole text per piece would be quadratic).
void StreamParser::Impl::add_text(const char* p, std::size_t n) { std::memcpy(text_space(n), p, n); }

// Room for n more bytes of the current Text node (a new one if needed).
char* StreamParser::Impl::text_space(std::size_t n) {
    if (cur->last && cur->last == open_text) {
        Node* t = open_text;
        const std::size_t old = t->text.size();
        char* buf = const_cast<char*>(t->text.data()); // arena memory we own
        if (old + n > open_text_cap) {
            open_text_cap = std::max<std::size_t>(2 * (old + n), 64);
            char* grown = static_cast<char*>(arena.alloc(open_text_cap, 1));
            std::memcpy(grown, buf, old);
            buf = grown;
        }
        t->text = {buf, old + n};
        return buf + old;
    }
    Node* t = arena.make<Node>();
    t->kind = Node::Kind::Text;
    t->parent = cur;
    char* buf = static_cast<char*>(arena.alloc(n, 1));
    t->text = {buf, n};
    open_text = t;
    open_text_cap = n;
    if (cur->last)
        cur->last->next = t;
    else
        cur->first = t;
    cur->last = t;
    return buf;
}

StreamParser::Memory StreamParser::Impl::memory() const {
    StreamParser::Memory m;
    m.arena_used = arena.bytes_used();
    m.arena_reserved = arena.bytes_reserved();
    m.held_input = held.size();
    if (ctxt && ctxt->input) m.libxml_input = static_cast<std::size_t>(ctxt->input->end - ctxt->input->base);
    if (ctxt && ctxt->dict) m.libxml_dict = xmlDictGetUsage(ctxt->dict);
    return m;
}

StreamParser::StreamParser(ParserHandler& h, Limits limits) : limits_(limits) {
    impl_ = std::make_unique<Impl>(h, limits_);
}

StreamParser::~StreamParser() = default;

FeedResult StreamParser::feed(const char* data, std::size_t len) { return impl_->feed(data, len); }

std::string_view StreamParser::element_raw() const { return impl_->raw; }

void StreamParser::reset() { impl_->reset(); }

StreamParser::Memory StreamParser::memory() const { return impl_->memory(); }

} // namespace s2smux::xml
