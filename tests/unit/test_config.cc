#define BOOST_TEST_MODULE test_config
#include <boost/test/unit_test.hpp>

#include "daemon/config.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <ostream>
#include <sstream>
#include <string>

using namespace s2smux;
namespace fs = std::filesystem;

namespace s2smux::xmpp {
std::ostream& operator<<(std::ostream& os, TlsPolicy p) { return os << to_string(p); }
} // namespace s2smux::xmpp

namespace {

// A scratch directory from mkdtemp, removed at the end of the test.
struct TempDir {
    fs::path path;
    TempDir() {
        fs::path tmpl = fs::temp_directory_path() / "s2smux-test-config-XXXXXX";
        std::string s = tmpl.string();
        BOOST_REQUIRE(::mkdtemp(s.data()) != nullptr);
        path = s;
    }
    ~TempDir() {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
    fs::path write(const std::string& rel, const std::string& content) const {
        fs::path p = path / rel;
        fs::create_directories(p.parent_path());
        std::ofstream out(p, std::ios::binary);
        out << content;
        return p;
    }
};

// The smallest valid configuration.
const std::string kMinimal = R"([gateway]
domains = ["a.test"]
[listen]
outer = "127.0.0.1:5269"
inner = "127.0.0.1:15269"
[upstream]
address = "127.0.0.1:25269"
)";

// Parses text as "a.toml" (relative paths resolve against the cwd).
Result<Config> parse(const std::string& text) { return parse_config(text, "a.toml"); }

// Expects an error and returns its text.
std::string error_of(const Result<Config>& r) {
    BOOST_REQUIRE_MESSAGE(!r.ok(), "expected a configuration error");
    return r.error();
}

bool contains(const std::string& hay, const std::string& needle) { return hay.find(needle) != std::string::npos; }

#define REQUIRE_OK(r) BOOST_REQUIRE_MESSAGE((r).ok(), ((r).ok() ? std::string() : (r).error()))
#define CHECK_CONTAINS(hay, needle) BOOST_CHECK_MESSAGE(contains((hay), (needle)), "\"" << (hay) << "\" should contain \"" << (needle) << "\"")

} // namespace

// ---------------------------------------------------------------------------
// Valid configurations

BOOST_AUTO_TEST_CASE(full_config_every_field) {
    TempDir d;
    d.write("certs/ca.pem", "ca");
    d.write("certs/a.test.pem", "cert");
    d.write("certs/a.test.key", "key");
    d.write("certs/muc.pem", "cert2");
    d.write("certs/muc.key", "key2");
    fs::create_directories(d.path / "run");
    fs::path file = d.write("etc/../a.toml", R"(# full example
[gateway]
domains = ["A.test", "muc.a.test."]
admin_socket = "run/a.sock"
dialback_secret = "s3cret-s3cret-s3cret"

[listen]
outer = "127.0.0.1:5269"
outer_tls = "[::1]:5270"
inner = "127.0.0.1:15269"

[upstream]
address = "127.0.0.1:25269"
tls = "disabled"
max_pairs_per_stream = 50

[tls]
ca_file = "certs/ca.pem"
system_ca = true
policy = "optional"

[[cert]]
cert = "certs/a.test.pem"
key = "certs/a.test.key"

[[cert]]
cert = "certs/muc.pem"
key = "certs/muc.key"

[[route]]
domain = "b.test"
address = "127.0.0.1:6269"

[[route]]
domain = "*.C.test"
address = "xmpp.c.test:5270"
direct_tls = true
policy = "required"

[[route]]
domain = "d.test"
address = "[2001:db8::1]:5269"
policy = "disabled"

[dns]
nameserver = "127.0.0.1:5353"

[limits]
max_stanza_bytes = 100000
max_depth = 20
max_attrs = 30
max_queue_stanzas = 500
connect_timeout = 5
auth_timeout = 6
queue_timeout = 7
stream_write_buffer = 65536
max_buffered_bytes = 1048576

[log]
level = "debug"
file = "log/s2smux.log"
)");
    auto r = load_config(file.string());
    REQUIRE_OK(r);
    const Config& c = *r;
    BOOST_TEST(c.path == file.string());
    BOOST_TEST(c.base_dir == d.path.string());

    BOOST_TEST(c.domains == (std::vector<std::string>{"a.test", "muc.a.test"}), boost::test_tools::per_element());
    BOOST_TEST(c.admin_socket == (d.path / "run/a.sock").string());
    BOOST_TEST(c.dialback_secret == "s3cret-s3cret-s3cret");

    BOOST_REQUIRE(c.outer);
    BOOST_TEST(c.outer->host == "127.0.0.1");
    BOOST_TEST(c.outer->port == 5269);
    BOOST_REQUIRE(c.outer_tls);
    BOOST_TEST(c.outer_tls->host == "::1");
    BOOST_TEST(c.outer_tls->port == 5270);
    BOOST_TEST(c.outer_tls->to_string() == "[::1]:5270");
    BOOST_REQUIRE(c.inner);
    BOOST_TEST(c.inner->to_string() == "127.0.0.1:15269");

    BOOST_REQUIRE(c.upstream);
    BOOST_TEST(c.upstream->to_string() == "127.0.0.1:25269");
    BOOST_TEST(c.upstream_tls == xmpp::TlsPolicy::Disabled);
    BOOST_TEST(c.upstream_max_pairs == 50u);

    BOOST_TEST(c.ca_file == (d.path / "certs/ca.pem").string());
    BOOST_TEST(c.system_ca == true);
    BOOST_TEST(c.policy == xmpp::TlsPolicy::Optional);

    BOOST_REQUIRE_EQUAL(c.certs.size(), 2u);
    BOOST_TEST(c.certs[0].cert == (d.path / "certs/a.test.pem").string());
    BOOST_TEST(c.certs[0].key == (d.path / "certs/a.test.key").string());
    BOOST_TEST(c.certs[1].cert == (d.path / "certs/muc.pem").string());
    BOOST_TEST(c.certs[1].key == (d.path / "certs/muc.key").string());

    BOOST_REQUIRE_EQUAL(c.routes.size(), 3u);
    BOOST_TEST(c.routes[0].domain == "b.test");
    BOOST_TEST(c.routes[0].address.to_string() == "127.0.0.1:6269");
    BOOST_TEST(c.routes[0].direct_tls == false);
    BOOST_TEST(!c.routes[0].policy.has_value());
    BOOST_TEST(c.routes[1].domain == "*.c.test");
    BOOST_TEST(c.routes[1].address.host == "xmpp.c.test");
    BOOST_TEST(c.routes[1].address.port == 5270);
    BOOST_TEST(c.routes[1].direct_tls == true);
    BOOST_REQUIRE(c.routes[1].policy.has_value());
    BOOST_TEST(*c.routes[1].policy == xmpp::TlsPolicy::Required);
    BOOST_TEST(c.routes[2].address.host == "2001:db8::1");
    BOOST_TEST(c.routes[2].address.to_string() == "[2001:db8::1]:5269");
    BOOST_REQUIRE(c.routes[2].policy.has_value());
    BOOST_TEST(*c.routes[2].policy == xmpp::TlsPolicy::Disabled);

    BOOST_REQUIRE(c.nameserver);
    BOOST_TEST(c.nameserver->to_string() == "127.0.0.1:5353");

    BOOST_TEST(c.max_stanza_bytes == 100000u);
    BOOST_TEST(c.max_depth == 20u);
    BOOST_TEST(c.max_attrs == 30u);
    BOOST_TEST(c.max_queue_stanzas == 500u);
    BOOST_TEST(c.connect_timeout_ms == 5000u);
    BOOST_TEST(c.auth_timeout_ms == 6000u);
    BOOST_TEST(c.queue_timeout_ms == 7000u);
    BOOST_TEST(c.stream_write_buffer == 65536u);
    BOOST_TEST(c.max_buffered_bytes == 1048576u);

    BOOST_TEST(c.log_level == "debug");
    BOOST_TEST(c.log_file == (d.path / "log/s2smux.log").string());
}

BOOST_AUTO_TEST_CASE(defaults) {
    auto r = parse(kMinimal);
    REQUIRE_OK(r);
    const Config& c = *r;
    BOOST_TEST(c.path == "a.toml");
    BOOST_TEST(c.base_dir == fs::current_path().lexically_normal().string());
    BOOST_TEST(c.domains.size() == 1u);
    BOOST_TEST(c.admin_socket.empty());
    BOOST_TEST(c.dialback_secret.empty());
    BOOST_TEST(!c.outer_tls);
    BOOST_TEST(c.upstream_tls == xmpp::TlsPolicy::Optional);
    BOOST_TEST(c.upstream_max_pairs == 1000u);
    BOOST_TEST(c.upstream_idle_ms == 600000u);
    BOOST_TEST(c.ca_file.empty());
    BOOST_TEST(c.system_ca == false);
    BOOST_TEST(c.policy == xmpp::TlsPolicy::Required);
    BOOST_TEST(c.certs.empty());
    BOOST_TEST(c.routes.empty());
    BOOST_TEST(!c.nameserver);
    BOOST_TEST(c.max_stanza_bytes == 256u * 1024u);
    BOOST_TEST(c.max_depth == 32u);
    BOOST_TEST(c.max_attrs == 64u);
    BOOST_TEST(c.max_queue_stanzas == 10000u);
    BOOST_TEST(c.connect_timeout_ms == 30000u);
    BOOST_TEST(c.auth_timeout_ms == 30000u);
    BOOST_TEST(c.queue_timeout_ms == 60000u);
    BOOST_TEST(c.stream_write_buffer == 1024u * 1024u);
    BOOST_TEST(c.max_buffered_bytes == 64u * 1024u * 1024u);
    BOOST_TEST(c.log_level == "info");
    BOOST_TEST(c.log_file.empty());
}

BOOST_AUTO_TEST_CASE(outer_tls_alone_is_enough) {
    TempDir d;
    d.write("c.pem", "x");
    d.write("c.key", "x");
    auto r = parse_config(R"([gateway]
domains = ["a.test"]
[listen]
outer_tls = "0.0.0.0:5270"
inner = "127.0.0.1:15269"
[upstream]
address = "127.0.0.1:25269"
[[cert]]
cert = "c.pem"
key = "c.key"
)", (d.path / "a.toml").string());
    REQUIRE_OK(r);
    BOOST_TEST(!r->outer);
    BOOST_TEST(r->outer_tls->to_string() == "0.0.0.0:5270");
}

BOOST_AUTO_TEST_CASE(relative_paths_resolve_against_config_dir) {
    TempDir d;
    d.write("conf/certs/a.pem", "x");
    d.write("conf/certs/a.key", "x");
    d.write("shared/ca.pem", "x");
    fs::path abs_log = d.path / "abs.log";
    std::string text = "[gateway]\ndomains = [\"a.test\"]\nadmin_socket = \"../run/ctl.sock\"\n"
           "[listen]\nouter = \"127.0.0.1:5269\"\ninner = \"127.0.0.1:15269\"\n"
           "[upstream]\naddress = \"127.0.0.1:25269\"\n"
           "[tls]\nca_file = \"../shared/ca.pem\"\n"
           "[[cert]]\ncert = \"certs/a.pem\"\nkey = \"./certs/a.key\"\n"
           "[log]\nfile = \"" + abs_log.string() + "\"\n";
    fs::path file = d.write("conf/s2smux.toml", text);

    // Load from a different working directory, with a relative config path.
    fs::path old = fs::current_path();
    fs::current_path(d.path);
    auto r = load_config("conf/s2smux.toml");
    fs::current_path(old);

    REQUIRE_OK(r);
    BOOST_TEST(r->base_dir == (d.path / "conf").string());
    BOOST_TEST(r->certs.at(0).cert == (d.path / "conf/certs/a.pem").string());
    BOOST_TEST(r->certs.at(0).key == (d.path / "conf/certs/a.key").string());
    BOOST_TEST(r->ca_file == (d.path / "shared/ca.pem").string());
    BOOST_TEST(r->admin_socket == (d.path / "run/ctl.sock").string());
    BOOST_TEST(r->log_file == abs_log.string()); // absolute stays as is
}

BOOST_AUTO_TEST_CASE(ipv6_endpoints) {
    auto r = parse(R"([gateway]
domains = ["a.test"]
[listen]
outer = "[::]:5269"
inner = "[::1]:15269"
[upstream]
address = "[fd00::1]:25269"
[dns]
nameserver = "::1"
)");
    REQUIRE_OK(r);
    BOOST_TEST(r->outer->host == "::");
    BOOST_TEST(r->outer->to_string() == "[::]:5269");
    BOOST_TEST(r->inner->to_string() == "[::1]:15269");
    BOOST_TEST(r->upstream->host == "fd00::1");
    BOOST_TEST(r->upstream->port == 25269);
    BOOST_TEST(r->nameserver->to_string() == "[::1]:53"); // default DNS port

    auto e = error_of(parse(R"([gateway]
domains = ["a.test"]
[listen]
outer = "::1:5269"
inner = "127.0.0.1:15269"
[upstream]
address = "127.0.0.1:25269"
)"));
    BOOST_TEST(e == R"(a.toml: [listen] outer: invalid address "::1:5269" (IPv6 addresses need brackets, e.g. [::1]:5269))");
}

BOOST_AUTO_TEST_CASE(nameserver_default_port) {
    auto r = parse(kMinimal + "[dns]\nnameserver = \"10.0.0.1\"\n");
    REQUIRE_OK(r);
    BOOST_TEST(r->nameserver->to_string() == "10.0.0.1:53");
    auto e = error_of(parse(kMinimal + "[dns]\nnameserver = \"ns.example:53\"\n"));
    CHECK_CONTAINS(e, "a.toml: [dns] nameserver: invalid address \"ns.example:53\" (expected an IP address");
}

// ---------------------------------------------------------------------------
// parse_endpoint / normalize_domain

BOOST_AUTO_TEST_CASE(parse_endpoint_forms) {
    auto a = parse_endpoint("127.0.0.1:5269");
    BOOST_REQUIRE(a.ok());
    BOOST_TEST(a->host == "127.0.0.1");
    BOOST_TEST(a->port == 5269);

    auto b = parse_endpoint("[2001:db8::5]:1");
    BOOST_REQUIRE(b.ok());
    BOOST_TEST(b->host == "2001:db8::5");
    BOOST_TEST(b->to_string() == "[2001:db8::5]:1");

    auto c = parse_endpoint("XMPP.Example.org:65535");
    BOOST_REQUIRE(c.ok());
    BOOST_TEST(c->host == "xmpp.example.org");
    BOOST_TEST(c->port == 65535);

    auto d = parse_endpoint("example.org", 5269);
    BOOST_REQUIRE(d.ok());
    BOOST_TEST(d->to_string() == "example.org:5269");

    auto e = parse_endpoint("::1", 53);
    BOOST_REQUIRE(e.ok());
    BOOST_TEST(e->to_string() == "[::1]:53");

    auto f = parse_endpoint("[::1]", 53);
    BOOST_REQUIRE(f.ok());
    BOOST_TEST(f->to_string() == "[::1]:53");

    BOOST_TEST(parse_endpoint("1.2.3").error() == R"(invalid address "1.2.3" (expected HOST:PORT or [IPv6]:PORT))");
    BOOST_TEST(parse_endpoint("").error() == R"(invalid address "" (expected HOST:PORT or [IPv6]:PORT))");
    BOOST_TEST(parse_endpoint("h:").error() == R"(invalid address "h:" (expected HOST:PORT or [IPv6]:PORT))");
    BOOST_TEST(parse_endpoint(":5269").error() == R"(invalid address ":5269" (expected HOST:PORT or [IPv6]:PORT))");
    BOOST_TEST(parse_endpoint("h:0").error() == R"(invalid address "h:0": port "0" is not in 1-65535)");
    BOOST_TEST(parse_endpoint("h:65536").error() == R"(invalid address "h:65536": port "65536" is not in 1-65535)");
    BOOST_TEST(parse_endpoint("h:-1").error() == R"(invalid address "h:-1": port "-1" is not in 1-65535)");
    BOOST_TEST(parse_endpoint("1.2.3:5").error() == R"(invalid address "1.2.3:5": "1.2.3" is not a valid IPv4 address)");
    BOOST_TEST(parse_endpoint("[1.2.3.4]:5").error() == R"(invalid address "[1.2.3.4]:5": "1.2.3.4" is not an IPv6 address)");
    BOOST_TEST(!parse_endpoint("[::1]x").ok());
    BOOST_TEST(!parse_endpoint("[::1").ok());
    BOOST_TEST(!parse_endpoint("a b:1").ok());
    BOOST_TEST(!parse_endpoint("u@h:1").ok());

    BOOST_TEST(is_ip_literal("127.0.0.1"));
    BOOST_TEST(is_ip_literal("::ffff:1.2.3.4"));
    BOOST_TEST(!is_ip_literal("[::1]"));
    BOOST_TEST(!is_ip_literal("localhost"));
    BOOST_TEST(!is_ip_literal(""));
}

BOOST_AUTO_TEST_CASE(normalize_domain_rules) {
    BOOST_TEST(*normalize_domain("A.Test.") == "a.test");
    BOOST_TEST(*normalize_domain("b_c-d.test") == "b_c-d.test");
    BOOST_TEST(*normalize_domain("\xc3\xa9t\xc3\xa9.test") == "\xc3\xa9t\xc3\xa9.test");
    BOOST_TEST(normalize_domain("").error() == "empty name");
    BOOST_TEST(normalize_domain("a..b").error() == "empty label");
    BOOST_TEST(normalize_domain(".a").error() == "empty label");
    BOOST_TEST(normalize_domain("a b").error() == "contains a space");
    BOOST_TEST(normalize_domain("u@a").error() == "contains '@'");
    BOOST_TEST(normalize_domain("a/b").error() == "contains '/'");
    BOOST_TEST(normalize_domain(std::string(64, 'x') + ".test").error() == "label longer than 63 octets");
    BOOST_TEST(normalize_domain(std::string(63, 'x') + ".test").ok());
    std::string long_name;
    while (long_name.size() < 254) long_name += "abcdefghi.";
    long_name += "test";
    BOOST_TEST(normalize_domain(long_name).error() == "longer than 253 octets");
}

// ---------------------------------------------------------------------------
// Errors: one test per class

BOOST_AUTO_TEST_CASE(syntax_error_names_line_and_column) {
    auto e = error_of(parse("[gateway]\ndomains = [\"a.test\"]\n\n[listen]\nouter = \n"));
    BOOST_TEST_MESSAGE(e);
    BOOST_TEST(e.rfind("a.toml:5:", 0) == 0u, "message: " << e);
    CHECK_CONTAINS(e, "TOML syntax error: ");

    auto dup = error_of(parse("[gateway]\ndomains = [\"a.test\"]\ndomains = [\"b.test\"]\n"));
    BOOST_TEST(dup.rfind("a.toml:3:", 0) == 0u, "message: " << dup);
    CHECK_CONTAINS(dup, "TOML syntax error: ");

    auto unterminated = error_of(parse("[gateway]\ndomains = [\"a.test\n"));
    BOOST_TEST(unterminated.rfind("a.toml:2:", 0) == 0u, "message: " << unterminated);
}

BOOST_AUTO_TEST_CASE(unknown_keys_and_tables) {
    BOOST_TEST(error_of(parse(R"([gateway]
domains = ["a.test"]
[listen]
outr = "127.0.0.1:5269"
outer = "127.0.0.1:5269"
inner = "127.0.0.1:15269"
[upstream]
address = "127.0.0.1:25269"
)")) == "a.toml: unknown key [listen] outr");

    BOOST_TEST(error_of(parse(kMinimal + "[lisen]\nouter = \"1\"\n")) == "a.toml: unknown table [lisen]");
    BOOST_TEST(error_of(parse(kMinimal + "[[routes]]\ndomain = \"b.test\"\n")) == "a.toml: unknown table [[routes]]");
    BOOST_TEST(error_of(parse("verbose = true\n" + kMinimal)) == "a.toml: unknown key verbose");
    BOOST_TEST(error_of(parse(kMinimal + "[[route]]\ndomain = \"b.test\"\naddress = \"h:1\"\n"
                                         "[[route]]\ndomain = \"c.test\"\nadress = \"h:1\"\n")) ==
               "a.toml: unknown key [[route]] #2 adress");
    // Dotted keys create sub-tables inside known tables: still unknown keys.
    BOOST_TEST(error_of(parse(kMinimal + "[limits.extra]\nx = 1\n")) == "a.toml: unknown key [limits] extra");
}

BOOST_AUTO_TEST_CASE(wrong_types) {
    BOOST_TEST(error_of(parse(R"([gateway]
domains = ["a.test"]
[listen]
outer = 5269
inner = "127.0.0.1:15269"
[upstream]
address = "127.0.0.1:25269"
)")) == "a.toml: [listen] outer: expected a string, got integer");
    BOOST_TEST(error_of(parse("[gateway]\ndomains = \"a.test\"\n")) ==
               "a.toml: [gateway] domains: expected an array of strings, got string");
    BOOST_TEST(error_of(parse("[gateway]\ndomains = [\"a.test\", 3]\n")) ==
               "a.toml: [gateway] domains: element #2: expected a string, got integer");
    BOOST_TEST(error_of(parse(kMinimal + "[tls]\nsystem_ca = \"yes\"\n")) ==
               "a.toml: [tls] system_ca: expected a boolean (true or false), got string");
    BOOST_TEST(error_of(parse(kMinimal + "[limits]\nconnect_timeout = 2.5\n")) ==
               "a.toml: [limits] connect_timeout: expected an integer, got floating-point number");
    BOOST_TEST(error_of(parse("gateway = 1\n")) == "a.toml: [gateway]: expected a table, got integer");
    BOOST_TEST(error_of(parse(kMinimal + "[route]\ndomain = \"b.test\"\n")) ==
               "a.toml: [[route]]: expected an array of tables ([[route]]), got table");
}

BOOST_AUTO_TEST_CASE(invalid_addresses) {
    auto with_outer = [](const std::string& v) {
        return parse("[gateway]\ndomains = [\"a.test\"]\n[listen]\nouter = \"" + v +
                     "\"\ninner = \"127.0.0.1:15269\"\n[upstream]\naddress = \"127.0.0.1:25269\"\n");
    };
    BOOST_TEST(error_of(with_outer("1.2.3")) ==
               R"(a.toml: [listen] outer: invalid address "1.2.3" (expected HOST:PORT or [IPv6]:PORT))");
    BOOST_TEST(error_of(with_outer("127.0.0.1:99999")) ==
               R"(a.toml: [listen] outer: invalid address "127.0.0.1:99999": port "99999" is not in 1-65535)");
    BOOST_TEST(error_of(with_outer("127.0.0.1:0")) ==
               R"(a.toml: [listen] outer: invalid address "127.0.0.1:0": port "0" is not in 1-65535)");
    auto host = error_of(with_outer("localhost:5269"));
    CHECK_CONTAINS(host, R"(a.toml: [listen] outer: invalid address "localhost:5269" (expected an IP address, not a host name)");

    auto route = error_of(parse(kMinimal + "[[route]]\ndomain = \"b.test\"\naddress = \"b.test\"\n"));
    BOOST_TEST(route == R"(a.toml: [[route]] #1 address: invalid address "b.test" (expected HOST:PORT or [IPv6]:PORT))");
}

BOOST_AUTO_TEST_CASE(policy_values) {
    BOOST_TEST(error_of(parse(kMinimal + "[tls]\npolicy = \"maybe\"\n")) ==
               R"(a.toml: [tls] policy: "maybe" is not one of required, optional, disabled)");
    BOOST_TEST(error_of(parse(kMinimal + "[[route]]\ndomain = \"b.test\"\naddress = \"h:1\"\npolicy = \"Required\"\n")) ==
               R"(a.toml: [[route]] #1 policy: "Required" is not one of required, optional, disabled)");
    auto up = R"([gateway]
domains = ["a.test"]
[listen]
outer = "127.0.0.1:5269"
inner = "127.0.0.1:15269"
[upstream]
address = "127.0.0.1:25269"
tls = "verify"
)";
    BOOST_TEST(error_of(parse(up)) == R"(a.toml: [upstream] tls: "verify" is not one of required, optional, disabled)");
}

BOOST_AUTO_TEST_CASE(missing_required) {
    BOOST_TEST(error_of(parse("")) == "a.toml: [gateway]: missing (it lists the local domains)");
    BOOST_TEST(error_of(parse("[gateway]\n")) == "a.toml: [gateway] domains: missing");
    BOOST_TEST(error_of(parse("[gateway]\ndomains = []\n")) == "a.toml: [gateway] domains: must list at least one domain");
    BOOST_TEST(error_of(parse("[gateway]\ndomains = [\"a.test\"]\n")) ==
               "a.toml: [listen]: missing (needs inner and outer or outer_tls)");
    BOOST_TEST(error_of(parse("[gateway]\ndomains = [\"a.test\"]\n[listen]\ninner = \"127.0.0.1:1\"\n")) ==
               "a.toml: [listen] outer: missing (at least one of outer and outer_tls is required)");
    BOOST_TEST(error_of(parse("[gateway]\ndomains = [\"a.test\"]\n[listen]\nouter = \"127.0.0.1:1\"\n")) ==
               "a.toml: [listen] inner: missing");
    BOOST_TEST(error_of(parse("[gateway]\ndomains = [\"a.test\"]\n[listen]\nouter = \"127.0.0.1:1\"\n"
                              "inner = \"127.0.0.1:2\"\n")) ==
               "a.toml: [upstream]: missing (needs address, the local server's S2S port)");
    BOOST_TEST(error_of(parse("[gateway]\ndomains = [\"a.test\"]\n[listen]\nouter = \"127.0.0.1:1\"\n"
                              "inner = \"127.0.0.1:2\"\n[upstream]\ntls = \"optional\"\n")) ==
               "a.toml: [upstream] address: missing");
    BOOST_TEST(error_of(parse(kMinimal + "[[route]]\ndomain = \"b.test\"\naddress = \"h:1\"\n"
                                         "[[route]]\naddress = \"h:1\"\n")) ==
               "a.toml: [[route]] #2 domain: missing");
    BOOST_TEST(error_of(parse(kMinimal + "[[route]]\ndomain = \"b.test\"\n")) == "a.toml: [[route]] #1 address: missing");
    BOOST_TEST(error_of(parse(kMinimal + "[[cert]]\nkey = \"k\"\n")) == "a.toml: [[cert]] #1 cert: missing");
}

BOOST_AUTO_TEST_CASE(domain_validation) {
    auto with_domains = [](const std::string& list) {
        return parse("[gateway]\ndomains = [" + list +
                     "]\n[listen]\nouter = \"127.0.0.1:5269\"\ninner = \"127.0.0.1:15269\"\n"
                     "[upstream]\naddress = \"127.0.0.1:25269\"\n");
    };
    BOOST_TEST(error_of(with_domains(R"("a.test", "A.Test")")) == R"(a.toml: [gateway] domains: duplicate domain "a.test")");
    BOOST_TEST(error_of(with_domains(R"("a test")")) ==
               R"(a.toml: [gateway] domains: "a test" is not a valid domain (contains a space))");
    BOOST_TEST(error_of(with_domains(R"("user@a.test")")) ==
               R"(a.toml: [gateway] domains: "user@a.test" is not a valid domain (contains '@'))");
    BOOST_TEST(error_of(with_domains(R"("a.test/res")")) ==
               R"(a.toml: [gateway] domains: "a.test/res" is not a valid domain (contains '/'))");
    BOOST_TEST(error_of(with_domains(R"("a..test")")) ==
               R"(a.toml: [gateway] domains: "a..test" is not a valid domain (empty label))");
    BOOST_TEST(error_of(with_domains(R"("")")) == R"(a.toml: [gateway] domains: "" is not a valid domain (empty name))");
    CHECK_CONTAINS(error_of(with_domains("\"" + std::string(64, 'x') + ".test\"")), "(label longer than 63 octets)");
}

BOOST_AUTO_TEST_CASE(route_domains) {
    auto r = parse(kMinimal + "[[route]]\ndomain = \"*.b.test\"\naddress = \"h:1\"\n"
                              "[[route]]\ndomain = \"B.test\"\naddress = \"h:2\"\n");
    REQUIRE_OK(r);
    BOOST_TEST(r->routes[0].domain == "*.b.test");
    BOOST_TEST(r->routes[1].domain == "b.test");

    CHECK_CONTAINS(error_of(parse(kMinimal + "[[route]]\ndomain = \"a.*.test\"\naddress = \"h:1\"\n")),
                   R"(a.toml: [[route]] #1 domain: "a.*.test" is not a valid domain or wildcard)");
    CHECK_CONTAINS(error_of(parse(kMinimal + "[[route]]\ndomain = \"*\"\naddress = \"h:1\"\n")),
                   R"(a.toml: [[route]] #1 domain: "*" is not a valid domain or wildcard)");
    BOOST_TEST(error_of(parse(kMinimal + "[[route]]\ndomain = \"b.test\"\naddress = \"h:1\"\n"
                                         "[[route]]\ndomain = \"b.test.\"\naddress = \"h:2\"\n")) ==
               R"(a.toml: [[route]] #2 domain: duplicate route for "b.test")");
}

BOOST_AUTO_TEST_CASE(route_capture) {
    TempDir d;
    d.write("conf/caps/keep", "");
    std::string routes = "[[route]]\ndomain = \"b.test\"\naddress = \"h:1\"\ncapture = \"caps/b.cap\"\n"
                         "[[route]]\ndomain = \"c.test\"\naddress = \"h:2\"\n";
    auto r = parse_config(kMinimal + routes, (d.path / "conf/s2smux.toml").string());
    REQUIRE_OK(r);
    BOOST_TEST(r->routes[0].capture == (d.path / "conf/caps/b.cap").string());
    BOOST_TEST(r->routes[1].capture == "");

    std::string toml = (d.path / "conf/s2smux.toml").string();
    std::string e = error_of(parse_config(kMinimal + "[[route]]\ndomain = \"b.test\"\naddress = \"h:1\"\n"
                                                     "capture = \"nodir/b.cap\"\n",
                                          toml));
    CHECK_CONTAINS(e, "[[route]] #1 capture: directory \"" + (d.path / "conf/nodir").string() + "\": No such file");
    e = error_of(parse_config(kMinimal + "[[route]]\ndomain = \"b.test\"\naddress = \"h:1\"\ncapture = \"\"\n", toml));
    CHECK_CONTAINS(e, "[[route]] #1 capture: empty path");
    e = error_of(parse_config(kMinimal + "[[route]]\ndomain = \"b.test\"\naddress = \"h:1\"\ncapture = 1\n", toml));
    CHECK_CONTAINS(e, "[[route]] #1 capture: expected a string");
}

BOOST_AUTO_TEST_CASE(missing_cert_file) {
    TempDir d;
    d.write("a.key", "k");
    fs::path file = d.write("a.toml", kMinimal + "[[cert]]\ncert = \"nope.pem\"\nkey = \"a.key\"\n");
    auto e = error_of(load_config(file.string()));
    BOOST_TEST(e == file.string() + ": [[cert]] #1 cert: cannot read \"" + (d.path / "nope.pem").string() +
                        "\": No such file or directory");

    // A directory is not a readable file.
    fs::create_directories(d.path / "dir.key");
    d.write("a.pem", "c");
    d.write("b.toml", kMinimal + "[[cert]]\ncert = \"a.pem\"\nkey = \"dir.key\"\n");
    auto e2 = error_of(load_config((d.path / "b.toml").string()));
    CHECK_CONTAINS(e2, "[[cert]] #1 key: cannot read \"" + (d.path / "dir.key").string() + "\": not a regular file");

    d.write("c.toml", kMinimal + "[tls]\nca_file = \"missing-ca.pem\"\n");
    auto e3 = error_of(load_config((d.path / "c.toml").string()));
    CHECK_CONTAINS(e3, "[tls] ca_file: cannot read \"" + (d.path / "missing-ca.pem").string() +
                           "\": No such file or directory");

    if (::geteuid() != 0) { // root reads anything
        fs::path unreadable = d.write("secret.key", "k");
        ::chmod(unreadable.c_str(), 0);
        d.write("d.toml", kMinimal + "[[cert]]\ncert = \"a.pem\"\nkey = \"secret.key\"\n");
        CHECK_CONTAINS(error_of(load_config((d.path / "d.toml").string())), "Permission denied");
    }
}

BOOST_AUTO_TEST_CASE(missing_config_file) {
    TempDir d;
    std::string p = (d.path / "absent.toml").string();
    BOOST_TEST(error_of(load_config(p)) == p + ": cannot read: No such file or directory");
    BOOST_TEST(error_of(load_config(d.path.string())) == d.path.string() + ": cannot read: not a regular file");
}

BOOST_AUTO_TEST_CASE(limits_ranges) {
    BOOST_TEST(error_of(parse(kMinimal + "[limits]\nmax_depth = 0\n")) ==
               "a.toml: [limits] max_depth: 0 is out of range (expected 4 to 1000)");
    BOOST_TEST(error_of(parse(kMinimal + "[limits]\nmax_stanza_bytes = 100\n")) ==
               "a.toml: [limits] max_stanza_bytes: 100 is out of range (expected 10000 to 67108864 bytes)");
    BOOST_TEST(error_of(parse(kMinimal + "[limits]\nconnect_timeout = -1\n")) ==
               "a.toml: [limits] connect_timeout: -1 is out of range (expected 1 to 3600 seconds)");
    BOOST_TEST(error_of(parse(kMinimal + "[limits]\nqueue_timeout = 100000\n")) ==
               "a.toml: [limits] queue_timeout: 100000 is out of range (expected 1 to 86400 seconds)");
    BOOST_TEST(error_of(parse(kMinimal + "[limits]\nmax_queue_stanzas = 0\n")) ==
               "a.toml: [limits] max_queue_stanzas: 0 is out of range (expected 1 to 10000000)");
    BOOST_TEST(error_of(parse(kMinimal + "[limits]\nmax_attrs = 100000\n")) ==
               "a.toml: [limits] max_attrs: 100000 is out of range (expected 8 to 10000)");
    BOOST_TEST(error_of(parse(kMinimal + "[limits]\nstream_write_buffer = 1000\n")) ==
               "a.toml: [limits] stream_write_buffer: 1000 is out of range (expected 16384 to 1073741824 bytes)");
    BOOST_TEST(error_of(parse(kMinimal + "[limits]\nmax_buffered_bytes = 0\n")) ==
               "a.toml: [limits] max_buffered_bytes: 0 is out of range (expected 65536 to 17179869184 bytes)");
    BOOST_TEST(error_of(parse(kMinimal + "[limits]\nstream_write_buffer = 2097152\nmax_buffered_bytes = 1048576\n")) ==
               "a.toml: [limits] max_buffered_bytes: 1048576 is below stream_write_buffer (2097152): one stream "
               "alone would pause every other");
    BOOST_TEST(error_of(parse(kMinimal + "[limits]\nauth_timeout = 0\n")) ==
               "a.toml: [limits] auth_timeout: 0 is out of range (expected 1 to 3600 seconds)");
}

BOOST_AUTO_TEST_CASE(upstream_pairs_and_idle_timeout) {
    const std::string& head = kMinimal; // ends in [upstream]
    auto one = parse(head + "max_pairs_per_stream = 1\n[limits]\nupstream_idle_timeout = 0\n");
    REQUIRE_OK(one);
    BOOST_TEST(one->upstream_max_pairs == 1u); // one stream per pair, as before piggybacking
    BOOST_TEST(one->upstream_idle_ms == 0u);   // never closed for idleness
    auto some = parse(head + "max_pairs_per_stream = 250\n[limits]\nupstream_idle_timeout = 30\n");
    REQUIRE_OK(some);
    BOOST_TEST(some->upstream_max_pairs == 250u);
    BOOST_TEST(some->upstream_idle_ms == 30000u);
    BOOST_TEST(error_of(parse(head + "max_pairs_per_stream = 0\n")) ==
               "a.toml: [upstream] max_pairs_per_stream: 0 is out of range (expected 1 to 1000000)");
    BOOST_TEST(error_of(parse(head + "max_pairs_per_stream = \"many\"\n")).find("max_pairs_per_stream") !=
               std::string::npos);
    BOOST_TEST(error_of(parse(head + "[limits]\nupstream_idle_timeout = 100000\n")) ==
               "a.toml: [limits] upstream_idle_timeout: 100000 is out of range (expected 0 to 86400 seconds)");
}

BOOST_AUTO_TEST_CASE(log_level) {
    BOOST_TEST(error_of(parse(kMinimal + "[log]\nlevel = \"verbose\"\n")) ==
               R"(a.toml: [log] level: "verbose" is not one of debug, info, warn, error)");
    for (const char* lvl : {"debug", "info", "warn", "error"}) {
        auto r = parse(kMinimal + "[log]\nlevel = \"" + lvl + "\"\nfile = \"\"\n");
        REQUIRE_OK(r);
        BOOST_TEST(r->log_level == lvl);
        BOOST_TEST(r->log_file.empty());
    }
}

BOOST_AUTO_TEST_CASE(metrics_listen) {
    auto none = parse(kMinimal);
    REQUIRE_OK(none);
    BOOST_TEST(!none->metrics_listen);
    for (const char* a : {"127.0.0.1:9100", "[::1]:9100", "127.0.0.2:9100"}) {
        auto r = parse(kMinimal + "[metrics]\nlisten = \"" + a + "\"\n");
        REQUIRE_OK(r);
        BOOST_REQUIRE(r->metrics_listen);
        BOOST_TEST(r->metrics_listen->to_string() == a);
    }
    BOOST_TEST(error_of(parse(kMinimal + "[metrics]\nlisten = \"0.0.0.0:9100\"\n")) ==
               "a.toml: [metrics] listen: 0.0.0.0:9100 is not a loopback address (the metrics endpoint has no "
               "authentication; use 127.0.0.1:PORT or [::1]:PORT)");
    BOOST_TEST(error_of(parse(kMinimal + "[metrics]\nlisten = \"[::]:9100\"\n")).find(
                   "[metrics] listen: [::]:9100 is not a loopback address") != std::string::npos);
    BOOST_TEST(error_of(parse(kMinimal + "[metrics]\nlisten = \"localhost:9100\"\n")).find(
                   "[metrics] listen: invalid address") != std::string::npos);
    BOOST_TEST(error_of(parse(kMinimal + "[metrics]\nlisten = \"127.0.0.1:15269\"\n")) ==
               "a.toml: [metrics] listen: same address as [listen] inner (127.0.0.1:15269)");
    BOOST_TEST(error_of(parse(kMinimal + "[metrics]\nport = 9100\n")) == "a.toml: unknown key [metrics] port");
}

BOOST_AUTO_TEST_CASE(conflicting_addresses) {
    BOOST_TEST(error_of(parse("[gateway]\ndomains = [\"a.test\"]\n[listen]\nouter = \"127.0.0.1:5269\"\n"
                              "inner = \"127.0.0.1:5269\"\n[upstream]\naddress = \"127.0.0.1:25269\"\n")) ==
               "a.toml: [listen] inner: same address as [listen] outer (127.0.0.1:5269)");
    BOOST_TEST(error_of(parse("[gateway]\ndomains = [\"a.test\"]\n[listen]\nouter = \"127.0.0.1:5269\"\n"
                              "inner = \"127.0.0.1:15269\"\n[upstream]\naddress = \"127.0.0.1:15269\"\n")) ==
               "a.toml: [upstream] address: same address as [listen] inner (127.0.0.1:15269); it must be the "
               "local server's S2S port");
}

BOOST_AUTO_TEST_CASE(outer_tls_needs_a_certificate) {
    BOOST_TEST(error_of(parse("[gateway]\ndomains = [\"a.test\"]\n[listen]\nouter_tls = \"127.0.0.1:5270\"\n"
                              "inner = \"127.0.0.1:15269\"\n[upstream]\naddress = \"127.0.0.1:25269\"\n")) ==
               "a.toml: [[cert]]: missing ([listen] outer_tls is direct TLS and needs at least one certificate)");
}

BOOST_AUTO_TEST_CASE(admin_socket_path_length) {
    std::string longp(120, 's');
    CHECK_CONTAINS(error_of(parse("[gateway]\ndomains = [\"a.test\"]\nadmin_socket = \"/" + longp + "\"\n")),
                   "a.toml: [gateway] admin_socket: path \"/" + longp + "\" is too long for a Unix socket (121 bytes, at most 107)");
}

// The EXAMPLE in man/s2smux.conf.5.scd must stay a valid configuration.
BOOST_AUTO_TEST_CASE(man_page_example_parses) {
    // meson runs tests from the source root; also look upwards from the cwd.
    fs::path man;
    for (fs::path dir = fs::current_path();; dir = dir.parent_path()) {
        if (fs::exists(dir / "man/s2smux.conf.5.scd")) {
            man = dir / "man/s2smux.conf.5.scd";
            break;
        }
        if (dir == dir.parent_path()) break;
    }
    if (man.empty()) {
        BOOST_TEST_MESSAGE("man/s2smux.conf.5.scd not found from the working directory; run through `meson test`");
        return;
    }
    std::ifstream in(man);
    std::stringstream ss;
    ss << in.rdbuf();
    std::string text = ss.str();
    auto ex = text.find("# EXAMPLE");
    BOOST_REQUIRE(ex != std::string::npos);
    auto open = text.find("```\n", ex);
    BOOST_REQUIRE(open != std::string::npos);
    auto close = text.find("```", open + 4);
    BOOST_REQUIRE(close != std::string::npos);
    std::string example = text.substr(open + 4, close - open - 4);

    TempDir d;
    d.write("certs/ca.pem", "x");
    d.write("certs/a.test.pem", "x");
    d.write("certs/a.test.key", "x");
    auto r = parse_config(example, (d.path / "s2smux.toml").string());
    REQUIRE_OK(r);
    BOOST_TEST(r->domains.size() == 2u);
    BOOST_TEST(r->routes.size() == 2u);
    BOOST_TEST(r->outer_tls.has_value());
}

BOOST_AUTO_TEST_CASE(stream_management_section) {
    auto d = parse(kMinimal);
    REQUIRE_OK(d);
    BOOST_TEST(d->sm_enabled);
    BOOST_TEST(d->sm_max_unacked_bytes == 64u << 20);
    auto r = parse(kMinimal + "[stream_management]\nenabled = false\nmax_unacked_bytes = 1048576\n");
    REQUIRE_OK(r);
    BOOST_TEST(!r->sm_enabled);
    BOOST_TEST(r->sm_max_unacked_bytes == 1048576u);
    CHECK_CONTAINS(error_of(parse(kMinimal + "[stream_management]\nmax_unacked_bytes = 100\n")),
                   "[stream_management] max_unacked_bytes");
    CHECK_CONTAINS(error_of(parse(kMinimal + "[stream_management]\nresume = true\n")), "resume");
}
