// sd_notify without libsystemd: datagrams to $NOTIFY_SOCKET (path or
// @abstract), a no-op without it.
#define BOOST_TEST_MODULE sd_notify
#include <boost/test/unit_test.hpp>

#include "common/sd_notify.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>

using namespace s2smux;

namespace {

// A bound datagram socket; `name` starting with '@' is abstract.
struct Receiver {
    int fd = -1;
    std::string name;
    explicit Receiver(std::string n) : name(std::move(n)) {
        fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        sockaddr_un a{};
        a.sun_family = AF_UNIX;
        std::memcpy(a.sun_path, name.data(), name.size());
        if (name[0] == '@') a.sun_path[0] = '\0';
        else ::unlink(name.c_str());
        BOOST_REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a),
                             static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name.size())) == 0);
        timeval tv{2, 0};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    }
    ~Receiver() {
        ::close(fd);
        if (name[0] == '/') ::unlink(name.c_str());
    }
    std::string recv() {
        char buf[512];
        ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string();
    }
};

std::string unique(const char* prefix) {
    return std::string(prefix) + std::to_string(::getpid()) + "-" + std::to_string(std::rand());
}

} // namespace

BOOST_AUTO_TEST_CASE(no_socket_is_a_no_op) {
    ::unsetenv("NOTIFY_SOCKET");
    BOOST_TEST(!sd::enabled());
    BOOST_TEST(sd::notify("READY=1"));
}

BOOST_AUTO_TEST_CASE(path_socket_receives_the_state) {
    Receiver r("/tmp/" + unique("s2smux-sd-"));
    ::setenv("NOTIFY_SOCKET", r.name.c_str(), 1);
    BOOST_TEST(sd::enabled());
    BOOST_TEST(sd::notify("READY=1\nSTATUS=serving"));
    BOOST_TEST(r.recv() == "READY=1\nSTATUS=serving");
    ::unsetenv("NOTIFY_SOCKET");
}

BOOST_AUTO_TEST_CASE(abstract_socket_receives_the_state) {
    Receiver r("@" + unique("s2smux-sd-"));
    ::setenv("NOTIFY_SOCKET", r.name.c_str(), 1);
    BOOST_TEST(sd::notify("RELOADING=1"));
    BOOST_TEST(r.recv() == "RELOADING=1");
    ::unsetenv("NOTIFY_SOCKET");
}

BOOST_AUTO_TEST_CASE(bad_socket_reports_an_error) {
    ::setenv("NOTIFY_SOCKET", "relative/path", 1);
    std::string err;
    BOOST_TEST(!sd::notify("READY=1", &err));
    BOOST_TEST(!err.empty());
    ::setenv("NOTIFY_SOCKET", "/nonexistent-dir/s2smux-sd.sock", 1);
    err.clear();
    BOOST_TEST(!sd::notify("READY=1", &err));
    BOOST_TEST(!err.empty());
    ::unsetenv("NOTIFY_SOCKET");
}

BOOST_AUTO_TEST_CASE(monotonic_usec_is_clock_monotonic) {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    auto a = static_cast<std::uint64_t>(ts.tv_sec) * 1000000u + static_cast<std::uint64_t>(ts.tv_nsec) / 1000u;
    auto b = sd::monotonic_usec();
    BOOST_TEST(b >= a);
    BOOST_TEST(b - a < 1000000u);
}
