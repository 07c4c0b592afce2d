#define BOOST_TEST_MODULE test_xml_parser
#include <boost/test/unit_test.hpp>

#include "xml/stream_parser.h"

#include <libxml/parser.h>
#include <libxml/xmlmemory.h>
#include <malloc.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <ostream>
#include <random>
#include <string>
#include <vector>

using namespace s2smux::xml;

namespace s2smux::xml {
std::ostream& operator<<(std::ostream& o, ParseError e) { return o << parse_error_condition(e); }
} // namespace s2smux::xml

// ---------------------------------------------------------------------------
// Allocation counters: C++ operator new and libxml2's allocator.

namespace {
bool g_counting = false;
long g_news = 0;
long g_xml_allocs = 0;
long g_xml_frees = 0;
long g_xml_live = 0; // bytes libxml2 holds right now (always tracked)

void count_free(void* p) {
    if (g_counting && p) ++g_xml_frees;
    if (p) g_xml_live -= static_cast<long>(malloc_usable_size(p));
    std::free(p);
}
void* count_malloc(size_t n) {
    if (g_counting) ++g_xml_allocs;
    void* p = std::malloc(n);
    if (p) g_xml_live += static_cast<long>(malloc_usable_size(p));
    return p;
}
void* count_realloc(void* p, size_t n) {
    if (g_counting) ++g_xml_allocs;
    const long old = p ? static_cast<long>(malloc_usable_size(p)) : 0;
    void* q = std::realloc(p, n);
    if (q) g_xml_live += static_cast<long>(malloc_usable_size(q)) - old;
    return q;
}
char* count_strdup(const char* s) {
    if (g_counting) ++g_xml_allocs;
    char* p = strdup(s);
    if (p) g_xml_live += static_cast<long>(malloc_usable_size(p));
    return p;
}

struct XmlAllocFixture {
    // Must run before libxml2 is first used.
    XmlAllocFixture() { xmlMemSetup(count_free, count_malloc, count_realloc, count_strdup); }
};
} // namespace

BOOST_TEST_GLOBAL_FIXTURE(XmlAllocFixture);

// GCC flags free() in a replacement operator delete as mismatched with new.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
void* operator new(std::size_t n) {
    if (g_counting) ++g_news;
    if (void* p = std::malloc(n ? n : 1)) return p;
    throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

// ---------------------------------------------------------------------------
// Helpers

namespace {

const std::string kHeader =
    "<?xml version='1.0'?>"
    "<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams'"
    " xmlns:db='jabber:server:dialback' from='a.example' to='b.example' id='s-1'"
    " version='1.0' xml:lang='en'>";

// Canonical text form of a node tree; also checks the tree's links.
void dump(std::string& o, const Node& n) {
    if (n.kind == Node::Kind::Text) {
        o += '"';
        o.append(n.text);
        o += '"';
        return;
    }
    o += '{';
    o.append(n.ns);
    o += '}';
    o.append(n.name);
    for (const Attr* a = n.attrs; a; a = a->next) {
        o += ' ';
        if (!a->ns.empty()) {
            o += '{';
            o.append(a->ns);
            o += '}';
        }
        o.append(a->name);
        o += "='";
        o.append(a->value);
        o += '\'';
    }
    if (n.first) {
        o += '[';
        const Node* last = nullptr;
        for (const Node* c = n.first; c; c = c->next) {
            if (c->parent != &n) o += "!BADPARENT";
            if (last && last->kind == Node::Kind::Text && c->kind == Node::Kind::Text) o += "!SPLITTEXT";
            dump(o, *c);
            last = c;
        }
        if (last != n.last) o += "!BADLAST";
        o += ']';
    }
}

std::string dump(const Node& n) {
    std::string s;
    dump(s, n);
    return s;
}

// When set, each element's event also shows element_raw() ("raw=[...]").
bool g_show_raw = false;
struct ShowRaw {
    ShowRaw() { g_show_raw = true; }
    ~ShowRaw() { g_show_raw = false; }
};

struct Recorder : ParserHandler {
    std::vector<std::string> events;
    StreamHeader hdr;               // views, valid during the callback only
    std::string from, to, id, version, lang, ns, default_ns, name;
    bool dialback = false;
    int opens = 0, elements = 0, closes = 0, errors = 0;
    ParseError error = ParseError::None;
    std::string detail;
    bool suspend_on_open = false;
    std::string suspend_on;         // element name whose delivery suspends
    StreamParser* parser = nullptr; // for memory() at error time
    StreamParser::Memory mem_at_error;

    bool on_stream_open(const StreamHeader& h) override {
        ++opens;
        from = h.from;
        to = h.to;
        id = h.id;
        version = h.version;
        lang = h.lang;
        ns = h.ns;
        name = h.name;
        default_ns = h.default_ns;
        dialback = h.declares_dialback;
        events.push_back("open " + name + " " + from + " " + to);
        return !suspend_on_open;
    }
    bool on_element(const Node& el) override {
        ++elements;
        events.push_back("el " + dump(el));
        if (g_show_raw && parser) events.back() += " raw=[" + std::string(parser->element_raw()) + "]";
        return el.name != suspend_on;
    }
    void on_stream_close() override {
        ++closes;
        events.push_back("close");
    }
    void on_parse_error(ParseError e, std::string_view d) override {
        ++errors;
        error = e;
        detail = d;
        if (parser) mem_at_error = parser->memory();
        events.push_back(std::string("error ") + parse_error_condition(e));
    }
    std::string log() const {
        std::string s;
        for (const auto& e : events) s += e + "\n";
        return s;
    }
};

struct Session {
    Recorder rec;
    StreamParser parser;
    explicit Session(Limits l = {}) : parser(rec, l) { rec.parser = &parser; }
    FeedResult feed(const std::string& s) { return parser.feed(s); }
};

std::string parse_whole(const std::string& doc, Limits l = {}) {
    Session s(l);
    s.feed(doc);
    return s.rec.log();
}

std::string parse_bytewise(const std::string& doc, Limits l = {}) {
    Session s(l);
    for (char c : doc) s.parser.feed(&c, 1);
    return s.rec.log();
}

std::string parse_random(const std::string& doc, unsigned seed, Limits l = {}) {
    Session s(l);
    std::mt19937 rng(seed);
    std::size_t max = 1 + rng() % 200;
    for (std::size_t i = 0; i < doc.size();) {
        const std::size_t n = std::min<std::size_t>(doc.size() - i, 1 + rng() % max);
        s.parser.feed(doc.data() + i, n);
        i += n;
    }
    return s.rec.log();
}

// The same events whatever the chunking.
void check_chunking(const std::string& doc, Limits l = {}) {
    const std::string whole = parse_whole(doc, l);
    BOOST_TEST(parse_bytewise(doc, l) == whole);
    for (unsigned seed = 1; seed <= 12; ++seed) BOOST_TEST(parse_random(doc, seed, l) == whole);
}

// The error a document ends with (checks it is the last and only one).
ParseError error_of(const std::string& doc, Limits l = {}, std::string* detail = nullptr) {
    Session s(l);
    const FeedResult r = s.feed(doc);
    BOOST_TEST(s.rec.errors <= 1);
    if (s.rec.errors == 1) {
        BOOST_TEST(!r.ok);
        BOOST_TEST(s.rec.events.back().rfind("error", 0) == 0u);
    }
    if (detail) *detail = s.rec.detail;
    // Byte by byte must agree.
    Session b(l);
    for (char c : doc) b.parser.feed(&c, 1);
    BOOST_TEST(b.rec.log() == s.rec.log());
    return s.rec.error;
}

std::string stanza_of_size(std::size_t n) {
    const std::string head = "<message><body>", tail = "</body></message>";
    BOOST_REQUIRE(n >= head.size() + tail.size());
    return head + std::string(n - head.size() - tail.size(), 'x') + tail;
}

} // namespace

// ---------------------------------------------------------------------------
// Stream header

BOOST_AUTO_TEST_CASE(header_fields) {
    Session s;
    const FeedResult r = s.feed(kHeader);
    BOOST_TEST(r.ok);
    BOOST_TEST(!r.suspended);
    BOOST_TEST(s.rec.opens == 1);
    BOOST_TEST(s.rec.name == "stream");
    BOOST_TEST(s.rec.ns == "http://etherx.jabber.org/streams");
    BOOST_TEST(s.rec.default_ns == "jabber:server");
    BOOST_TEST(s.rec.from == "a.example");
    BOOST_TEST(s.rec.to == "b.example");
    BOOST_TEST(s.rec.id == "s-1");
    BOOST_TEST(s.rec.version == "1.0");
    BOOST_TEST(s.rec.lang == "en");
    BOOST_TEST(s.rec.dialback);
}

BOOST_AUTO_TEST_CASE(header_without_dialback_and_optional_fields) {
    Session s;
    s.feed("<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' to='x&amp;y'>");
    BOOST_TEST(s.rec.opens == 1);
    BOOST_TEST(!s.rec.dialback);
    BOOST_TEST(s.rec.to == "x&y");
    BOOST_TEST(s.rec.from.empty());
    BOOST_TEST(s.rec.lang.empty());

    // Dialback under another prefix is not the "db" declaration.
    Session t;
    t.feed("<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams'"
           " xmlns:d='jabber:server:dialback'>");
    BOOST_TEST(t.rec.opens == 1);
    BOOST_TEST(!t.rec.dialback);
}

BOOST_AUTO_TEST_CASE(header_prefix_is_irrelevant_and_encoding_declaration_ignored) {
    Session s;
    s.feed("\xEF\xBB\xBF<?xml version='1.0' encoding='ISO-8859-1'?>\n"
           "<s:stream xmlns:s='http://etherx.jabber.org/streams' xmlns='jabber:server'>"
           "<message><body>\xC3\xA9</body></message>");
    BOOST_TEST(s.rec.errors == 0);
    BOOST_TEST(s.rec.opens == 1);
    // Decoded as UTF-8, not Latin-1 (which would give 4 bytes).
    BOOST_TEST(s.rec.events.back() == "el {jabber:server}message[{jabber:server}body[\"\xC3\xA9\"]]");
}

// ---------------------------------------------------------------------------
// Stanzas

BOOST_AUTO_TEST_CASE(stanza_tree_namespaces_and_attributes) {
    Session s;
    s.feed(kHeader +
           "<message from='a@a.example/r' to='b@b.example' type='chat' xml:lang='de'>"
           "<body>Hallo</body>"
           "<x xmlns='urn:x' xmlns:p='urn:p' p:attr='v' plain='w'><y>deep</y></x>"
           "<thread/>"
           "</message>");
    BOOST_TEST(s.rec.errors == 0);
    BOOST_REQUIRE(s.rec.elements == 1);
    BOOST_TEST(s.rec.events.back() ==
               "el {jabber:server}message from='a@a.example/r' to='b@b.example' type='chat'"
               " {http://www.w3.org/XML/1998/namespace}lang='de'"
               "[{jabber:server}body[\"Hallo\"]"
               "{urn:x}x {urn:p}attr='v' plain='w'[{urn:x}y[\"deep\"]]"
               "{jabber:server}thread]");
}

BOOST_AUTO_TEST_CASE(node_accessors) {
    struct H : Recorder {
        bool on_element(const Node& el) override {
            BOOST_TEST(el.is("jabber:server", "iq"));
            BOOST_TEST(el.attr("type") == "get");
            BOOST_TEST(el.has_attr("id"));
            BOOST_TEST(!el.has_attr("nope"));
            BOOST_TEST(el.attr_ns("http://www.w3.org/XML/1998/namespace", "lang") == "fr");
            const Node* q = el.child("jabber:iq:version", "query");
            BOOST_REQUIRE(q);
            BOOST_TEST(q->parent == &el);
            BOOST_TEST(el.child_in("jabber:iq:version") == q);
            BOOST_TEST(q->text_content() == "a<b");
            return Recorder::on_element(el);
        }
    } h;
    StreamParser p(h);
    p.feed(kHeader + "<iq type='get' id='1' xml:lang='fr'><query xmlns='jabber:iq:version'>a&lt;b</query></iq>");
    BOOST_TEST(h.elements == 1);
}

BOOST_AUTO_TEST_CASE(dialback_prefix_declared_on_header) {
    Session s;
    s.feed(kHeader + "<db:result from='a.example' to='b.example'>abc</db:result>"
                     "<db:verify from='a.example' to='b.example' id='x' type='valid'/>");
    BOOST_TEST(s.rec.errors == 0);
    BOOST_REQUIRE(s.rec.elements == 2);
    BOOST_TEST(s.rec.events[1] == "el {jabber:server:dialback}result from='a.example' to='b.example'[\"abc\"]");
    BOOST_TEST(s.rec.events[2] ==
               "el {jabber:server:dialback}verify from='a.example' to='b.example' id='x' type='valid'");
}

BOOST_AUTO_TEST_CASE(several_stanzas_in_one_chunk) {
    Session s;
    const FeedResult r = s.feed(kHeader + "<a/><b>1</b><c x='1'/><d><e/></d>");
    BOOST_TEST(r.ok);
    BOOST_TEST(s.rec.log() == "open stream a.example b.example\n"
                              "el {jabber:server}a\n"
                              "el {jabber:server}b[\"1\"]\n"
                              "el {jabber:server}c x='1'\n"
                              "el {jabber:server}d[{jabber:server}e]\n");
}

BOOST_AUTO_TEST_CASE(whitespace_keepalives) {
    Session s;
    s.feed(kHeader);
    s.feed(" ");
    s.feed("\n");
    s.feed("<a/> \t\r\n <b/>  ");
    s.feed("   ");
    BOOST_TEST(s.rec.errors == 0);
    BOOST_TEST(s.rec.elements == 2);

    // Keepalives never count towards the next stanza's size, even when they
    // add up to more than the limit.
    Limits l;
    l.max_stanza_bytes = 64;
    Session k(l);
    k.feed(kHeader);
    for (int i = 0; i < 1000; ++i) k.feed(" \n");
    k.feed("\n\n" + stanza_of_size(64));
    BOOST_TEST(k.rec.errors == 0);
    BOOST_TEST(k.rec.elements == 1);
    BOOST_TEST(k.parser.memory().held_input == 0u);
}

BOOST_AUTO_TEST_CASE(entities_and_character_references_decoded) {
    Session s;
    s.feed(kHeader +
           "<m a='&amp;&lt;&gt;&quot;&apos;' b='&#38;&#x26;' c='&amp;lt;' d='&amp;#38;'"
           " e='x&#9;y&#10;z&#13;w' f='lit\teral\nnl'>"
           "&amp;&lt;&gt;&quot;&apos;&#65;&#x42;&#x1F600;&#10;</m>");
    BOOST_TEST(s.rec.errors == 0);
    BOOST_TEST(s.rec.events.back() ==
               "el {jabber:server}m a='&<>\"'' b='&&' c='&lt;' d='&#38;'"
               " e='x\ty\nz\rw' f='lit eral nl'"
               "[\"&<>\"'AB\xF0\x9F\x98\x80\n\"]");
}

BOOST_AUTO_TEST_CASE(ampersand_in_namespace_uris_decoded) {
    Session s;
    s.feed("<stream:stream xmlns='urn:a&amp;b' xmlns:stream='http://etherx.jabber.org/streams'>"
           "<m xmlns:p='urn:p&#38;q' p:x='1'><c xmlns='urn:c&amp;d'/><d/></m>");
    BOOST_TEST(s.rec.errors == 0);
    BOOST_TEST(s.rec.default_ns == "urn:a&b");
    BOOST_TEST(s.rec.events.back() == "el {urn:a&b}m {urn:p&q}x='1'[{urn:c&d}c{urn:a&b}d]");
}

BOOST_AUTO_TEST_CASE(cdata_is_text_and_merged) {
    Session s;
    s.feed(kHeader + "<m>a<![CDATA[<b>&amp;]]]]>c&amp;d<![CDATA[]]></m>");
    BOOST_TEST(s.rec.errors == 0);
    BOOST_TEST(s.rec.events.back() == "el {jabber:server}m[\"a<b>&amp;]]c&d\"]");
}

BOOST_AUTO_TEST_CASE(long_text_is_one_node) {
    // libxml2 delivers long or non-ASCII text in pieces.
    std::string text;
    for (int i = 0; i < 3000; ++i) text += (i % 7 == 0) ? "\xC3\xA9" : "ab";
    Session s;
    s.feed(kHeader + "<m>" + text + "</m>");
    BOOST_TEST(s.rec.errors == 0);
    BOOST_TEST(s.rec.events.back() == "el {jabber:server}m[\"" + text + "\"]");
}

BOOST_AUTO_TEST_CASE(huge_non_ascii_text_costs_linear_memory) {
    // libxml2 hands this over in ~1,400 pieces of 300 bytes.
    std::string text;
    for (int i = 0; i < 200000; ++i) text += "\xC3\xA9";
    struct H : Recorder {
        std::size_t arena = 0, len = 0;
        bool single = false;
        bool on_element(const Node& el) override {
            ++elements;
            arena = parser->memory().arena_used;
            single = el.first && el.first->kind == Node::Kind::Text && !el.first->next;
            len = single ? el.first->text.size() : 0;
            return true;
        }
    } h;
    StreamParser p(h);
    h.parser = &p;
    p.feed(kHeader + "<m>" + text + "</m>");
    BOOST_TEST(h.errors == 0);
    BOOST_TEST(h.single);
    BOOST_TEST(h.len == text.size());
    BOOST_TEST(h.arena < 4 * text.size());
    // The next, small, element gives the big arena chunks back.
    p.feed("<small/>");
    BOOST_TEST(h.elements == 2);
    BOOST_TEST(p.memory().arena_reserved <= 64 * 1024u);
}

BOOST_AUTO_TEST_CASE(memory_is_released_after_a_huge_stanza) {
    Recorder h;
    StreamParser p(h);
    p.feed(kHeader);
    std::string small;
    for (int i = 0; i < 10; ++i) small += "<message><body>hi</body></message>";
    p.feed(small);
    p.feed(small);
    const long baseline = g_xml_live;
    // A CDATA section sends it to libxml2 (the fast path takes it into the
    // arena: checked below).
    std::string huge = stanza_of_size(400 * 1024);
    huge.replace(15, 12, "<![CDATA[]]>");
    p.feed(huge);
    BOOST_TEST(g_xml_live > baseline + 400 * 1024); // libxml2 buffered it whole
    p.feed(small);
    p.feed(small);
    BOOST_TEST(h.errors == 0);
    BOOST_TEST(h.elements == 41);
    BOOST_TEST(g_xml_live < baseline + 64 * 1024);
    BOOST_TEST(p.memory().arena_reserved <= 64 * 1024u);
    p.feed(stanza_of_size(400 * 1024)); // the fast path
    BOOST_TEST(p.memory().arena_reserved > 400 * 1024u);
    p.feed(small);
    BOOST_TEST(h.errors == 0);
    BOOST_TEST(h.elements == 52);
    BOOST_TEST(p.memory().arena_reserved <= 64 * 1024u);
    BOOST_TEST(g_xml_live < baseline + 64 * 1024);
}

BOOST_AUTO_TEST_CASE(suspend_deep_inside_a_large_chunk) {
    // More elements in one chunk than are handed to libxml2 per call.
    std::string many;
    for (int i = 0; i < 1000; ++i) many += "<a/>";
    const std::string tail = many + "x";
    Session s;
    s.rec.suspend_on = "proceed";
    s.feed(kHeader);
    const FeedResult r = s.feed(many + "<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>" + tail);
    BOOST_TEST(r.suspended);
    BOOST_TEST(r.trailing == tail.size());
    BOOST_TEST(r.trailing_nonspace);
    BOOST_TEST(s.rec.elements == 1001);
    // And with the header in the same chunk.
    Session t;
    t.rec.suspend_on = "proceed";
    const FeedResult q = t.feed(kHeader + many + many + "<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>  ");
    BOOST_TEST(q.suspended);
    BOOST_TEST(q.trailing == 2u);
    BOOST_TEST(!q.trailing_nonspace);
    BOOST_TEST(t.rec.elements == 2001);
}

BOOST_AUTO_TEST_CASE(chunking_gives_identical_events) {
    std::string doc = kHeader + "\n";
    doc += "<message from='a@a.example' to='b@b.example' type='chat' id='m&amp;1'>"
           "<body>Hello &lt;world&gt; &#x263A; \xE2\x9C\x93 caf\xC3\xA9</body>"
           "<html xmlns='http://jabber.org/protocol/xhtml-im'><body xmlns='http://www.w3.org/1999/xhtml'>"
           "<p style='a&gt;b'>x<br/>y</p></body></html></message>\n  ";
    doc += "<db:result from='a.example' to='b.example'>0123456789abcdef</db:result>";
    doc += "<iq type='get' id='v1' xml:lang='en'><query xmlns='jabber:iq:version'/></iq>\t";
    doc += "<message><body><![CDATA[x<y>z]]>" + std::string(700, 'q') + "</body></message>";
    doc += "<presence><status>" + std::string(5000, 's') + "&amp;" + std::string(100, 't') +
           "</status></presence>";
    doc += "<a attr=\"it's &quot;quoted&quot; > here\"/>";
    doc += "</stream:stream>";
    Session whole;
    whole.feed(doc);
    BOOST_TEST(whole.rec.errors == 0);
    BOOST_TEST(whole.rec.elements == 6);
    BOOST_TEST(whole.rec.closes == 1);
    check_chunking(doc);
}

BOOST_AUTO_TEST_CASE(chunking_gives_identical_errors) {
    const char* bad[] = {
        "<a><!-- c --></a>", "<a>&nope;</a>", "<a></b>", "<a>\xFF</a>", "junk", "<a><?pi x?></a>",
        "<a b='1' b='2'/>",  "<x:a/>",        "<<",      "<a><![CDATA[x]]></a>&amp;",
    };
    for (const char* b : bad) {
        BOOST_TEST_CONTEXT(b) {
            const std::string doc = kHeader + "<ok/>" + b;
            const std::string whole = parse_whole(doc);
            BOOST_TEST(whole.find("error") != std::string::npos);
            check_chunking(doc);
        }
    }
}

// ---------------------------------------------------------------------------
// Raw elements and placeholders (forwarding without re-serializing)

BOOST_AUTO_TEST_CASE(raw_is_the_element_as_received) {
    ShowRaw show;
    const std::string m1 = "<message from=\"a@a.example\" to='b@b.example' id='x&gt;&#x26;'>"
                           "<body>caf\xC3\xA9 &lt;\xF0\x9F\x98\x80&gt;<![CDATA[<\xE2\x9C\x93>]]></body></message>";
    const std::string m2 = "<presence xmlns='jabber:server'><x:c xmlns:x='urn:x' x:a='1'/></presence>";
    const std::string m3 = "<iq type='get' id='1' xml:lang='de'/>";
    const std::string doc = kHeader + "\n " + m1 + "\t\n" + m2 + m3 + " ";
    Session s;
    s.feed(doc);
    const std::string log = s.rec.log();
    BOOST_TEST(s.rec.elements == 3);
    BOOST_TEST(log.find("raw=[" + m1 + "]") != std::string::npos, log);
    BOOST_TEST(log.find("raw=[" + m2 + "]") != std::string::npos, log);
    BOOST_TEST(log.find("raw=[" + m3 + "]") != std::string::npos, log);
    check_chunking(doc); // the same bytes, and the same text, however the input is cut
}

BOOST_AUTO_TEST_CASE(raw_is_withheld_when_a_prefix_is_bound_outside_the_element) {
    ShowRaw show;
    // db: is declared on the stream header; written elsewhere it would be unbound.
    const std::string doc = kHeader + "<db:result from='a.example' to='b.example'>k</db:result>"
                            "<message><db:x/></message>"
                            "<message><a xmlns:db='urn:other'/><db:y/></message>" // out of that scope
                            "<message><b xmlns:db='urn:other'><db:z/></b></message>";
    Session s;
    s.feed(doc);
    BOOST_TEST(s.rec.elements == 4);
    const auto& ev = s.rec.events;
    BOOST_REQUIRE(ev.size() == 5u);
    BOOST_TEST(ev[1].find("raw=[]") != std::string::npos, ev[1]);
    BOOST_TEST(ev[2].find("raw=[]") != std::string::npos, ev[2]);
    BOOST_TEST(ev[3].find("raw=[]") != std::string::npos, ev[3]);
    BOOST_TEST(ev[4].find("raw=[<message><b xmlns:db='urn:other'><db:z/></b></message>]") != std::string::npos, ev[4]);
}

BOOST_AUTO_TEST_CASE(non_ascii_text_is_reported_as_received) {
    ShowRaw show;
    // Runs the framer replaces for libxml2 (2-, 3- and 4-byte characters,
    // adjacent and apart, next to references and CDATA), and runs it must
    // leave alone: a CR (libxml2 normalizes it), one on each side of a tag.
    std::string text;
    for (int i = 0; i < 40; ++i) text += "ab \xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80 z\xC3\xBC";
    const std::string doc = kHeader + "<message><body>" + text + "&amp;" + text + "<![CDATA[\xC3\xA9]]>" + text +
                            "</body><x>\xC3\xA9\r\n\xE2\x82\xAC\r" + text + "</x><y>" + text + "</y></message>" +
                            "<message><body>\xC3\xA9</body></message>";
    Session s;
    s.feed(doc);
    BOOST_TEST(s.rec.errors == 0);
    BOOST_TEST(s.rec.elements == 2);
    const std::string log = s.rec.log();
    BOOST_TEST(log.find("\"" + text + "&" + text + "\xC3\xA9" + text + "\"") != std::string::npos);
    BOOST_TEST(log.find("\"\xC3\xA9\n\xE2\x82\xAC\n" + text + "\"") != std::string::npos); // CR LF and CR -> LF
    BOOST_TEST(log.find('x' + std::string("\"]")) == std::string::npos); // no placeholder leaked
    check_chunking(doc);
}

BOOST_AUTO_TEST_CASE(invalid_characters_in_text_are_still_refused) {
    const char* bad[] = {
        "\xC0\xBC",         // overlong '<'
        "\xED\xA0\x80",     // surrogate
        "\xEF\xBF\xBE",     // U+FFFE
        "\xF4\x90\x80\x80", // past U+10FFFF
        "\xE2\x82",         // cut off
        "\x80",             // stray continuation byte
        "\x01",             // control character
    };
    for (const char* b : bad) {
        for (const std::string& around : {std::string("\xC3\xA9"), std::string("a\r")}) {
            BOOST_TEST_CONTEXT(b) {
                const std::string doc = kHeader + "<message><body>" + around + b + around + "</body></message>";
                BOOST_TEST(error_of(doc) == ParseError::NotWellFormed);
                check_chunking(doc);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Restricted XML (RFC 6120 §11)

BOOST_AUTO_TEST_CASE(restricted_xml) {
    const std::string cases[] = {
        // DTDs, before the header, with and without an internal subset.
        "<?xml version='1.0'?><!DOCTYPE stream:stream>" + kHeader.substr(21),
        "<!DOCTYPE lolz [<!ENTITY lol 'lol'><!ENTITY lol2 '&lol;&lol;'>]>" + kHeader.substr(21) +
            "<a>&lol2;</a>",
        "<!DOCTYPE x SYSTEM 'http://127.0.0.1:1/evil.dtd'>" + kHeader.substr(21),
        // Comments and processing instructions anywhere.
        "<!-- hi -->" + kHeader.substr(21),
        kHeader + "<!-- keepalive -->",
        kHeader + "<a><!-- c --></a>",
        kHeader + "<a><b/><!--",
        kHeader + "<?pi data?>",
        kHeader + "<a><?pi data?></a>",
        "<?xml version='1.0'?><?pi data?>" + kHeader.substr(21),
        "<?pi data?>" + kHeader.substr(21), // a PI at offset 0 reaches libxml2's callback
        // Markup declarations inside content.
        kHeader + "<a><!ENTITY x 'y'></a>",
        kHeader + "<a><!ELEMENT a ANY></a>",
        // Entity references other than the predefined five.
        kHeader + "<a>&nbsp;</a>",
        kHeader + "<a b='&foo;'/>",
        kHeader + "<a>&amp;&xxe;</a>",
    };
    for (const std::string& doc : cases) {
        BOOST_TEST_CONTEXT(doc) {
            Session s;
            const FeedResult r = s.feed(doc);
            BOOST_TEST(!r.ok);
            BOOST_TEST(s.rec.errors == 1);
            BOOST_TEST(s.rec.error == ParseError::RestrictedXml);
            BOOST_TEST(s.rec.elements == 0); // the offending stanza is never delivered
            BOOST_TEST(error_of(doc) == ParseError::RestrictedXml);
        }
    }
}

BOOST_AUTO_TEST_CASE(restricted_detail_names_the_construct) {
    std::string detail;
    BOOST_TEST(error_of(kHeader + "<a><!-- x --></a>", {}, &detail) == ParseError::RestrictedXml);
    BOOST_TEST(detail == "comment");
    BOOST_TEST(error_of(kHeader + "<a>&foo;</a>", {}, &detail) == ParseError::RestrictedXml);
    BOOST_TEST(detail == "reference to an undefined entity");
    BOOST_TEST(error_of("<?pi x?>" + kHeader.substr(21), {}, &detail) == ParseError::RestrictedXml);
    BOOST_TEST(detail == "processing instruction");
}

// ---------------------------------------------------------------------------
// Limits

BOOST_AUTO_TEST_CASE(stanza_byte_limit) {
    const std::string st = stanza_of_size(1000);
    Limits l;
    l.max_stanza_bytes = 1000;
    BOOST_TEST(error_of(kHeader + st + st, l) == ParseError::None);
    BOOST_TEST(parse_whole(kHeader + st, l).find("el {jabber:server}message") != std::string::npos);
    l.max_stanza_bytes = 999;
    std::string detail;
    BOOST_TEST(error_of(kHeader + st, l, &detail) == ParseError::PolicyViolation);
    BOOST_TEST(detail == "stanza exceeds 999 bytes");
    // An empty element counts the same way.
    const std::string empty = "<a b='" + std::string(100, 'x') + "'/>";
    l.max_stanza_bytes = empty.size();
    BOOST_TEST(error_of(kHeader + empty, l) == ParseError::None);
    l.max_stanza_bytes = empty.size() - 1;
    BOOST_TEST(error_of(kHeader + empty, l) == ParseError::PolicyViolation);
}

BOOST_AUTO_TEST_CASE(header_byte_limit) {
    Limits l;
    l.max_header_bytes = kHeader.size();
    BOOST_TEST(error_of(kHeader + "<a/>", l) == ParseError::None);
    l.max_header_bytes = kHeader.size() - 1;
    std::string detail;
    BOOST_TEST(error_of(kHeader + "<a/>", l, &detail) == ParseError::PolicyViolation);
    BOOST_TEST(detail == "stream header exceeds " + std::to_string(kHeader.size() - 1) + " bytes");
}

// Found by tests/fuzz (corpus/*/regress-control-char-in-header): libxml2
// ends a tag at a control character and reports the element before failing,
// which tripped the framer's consistency assertion (an abort in any build
// with assertions, i.e. a peer could crash the daemon with one byte).
BOOST_AUTO_TEST_CASE(control_character_inside_a_tag_is_not_well_formed) {
    const std::string hdr = "<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams'";
    for (std::string bad : {std::string(1, '\0'), std::string("\x07"), std::string("\x1f")}) {
        std::string detail;
        BOOST_TEST(error_of(hdr + " to='a.test' " + bad + "version='1.0'><a/>", {}, &detail) == ParseError::NotWellFormed);
        BOOST_TEST(detail == "control character inside a tag");
        BOOST_TEST(parse_whole(hdr + " to='a.test' " + bad + "version='1.0'>").find("open") == std::string::npos);
        BOOST_TEST(error_of(hdr + "><message to='a.test'" + bad + "/>") == ParseError::NotWellFormed);
    }
    BOOST_TEST(error_of(hdr + "\t\r\n><a\tb='1'\n/>") == ParseError::None); // whitespace is fine
}

BOOST_AUTO_TEST_CASE(depth_limit) {
    Limits l;
    l.max_depth = 3;
    BOOST_TEST(error_of(kHeader + "<a><b><c/></b></a>", l) == ParseError::None);
    std::string detail;
    BOOST_TEST(error_of(kHeader + "<a><b><c><d/></c></b></a>", l, &detail) == ParseError::PolicyViolation);
    BOOST_TEST(detail == "element depth exceeds 3");
}

BOOST_AUTO_TEST_CASE(attribute_count_limit) {
    const std::string hdr = "<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams'>";
    Limits l;
    l.max_attrs = 4;
    BOOST_TEST(error_of(hdr + "<a p='1' q='2' r='3' s='4'/>", l) == ParseError::None);
    BOOST_TEST(parse_whole(hdr + "<a p='1' q='2' r='3' s='4'/>", l).find("el ") != std::string::npos);
    std::string detail;
    BOOST_TEST(error_of(hdr + "<a p='1' q='2' r='3' s='4' t='5'/>", l, &detail) == ParseError::PolicyViolation);
    BOOST_TEST(detail == "element has more than 4 attributes");
    BOOST_TEST(error_of(hdr + "<a><b><c p='1' q='2' r='3' s='4' t='5'>", l) == ParseError::PolicyViolation);
    // Counted while the tag is still arriving (libxml2 would only see it whole).
    Session u(l);
    BOOST_TEST(!u.feed(hdr + "<a p='1' q='2' r='3' s='4' t='").ok);
    BOOST_TEST(u.rec.error == ParseError::PolicyViolation);
    // Namespace declarations count as attributes.
    BOOST_TEST(error_of(hdr + "<a xmlns='urn:a' q='2' r='3' s='4'/>", l) == ParseError::None);
    BOOST_TEST(error_of(hdr + "<a xmlns='urn:a' xmlns:p='urn:p' q='2' r='3' s='4'/>", l) ==
               ParseError::PolicyViolation);
    // The header is an element too (kHeader has 8 attributes).
    l.max_attrs = 8;
    BOOST_TEST(error_of(kHeader, l) == ParseError::None);
    l.max_attrs = 7;
    BOOST_TEST(error_of(kHeader, l) == ParseError::PolicyViolation);
}

BOOST_AUTO_TEST_CASE(attribute_value_limit) {
    Limits l;
    l.max_attr_value = 10;
    BOOST_TEST(error_of(kHeader + "<a v='0123456789'/>", l) == ParseError::None);
    std::string detail;
    BOOST_TEST(error_of(kHeader + "<a v='0123456789A'/>", l, &detail) == ParseError::PolicyViolation);
    BOOST_TEST(detail == "attribute value exceeds 10 bytes");
    // The decoded length counts, not the escaped one.
    BOOST_TEST(error_of(kHeader + "<a v='&amp;&amp;&amp;&amp;&amp;&lt;&lt;&lt;&lt;&#65;'/>", l) ==
               ParseError::None);
    BOOST_TEST(error_of(kHeader + "<a v='&amp;&amp;&amp;&amp;&amp;&lt;&lt;&lt;&lt;&#65;&#65;'/>", l) ==
               ParseError::PolicyViolation);
}

namespace {
const std::string& ten_megabytes() {
    static const std::string s(10 * 1024 * 1024, 'a');
    return s;
}

// Feeds `prefix` then 10 MB in 64 KiB chunks; returns the number of chunks
// the parser took before failing.
std::size_t flood(Session& s, const std::string& prefix) {
    s.feed(prefix);
    const std::string& big = ten_megabytes();
    constexpr std::size_t kChunk = 64 * 1024;
    std::size_t chunks = 0;
    for (std::size_t i = 0; i < big.size(); i += kChunk) {
        ++chunks;
        if (!s.parser.feed(big.data() + i, kChunk).ok) break;
    }
    return chunks;
}
} // namespace

BOOST_AUTO_TEST_CASE(unterminated_floods_are_stopped_at_the_limit) {
    const std::string prefixes[] = {
        kHeader + "<message to='x' ",         // start tag without '>'
        kHeader + "<message to='",            // attribute value without quote
        kHeader + "<message><body>",          // text
        kHeader + "<message><![CDATA[",       // CDATA section
        kHeader + "</stream:stream",          // end tag
    };
    const std::size_t limit = Limits{}.max_stanza_bytes;
    for (const std::string& prefix : prefixes) {
        BOOST_TEST_CONTEXT(prefix.substr(kHeader.size())) {
            Session s;
            const std::size_t chunks = flood(s, prefix);
            BOOST_TEST(s.rec.errors == 1);
            BOOST_TEST(s.rec.error == ParseError::PolicyViolation);
            BOOST_TEST(s.rec.detail == "stanza exceeds " + std::to_string(limit) + " bytes");
            // Stopped in the chunk that crossed the limit, not later.
            const std::size_t started = prefix.size() - kHeader.size();
            BOOST_TEST(chunks == (limit - started) / (64 * 1024) + 1);
            BOOST_TEST(s.rec.mem_at_error.held_input <= limit);
            BOOST_TEST(s.rec.mem_at_error.libxml_input <= 64 * 1024u);
        }
        // All at once: nothing beyond the limit is buffered.
        Session t;
        t.feed(prefix + ten_megabytes());
        BOOST_TEST(t.rec.error == ParseError::PolicyViolation);
        BOOST_TEST(t.rec.mem_at_error.held_input <= limit);
        BOOST_TEST(t.rec.mem_at_error.libxml_input <= 64 * 1024u);
    }
    // Same for the header.
    Session h;
    flood(h, "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' to='");
    BOOST_TEST(h.rec.error == ParseError::PolicyViolation);
    BOOST_TEST(h.rec.detail == "stream header exceeds 4096 bytes");
}

// ---------------------------------------------------------------------------
// Malformed input

BOOST_AUTO_TEST_CASE(malformed_xml) {
    std::string detail;
    BOOST_TEST(error_of(kHeader + "<message><body></message>", {}, &detail) == ParseError::NotWellFormed);
    BOOST_TEST(detail.find("mismatch") != std::string::npos);
    BOOST_TEST(error_of(kHeader + "<message><body>\xFF\xFE</body></message>", {}, &detail) ==
               ParseError::NotWellFormed);
    BOOST_TEST(detail.find("UTF-8") != std::string::npos);
    BOOST_TEST(error_of(kHeader + "<message><body>\xC3</body></message>") == ParseError::NotWellFormed);
    BOOST_TEST(error_of(kHeader + "<a b='\xED\xA0\x80'/>") == ParseError::NotWellFormed); // surrogate
    BOOST_TEST(error_of(kHeader + "<<") == ParseError::NotWellFormed);
    BOOST_TEST(error_of(kHeader + "<a><<") == ParseError::NotWellFormed);
    BOOST_TEST(error_of(kHeader + "<a b='1' <") == ParseError::NotWellFormed);
    BOOST_TEST(error_of(kHeader + "<a b=1/>") == ParseError::NotWellFormed);
    BOOST_TEST(error_of(kHeader + "<a b='1' b='2'/>") == ParseError::NotWellFormed);
    // A reference missing its ';' fails at once (libxml2 alone would wait
    // for a ';' and buffer everything that follows).
    Session amp;
    BOOST_TEST(!amp.feed(kHeader + "<a>&amp</a>").ok);
    BOOST_TEST(amp.rec.error == ParseError::NotWellFormed);
    BOOST_TEST(error_of(kHeader + "<a>&amp</a><b/>") == ParseError::NotWellFormed);
    BOOST_TEST(error_of(kHeader + "<a>& b;</a>") == ParseError::NotWellFormed);
    BOOST_TEST(error_of(kHeader + "<a>&#x41 ;</a>") == ParseError::NotWellFormed);
    BOOST_TEST(error_of(kHeader + "<a b='&amp'/>") == ParseError::NotWellFormed);
    BOOST_TEST(error_of(kHeader + "<a>&#xD800;</a>") == ParseError::NotWellFormed);
    BOOST_TEST(error_of(kHeader + "<a>&#0;</a>") == ParseError::NotWellFormed);
    BOOST_TEST(error_of(kHeader + "<a>]]></a>") == ParseError::NotWellFormed);
    BOOST_TEST(error_of(kHeader + "<a>x\x01y</a>") == ParseError::NotWellFormed);
    BOOST_TEST(error_of(kHeader + "<a>x" + std::string(1, '\0') + "y</a>") == ParseError::NotWellFormed);
    BOOST_TEST(error_of(kHeader + "<a><![CDAT[x]]></a>") == ParseError::NotWellFormed);
    // Overlong UTF-8, which libxml2 2.9 lets through in CDATA sections.
    BOOST_TEST(error_of(kHeader + "<a><![CDATA[\xC0\xBC]]></a>") == ParseError::NotWellFormed);
    BOOST_TEST(error_of(kHeader + "<a><![CDATA[x\xE0\x80\xBCy]]></a>") == ParseError::NotWellFormed);
    BOOST_TEST(error_of(kHeader + "<a><![CDATA[\xF0\x80\x80\xBC]]></a>") == ParseError::NotWellFormed);
    BOOST_TEST(error_of(kHeader + "<a><![CDATA[\xED\xA0\x80]]></a>") == ParseError::NotWellFormed);
    BOOST_TEST(error_of(kHeader + "<a>\xC0\xBC</a>") == ParseError::NotWellFormed);
    BOOST_TEST(error_of(kHeader + "<a><![CDATA[\xC3\xA9\xE2\x98\xBA\xF0\x9F\x98\x80]]></a>") == ParseError::None);
    BOOST_TEST(error_of(kHeader + "<undeclared:prefix/>", {}, &detail) == ParseError::NotWellFormed);
    BOOST_TEST(detail.find("prefix") != std::string::npos);
    BOOST_TEST(error_of("junk" + kHeader) == ParseError::NotWellFormed);
    BOOST_TEST(error_of("</stream:stream>") == ParseError::NotWellFormed);
    // UTF-16, which libxml2 would otherwise auto-detect.
    std::string utf16;
    for (char c : std::string("<stream:stream>")) {
        utf16 += c;
        utf16 += '\0';
    }
    BOOST_TEST(error_of(utf16) == ParseError::NotWellFormed);
    BOOST_TEST(error_of("\xFF\xFE" + utf16) == ParseError::NotWellFormed);
    BOOST_TEST(error_of("\xEF\xBB<stream/>") == ParseError::NotWellFormed);
}

BOOST_AUTO_TEST_CASE(wrong_root_namespace) {
    BOOST_TEST(error_of("<stream:stream xmlns:stream='urn:wrong' xmlns='jabber:server'>") ==
               ParseError::InvalidNamespace);
    BOOST_TEST(error_of("<stream xmlns='jabber:server'>") == ParseError::InvalidNamespace);
    BOOST_TEST(error_of("<stream:features xmlns:stream='http://etherx.jabber.org/streams'>") ==
               ParseError::InvalidNamespace);
    BOOST_TEST(error_of("<html>") == ParseError::InvalidNamespace);
    Session s;
    s.feed("<html><a/>");
    BOOST_TEST(s.rec.opens == 0);
    BOOST_TEST(s.rec.elements == 0);
}

BOOST_AUTO_TEST_CASE(text_at_stream_level) {
    BOOST_TEST(error_of(kHeader + "hello") == ParseError::BadFormat);
    BOOST_TEST(error_of(kHeader + "<a/>  x <b/>") == ParseError::BadFormat);
    BOOST_TEST(error_of(kHeader + "&amp;") == ParseError::BadFormat);
    BOOST_TEST(error_of(kHeader + "&#32;") == ParseError::BadFormat);
    BOOST_TEST(error_of(kHeader + "<![CDATA[ ]]>") == ParseError::BadFormat);
    Session s;
    s.feed(kHeader + "<a/>x<b/>");
    BOOST_TEST(s.rec.elements == 1); // <a/> came before the text
}

// ---------------------------------------------------------------------------
// Stream close, errors, suspension, reset

BOOST_AUTO_TEST_CASE(stream_close) {
    Session s;
    const FeedResult r = s.feed(kHeader + "<a/>\n</stream:stream>trailing junk <b/>");
    BOOST_TEST(r.ok);
    BOOST_TEST(s.rec.log() == "open stream a.example b.example\nel {jabber:server}a\nclose\n");
    s.feed("<c/>");
    BOOST_TEST(s.rec.events.size() == 3u);
    // An empty root opens and closes at once.
    Session e;
    e.feed("<stream:stream xmlns:stream='http://etherx.jabber.org/streams'/>");
    BOOST_TEST(e.rec.log() == "open stream  \nclose\n");
    // Closing the stream with the wrong name is malformed.
    BOOST_TEST(error_of(kHeader + "</stream:foo>") == ParseError::NotWellFormed);
}

BOOST_AUTO_TEST_CASE(no_events_after_error) {
    Session s;
    BOOST_TEST(!s.feed(kHeader + "<a/><b>&undefined;</b><c/>").ok);
    BOOST_TEST(s.rec.elements == 1);
    BOOST_TEST(s.rec.errors == 1);
    const FeedResult r = s.feed("<d/><e/></stream:stream>");
    BOOST_TEST(!r.ok);
    BOOST_TEST(s.rec.elements == 1);
    BOOST_TEST(s.rec.errors == 1);
    BOOST_TEST(s.rec.closes == 0);
    BOOST_TEST(s.parser.memory().held_input == 0u);
}

BOOST_AUTO_TEST_CASE(suspend_with_binary_trailing_bytes) {
    const std::string proceed = "<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>";
    const std::string tls("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03<\0>'\"", 16);
    Session s;
    s.rec.suspend_on = "proceed";
    s.feed(kHeader);
    FeedResult r = s.feed("<a/>" + proceed + tls);
    BOOST_TEST(r.ok);
    BOOST_TEST(r.suspended);
    BOOST_TEST(r.trailing == tls.size());
    BOOST_TEST(r.trailing_nonspace);
    BOOST_TEST(s.rec.elements == 2);
    BOOST_TEST(s.rec.errors == 0);
    // Nothing more until reset(); every further byte is trailing.
    r = s.feed("<b/>");
    BOOST_TEST(r.suspended);
    BOOST_TEST(r.trailing == 4u);
    BOOST_TEST(s.rec.elements == 2);
    BOOST_TEST(s.rec.errors == 0);
}

BOOST_AUTO_TEST_CASE(suspend_trailing_whitespace_and_injection) {
    const std::string success = "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>ZGF0YQ==</success>";
    {
        Session s;
        s.rec.suspend_on = "success";
        s.feed(kHeader);
        const FeedResult r = s.feed(success + " \r\n\t");
        BOOST_TEST(r.suspended);
        BOOST_TEST(r.trailing == 4u);
        BOOST_TEST(!r.trailing_nonspace);
    }
    {
        Session s;
        s.rec.suspend_on = "success";
        s.feed(kHeader);
        const FeedResult r = s.feed(success);
        BOOST_TEST(r.suspended);
        BOOST_TEST(r.trailing == 0u);
        BOOST_TEST(!r.trailing_nonspace);
    }
    {
        // STARTTLS command injection: a stanza in the same chunk is never delivered.
        Session s;
        s.rec.suspend_on = "success";
        s.feed(kHeader);
        const std::string injected = " <message to='victim'><body>x</body></message>";
        const FeedResult r = s.feed(success + injected);
        BOOST_TEST(r.suspended);
        BOOST_TEST(r.trailing == injected.size());
        BOOST_TEST(r.trailing_nonspace);
        BOOST_TEST(s.rec.elements == 1);
    }
}

BOOST_AUTO_TEST_CASE(suspend_trailing_exact_for_every_split) {
    // Whatever the split, trailing counts the bytes after the element in
    // the chunk where it ended.
    const std::string before = "<a>x</a>\n<b/>";
    const std::string el = "<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'>t</proceed>";
    const std::string after = "  \x16\x03 <c/>";
    const std::string body = before + el + after;
    const std::size_t el_end = before.size() + el.size();
    for (std::size_t cut1 = 0; cut1 <= body.size(); ++cut1) {
        for (std::size_t cut2 = cut1; cut2 <= body.size(); cut2 += 3) {
            Session s;
            s.rec.suspend_on = "proceed";
            s.feed(kHeader);
            const std::size_t cuts[] = {0, cut1, cut2, body.size()};
            FeedResult r;
            std::size_t end = 0;
            for (int k = 0; k < 3 && !r.suspended; ++k) {
                r = s.parser.feed(body.data() + cuts[k], cuts[k + 1] - cuts[k]);
                end = cuts[k + 1];
            }
            BOOST_TEST_CONTEXT("cuts " << cut1 << "," << cut2) {
                BOOST_TEST(r.suspended);
                BOOST_TEST(end >= el_end);
                BOOST_TEST(r.trailing == end - el_end);
                BOOST_TEST(r.trailing_nonspace == (end > el_end + 2));
                BOOST_TEST(s.rec.elements == 3);
            }
        }
    }
}

BOOST_AUTO_TEST_CASE(suspend_on_stream_header) {
    Session s;
    s.rec.suspend_on_open = true;
    const FeedResult r = s.feed(kHeader + "<features/>");
    BOOST_TEST(r.suspended);
    BOOST_TEST(r.trailing == 11u);
    BOOST_TEST(r.trailing_nonspace);
    BOOST_TEST(s.rec.elements == 0);
}

BOOST_AUTO_TEST_CASE(reset_starts_a_second_stream) {
    Session s;
    s.rec.suspend_on = "proceed";
    s.feed(kHeader + "<m><body>first</body></m><proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>garbage");
    BOOST_TEST(s.rec.elements == 2);
    const std::size_t reserved = s.parser.memory().arena_reserved;
    BOOST_TEST(reserved > 0u);
    s.parser.reset();
    s.rec.suspend_on.clear();
    const FeedResult r = s.feed(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams'"
        " from='c.example' to='d.example' version='1.0'><m><body>second</body></m></stream:stream>");
    BOOST_TEST(r.ok);
    BOOST_TEST(!r.suspended);
    BOOST_TEST(s.rec.opens == 2);
    BOOST_TEST(s.rec.from == "c.example");
    BOOST_TEST(!s.rec.dialback);
    BOOST_TEST(s.rec.events.back() == "close");
    BOOST_TEST(s.rec.events[s.rec.events.size() - 2] == "el {jabber:server}m[{jabber:server}body[\"second\"]]");
    BOOST_TEST(s.parser.memory().arena_reserved == reserved); // arena kept
    // Reset also clears an error.
    Session e;
    e.feed(kHeader + "<a>&x;</a>");
    BOOST_TEST(e.rec.errors == 1);
    e.parser.reset();
    BOOST_TEST(e.feed(kHeader + "<a/>").ok);
    BOOST_TEST(e.rec.elements == 1);
    // And a half-received stanza.
    Session h;
    h.feed(kHeader + "<message><bo");
    h.parser.reset();
    h.feed(kHeader + "<a/>");
    BOOST_TEST(h.rec.errors == 0);
    BOOST_TEST(h.rec.elements == 1);
}

BOOST_AUTO_TEST_CASE(element_views_stay_valid_until_the_next_element) {
    struct Keep : Recorder {
        const Node* last = nullptr;
        bool on_element(const Node& el) override {
            last = &el;
            return Recorder::on_element(el);
        }
    } h;
    StreamParser p(h);
    p.feed(kHeader + "<a x='1'>text</a>");
    BOOST_REQUIRE(h.last);
    p.feed("  <b"); // no new element has started yet
    BOOST_TEST(dump(*h.last) == "{jabber:server}a x='1'[\"text\"]");
}

// ---------------------------------------------------------------------------
// Memory

namespace {
struct Counting : ParserHandler {
    StreamParser* parser = nullptr;
    long elements = 0, bad = 0;
    std::size_t arena_min = ~std::size_t(0), arena_max = 0;
    bool on_stream_open(const StreamHeader&) override { return true; }
    bool on_element(const Node& el) override {
        ++elements;
        if (!el.is("jabber:server", "message") || !el.first || !el.first->first ||
            el.first->first->text != "Hello & \xE2\x98\xBA world")
            ++bad;
        const std::size_t used = parser->memory().arena_used;
        arena_min = std::min(arena_min, used);
        arena_max = std::max(arena_max, used);
        return true;
    }
    void on_stream_close() override {}
    void on_parse_error(ParseError, std::string_view) override { ++bad; }
};
} // namespace

namespace {
struct Steady {
    long elements = 0, bad = 0, news = 0, xml_allocs = 0, xml_frees = 0;
    std::size_t arena_min = 0, arena_max = 0, max_libxml = 0, max_held = 0, max_dict = 0, reserved = 0;
};

// Feeds 200,000 copies of `st` (after a warm-up) in chunks that do not
// divide it, so partial tags are held back, and measures what it costs.
Steady steady_run(const std::string& st) {
    Counting h;
    StreamParser p(h);
    h.parser = &p;
    p.feed(kHeader);
    std::string batch;
    for (int i = 0; i < 100; ++i) batch += st;
    const std::size_t kChunk = 997;
    auto feed_batch = [&] {
        for (std::size_t i = 0; i < batch.size(); i += kChunk)
            p.feed(batch.data() + i, std::min(kChunk, batch.size() - i));
    };
    for (int i = 0; i < 20; ++i) feed_batch(); // warm-up
    h.arena_min = ~std::size_t(0);
    h.arena_max = 0;
    const long before = h.elements;
    Steady r;

    g_news = g_xml_allocs = g_xml_frees = 0;
    g_counting = true;
    for (int i = 0; i < 2000; ++i) {
        feed_batch();
        const StreamParser::Memory m = p.memory();
        r.max_libxml = std::max(r.max_libxml, m.libxml_input);
        r.max_held = std::max(r.max_held, m.held_input);
        r.max_dict = std::max(r.max_dict, m.libxml_dict);
    }
    g_counting = false;

    r.elements = h.elements - before;
    r.bad = h.bad;
    r.news = g_news;
    r.xml_allocs = g_xml_allocs;
    r.xml_frees = g_xml_frees;
    r.arena_min = h.arena_min;
    r.arena_max = h.arena_max;
    r.reserved = p.memory().arena_reserved;
    return r;
}
} // namespace

BOOST_AUTO_TEST_CASE(steady_state_does_not_allocate_or_grow) {
    const std::string st =
        "<message from='a@a.example/r' to='b@b.example' id='m1' type='chat'>"
        "<body>Hello &amp; &#x263A; world</body><thread>t1</thread></message>";
    const Steady r = steady_run(st);
    BOOST_TEST(r.elements == 200000);
    BOOST_TEST(r.bad == 0);
    BOOST_TEST(r.news == 0);       // no C++ allocation at all
    BOOST_TEST(r.xml_allocs == 0); // nor inside libxml2
    // The arena is reset per element. The chunks cut some copies, which
    // then go through libxml2 rather than the fast path: two sizes.
    BOOST_TEST(r.arena_max < 1024u);
    BOOST_TEST(r.max_libxml < 16 * 1024u); // consumed input is dropped
    BOOST_TEST(r.max_held < st.size());
    BOOST_TEST(r.max_dict < 64 * 1024u);
    BOOST_TEST(r.reserved <= 16 * 1024u);
}

BOOST_AUTO_TEST_CASE(steady_state_with_namespace_declarations) {
    // libxml2 2.9 checks each xmlns value with xmlParseURI (3 short-lived
    // allocations); none of it may accumulate.
    const std::string st =
        "<message from='a@a.example/r' to='b@b.example' id='m1' type='chat'>"
        "<body>Hello &amp; &#x263A; world</body><x xmlns='urn:x' a='1'/></message>";
    const Steady r = steady_run(st);
    BOOST_TEST(r.elements == 200000);
    BOOST_TEST(r.bad == 0);
    BOOST_TEST(r.news == 0);
    BOOST_TEST(r.xml_allocs <= 3 * 200000);
    BOOST_TEST(r.xml_allocs == r.xml_frees);
    BOOST_TEST(r.arena_max < 1024u);
    BOOST_TEST(r.max_libxml < 16 * 1024u);
    BOOST_TEST(r.max_held < st.size());
}

BOOST_AUTO_TEST_CASE(name_dictionary_does_not_grow_without_bound) {
    Recorder h;
    StreamParser p(h);
    p.feed(kHeader);
    std::size_t max_dict = 0;
    std::string batch;
    for (int b = 0; b < 2000; ++b) {
        batch.clear();
        for (int i = 0; i < 100; ++i) {
            const std::string n = std::to_string(b * 100 + i);
            batch += "<e" + n + " xmlns='urn:n" + n + "' a" + n + "='v'/>";
        }
        p.feed(batch);
        max_dict = std::max(max_dict, p.memory().libxml_dict);
    }
    BOOST_TEST(h.errors == 0);
    BOOST_TEST(h.elements == 200000);
    BOOST_TEST(h.events.back() == "el {urn:n199999}e199999 a199999='v'");
    BOOST_TEST(max_dict < 512 * 1024u);
    // The namespace scope of the header survives a rebuild.
    p.feed("<db:result from='a' to='b'>k</db:result><message xml:lang='x'/>");
    BOOST_TEST(h.errors == 0);
    BOOST_TEST(h.events[h.events.size() - 2] == "el {jabber:server:dialback}result from='a' to='b'[\"k\"]");
    BOOST_TEST(h.events.back() == "el {jabber:server}message {http://www.w3.org/XML/1998/namespace}lang='x'");
}

// Not a test of speed (nothing is asserted): set S2SMUX_XML_BENCH=1 to print
// parse throughput.
BOOST_AUTO_TEST_CASE(micro_benchmark) {
    struct Bench : ParserHandler {
        long elements = 0, bad = 0;
        bool on_stream_open(const StreamHeader&) override { return true; }
        bool on_element(const Node& el) override {
            ++elements;
            bad += el.name != "message";
            return true;
        }
        void on_stream_close() override {}
        void on_parse_error(ParseError, std::string_view) override { ++bad; }
    };
    const bool on = std::getenv("S2SMUX_XML_BENCH") != nullptr;
    const int rounds = on ? 3000 : 10;
    const std::string stanzas[] = {
        "<message from='a@a.example/r' to='b@b.example' id='m1' type='chat'>"
        "<body>Hello &amp; &#x263A; world</body><thread>t1</thread></message>",
        "<message from='a@a.example/r' to='b@b.example' id='m1' type='chat'>"
        "<body>Hello &amp; &#x263A; world</body><x xmlns='urn:x' a='1'/></message>",
    };
    for (const std::string& st : stanzas) {
        Bench h;
        StreamParser p(h);
        p.feed(kHeader);
        std::string batch;
        for (int i = 0; i < 100; ++i) batch += st;
        const auto t0 = std::chrono::steady_clock::now();
        for (int r = 0; r < rounds; ++r)
            for (std::size_t i = 0; i < batch.size(); i += 16384)
                p.feed(batch.data() + i, std::min<std::size_t>(16384, batch.size() - i));
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        BOOST_TEST(h.bad == 0);
        BOOST_TEST(h.elements == rounds * 100);
        if (on)
            std::printf("parser: %.0f stanzas/s, %.1f MB/s (%zu-byte stanza)\n", rounds * 100 / s,
                        rounds * batch.size() / s / 1e6, st.size());
    }
}
