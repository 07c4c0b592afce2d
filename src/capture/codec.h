// Session configuration and TLS state as key=value tokens of a capture (S
// records and "tls" calls), and back: what a replay needs to rebuild the
// session exactly. Public data only: the TLS exporter is never written (a
// replay uses a fixed stand-in), nor any key or dialback secret.
#pragma once

#include "common/result.h"
#include "xmpp/session.h"

#include <string>
#include <vector>

namespace s2smux::capture {

std::vector<std::string> encode_config(const xmpp::SessionConfig& c);
Result<xmpp::SessionConfig> decode_config(const std::vector<std::string>& tokens);

std::vector<std::string> encode_tls(const xmpp::TlsState& st);
Result<xmpp::TlsState> decode_tls(const std::vector<std::string>& tokens);

// Stands in for the TLS exporter in a replay (32 bytes, like the real one).
inline const std::string kReplayExporter(32, '\x5a');

} // namespace s2smux::capture
