// HAProxy as the load tool's baseline hop: a TCP relay that terminates TLS
// from the generator and re-originates TLS to the sink, moving the same byte
// stream without parsing XML, the physical limit of a proxy hop on this
// machine. STARTTLS cannot pass a TLS-terminating proxy, so both legs use
// direct TLS (XEP-0368, ALPN xmpp-server).
#pragma once

#include "common/result.h"
#include "tools/load/gateway_process.h"

#include <cstdint>
#include <string>

namespace s2smux::load {

// The haproxy binary: `explicit_path` if given, else the first `haproxy` on
// PATH, then /usr/sbin (not on a normal user's PATH). Empty if none.
std::string find_haproxy(const std::string& explicit_path);

struct HaproxyParams {
    std::string binary;
    std::string certs_dir; // absolute: a.test, b.test (.pem/.key) and ca.pem
    std::string work_dir;  // config, PEM bundles and log go here
    std::uint16_t sink_port = 0;
};

// Writes the config, starts haproxy in the foreground as `proc` (stop signal
// SIGUSR1: a graceful stop that exits 0), waits until it listens. Returns the
// port the generator connects to.
Result<std::uint16_t> start_haproxy(GatewayProcess& proc, const HaproxyParams& p);

} // namespace s2smux::load
