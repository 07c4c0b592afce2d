// Dialback keys (XEP-0220 with the XEP-0185 recommended construction):
//   key = HEX( HMAC-SHA256( HEX(SHA256(secret)), receiving ' ' originating ' ' stream-id ) )
// Stateless: the authoritative side recomputes the key to verify it, so a
// key cannot be replayed for another stream id or domain pair.
#pragma once

#include <string>
#include <string_view>

namespace s2smux::xmpp {

class DialbackKeys {
public:
    explicit DialbackKeys(std::string_view secret);
    // A fresh random secret (per process start).
    static DialbackKeys random();

    std::string generate(std::string_view receiving, std::string_view originating,
                         std::string_view stream_id) const;
    // Constant-time comparison against the expected key.
    bool verify(std::string_view receiving, std::string_view originating, std::string_view stream_id,
                std::string_view key) const;

private:
    std::string hashed_secret_; // hex SHA-256 of the secret
};

// Random stream ids (hex, 128 bits of entropy).
std::string random_stream_id();

} // namespace s2smux::xmpp
