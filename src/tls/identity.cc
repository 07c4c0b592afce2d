#include "tls/identity.h"

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <gnutls/x509-ext.h>

#include <algorithm>
#include <cstring>

namespace s2smux::tls {

namespace {

constexpr const char* kOidSrvName = "1.3.6.1.5.5.7.8.7";  // id-on-dnsSRV (RFC 4985)
constexpr const char* kOidXmppAddr = "1.3.6.1.5.5.7.8.5"; // id-on-xmppAddr (RFC 6120)
constexpr const char* kOidSubjectAltName = "2.5.29.17";

char ascii_lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

std::string lower(std::string_view s) {
    std::string r(s);
    for (char& c : r) c = ascii_lower(c);
    return r;
}

bool iequals(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i)
        if (ascii_lower(a[i]) != ascii_lower(b[i])) return false;
    return true;
}

bool istarts_with(std::string_view s, std::string_view prefix) {
    return s.size() >= prefix.size() && iequals(s.substr(0, prefix.size()), prefix);
}

std::string_view strip_trailing_dot(std::string_view s) {
    if (!s.empty() && s.back() == '.') s.remove_suffix(1);
    return s;
}

// A name we are willing to compare: printable ASCII only (IDNs must be in
// A-label form, "xn--..."), no empty labels, no spaces or control bytes.
bool plausible_name(std::string_view s) {
    if (s.empty() || s.front() == '.' || s.back() == '.') return false;
    char prev = 0;
    for (char c : s) {
        auto u = static_cast<unsigned char>(c);
        if (u <= 0x20 || u >= 0x7f) return false;
        if (c == '.' && prev == '.') return false;
        prev = c;
    }
    return true;
}

// Strips "_xmpp-server." / "_xmpps-server." from an SRVName; empty if the
// SRVName is for another service.
std::string_view srv_domain(std::string_view srv) {
    for (std::string_view prefix : {std::string_view("_xmpp-server."), std::string_view("_xmpps-server.")})
        if (istarts_with(srv, prefix)) return srv.substr(prefix.size());
    return {};
}

// A bare domain XmppAddr (no localpart, no resource).
bool is_bare_domain(std::string_view jid) {
    return jid.find('@') == std::string_view::npos && jid.find('/') == std::string_view::npos;
}

// Decodes a DER string TLV (IA5String 0x16, UTF8String 0x0c) into its contents.
bool der_string(const unsigned char* p, std::size_t n, unsigned char want_tag, std::string& out) {
    if (n < 2 || p[0] != want_tag) return false;
    std::size_t len = p[1], hdr = 2;
    if (len & 0x80) {
        std::size_t nlen = len & 0x7f;
        if (nlen == 0 || nlen > 4 || n < 2 + nlen) return false;
        len = 0;
        for (std::size_t i = 0; i < nlen; ++i) len = (len << 8) | p[2 + i];
        hdr = 2 + nlen;
    }
    if (n - hdr != len) return false;
    out.assign(reinterpret_cast<const char*>(p + hdr), len);
    return true;
}

struct CrtGuard {
    gnutls_x509_crt_t crt = nullptr;
    ~CrtGuard() {
        if (crt) gnutls_x509_crt_deinit(crt);
    }
};

struct SansGuard {
    gnutls_subject_alt_names_t sans = nullptr;
    ~SansGuard() {
        if (sans) gnutls_subject_alt_names_deinit(sans);
    }
};

std::string datum_str(const gnutls_datum_t& d) {
    return std::string(reinterpret_cast<const char*>(d.data), d.size);
}

Result<void> parse_sans(gnutls_x509_crt_t crt, Identity& id) {
    gnutls_datum_t ext{};
    unsigned critical = 0;
    int r = gnutls_x509_crt_get_extension_by_oid2(crt, kOidSubjectAltName, 0, &ext, &critical);
    if (r == GNUTLS_E_REQUESTED_DATA_NOT_AVAILABLE) return {};
    if (r < 0) return make_error(std::string("cannot read subjectAltName: ") + gnutls_strerror(r));

    SansGuard g;
    r = gnutls_subject_alt_names_init(&g.sans);
    if (r >= 0) r = gnutls_x509_ext_import_subject_alt_names(&ext, g.sans, 0);
    gnutls_free(ext.data);
    if (r < 0) return make_error(std::string("cannot parse subjectAltName: ") + gnutls_strerror(r));

    for (unsigned i = 0;; ++i) {
        unsigned type = 0;
        gnutls_datum_t san{}, oid{};
        r = gnutls_subject_alt_names_get(g.sans, i, &type, &san, &oid);
        if (r == GNUTLS_E_REQUESTED_DATA_NOT_AVAILABLE) break;
        if (r < 0) return make_error(std::string("cannot parse subjectAltName: ") + gnutls_strerror(r));

        switch (type) {
        case GNUTLS_SAN_DNSNAME:
            id.dns.push_back(lower(datum_str(san)));
            break;
        case GNUTLS_SAN_OTHERNAME: {
            std::string oid_s = datum_str(oid);
            if (!oid_s.empty() && oid_s.back() == '\0') oid_s.pop_back();
            std::string value;
            if (oid_s == kOidSrvName) {
                if (der_string(san.data, san.size, 0x16, value)) id.srv.push_back(std::move(value));
            } else if (oid_s == kOidXmppAddr) {
                if (der_string(san.data, san.size, 0x0c, value)) id.xmpp.push_back(std::move(value));
            }
            break;
        }
        // GnuTLS decodes some otherNames into "virtual" types in some code
        // paths; accept them too (value already decoded, or still DER).
        case GNUTLS_SAN_OTHERNAME_XMPP: {
            std::string value;
            if (!der_string(san.data, san.size, 0x0c, value)) value = datum_str(san);
            id.xmpp.push_back(std::move(value));
            break;
        }
        case GNUTLS_SAN_OTHERNAME_SRV: {
            std::string value;
            if (!der_string(san.data, san.size, 0x16, value)) value = datum_str(san);
            id.srv.push_back(std::move(value));
            break;
        }
        default:
            break;
        }
    }
    return {};
}

} // namespace

std::vector<std::string> Identity::names() const {
    std::vector<std::string> out;
    auto add = [&](std::string_view n) {
        n = strip_trailing_dot(n);
        if (plausible_name(n)) out.push_back(lower(n));
    };
    for (const auto& d : dns) add(d);
    for (const auto& s : srv) {
        auto d = srv_domain(s);
        if (!d.empty()) add(d);
    }
    for (const auto& x : xmpp)
        if (is_bare_domain(x)) add(x);
    if (dns.empty() && srv.empty() && xmpp.empty() && !common_name.empty()) add(common_name);
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
    return out;
}

bool dns_name_matches(std::string_view pattern, std::string_view domain) {
    pattern = strip_trailing_dot(pattern);
    domain = strip_trailing_dot(domain);
    if (!plausible_name(domain) || !plausible_name(pattern)) return false;
    if (domain.find('*') != std::string_view::npos) return false;

    if (pattern.size() >= 2 && pattern[0] == '*' && pattern[1] == '.') {
        std::string_view rest = pattern.substr(2);
        // Only the whole leftmost label may be a wildcard, and it needs at
        // least two labels under it ("*.com" / "*.test" never match).
        if (rest.find('*') != std::string_view::npos || rest.find('.') == std::string_view::npos) return false;
        auto dot = domain.find('.');
        if (dot == std::string_view::npos || dot == 0) return false;
        return iequals(domain.substr(dot + 1), rest);
    }
    // Partial wildcards ("f*.example.com") and wildcards in other labels are
    // not supported: such a pattern matches nothing.
    if (pattern.find('*') != std::string_view::npos) return false;
    return iequals(pattern, domain);
}

bool matches_domain(const Identity& id, std::string_view domain) {
    domain = strip_trailing_dot(domain);
    if (!plausible_name(domain)) return false;

    for (const auto& d : id.dns)
        if (dns_name_matches(d, domain)) return true;
    for (const auto& s : id.srv) {
        auto d = strip_trailing_dot(srv_domain(s));
        if (!d.empty() && iequals(d, domain)) return true;
    }
    for (const auto& x : id.xmpp)
        if (is_bare_domain(x) && iequals(strip_trailing_dot(x), domain)) return true;
    if (id.dns.empty() && id.srv.empty() && id.xmpp.empty() && !id.common_name.empty())
        return dns_name_matches(id.common_name, domain);
    return false;
}

Result<Identity> identity_from_der(std::string_view der) {
    if (der.empty()) return make_error("empty certificate");
    CrtGuard g;
    int r = gnutls_x509_crt_init(&g.crt);
    if (r < 0) return make_error(std::string("gnutls_x509_crt_init: ") + gnutls_strerror(r));
    gnutls_datum_t d{reinterpret_cast<unsigned char*>(const_cast<char*>(der.data())),
                     static_cast<unsigned>(der.size())};
    r = gnutls_x509_crt_import(g.crt, &d, GNUTLS_X509_FMT_DER);
    if (r < 0) return make_error(std::string("cannot parse certificate: ") + gnutls_strerror(r));
    return identity_from_crt(g.crt);
}

Result<Identity> identity_from_crt(gnutls_x509_crt_t crt) {
    Identity id;
    gnutls_datum_t dn{};
    if (gnutls_x509_crt_get_dn3(crt, &dn, 0) >= 0) {
        id.subject = datum_str(dn);
        gnutls_free(dn.data);
    }

    std::size_t size = 0;
    int r = gnutls_x509_crt_get_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, 0, nullptr, &size);
    if (r == GNUTLS_E_SHORT_MEMORY_BUFFER && size > 0) {
        std::string cn(size, '\0');
        if (gnutls_x509_crt_get_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, 0, cn.data(), &size) >= 0) {
            cn.resize(std::strlen(cn.c_str()));
            id.common_name = std::move(cn);
        }
    }

    id.not_before = static_cast<std::int64_t>(gnutls_x509_crt_get_activation_time(crt));
    id.not_after = static_cast<std::int64_t>(gnutls_x509_crt_get_expiration_time(crt));

    auto sans = parse_sans(crt, id);
    if (!sans) return make_error(sans.error());
    return id;
}

} // namespace s2smux::tls
