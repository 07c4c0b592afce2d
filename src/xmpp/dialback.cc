#include "xmpp/dialback.h"

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

#include <cstdint>

namespace s2smux::xmpp {

namespace {

std::string hex(const unsigned char* p, std::size_t n) {
    static const char* digits = "0123456789abcdef";
    std::string s(n * 2, '0');
    for (std::size_t i = 0; i < n; ++i) {
        s[2 * i] = digits[p[i] >> 4];
        s[2 * i + 1] = digits[p[i] & 15];
    }
    return s;
}

std::string random_hex(std::size_t bytes) {
    unsigned char buf[64];
    if (bytes > sizeof buf) bytes = sizeof buf;
    gnutls_rnd(GNUTLS_RND_NONCE, buf, bytes);
    return hex(buf, bytes);
}

} // namespace

DialbackKeys::DialbackKeys(std::string_view secret) {
    unsigned char digest[32];
    gnutls_hash_fast(GNUTLS_DIG_SHA256, secret.data(), secret.size(), digest);
    hashed_secret_ = hex(digest, sizeof digest);
}

DialbackKeys DialbackKeys::random() {
    unsigned char buf[32];
    gnutls_rnd(GNUTLS_RND_KEY, buf, sizeof buf);
    return DialbackKeys(std::string_view(reinterpret_cast<const char*>(buf), sizeof buf));
}

std::string DialbackKeys::generate(std::string_view receiving, std::string_view originating,
                                   std::string_view stream_id) const {
    std::string msg;
    msg.reserve(receiving.size() + originating.size() + stream_id.size() + 2);
    msg.append(receiving).append(1, ' ').append(originating).append(1, ' ').append(stream_id);
    unsigned char mac[32];
    gnutls_hmac_fast(GNUTLS_MAC_SHA256, hashed_secret_.data(), hashed_secret_.size(), msg.data(),
                     msg.size(), mac);
    return hex(mac, sizeof mac);
}

bool DialbackKeys::verify(std::string_view receiving, std::string_view originating,
                          std::string_view stream_id, std::string_view key) const {
    std::string expected = generate(receiving, originating, stream_id);
    if (key.size() != expected.size()) return false;
    unsigned char diff = 0;
    for (std::size_t i = 0; i < key.size(); ++i)
        diff |= static_cast<unsigned char>(key[i] ^ expected[i]);
    return diff == 0;
}

std::string random_stream_id() { return random_hex(16); }

} // namespace s2smux::xmpp
