// s2smuxctl: send one command to s2smuxd's admin socket, print the reply.
//
// Exit status: 0 OK, 1 the daemon answered ERR, 2 usage or connection error.
#include "admin/protocol.h"
#include "s2smux_version.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <map>
#include <optional>
#include <string>
#include <vector>

using namespace s2smux;

namespace {

constexpr int kExitErr = 1;
constexpr int kExitUsage = 2;

void usage(std::FILE* f) {
    std::fputs("usage: s2smuxctl [--socket PATH] [--timeout SECONDS] COMMAND [ARGS...]\n"
               "       s2smuxctl --version\n"
               "\n"
               "  -s, --socket PATH      admin socket of s2smuxd ([gateway] admin_socket);\n"
               "                         default: $S2SMUX_SOCKET\n"
               "  -t, --timeout SECONDS  wait at most this long for the reply (default 30, 0: no limit)\n"
               "  -v, --version          print the version and exit\n"
               "  -h, --help             this help\n"
               "\n"
               "Commands (s2smuxctl help asks the daemon for its list):\n",
               f);
    admin::Dispatcher d;
    for (const auto& l : d.help_lines()) std::fprintf(f, "  %s\n", l.c_str());
}

[[noreturn]] void die(int code, const std::string& msg) {
    std::fprintf(stderr, "s2smuxctl: %s\n", msg.c_str());
    std::exit(code);
}

// Arguments that name files the daemon opens: (command words, argument
// indexes). The daemon's working directory is not ours, so relative paths are
// made absolute here.
const std::map<std::vector<std::string>, std::vector<std::size_t>>& path_args() {
    static const std::map<std::vector<std::string>, std::vector<std::size_t>> m = {
        {{"cert", "add"}, {0, 1}},
        {{"cert", "replace"}, {0, 1}},
        {{"cert", "set"}, {1, 2}},
    };
    return m;
}

std::string absolute_path(const std::string& p) {
    if (p.empty() || p[0] == '/') return p;
    std::vector<char> buf(4096);
    while (!::getcwd(buf.data(), buf.size())) {
        if (errno != ERANGE) die(kExitUsage, std::string("cannot get the working directory: ") + std::strerror(errno));
        buf.resize(buf.size() * 2);
    }
    std::string rel = p;
    while (rel.size() > 2 && rel.compare(0, 2, "./") == 0) rel.erase(0, 2);
    std::string cwd = buf.data();
    if (cwd.empty() || cwd.back() != '/') cwd += '/';
    return cwd + rel;
}

void make_paths_absolute(std::vector<std::string>& words) {
    for (const auto& [cmd, idx] : path_args()) {
        if (words.size() < cmd.size() || !std::equal(cmd.begin(), cmd.end(), words.begin())) continue;
        for (std::size_t i : idx) {
            std::size_t k = cmd.size() + i;
            if (k < words.size()) words[k] = absolute_path(words[k]);
        }
    }
}

int connect_socket(const std::string& path) {
    sockaddr_un sa{};
    if (path.size() >= sizeof sa.sun_path)
        die(kExitUsage, "socket path " + path + " is too long (at most " + std::to_string(sizeof sa.sun_path - 1) +
                            " bytes)");
    sa.sun_family = AF_UNIX;
    std::memcpy(sa.sun_path, path.c_str(), path.size() + 1);
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) die(kExitUsage, std::string("socket: ") + std::strerror(errno));
    if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
        int e = errno;
        std::string msg = "cannot connect to " + path + ": " + std::strerror(e);
        if (e == ENOENT || e == ECONNREFUSED)
            msg += " (is s2smuxd running? is [gateway] admin_socket set?)";
        else if (e == EACCES || e == EPERM)
            msg += " (the socket is mode 0600: run as the user of s2smuxd)";
        die(kExitUsage, msg);
    }
    return fd;
}

} // namespace

int main(int argc, char** argv) {
    std::string socket_path;
    if (const char* env = std::getenv("S2SMUX_SOCKET")) socket_path = env;
    double timeout_s = 30;

    auto parse_timeout = [&](const std::string& v) {
        char* end = nullptr;
        errno = 0;
        double t = std::strtod(v.c_str(), &end);
        if (v.empty() || *end != '\0' || errno != 0 || !std::isfinite(t) || t < 0 || t > 86400 * 365) {
            std::fprintf(stderr, "s2smuxctl: --timeout: '%s' is not a number of seconds\n", v.c_str());
            std::exit(kExitUsage);
        }
        timeout_s = t;
    };

    int i = 1;
    for (; i < argc; ++i) {
        std::string a = argv[i];
        auto value = [&](const char* opt) -> std::string {
            if (i + 1 >= argc) {
                std::fprintf(stderr, "s2smuxctl: %s needs a value\n", opt);
                usage(stderr);
                std::exit(kExitUsage);
            }
            return argv[++i];
        };
        if (a == "--") {
            ++i;
            break;
        } else if (a == "-s" || a == "--socket") {
            socket_path = value("--socket");
        } else if (a.rfind("--socket=", 0) == 0) {
            socket_path = a.substr(9);
        } else if (a == "-t" || a == "--timeout") {
            parse_timeout(value("--timeout"));
        } else if (a.rfind("--timeout=", 0) == 0) {
            parse_timeout(a.substr(10));
        } else if (a == "-v" || a == "-V" || a == "--version") {
            std::printf("s2smuxctl %s\n", S2SMUX_VERSION);
            return 0;
        } else if (a == "-h" || a == "--help") {
            usage(stdout);
            return 0;
        } else if (a.size() > 1 && a[0] == '-') {
            std::fprintf(stderr, "s2smuxctl: unknown option '%s'\n", a.c_str());
            usage(stderr);
            return kExitUsage;
        } else {
            break;
        }
    }
    std::vector<std::string> words(argv + i, argv + argc);
    if (words.empty()) {
        std::fputs("s2smuxctl: no command given\n", stderr);
        usage(stderr);
        return kExitUsage;
    }
    if (socket_path.empty()) die(kExitUsage, "no admin socket given (use --socket PATH or set S2SMUX_SOCKET)");
    make_paths_absolute(words);
    auto line = admin::format_command_line(words);
    if (!line) die(kExitUsage, line.error());

    int fd = connect_socket(socket_path);
    std::string req = *line + "\n";
    for (std::size_t off = 0; off < req.size();) {
        ssize_t n = ::send(fd, req.data() + off, req.size() - off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            die(kExitUsage, "cannot send the command to " + socket_path + ": " + std::strerror(errno));
        }
        off += static_cast<std::size_t>(n);
    }

    using Clock = std::chrono::steady_clock;
    const bool limited = timeout_s > 0;
    const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                             std::chrono::duration<double>(limited ? timeout_s : 0));
    admin::ReplyReader reader;
    std::optional<admin::Reply> reply;
    char buf[16384];
    while (!(reply = reader.next())) {
        int wait_ms = -1;
        if (limited) {
            auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
            if (left <= 0) {
                std::string t = std::to_string(timeout_s);
                t.erase(t.find_last_not_of('0') + 1);
                if (!t.empty() && t.back() == '.') t.pop_back();
                die(kExitUsage, "no reply from " + socket_path + " within " + t + " s");
            }
            wait_ms = static_cast<int>(std::min<long long>(left, 1 << 30));
        }
        pollfd p{fd, POLLIN, 0};
        int pr = ::poll(&p, 1, wait_ms);
        if (pr < 0) {
            if (errno == EINTR) continue;
            die(kExitUsage, std::string("poll: ") + std::strerror(errno));
        }
        if (pr == 0) continue; // the deadline check above reports it
        ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            die(kExitUsage, "cannot read the reply from " + socket_path + ": " + std::strerror(errno));
        }
        if (n == 0) die(kExitUsage, "connection closed by s2smuxd before the reply was complete");
        reader.feed(std::string_view(buf, static_cast<std::size_t>(n)));
        if (reader.failed()) die(kExitUsage, reader.error());
    }
    ::close(fd);

    for (const auto& l : reply->lines) {
        std::fwrite(l.data(), 1, l.size(), stdout);
        std::fputc('\n', stdout);
    }
    if (std::fflush(stdout) != 0) die(kExitUsage, std::string("cannot write the output: ") + std::strerror(errno));
    if (!reply->error.empty()) {
        std::fprintf(stderr, "s2smuxctl: %s\n", reply->error.c_str());
        return kExitErr;
    }
    return 0;
}
