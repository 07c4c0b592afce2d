// JIDs, dialback keys, error XML and base64.
#define BOOST_TEST_MODULE test_xmpp_misc
#include <boost/test/unit_test.hpp>

#include "common/base64.h"
#include "xmpp/dialback.h"
#include "xmpp/errors.h"
#include "xmpp/jid.h"

#include <vector>

using namespace s2smux;
using namespace s2smux::xmpp;

BOOST_AUTO_TEST_CASE(jid_parsing) {
    JidParts p;
    BOOST_TEST(parse_jid("juliet@capulet.example/balcony", p));
    BOOST_TEST(p.local == "juliet");
    BOOST_TEST(p.domain == "capulet.example");
    BOOST_TEST(p.resource == "balcony");
    BOOST_TEST(parse_jid("capulet.example", p));
    BOOST_TEST(!p.has_local);
    BOOST_TEST(!p.has_resource);
    // The resource may contain '@' and '/'.
    BOOST_TEST(parse_jid("a@b.example/c@d/e", p));
    BOOST_TEST(p.domain == "b.example");
    BOOST_TEST(p.resource == "c@d/e");
    BOOST_TEST(parse_jid("[::1]", p));
    BOOST_TEST(!parse_jid("", p));
    BOOST_TEST(!parse_jid("@b.example", p));
    BOOST_TEST(!parse_jid("a@", p));
    BOOST_TEST(!parse_jid("a@b.example/", p));
    BOOST_TEST(!parse_jid("a b@c.example", p));
    BOOST_TEST(!parse_jid("a@b..example", p));
    BOOST_TEST(!parse_jid("a@b example", p));
    BOOST_TEST(!parse_jid("a@" + std::string(64, 'x') + ".example", p)); // label > 63
    BOOST_TEST(!parse_jid(std::string(1024, 'a') + "@b.example", p));
}

BOOST_AUTO_TEST_CASE(domain_normalisation) {
    BOOST_TEST(jid_domain("User@B.Test/Res") == "b.test");
    BOOST_TEST(jid_domain("b.test.") == "b.test");
    BOOST_TEST(jid_domain("not a jid") == "");
    BOOST_TEST(needs_lowercase("B.test"));
    BOOST_TEST(!needs_lowercase("b.test"));
    BOOST_TEST(valid_domain("xn--bcher-kva.example"));
    BOOST_TEST(valid_domain("b\xc3\xbc" "cher.example"));
    BOOST_TEST(!valid_domain("a/b"));
    BOOST_TEST(!valid_domain("."));
}

BOOST_AUTO_TEST_CASE(dialback_key_matches_xep0185_example) {
    // XEP-0185 §3 example: secret, receiving, originating, stream id → key.
    DialbackKeys k("s3cr3tf0rd14lb4ck");
    BOOST_TEST(k.generate("example.net", "example.com", "D60000229F") ==
               "008c689ff366b50c63d69a3e2d2c0e0e1f8404b0118eb688a0102c87cb691bdc");
    BOOST_TEST(k.verify("example.net", "example.com", "D60000229F",
                        "008c689ff366b50c63d69a3e2d2c0e0e1f8404b0118eb688a0102c87cb691bdc"));
    // Bound to every input: another id, another pair, another secret fail.
    std::string key = k.generate("example.net", "example.com", "D60000229F");
    BOOST_TEST(!k.verify("example.net", "example.com", "D60000229G", key));
    BOOST_TEST(!k.verify("example.com", "example.net", "D60000229F", key));
    BOOST_TEST(!DialbackKeys("other").verify("example.net", "example.com", "D60000229F", key));
    BOOST_TEST(!k.verify("example.net", "example.com", "D60000229F", key.substr(1)));
}

BOOST_AUTO_TEST_CASE(random_ids_differ) {
    std::string a = random_stream_id(), b = random_stream_id();
    BOOST_TEST(a.size() == 32u);
    BOOST_TEST(a != b);
    DialbackKeys r1 = DialbackKeys::random(), r2 = DialbackKeys::random();
    BOOST_TEST(r1.generate("a", "b", "c") != r2.generate("a", "b", "c"));
}

BOOST_AUTO_TEST_CASE(stream_error_xml) {
    std::string s;
    write_stream_error(s, StreamError::HostUnknown, "no <such> host");
    BOOST_TEST(s == "<stream:error><host-unknown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
                    "<text xmlns='urn:ietf:params:xml:ns:xmpp-streams' xml:lang='en'>no &lt;such&gt; host</text>"
                    "</stream:error>");
    StreamError e;
    BOOST_TEST(parse_stream_error("policy-violation", e));
    BOOST_TEST((e == StreamError::PolicyViolation));
    BOOST_TEST(!parse_stream_error("nonsense", e));
    BOOST_TEST(std::string(condition_name(StreamError::UnsupportedVersion)) == "unsupported-version");
}

BOOST_AUTO_TEST_CASE(bounce_xml) {
    StanzaHead h{"message", "u@a.test/r", "v@b.test", "m1", "chat"};
    BOOST_TEST(may_bounce(h));
    std::string s;
    write_bounce(s, h, StanzaError::RemoteServerNotFound, "b.test: NXDOMAIN", "<body>hi</body>");
    BOOST_TEST(s == "<message from='v@b.test' to='u@a.test/r' id='m1' type='error'><body>hi</body>"
                    "<error type='cancel'><remote-server-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
                    "<text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas' xml:lang='en'>b.test: NXDOMAIN</text>"
                    "</error></message>");
    BOOST_TEST(!may_bounce(StanzaHead{"message", "a@a.test", "b@b.test", "", "error"}));
    BOOST_TEST(!may_bounce(StanzaHead{"iq", "a@a.test", "b@b.test", "1", "result"}));
    BOOST_TEST(may_bounce(StanzaHead{"iq", "a@a.test", "b@b.test", "1", "get"}));
    BOOST_TEST(std::string(default_error_type(StanzaError::RemoteServerTimeout)) == "wait");
}

BOOST_AUTO_TEST_CASE(base64_roundtrip_and_strictness) {
    for (std::string in : std::vector<std::string>{"", "f", "fo", "foo", "foob", "fooba", "foobar", std::string("\0\xff\x10", 3)}) {
        std::string enc, dec;
        base64_encode(enc, in);
        BOOST_TEST(base64_decode(dec, enc));
        BOOST_TEST(dec == in);
    }
    std::string e;
    base64_encode(e, "foobar");
    BOOST_TEST(e == "Zm9vYmFy");
    std::string d;
    BOOST_TEST(!base64_decode(d, "Zm9vYmF"));   // bad length
    BOOST_TEST(!base64_decode(d, "Zm9v!mFy"));  // bad character
    BOOST_TEST(!base64_decode(d, "Zg=a"));      // data after padding
    BOOST_TEST(!base64_decode(d, "Zh=="));      // non-canonical trailing bits
    d.clear();
    BOOST_TEST(base64_decode(d, "Zm9v\nYmFy"));
    BOOST_TEST(d == "foobar");
}
