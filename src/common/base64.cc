#include "common/base64.h"

#include <array>
#include <cstdint>

namespace s2smux {

namespace {
constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

constexpr std::array<std::int8_t, 256> make_table() {
    std::array<std::int8_t, 256> t{};
    for (auto& v : t) v = -1;
    for (int i = 0; i < 64; ++i) t[static_cast<unsigned char>(kAlphabet[i])] = static_cast<std::int8_t>(i);
    return t;
}
constexpr auto kTable = make_table();
} // namespace

void base64_encode(std::string& out, std::string_view in) {
    out.reserve(out.size() + (in.size() + 2) / 3 * 4);
    std::size_t i = 0;
    for (; i + 2 < in.size(); i += 3) {
        std::uint32_t v = (std::uint32_t(std::uint8_t(in[i])) << 16) |
                          (std::uint32_t(std::uint8_t(in[i + 1])) << 8) | std::uint8_t(in[i + 2]);
        out += kAlphabet[(v >> 18) & 63];
        out += kAlphabet[(v >> 12) & 63];
        out += kAlphabet[(v >> 6) & 63];
        out += kAlphabet[v & 63];
    }
    if (i + 1 == in.size()) {
        std::uint32_t v = std::uint32_t(std::uint8_t(in[i])) << 16;
        out += kAlphabet[(v >> 18) & 63];
        out += kAlphabet[(v >> 12) & 63];
        out += "==";
    } else if (i + 2 == in.size()) {
        std::uint32_t v = (std::uint32_t(std::uint8_t(in[i])) << 16) | (std::uint32_t(std::uint8_t(in[i + 1])) << 8);
        out += kAlphabet[(v >> 18) & 63];
        out += kAlphabet[(v >> 12) & 63];
        out += kAlphabet[(v >> 6) & 63];
        out += '=';
    }
}

bool base64_decode(std::string& out, std::string_view in) {
    std::uint32_t acc = 0;
    int bits = 0;
    int pad = 0;
    std::size_t n = 0; // significant characters including padding
    for (unsigned char c : in) {
        if (c == ' ' || c == '\n' || c == '\r' || c == '\t') continue;
        ++n;
        if (c == '=') {
            if (++pad > 2) return false;
            continue;
        }
        if (pad) return false; // data after padding
        int v = kTable[c];
        if (v < 0) return false;
        acc = (acc << 6) | static_cast<std::uint32_t>(v);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out += static_cast<char>((acc >> bits) & 0xff);
        }
    }
    if (n % 4 != 0) return false;
    // Leftover bits must be zero (canonical encoding).
    return (acc & ((1u << bits) - 1)) == 0;
}

} // namespace s2smux
