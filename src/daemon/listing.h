// Cell formatting shared by the admin listings (gateway_*.cc).
#pragma once

#include <string>
#include <vector>

namespace s2smux {

inline std::string join(const std::vector<std::string>& v, const char* sep = ",") {
    std::string s;
    for (const auto& x : v) {
        if (!s.empty()) s += sep;
        s += x;
    }
    return s.empty() ? "-" : s;
}

// Cells must not contain spaces (listings are split on whitespace).
inline std::string cell(std::string s) {
    for (char& c : s)
        if (c == ' ' || c == '\t') c = '_';
    return s.empty() ? "-" : s;
}

} // namespace s2smux
