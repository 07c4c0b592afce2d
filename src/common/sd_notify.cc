#include "common/sd_notify.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <ctime>

namespace s2smux::sd {

bool enabled() {
    const char* p = std::getenv("NOTIFY_SOCKET");
    return p && *p;
}

bool notify(std::string_view state, std::string* err) {
    const char* path = std::getenv("NOTIFY_SOCKET");
    if (!path || !*path) return true;
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::size_t len = std::strlen(path);
    if ((path[0] != '/' && path[0] != '@') || len >= sizeof(addr.sun_path)) {
        if (err) *err = "NOTIFY_SOCKET is neither an absolute path nor @abstract, or too long";
        return false;
    }
    std::memcpy(addr.sun_path, path, len);
    if (path[0] == '@') addr.sun_path[0] = '\0'; // abstract namespace
    int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        if (err) *err = std::strerror(errno);
        return false;
    }
    auto alen = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + len);
    ssize_t n = ::sendto(fd, state.data(), state.size(), MSG_NOSIGNAL | MSG_DONTWAIT,
                         reinterpret_cast<const sockaddr*>(&addr), alen);
    int e = errno;
    ::close(fd);
    if (n < 0) {
        if (err) *err = std::strerror(e);
        return false;
    }
    return true;
}

std::uint64_t monotonic_usec() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1000000u + static_cast<std::uint64_t>(ts.tv_nsec) / 1000u;
}

} // namespace s2smux::sd
