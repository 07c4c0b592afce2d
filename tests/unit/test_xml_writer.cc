#define BOOST_TEST_MODULE test_xml_writer
#include <boost/test/unit_test.hpp>

#include "xml/stream_parser.h"
#include "xml/writer.h"

#include <cstdlib>
#include <new>
#include <string>
#include <vector>

using namespace s2smux::xml;

// Counts C++ allocations while g_counting is set.
namespace {
bool g_counting = false;
long g_news = 0;
} // namespace

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

namespace {

const std::string kHeader =
    "<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams'"
    " xmlns:db='jabber:server:dialback'>";

std::string text(std::string_view s) {
    std::string o;
    escape_text(o, s);
    return o;
}
std::string attr(std::string_view s) {
    std::string o;
    escape_attr(o, s);
    return o;
}

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
        o += '{';
        o.append(a->ns);
        o += '}';
        o.append(a->name);
        o += "='";
        o.append(a->value);
        o += '\'';
    }
    if (n.first) {
        o += '[';
        for (const Node* c = n.first; c; c = c->next) dump(o, *c);
        o += ']';
    }
}

struct Parsed : ParserHandler {
    std::vector<std::string> dumps, xml, inner;
    int errors = 0;
    std::string detail;
    bool on_stream_open(const StreamHeader&) override { return true; }
    bool on_element(const Node& el) override {
        std::string d;
        dump(d, el);
        dumps.push_back(d);
        std::string s;
        serialize(s, el);
        xml.push_back(s);
        std::string i;
        serialize_children(i, el);
        inner.push_back(i);
        return true;
    }
    void on_stream_close() override {}
    void on_parse_error(ParseError, std::string_view d) override {
        ++errors;
        detail = d;
    }
};

// Parses top-level elements (inside kHeader).
Parsed parse(const std::string& elements) {
    Parsed p;
    StreamParser sp(p);
    sp.feed(kHeader + elements);
    BOOST_TEST(p.errors == 0, p.detail);
    return p;
}

std::string serialized(const std::string& element) {
    Parsed p = parse(element);
    BOOST_REQUIRE(p.xml.size() == 1u);
    return p.xml[0];
}

// parse -> serialize -> parse keeps the tree exactly, and serializing is
// stable from then on.
void check_round_trip(const std::string& elements, std::size_t count) {
    Parsed a = parse(elements);
    BOOST_REQUIRE(a.dumps.size() == count);
    std::string again;
    for (const auto& x : a.xml) again += x;
    Parsed b = parse(again);
    BOOST_TEST(b.dumps == a.dumps, boost::test_tools::per_element());
    BOOST_TEST(b.xml == a.xml, boost::test_tools::per_element());
}

} // namespace

// ---------------------------------------------------------------------------
// Escaping

BOOST_AUTO_TEST_CASE(escape_text_each_special_character) {
    BOOST_TEST(text("&") == "&amp;");
    BOOST_TEST(text("<") == "&lt;");
    BOOST_TEST(text(">") == "&gt;");
    BOOST_TEST(text("\r") == "&#13;"); // would be read back as "\n"
    // Quotes and TAB/LF are fine in text.
    BOOST_TEST(text("\"'\t\n") == "\"'\t\n");
    BOOST_TEST(text("a&b<c>d]]>e") == "a&amp;b&lt;c&gt;d]]&gt;e");
    BOOST_TEST(text("") == "");
    BOOST_TEST(text("plain caf\xC3\xA9 \xF0\x9F\x98\x80") == "plain caf\xC3\xA9 \xF0\x9F\x98\x80");
    std::string o = "<x>";
    escape_text(o, "&&");
    BOOST_TEST(o == "<x>&amp;&amp;"); // appends
}

BOOST_AUTO_TEST_CASE(escape_attr_each_special_character) {
    BOOST_TEST(attr("&") == "&amp;");
    BOOST_TEST(attr("<") == "&lt;");
    BOOST_TEST(attr(">") == "&gt;");
    BOOST_TEST(attr("'") == "&apos;");
    BOOST_TEST(attr("\"") == "&quot;");
    BOOST_TEST(attr("\t") == "&#9;");
    BOOST_TEST(attr("\n") == "&#10;");
    BOOST_TEST(attr("\r") == "&#13;");
    BOOST_TEST(attr("a&b<c>d'e\"f\tg\nh\ri") == "a&amp;b&lt;c&gt;d&apos;e&quot;f&#9;g&#10;h&#13;i");
    BOOST_TEST(attr("user@example.com/r \xC3\xA9") == "user@example.com/r \xC3\xA9");
    BOOST_TEST(attr("") == "");
}

// ---------------------------------------------------------------------------
// Writer

BOOST_AUTO_TEST_CASE(writer_nested_and_empty_elements) {
    std::string out;
    Writer w(out);
    w.open("iq").attr("type", "get").attr("id", "v1");
    w.open("query").xmlns("jabber:iq:version").close();
    w.close();
    BOOST_TEST(out == "<iq type='get' id='v1'><query xmlns='jabber:iq:version'/></iq>");

    out.clear();
    Writer e(out);
    e.open("a").close();
    e.open("b").text("").raw("").close(); // nothing added: still empty
    BOOST_TEST(out == "<a/><b/>");
}

BOOST_AUTO_TEST_CASE(writer_text_raw_and_escaping) {
    std::string out;
    Writer w(out);
    w.open("message").attr("to", "a'b\"c&d<e>").attr("type", "chat");
    w.open("body").text("1 < 2 & 3 > 2").close();
    w.raw("<x xmlns='urn:x'/>");
    w.close();
    BOOST_TEST(out == "<message to='a&apos;b&quot;c&amp;d&lt;e&gt;' type='chat'>"
                      "<body>1 &lt; 2 &amp; 3 &gt; 2</body><x xmlns='urn:x'/></message>");
}

BOOST_AUTO_TEST_CASE(writer_skip_empty_attribute) {
    std::string out;
    Writer w(out);
    w.open("a").attr("x", "", true).attr("y", "", false).attr("z", "1", true).close();
    BOOST_TEST(out == "<a y='' z='1'/>");
}

BOOST_AUTO_TEST_CASE(writer_finish_closes_everything) {
    std::string out;
    Writer w(out);
    w.open("stream:features").open("starttls").xmlns("urn:ietf:params:xml:ns:xmpp-tls").open("required");
    w.finish();
    BOOST_TEST(out == "<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>"
                      "</stream:features>");
}

BOOST_AUTO_TEST_CASE(writer_prefixed_names_and_temporary_names) {
    std::string out;
    Writer w(out);
    w.open(std::string("db:") + "result").attr("from", "a.example").attr("to", "b.example");
    w.text(std::string(40, 'k')); // the temporary name is gone by now
    w.close();
    BOOST_TEST(out == "<db:result from='a.example' to='b.example'>" + std::string(40, 'k') + "</db:result>");
}

BOOST_AUTO_TEST_CASE(writer_output_parses_back) {
    std::string out;
    Writer w(out);
    w.open("message").attr("to", "b@b.example").attr("id", "\t\n\r'\"&<>");
    w.open("body").text("caf\xC3\xA9 <&> \r\n").close();
    w.open("db:result").attr("from", "x").text("key").close();
    w.finish();
    Parsed p = parse(out);
    BOOST_REQUIRE(p.dumps.size() == 1u);
    BOOST_TEST(p.dumps[0] == "{jabber:server}message {}to='b@b.example' {}id='\t\n\r'\"&<>'"
                             "[{jabber:server}body[\"caf\xC3\xA9 <&> \r\n\"]"
                             "{jabber:server:dialback}result {}from='x'[\"key\"]]");
}

BOOST_AUTO_TEST_CASE(writer_does_not_allocate_beyond_the_output) {
    std::string out;
    out.reserve(4096);
    g_news = 0;
    g_counting = true;
    for (int i = 0; i < 10; ++i) {
        Writer w(out);
        w.open("message").attr("to", "b@b.example").attr("type", "chat");
        w.open("body").text("hello & goodbye").close();
        w.open("x").xmlns("urn:x").close();
        w.finish();
    }
    g_counting = false;
    BOOST_TEST(g_news == 0);
    BOOST_TEST(out.size() > 100u);
}

// ---------------------------------------------------------------------------
// serialize / serialize_children

BOOST_AUTO_TEST_CASE(serialize_exact_output) {
    BOOST_TEST(serialized("<message from='a@a.example' to='b@b.example'><body>x</body></message>") ==
               "<message from='a@a.example' to='b@b.example'><body>x</body></message>");
    BOOST_TEST(serialized("<presence/>") == "<presence/>");
    BOOST_TEST(serialized("<presence></presence>") == "<presence/>");
    BOOST_TEST(serialized("<message xml:lang='de'><body>a&amp;b&lt;&gt;</body></message>") ==
               "<message xml:lang='de'><body>a&amp;b&lt;&gt;</body></message>");
    BOOST_TEST(serialized("<m a=\"it's\" b='say \"x\"'/>") == "<m a='it&apos;s' b='say &quot;x&quot;'/>");
}

BOOST_AUTO_TEST_CASE(serialize_dialback_with_db_prefix) {
    BOOST_TEST(serialized("<db:result from='a.example' to='b.example'>abcdef</db:result>") ==
               "<db:result from='a.example' to='b.example'>abcdef</db:result>");
    BOOST_TEST(serialized("<db:verify from='a' to='b' id='i' type='valid'/>") ==
               "<db:verify from='a' to='b' id='i' type='valid'/>");
    // However the peer spelled it.
    BOOST_TEST(serialized("<result xmlns='jabber:server:dialback' from='a'>k</result>") ==
               "<db:result from='a'>k</db:result>");
    // The prefix leaves the default namespace alone for children.
    BOOST_TEST(serialized("<db:result from='a'><x/><y xmlns='urn:y'/></db:result>") ==
               "<db:result from='a'><x/><y xmlns='urn:y'/></db:result>");
    Parsed p = parse("<db:result from='a'><x/></db:result>");
    BOOST_REQUIRE(p.inner.size() == 1u);
    BOOST_TEST(p.inner[0] == "<x/>");
}

BOOST_AUTO_TEST_CASE(serialize_foreign_namespace_children) {
    BOOST_TEST(serialized("<iq type='get' id='1'><query xmlns='jabber:iq:version'><name>n</name></query></iq>") ==
               "<iq type='get' id='1'><query xmlns='jabber:iq:version'><name>n</name></query></iq>");
    // Back to the stream namespace inside a foreign element.
    BOOST_TEST(serialized("<a><x xmlns='urn:x'><b xmlns='jabber:server'/><c/></x></a>") ==
               "<a><x xmlns='urn:x'><b xmlns='jabber:server'/><c/></x></a>");
    // Prefixed elements come out with a default namespace declaration.
    BOOST_TEST(serialized("<a xmlns:p='urn:p'><p:x><p:y/></p:x></a>") == "<a><x xmlns='urn:p'><y/></x></a>");
    // No namespace at all.
    BOOST_TEST(serialized("<a><b xmlns=''><c/></b></a>") == "<a><b xmlns=''><c/></b></a>");
    // A top-level element outside the stream's default namespace.
    BOOST_TEST(serialized("<features xmlns='http://etherx.jabber.org/streams'/>") ==
               "<features xmlns='http://etherx.jabber.org/streams'/>");
}

BOOST_AUTO_TEST_CASE(serialize_with_another_default_namespace) {
    // Written into a client stream, say.
    struct One : ParserHandler {
        std::string out;
        bool on_stream_open(const StreamHeader&) override { return true; }
        bool on_element(const Node& el) override {
            serialize(out, el, "jabber:client");
            return true;
        }
        void on_stream_close() override {}
        void on_parse_error(ParseError, std::string_view) override {}
    } h;
    StreamParser sp(h);
    sp.feed(kHeader + "<message><body>x</body></message>");
    BOOST_TEST(h.out == "<message xmlns='jabber:server'><body>x</body></message>");
}

BOOST_AUTO_TEST_CASE(serialize_namespaced_attributes) {
    const std::string in = "<a xmlns:p='urn:p' xmlns:q='urn:q' p:x='1' q:y='2' p:z='3' plain='4' xml:lang='en'/>";
    BOOST_TEST(serialized(in) ==
               "<a xmlns:ns0='urn:p' ns0:x='1' xmlns:ns1='urn:q' ns1:y='2' ns0:z='3' plain='4' xml:lang='en'/>");
    check_round_trip(in, 1);
    // Declared per element: a child reusing the namespace declares it again.
    const std::string nested = "<a xmlns:p='urn:p' p:x='1'><b p:y='2'/></a>";
    BOOST_TEST(serialized(nested) == "<a xmlns:ns0='urn:p' ns0:x='1'><b xmlns:ns0='urn:p' ns0:y='2'/></a>");
    check_round_trip(nested, 1);
}

BOOST_AUTO_TEST_CASE(round_trip_preserves_everything) {
    const std::string elements =
        "<message from='a@a.example/r&amp;1' to='b@b.example' type='chat' id='&lt;&gt;&quot;&apos;' xml:lang='fr'"
        " ws='a&#9;b&#10;c&#13;d'>"
        "<body>caf\xC3\xA9 \xE2\x98\xBA \xF0\x9F\x98\x80 &amp; &lt;tag&gt; \"q\" 'a' ]]&gt; &#13;&#10;x</body>"
        "<html xmlns='http://jabber.org/protocol/xhtml-im'><body xmlns='http://www.w3.org/1999/xhtml'>"
        "<p style='color:red'>a<br/>b<![CDATA[<not a tag>]]></p></body></html>"
        "<x xmlns='jabber:x:data' xmlns:e='urn:ext' e:flag='1' type='form'><field var='f'><value/></field></x>"
        "</message>"
        "<db:result from='a.example' to='b.example'>0123456789</db:result>"
        "<iq type='result' id='1'><query xmlns='jabber:iq:roster'><item jid='c@c.example' name='\xC3\x9C'/>"
        "</query></iq>"
        "<a><b xmlns=''><c>d</c></b><e xmlns='urn:e&amp;f' xmlns:g='urn:g&#38;h' g:i='&amp;'/></a>";
    check_round_trip(elements, 4);
}

BOOST_AUTO_TEST_CASE(serialize_children_inner_xml) {
    Parsed p = parse("<message to='x'><body>hi &amp; bye</body><x xmlns='urn:x'><y/></x></message>"
                     "<query xmlns='jabber:iq:roster'><item jid='a'/><group xmlns='jabber:server'/></query>"
                     "<db:result from='a'>key</db:result><empty/>");
    BOOST_REQUIRE(p.inner.size() == 4u);
    BOOST_TEST(p.inner[0] == "<body>hi &amp; bye</body><x xmlns='urn:x'><y/></x>");
    // The element's own namespace is the inherited default.
    BOOST_TEST(p.inner[1] == "<item jid='a'/><group xmlns='jabber:server'/>");
    BOOST_TEST(p.inner[2] == "key");
    BOOST_TEST(p.inner[3] == "");
}

BOOST_AUTO_TEST_CASE(serialize_does_not_allocate_beyond_the_output) {
    struct H : ParserHandler {
        std::string out;
        long news = 0;
        bool on_stream_open(const StreamHeader&) override { return true; }
        bool on_element(const Node& el) override {
            out.clear();
            g_news = 0;
            g_counting = true;
            serialize(out, el);
            serialize_children(out, el);
            g_counting = false;
            news += g_news;
            return true;
        }
        void on_stream_close() override {}
        void on_parse_error(ParseError, std::string_view) override {}
    } h;
    h.out.reserve(4096);
    StreamParser sp(h);
    sp.feed(kHeader + "<message to='x'><body>a&amp;b</body><x xmlns='urn:x' xmlns:p='urn:p' p:q='1'/></message>");
    BOOST_TEST(h.news == 0);
    BOOST_TEST(!h.out.empty());
}
