// Base64 (RFC 4648) for SASL payloads and certificate chains in the protocol.
#pragma once

#include <string>
#include <string_view>

namespace s2smux {

void base64_encode(std::string& out, std::string_view in);
// Strict decoding (whitespace ignored, padding required); false if invalid.
bool base64_decode(std::string& out, std::string_view in);

} // namespace s2smux
