// parse_fast_element(): what it takes, what it declines, and that what it
// takes comes out as libxml2 builds it (StreamParser fed so that libxml2
// parses the element: it begins in an earlier chunk).
#define BOOST_TEST_MODULE xml_fast
#include <boost/test/unit_test.hpp>

#include "tests/support/xml_dump.h"
#include "xml/arena.h"
#include "xml/fast_element.h"
#include "xml/stream_parser.h"

#include <string>
#include <string_view>

using namespace s2smux::xml;

namespace {

const std::string kHeader = "<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams'"
                            " xmlns:db='jabber:server:dialback'>";

void dump(std::string& o, const Node& n) { s2smux::testing::dump_tree(o, n); }

// "" when declined; *len: the element's size.
std::string fast(std::string_view el, const Limits& lim = {}, std::size_t* len = nullptr) {
    Arena arena;
    std::size_t n = 0;
    const Node* e = parse_fast_element(el, "jabber:server", lim, arena, &n);
    std::string d;
    if (e) dump(d, *e);
    if (len) *len = n;
    return d;
}

// libxml2's tree, or "error".
std::string libxml(std::string_view el, const Limits& lim = {}) {
    struct H : ParserHandler {
        std::string d;
        bool failed = false;
        bool on_stream_open(const StreamHeader&) override { return true; }
        bool on_element(const Node& n) override {
            dump(d, n);
            return true;
        }
        void on_stream_close() override {}
        void on_parse_error(ParseError, std::string_view) override { failed = true; }
    } h;
    StreamParser p(h, lim);
    p.feed(kHeader);
    p.feed(el.substr(0, 1));
    p.feed(el.substr(1));
    return h.failed ? "error" : h.d;
}

} // namespace

BOOST_AUTO_TEST_CASE(takes_common_stanzas_as_libxml2_builds_them) {
    const char* ok[] = {
        "<presence/>",
        "<presence from='a@a.example/r' to='b@b.example'><show>away</show><status>Lunch</status>"
        "<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='n' ver='QgayPKawpkPSDYmwT/WM94uAlu0='/>"
        "<x xmlns='vcard-temp:x:update'><photo/></x></presence>",
        "<message from='a@a.example' to='b@b.example' type='chat' id='m&amp;1'>"
        "<body>Hello &lt;world&gt; &#x263A; &#9731; \xE2\x9C\x93 caf\xC3\xA9 \xF0\x9F\x98\x80 ] ]] > 'q' \"d\"</body>"
        "<html xmlns='http://jabber.org/protocol/xhtml-im'><body xmlns='http://www.w3.org/1999/xhtml'>"
        "<p style='a&gt;b'>x<br/>y</p></body></html></message>",
        "<iq type='get' id='v1' xml:lang='en'><query xmlns='jabber:iq:version'/></iq>",
        "<message>\n\t<body>two\nlines\t</body>\n</message>",
        "<p:x xmlns:p='urn:p' p:a='1' a='2'><p:y xmlns:p='urn:q' xmlns='urn:d' p:a='3'><z/></p:y></p:x >",
        "<a xmlns='' b = \"it's &quot;quoted&quot; &#60;here&#x3E; &#38;\" c='\xC3\xA9&apos;'></a>",
        "<a xmlns='relative/uri'><b xmlns='jabber:server'/></a>", // relative: libxml2 only warns
    };
    for (const char* el : ok) {
        BOOST_TEST_CONTEXT(el) {
            std::size_t len = 0;
            const std::string f = fast(el, {}, &len);
            BOOST_TEST(!f.empty());
            BOOST_TEST(len == std::string_view(el).size());
            BOOST_TEST(f == libxml(el));
        }
    }
    BOOST_TEST(fast("<m a='&#60;&#x10FFFF;'>&#65;&amp;&#x20AC;</m>") ==
               "{jabber:server}m {}a=<\xF4\x8F\xBF\xBF[\"A&\xE2\x82\xAC\"]");
}

BOOST_AUTO_TEST_CASE(declines_what_it_does_not_judge_or_libxml2_refuses) {
    const char* declined[] = {
        // well-formed, left to libxml2
        "<db:result from='a' to='b'>k</db:result>", // prefix bound on the stream header
        "<a><![CDATA[x]]></a>",
        "<a>x\r\ny</a>",
        "<a b='x\ty'/>",
        "<a b='x\ny'/>",
        "<a>&#x1F;</a>", // not a Char
        "<a>caf\xC3</a>",                  // cut UTF-8
        "<\xC3\xA9l\xC3\xA9ment/>",         // non-ASCII name
        "<a xml:lang='en' xmlns:xml='http://www.w3.org/XML/1998/namespace'/>",
        // not well-formed
        "<a></b>",
        "<a>x]]>y</a>",
        "<a b='1' b='2'/>",
        "<a xmlns:p='urn:x' xmlns:q='urn:x' p:b='1' q:b='2'/>",
        "<a xmlns:p='urn:x' xmlns:p='urn:y'/>",
        "<a xmlns:p=''/>",
        "<a xmlns:p='2bad:scheme'/>",
        "<a p:b='1'/>",
        "<x:a/>",
        "<a b='1'c='2'/>",
        "<a b='<'/>",
        "<a>&nope;</a>",
        "<a>&#xD800;</a>",
        "<a>\x01</a>",
        "<a><!-- c --></a>",
        "<a><?pi?></a>",
        "<a/ >",
        // not complete
        "<a>",
        "<a><b/>",
        "<a b='1'",
    };
    for (const char* el : declined) BOOST_TEST_CONTEXT(el) BOOST_TEST(fast(el).empty());
}

BOOST_AUTO_TEST_CASE(stops_at_the_end_of_the_element) {
    std::size_t len = 0;
    BOOST_TEST(fast("<a>x</a><b/>junk", {}, &len) == "{jabber:server}a[\"x\"]");
    BOOST_TEST(len == 8u);
    BOOST_TEST(fast("<a/>\n<b/>", {}, &len) == "{jabber:server}a[]");
    BOOST_TEST(len == 4u);
    // The stanza limit bounds the bytes looked at.
    Limits lim;
    lim.max_stanza_bytes = 8;
    BOOST_TEST(fast("<a>x</a>", lim, &len) == "{jabber:server}a[\"x\"]");
    BOOST_TEST(fast("<a>xy</a>", lim).empty());
}

BOOST_AUTO_TEST_CASE(limits_send_elements_to_libxml2) {
    Limits lim;
    lim.max_depth = 2;
    lim.max_attrs = 2;
    lim.max_attr_value = 4;
    BOOST_TEST(!fast("<a><b/></a>", lim).empty());
    BOOST_TEST(fast("<a><b><c/></b></a>", lim).empty());
    BOOST_TEST(libxml("<a><b><c/></b></a>", lim) == "error");
    BOOST_TEST(!fast("<a x='1' y='2'/>", lim).empty());
    BOOST_TEST(fast("<a x='1' y='2' xmlns='urn:a'/>", lim).empty());
    BOOST_TEST(fast("<a x='12345'/>", lim).empty());
    BOOST_TEST(!fast("<a x='&amp;&amp;&amp;&amp;'/>", lim).empty()); // decoded length counts
    BOOST_TEST(libxml("<a x='12345'/>", lim) == "error");
}

BOOST_AUTO_TEST_CASE(stream_parser_takes_whole_elements_by_the_fast_path) {
    // libxml2 interns every name it parses in its dictionary: the fast
    // path leaves it as the header left it.
    struct H : ParserHandler {
        const StreamParser* p = nullptr;
        std::string raw, tree;
        bool on_stream_open(const StreamHeader&) override { return true; }
        bool on_element(const Node& el) override {
            raw = std::string(p->element_raw());
            dump(tree, el);
            return true;
        }
        void on_stream_close() override {}
        void on_parse_error(ParseError, std::string_view) override {}
    };
    std::string el = "<message to='b@b.example'><body>" + std::string(300, 'x');
    for (int i = 0; i < 100; ++i) el += "<an-unusual-name-for-the-dictionary-" + std::to_string(i) + "/>";
    el += "</body></message>";
    H whole, split;
    StreamParser a(whole), b(split);
    whole.p = &a;
    split.p = &b;
    a.feed(kHeader);
    b.feed(kHeader);
    const std::size_t dict = a.memory().libxml_dict;
    a.feed(el);
    b.feed(el.substr(0, 10));
    b.feed(el.substr(10));
    BOOST_TEST(whole.raw == el);
    BOOST_TEST(split.raw == el);
    BOOST_TEST(whole.tree == split.tree);
    BOOST_TEST(a.memory().libxml_dict == dict);
    BOOST_TEST(b.memory().libxml_dict > dict);
}
