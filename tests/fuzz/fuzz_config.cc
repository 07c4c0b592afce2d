// libFuzzer target: the TOML configuration parser (parse_config).
//
// Input: the text of a configuration file. Invariants, on top of the
// sanitizers: no exception escapes; an error names the file; an accepted
// configuration only holds what its checks promise (normalized domains,
// ports, relative paths made absolute).
#include "daemon/config.h"
#include "fuzz_common.h"

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

using namespace s2smux;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::string_view text(reinterpret_cast<const char*>(data), size);
    const std::string path = "fuzz.toml";
    auto r = parse_config(text, path);
    if (!r) {
        FUZZ_CHECK(r.error().compare(0, path.size(), path) == 0, "error does not name the file:", r.error());
        return 0;
    }
    const Config& c = *r;
    for (const auto& d : c.domains) {
        auto n = normalize_domain(d);
        FUZZ_CHECK(n && *n == d, "domain not normalized:", d);
    }
    for (const auto& rt : c.routes) {
        FUZZ_CHECK(!rt.domain.empty());
        FUZZ_CHECK(rt.address.port != 0, "route without a port:", rt.domain);
    }
    for (const auto* e : {&c.outer, &c.outer_tls, &c.inner, &c.upstream, &c.nameserver})
        if (*e) FUZZ_CHECK((*e)->port != 0 && is_ip_literal((*e)->host), "listen address not an IP:port:", (*e)->to_string());
    for (const auto& ce : c.certs) FUZZ_CHECK(ce.cert.empty() || ce.cert[0] == '/', "relative cert path:", ce.cert);
    return 0;
}
