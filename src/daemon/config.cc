// s2smuxd configuration: TOML (toml++) to Config, with precise messages.
//
// toml++ as packaged by Debian is a compiled library built with exceptions
// (toml::v3::ex), so toml::parse() throws toml::parse_error. Configuration is
// read once at start-up and on reload, never on the data path, so this file
// uses exceptions internally (toml::parse_error and ConfigError) and converts
// them to Result at the two public entry points.
#include "daemon/config.h"

#include <toml++/toml.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <initializer_list>
#include <stdexcept>
#include <system_error>

namespace s2smux {

// ---------------------------------------------------------------------------
// Endpoints and names

std::string Endpoint::to_string() const {
    std::string out;
    if (host.find(':') != std::string::npos) {
        out.reserve(host.size() + 8);
        out += '[';
        out += host;
        out += ']';
    } else {
        out = host;
    }
    out += ':';
    out += std::to_string(port);
    return out;
}

bool is_ip_literal(std::string_view host) {
    if (host.empty() || host.size() >= INET6_ADDRSTRLEN) return false;
    std::string h(host);
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, h.c_str(), buf) == 1 || inet_pton(AF_INET6, h.c_str(), buf) == 1;
}

namespace {

bool is_ipv6_literal(std::string_view host) {
    if (host.empty() || host.size() >= INET6_ADDRSTRLEN) return false;
    std::string h(host);
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET6, h.c_str(), buf) == 1;
}

std::string quote_str(std::string_view s) {
    std::string out;
    out.reserve(s.size() + 2);
    out += '"';
    for (char c : s) {
        if (c == '"' || c == '\\') {
            out += '\\';
            out += c;
        } else if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
            static const char hex[] = "0123456789abcdef";
            out += "\\x";
            out += hex[(static_cast<unsigned char>(c) >> 4) & 0xf];
            out += hex[static_cast<unsigned char>(c) & 0xf];
        } else {
            out += c;
        }
    }
    out += '"';
    return out;
}

} // namespace

Result<std::string> normalize_domain(std::string_view name) {
    std::string s(name);
    for (char& c : s)
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    if (!s.empty() && s.back() == '.') s.pop_back();
    if (s.empty()) return make_error("empty name");
    if (s.size() > 253) return make_error("longer than 253 octets");
    std::size_t label_len = 0;
    for (std::size_t i = 0; i <= s.size(); ++i) {
        if (i == s.size() || s[i] == '.') {
            if (label_len == 0) return make_error("empty label");
            if (label_len > 63) return make_error("label longer than 63 octets");
            label_len = 0;
            continue;
        }
        unsigned char c = static_cast<unsigned char>(s[i]);
        bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c >= 0x80;
        if (!ok) {
            if (c == ' ') return make_error("contains a space");
            if (c < 0x20 || c == 0x7f) return make_error("contains a control character");
            return make_error(std::string("contains '") + static_cast<char>(c) + "'");
        }
        ++label_len;
    }
    return s;
}

Result<Endpoint> parse_endpoint(std::string_view s, std::uint16_t default_port) {
    const std::string invalid = "invalid address " + quote_str(s) +
        (default_port ? " (expected HOST, HOST:PORT or [IPv6]:PORT)" : " (expected HOST:PORT or [IPv6]:PORT)");
    if (s.empty()) return make_error(invalid);

    std::string_view host, port_str;
    bool have_port = false;
    bool bracketed = false;
    if (s.front() == '[') {
        auto close = s.find(']');
        if (close == std::string_view::npos) return make_error(invalid);
        host = s.substr(1, close - 1);
        auto rest = s.substr(close + 1);
        if (!rest.empty()) {
            if (rest.front() != ':') return make_error(invalid);
            port_str = rest.substr(1);
            have_port = true;
        }
        bracketed = true;
        if (!is_ipv6_literal(host))
            return make_error("invalid address " + quote_str(s) + ": " + quote_str(host) + " is not an IPv6 address");
    } else {
        auto colons = std::count(s.begin(), s.end(), ':');
        if (colons == 0) {
            host = s;
        } else if (colons == 1) {
            auto c = s.find(':');
            host = s.substr(0, c);
            port_str = s.substr(c + 1);
            have_port = true;
        } else if (default_port != 0 && is_ipv6_literal(s)) {
            host = s;
        } else {
            return make_error("invalid address " + quote_str(s) + " (IPv6 addresses need brackets, e.g. [::1]:5269)");
        }
    }

    Endpoint ep;
    if (have_port) {
        unsigned long v = 0;
        bool ok = !port_str.empty() && port_str.size() <= 5;
        for (char c : port_str) {
            if (c < '0' || c > '9') {
                ok = false;
                break;
            }
            v = v * 10 + static_cast<unsigned long>(c - '0');
        }
        if (port_str.empty()) return make_error(invalid);
        if (!ok || v < 1 || v > 65535)
            return make_error("invalid address " + quote_str(s) + ": port " + quote_str(port_str) + " is not in 1-65535");
        ep.port = static_cast<std::uint16_t>(v);
    } else {
        if (default_port == 0) return make_error(invalid);
        ep.port = default_port;
    }

    if (host.empty()) return make_error(invalid);
    if (bracketed || is_ip_literal(host)) {
        ep.host = std::string(host);
    } else {
        bool numeric = std::all_of(host.begin(), host.end(), [](char c) { return (c >= '0' && c <= '9') || c == '.'; });
        if (numeric)
            return make_error("invalid address " + quote_str(s) + ": " + quote_str(host) + " is not a valid IPv4 address");
        auto norm = normalize_domain(host);
        if (!norm)
            return make_error("invalid address " + quote_str(s) + ": bad host name " + quote_str(host) + " (" + norm.error() + ")");
        ep.host = std::move(*norm);
    }
    return ep;
}

// ---------------------------------------------------------------------------
// TOML to Config

namespace {

struct ConfigError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

const char* type_name(const toml::node& n) {
    switch (n.type()) {
    case toml::node_type::none: return "nothing";
    case toml::node_type::table: return "table";
    case toml::node_type::array: return "array";
    case toml::node_type::string: return "string";
    case toml::node_type::integer: return "integer";
    case toml::node_type::floating_point: return "floating-point number";
    case toml::node_type::boolean: return "boolean";
    case toml::node_type::date: return "date";
    case toml::node_type::time: return "time";
    case toml::node_type::date_time: return "date-time";
    }
    return "unknown type";
}

// A table being read: "[listen]" or "[[route]] #2".
struct Section {
    std::string label;
    const toml::table* tbl = nullptr;
};

class Reader {
public:
    Reader(std::string file, std::filesystem::path base) : file_(std::move(file)), base_(std::move(base)) {}

    [[noreturn]] void fail(const std::string& msg) const { throw ConfigError(file_ + ": " + msg); }
    [[noreturn]] void fail(const Section& sec, std::string_view key, const std::string& msg) const {
        fail(where(sec, key) + ": " + msg);
    }
    static std::string where(const Section& sec, std::string_view key) {
        return sec.label + " " + std::string(key);
    }

    void check_keys(const Section& sec, std::initializer_list<std::string_view> allowed) const {
        for (auto&& [k, v] : *sec.tbl) {
            (void)v;
            if (std::find(allowed.begin(), allowed.end(), k.str()) == allowed.end())
                fail("unknown key " + sec.label + " " + std::string(k.str()));
        }
    }

    const toml::node* get(const Section& sec, std::string_view key) const { return sec.tbl->get(key); }

    std::optional<std::string> get_string(const Section& sec, std::string_view key) const {
        const toml::node* n = get(sec, key);
        if (!n) return std::nullopt;
        if (!n->is_string()) fail(sec, key, std::string("expected a string, got ") + type_name(*n));
        return n->as_string()->get();
    }

    std::string require_string(const Section& sec, std::string_view key) const {
        auto v = get_string(sec, key);
        if (!v) fail(sec, key, "missing");
        return *v;
    }

    std::optional<bool> get_bool(const Section& sec, std::string_view key) const {
        const toml::node* n = get(sec, key);
        if (!n) return std::nullopt;
        if (!n->is_boolean()) fail(sec, key, std::string("expected a boolean (true or false), got ") + type_name(*n));
        return n->as_boolean()->get();
    }

    std::optional<std::int64_t> get_int(const Section& sec, std::string_view key, std::int64_t min,
                                        std::int64_t max, std::string_view unit = {}) const {
        const toml::node* n = get(sec, key);
        if (!n) return std::nullopt;
        if (!n->is_integer()) fail(sec, key, std::string("expected an integer, got ") + type_name(*n));
        std::int64_t v = n->as_integer()->get();
        if (v < min || v > max) {
            std::string u = unit.empty() ? std::string() : " " + std::string(unit);
            fail(sec, key, std::to_string(v) + " is out of range (expected " + std::to_string(min) + " to " +
                               std::to_string(max) + u + ")");
        }
        return v;
    }

    std::optional<std::vector<std::string>> get_string_array(const Section& sec, std::string_view key) const {
        const toml::node* n = get(sec, key);
        if (!n) return std::nullopt;
        if (!n->is_array()) fail(sec, key, std::string("expected an array of strings, got ") + type_name(*n));
        std::vector<std::string> out;
        std::size_t i = 0;
        for (const toml::node& e : *n->as_array()) {
            ++i;
            if (!e.is_string())
                fail(sec, key, "element #" + std::to_string(i) + ": expected a string, got " + type_name(e));
            out.push_back(e.as_string()->get());
        }
        return out;
    }

    std::optional<xmpp::TlsPolicy> get_policy(const Section& sec, std::string_view key) const {
        auto s = get_string(sec, key);
        if (!s) return std::nullopt;
        auto p = xmpp::parse_tls_policy(*s);
        if (!p) fail(sec, key, quote_str(*s) + " is not one of required, optional, disabled");
        return p;
    }

    // A listening/upstream address: IP literal and port.
    std::optional<Endpoint> get_ip_endpoint(const Section& sec, std::string_view key, std::uint16_t default_port = 0) const {
        auto s = get_string(sec, key);
        if (!s) return std::nullopt;
        auto ep = parse_endpoint(*s, default_port);
        if (!ep) fail(sec, key, ep.error());
        if (!is_ip_literal(ep->host))
            fail(sec, key, "invalid address " + quote_str(*s) +
                               " (expected an IP address, not a host name, e.g. 127.0.0.1:5269 or [::1]:5269)");
        return *ep;
    }

    std::string resolve_path(const std::string& p) const {
        if (p.empty()) return p;
        std::filesystem::path fp(p);
        if (fp.is_absolute()) return fp.lexically_normal().string();
        return (base_ / fp).lexically_normal().string();
    }

    // Resolves a path that must name a readable regular file.
    std::string readable_file(const Section& sec, std::string_view key, const std::string& p) const {
        if (p.empty()) fail(sec, key, "empty path");
        std::string full = resolve_path(p);
        int fd = ::open(full.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            int e = errno;
            fail(sec, key, "cannot read " + quote_str(full) + ": " + std::strerror(e));
        }
        struct stat st {};
        int rc = ::fstat(fd, &st);
        int e = errno;
        ::close(fd);
        if (rc != 0) fail(sec, key, "cannot read " + quote_str(full) + ": " + std::strerror(e));
        if (!S_ISREG(st.st_mode)) fail(sec, key, "cannot read " + quote_str(full) + ": not a regular file");
        return full;
    }

    // Resolves a path for a file the daemon creates: its directory must exist.
    std::string writable_dir_path(const Section& sec, std::string_view key, const std::string& p) const {
        if (p.empty()) fail(sec, key, "empty path");
        std::string full = resolve_path(p);
        if (!full.empty() && full.back() == '/') fail(sec, key, quote_str(full) + " names a directory, not a file");
        std::string dir = std::filesystem::path(full).parent_path().string();
        struct stat st {};
        if (::stat(dir.c_str(), &st) != 0) {
            int e = errno;
            fail(sec, key, "directory " + quote_str(dir) + ": " + std::strerror(e));
        }
        if (!S_ISDIR(st.st_mode)) fail(sec, key, quote_str(dir) + " is not a directory");
        return full;
    }

    // Top-level [name] (optional). Returns nullopt when absent.
    std::optional<Section> table(const toml::table& root, std::string_view name) const {
        const toml::node* n = root.get(name);
        if (!n) return std::nullopt;
        if (!n->is_table())
            fail("[" + std::string(name) + "]: expected a table, got " + type_name(*n));
        return Section{"[" + std::string(name) + "]", n->as_table()};
    }

    // Top-level [[name]] entries.
    std::vector<Section> array_of_tables(const toml::table& root, std::string_view name) const {
        std::vector<Section> out;
        const toml::node* n = root.get(name);
        if (!n) return out;
        std::string label = "[[" + std::string(name) + "]]";
        if (!n->is_array())
            fail(label + ": expected an array of tables (" + label + "), got " + type_name(*n));
        std::size_t i = 0;
        for (const toml::node& e : *n->as_array()) {
            ++i;
            if (!e.is_table())
                fail(label + " #" + std::to_string(i) + ": expected a table, got " + type_name(e));
            out.push_back(Section{label + " #" + std::to_string(i), e.as_table()});
        }
        return out;
    }

private:
    std::string file_;
    std::filesystem::path base_;
};

constexpr std::string_view kTables[] = {"gateway", "listen",  "upstream", "tls", "dns", "limits", "stream_management",
                                        "mux",     "metrics", "log"};
constexpr std::string_view kArrays[] = {"cert", "route"};

void check_top_level(const Reader& r, const toml::table& root) {
    for (auto&& [k, v] : root) {
        std::string_view name = k.str();
        bool known = std::find(std::begin(kTables), std::end(kTables), name) != std::end(kTables) ||
                     std::find(std::begin(kArrays), std::end(kArrays), name) != std::end(kArrays);
        if (known) continue;
        if (v.is_table()) r.fail("unknown table [" + std::string(name) + "]");
        if (v.is_array_of_tables()) r.fail("unknown table [[" + std::string(name) + "]]");
        r.fail("unknown key " + std::string(name));
    }
}

void read_gateway(const Reader& r, const toml::table& root, Config& c) {
    auto sec = r.table(root, "gateway");
    if (!sec) r.fail("[gateway]: missing (it lists the local domains)");
    r.check_keys(*sec, {"domains", "admin_socket", "dialback_secret"});

    auto domains = r.get_string_array(*sec, "domains");
    if (!domains) r.fail(*sec, "domains", "missing");
    if (domains->empty()) r.fail(*sec, "domains", "must list at least one domain");
    for (const auto& d : *domains) {
        auto n = normalize_domain(d);
        if (!n) r.fail(*sec, "domains", quote_str(d) + " is not a valid domain (" + n.error() + ")");
        if (std::find(c.domains.begin(), c.domains.end(), *n) != c.domains.end())
            r.fail(*sec, "domains", "duplicate domain " + quote_str(*n));
        c.domains.push_back(*n);
    }

    if (auto s = r.get_string(*sec, "admin_socket")) {
        if (!s->empty()) {
            std::string full = r.resolve_path(*s);
            constexpr std::size_t max_len = sizeof(sockaddr_un::sun_path) - 1;
            if (full.size() > max_len)
                r.fail(*sec, "admin_socket", "path " + quote_str(full) + " is too long for a Unix socket (" +
                                                 std::to_string(full.size()) + " bytes, at most " +
                                                 std::to_string(max_len) + ")");
            c.admin_socket = full;
        }
    }
    if (auto s = r.get_string(*sec, "dialback_secret")) c.dialback_secret = *s;
}

void read_listen(const Reader& r, const toml::table& root, Config& c) {
    auto sec = r.table(root, "listen");
    if (!sec) r.fail("[listen]: missing (needs inner and outer or outer_tls)");
    r.check_keys(*sec, {"outer", "outer_tls", "inner"});
    c.outer = r.get_ip_endpoint(*sec, "outer");
    c.outer_tls = r.get_ip_endpoint(*sec, "outer_tls");
    c.inner = r.get_ip_endpoint(*sec, "inner");
    if (!c.outer && !c.outer_tls) r.fail(*sec, "outer", "missing (at least one of outer and outer_tls is required)");
    if (!c.inner) r.fail(*sec, "inner", "missing");

    auto same = [](const std::optional<Endpoint>& a, const std::optional<Endpoint>& b) {
        return a && b && a->host == b->host && a->port == b->port;
    };
    if (same(c.outer, c.outer_tls))
        r.fail(*sec, "outer_tls", "same address as [listen] outer (" + c.outer->to_string() + ")");
    if (same(c.outer, c.inner)) r.fail(*sec, "inner", "same address as [listen] outer (" + c.outer->to_string() + ")");
    if (same(c.outer_tls, c.inner))
        r.fail(*sec, "inner", "same address as [listen] outer_tls (" + c.outer_tls->to_string() + ")");
}

void read_upstream(const Reader& r, const toml::table& root, Config& c) {
    auto sec = r.table(root, "upstream");
    if (!sec) r.fail("[upstream]: missing (needs address, the local server's S2S port)");
    r.check_keys(*sec, {"address", "tls", "max_pairs_per_stream"});
    c.upstream = r.get_ip_endpoint(*sec, "address");
    if (!c.upstream) r.fail(*sec, "address", "missing");
    if (auto p = r.get_policy(*sec, "tls")) c.upstream_tls = *p;
    if (auto v = r.get_int(*sec, "max_pairs_per_stream", 1, 1'000'000))
        c.upstream_max_pairs = static_cast<std::size_t>(*v);

    auto check = [&](const std::optional<Endpoint>& l, const char* name) {
        if (l && l->host == c.upstream->host && l->port == c.upstream->port)
            r.fail(*sec, "address", "same address as [listen] " + std::string(name) + " (" + l->to_string() +
                                        "); it must be the local server's S2S port");
    };
    check(c.outer, "outer");
    check(c.outer_tls, "outer_tls");
    check(c.inner, "inner");
}

void read_tls(const Reader& r, const toml::table& root, Config& c) {
    auto sec = r.table(root, "tls");
    if (!sec) return;
    r.check_keys(*sec, {"ca_file", "system_ca", "policy"});
    if (auto s = r.get_string(*sec, "ca_file")) {
        if (!s->empty()) c.ca_file = r.readable_file(*sec, "ca_file", *s);
    }
    if (auto b = r.get_bool(*sec, "system_ca")) c.system_ca = *b;
    if (auto p = r.get_policy(*sec, "policy")) c.policy = *p;
}

void read_certs(const Reader& r, const toml::table& root, Config& c) {
    for (const Section& sec : r.array_of_tables(root, "cert")) {
        r.check_keys(sec, {"cert", "key"});
        CertConfig cc;
        cc.cert = r.readable_file(sec, "cert", r.require_string(sec, "cert"));
        cc.key = r.readable_file(sec, "key", r.require_string(sec, "key"));
        c.certs.push_back(std::move(cc));
    }
    if (c.outer_tls && c.certs.empty())
        r.fail("[[cert]]: missing ([listen] outer_tls is direct TLS and needs at least one certificate)");
}

void read_routes(const Reader& r, const toml::table& root, Config& c) {
    for (const Section& sec : r.array_of_tables(root, "route")) {
        r.check_keys(sec, {"domain", "address", "direct_tls", "policy", "preconnect", "capture"});
        RouteConfig rc;
        std::string d = r.require_string(sec, "domain");
        std::string_view rest = d;
        bool wildcard = rest.size() >= 2 && rest.substr(0, 2) == "*.";
        if (wildcard) rest.remove_prefix(2);
        if (rest.find('*') != std::string_view::npos)
            r.fail(sec, "domain", quote_str(d) + " is not a valid domain or wildcard (expected \"b.test\" or \"*.b.test\")");
        auto n = normalize_domain(rest);
        if (!n)
            r.fail(sec, "domain", quote_str(d) + " is not a valid domain or wildcard (" + n.error() +
                                      "; expected \"b.test\" or \"*.b.test\")");
        rc.domain = wildcard ? "*." + *n : *n;
        for (const auto& other : c.routes)
            if (other.domain == rc.domain) r.fail(sec, "domain", "duplicate route for " + quote_str(rc.domain));

        auto a = r.get_string(sec, "address");
        if (!a) r.fail(sec, "address", "missing");
        auto ep = parse_endpoint(*a, 0);
        if (!ep) r.fail(sec, "address", ep.error());
        rc.address = *ep;
        if (auto b = r.get_bool(sec, "direct_tls")) rc.direct_tls = *b;
        if (auto b = r.get_bool(sec, "preconnect")) rc.preconnect = *b;
        if (rc.preconnect && wildcard)
            r.fail(sec, "preconnect", "needs an exact domain, not a wildcard (which domain would it connect to?)");
        rc.policy = r.get_policy(sec, "policy");
        if (auto f = r.get_string(sec, "capture")) rc.capture = r.writable_dir_path(sec, "capture", *f);
        c.routes.push_back(std::move(rc));
    }
}

void read_dns(const Reader& r, const toml::table& root, Config& c) {
    auto sec = r.table(root, "dns");
    if (!sec) return;
    r.check_keys(*sec, {"nameserver"});
    if (auto s = r.get_string(*sec, "nameserver")) {
        if (!s->empty()) c.nameserver = r.get_ip_endpoint(*sec, "nameserver", 53);
    }
}

void read_limits(const Reader& r, const toml::table& root, Config& c) {
    auto sec = r.table(root, "limits");
    if (!sec) return;
    r.check_keys(*sec, {"max_stanza_bytes", "max_depth", "max_attrs", "max_queue_stanzas", "connect_timeout",
                        "auth_timeout", "queue_timeout", "drain_timeout", "keepalive", "dead_peer_timeout",
                        "upstream_idle_timeout", "stream_write_buffer", "max_buffered_bytes"});
    if (auto v = r.get_int(*sec, "max_stanza_bytes", 10000, 64 * 1024 * 1024, "bytes"))
        c.max_stanza_bytes = static_cast<std::size_t>(*v);
    if (auto v = r.get_int(*sec, "max_depth", 4, 1000)) c.max_depth = static_cast<unsigned>(*v);
    if (auto v = r.get_int(*sec, "max_attrs", 8, 10000)) c.max_attrs = static_cast<unsigned>(*v);
    if (auto v = r.get_int(*sec, "max_queue_stanzas", 1, 10'000'000))
        c.max_queue_stanzas = static_cast<std::size_t>(*v);
    if (auto v = r.get_int(*sec, "connect_timeout", 1, 3600, "seconds"))
        c.connect_timeout_ms = static_cast<std::uint32_t>(*v * 1000);
    if (auto v = r.get_int(*sec, "auth_timeout", 1, 3600, "seconds"))
        c.auth_timeout_ms = static_cast<std::uint32_t>(*v * 1000);
    if (auto v = r.get_int(*sec, "queue_timeout", 1, 86400, "seconds"))
        c.queue_timeout_ms = static_cast<std::uint32_t>(*v * 1000);
    if (auto v = r.get_int(*sec, "drain_timeout", 0, 3600, "seconds"))
        c.drain_timeout_ms = static_cast<std::uint32_t>(*v * 1000);
    if (auto v = r.get_int(*sec, "keepalive", 0, 3600, "seconds"))
        c.keepalive_ms = static_cast<std::uint32_t>(*v * 1000);
    if (auto v = r.get_int(*sec, "dead_peer_timeout", 0, 86400, "seconds"))
        c.dead_peer_ms = static_cast<std::uint32_t>(*v * 1000);
    if (auto v = r.get_int(*sec, "upstream_idle_timeout", 0, 86400, "seconds"))
        c.upstream_idle_ms = static_cast<std::uint32_t>(*v * 1000);
    if (auto v = r.get_int(*sec, "stream_write_buffer", 16 * 1024, 1024 * 1024 * 1024, "bytes"))
        c.stream_write_buffer = static_cast<std::size_t>(*v);
    if (auto v = r.get_int(*sec, "max_buffered_bytes", 64 * 1024, 16LL * 1024 * 1024 * 1024, "bytes"))
        c.max_buffered_bytes = static_cast<std::size_t>(*v);
    if (c.max_buffered_bytes < c.stream_write_buffer)
        r.fail(*sec, "max_buffered_bytes",
               std::to_string(c.max_buffered_bytes) + " is below stream_write_buffer (" +
                   std::to_string(c.stream_write_buffer) + "): one stream alone would pause every other");
}

void read_stream_management(const Reader& r, const toml::table& root, Config& c) {
    auto sec = r.table(root, "stream_management");
    if (!sec) return;
    r.check_keys(*sec, {"enabled", "max_unacked_bytes", "resume_timeout"});
    if (auto v = r.get_int(*sec, "resume_timeout", 0, 3600, "seconds")) c.sm_resume_s = static_cast<std::uint32_t>(*v);
    if (auto v = r.get_bool(*sec, "enabled")) c.sm_enabled = *v;
    if (auto v = r.get_int(*sec, "max_unacked_bytes", 65536, 1LL << 32, "bytes"))
        c.sm_max_unacked_bytes = static_cast<std::size_t>(*v);
}

void read_mux(const Reader& r, const toml::table& root, Config& c) {
    auto sec = r.table(root, "mux");
    if (!sec) return;
    r.check_keys(*sec, {"enabled", "strict", "max_domains", "max_pending", "add_rate", "add_burst"});
    if (auto v = r.get_bool(*sec, "enabled")) c.mux_enabled = *v;
    if (auto v = r.get_bool(*sec, "strict")) c.mux_strict = *v;
    if (auto v = r.get_int(*sec, "max_domains", 1, 1'000'000)) c.mux_max_domains = static_cast<std::size_t>(*v);
    if (auto v = r.get_int(*sec, "max_pending", 1, 1'000'000)) c.mux_max_pending = static_cast<std::size_t>(*v);
    if (auto v = r.get_int(*sec, "add_rate", 1, 1'000'000, "adds per second")) c.mux_add_rate = static_cast<double>(*v);
    if (auto v = r.get_int(*sec, "add_burst", 1, 10'000'000)) c.mux_add_burst = static_cast<double>(*v);
}

bool is_loopback(const std::string& host) {
    if (host == "::1") return true;
    in_addr a{};
    return inet_pton(AF_INET, host.c_str(), &a) == 1 && (ntohl(a.s_addr) >> 24) == 127;
}

void read_metrics(const Reader& r, const toml::table& root, Config& c) {
    auto sec = r.table(root, "metrics");
    if (!sec) return;
    r.check_keys(*sec, {"listen"});
    auto s = r.get_string(*sec, "listen");
    if (!s || s->empty()) return;
    Endpoint ep = *r.get_ip_endpoint(*sec, "listen");
    // The endpoint has no authentication: never expose it beyond this host.
    if (!is_loopback(ep.host))
        r.fail(*sec, "listen", ep.to_string() + " is not a loopback address (the metrics endpoint has no "
                               "authentication; use 127.0.0.1:PORT or [::1]:PORT)");
    for (const auto& [l, name] : {std::pair{&c.outer, "outer"}, {&c.outer_tls, "outer_tls"}, {&c.inner, "inner"}})
        if (*l && (*l)->host == ep.host && (*l)->port == ep.port)
            r.fail(*sec, "listen", "same address as [listen] " + std::string(name) + " (" + ep.to_string() + ")");
    c.metrics_listen = ep;
}

void read_log(const Reader& r, const toml::table& root, Config& c) {
    auto sec = r.table(root, "log");
    if (!sec) return;
    r.check_keys(*sec, {"level", "file"});
    if (auto s = r.get_string(*sec, "level")) {
        if (*s != "debug" && *s != "info" && *s != "warn" && *s != "error")
            r.fail(*sec, "level", quote_str(*s) + " is not one of debug, info, warn, error");
        c.log_level = *s;
    }
    if (auto s = r.get_string(*sec, "file")) c.log_file = r.resolve_path(*s);
}

std::filesystem::path base_dir_of(const std::string& path) {
    std::error_code ec;
    std::filesystem::path p(path.empty() ? std::string("config.toml") : path);
    std::filesystem::path abs = std::filesystem::absolute(p, ec);
    if (ec) abs = p;
    std::filesystem::path dir = abs.lexically_normal().parent_path();
    if (dir.empty()) dir = ".";
    return dir;
}

} // namespace

Result<Config> parse_config(std::string_view toml_text, const std::string& path) {
    Config c;
    c.path = path;
    std::filesystem::path base = base_dir_of(path);
    c.base_dir = base.string();
    Reader r(path, base);

    toml::table root;
    try {
        root = toml::parse(toml_text, std::string_view(path));
    } catch (const toml::parse_error& e) {
        const auto& pos = e.source().begin;
        return make_error(path + ":" + std::to_string(pos.line) + ":" + std::to_string(pos.column) +
                          ": TOML syntax error: " + std::string(e.description()));
    }

    try {
        check_top_level(r, root);
        read_gateway(r, root, c);
        read_listen(r, root, c);
        read_upstream(r, root, c);
        read_tls(r, root, c);
        read_certs(r, root, c);
        read_routes(r, root, c);
        read_dns(r, root, c);
        read_limits(r, root, c);
        read_stream_management(r, root, c);
        read_mux(r, root, c);
        read_metrics(r, root, c);
        read_log(r, root, c);
    } catch (const ConfigError& e) {
        return make_error(e.what());
    } catch (const std::exception& e) {
        // Not expected (allocation failure, filesystem errors); still no throw past this boundary.
        return make_error(path + ": " + e.what());
    }
    return c;
}

Result<Config> load_config(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        return make_error(path + ": cannot read: " + std::strerror(e));
    }
    struct stat st {};
    if (::fstat(fd, &st) == 0 && !S_ISREG(st.st_mode)) {
        ::close(fd);
        return make_error(path + ": cannot read: not a regular file");
    }
    std::string text;
    char buf[16384];
    for (;;) {
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR) continue;
            int e = errno;
            ::close(fd);
            return make_error(path + ": read error: " + std::strerror(e));
        }
        if (n == 0) break;
        text.append(buf, static_cast<std::size_t>(n));
        if (text.size() > 16 * 1024 * 1024) {
            ::close(fd);
            return make_error(path + ": too large for a configuration file (over 16 MiB)");
        }
    }
    ::close(fd);
    return parse_config(text, path);
}

} // namespace s2smux
