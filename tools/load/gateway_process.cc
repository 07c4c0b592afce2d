#include "tools/load/gateway_process.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <sstream>

namespace s2smux::load {

namespace {

sockaddr_in loopback(std::uint16_t port) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

bool accepts(std::uint16_t port) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    sockaddr_in a = loopback(port);
    bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    ::close(fd);
    return ok;
}

void sleep_ms(long ms) {
    timespec ts{ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, nullptr);
}

} // namespace

std::string toml_str(const std::string& s) {
    std::string o = "\"";
    for (char c : s) {
        if (c == '"' || c == '\\') o += '\\';
        o += c;
    }
    return o + "\"";
}

Result<std::uint16_t> free_loopback_port() {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return make_error(fmt::format("socket: {}", std::strerror(errno)));
    sockaddr_in a = loopback(0);
    socklen_t len = sizeof a;
    if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
        std::string e = std::strerror(errno);
        ::close(fd);
        return make_error(fmt::format("bind 127.0.0.1:0: {}", e));
    }
    ::close(fd);
    return static_cast<std::uint16_t>(ntohs(a.sin_port));
}

Result<std::vector<std::uint16_t>> free_loopback_ports(std::size_t n) {
    std::vector<std::uint16_t> v;
    for (std::size_t i = 0; i < n; ++i) {
        auto r = free_loopback_port();
        if (!r) return make_error(r.error());
        v.push_back(*r);
    }
    return v;
}

namespace {
// utime + stime from a /proc/.../stat file, in seconds (-1: unreadable).
double stat_cpu_s(const std::string& path) {
    std::ifstream sf(path);
    std::string line;
    if (!std::getline(sf, line)) return -1;
    std::size_t rp = line.rfind(')');
    if (rp == std::string::npos || rp + 2 > line.size()) return -1;
    std::istringstream is(line.substr(rp + 2));
    std::string field;
    unsigned long long utime = 0, stime = 0;
    for (int i = 3; is >> field; ++i) {
        if (i == 14) utime = std::stoull(field);
        if (i == 15) {
            stime = std::stoull(field);
            break;
        }
    }
    return static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}
} // namespace

double read_thread_cpu_s(pid_t pid, pid_t tid) {
    return std::max(0.0, stat_cpu_s(fmt::format("/proc/{}/task/{}/stat", pid, tid)));
}

Result<ProcStats> read_proc_stats(pid_t pid) {
    ProcStats st;
    std::ifstream sf(fmt::format("/proc/{}/stat", pid));
    std::string line;
    if (!std::getline(sf, line)) return make_error(fmt::format("cannot read /proc/{}/stat", pid));
    // The command name may contain spaces: fields are counted after its ')'.
    std::size_t rp = line.rfind(')');
    if (rp == std::string::npos) return make_error("malformed /proc/PID/stat");
    std::istringstream is(line.substr(rp + 2));
    std::string field;
    unsigned long long utime = 0, stime = 0;
    for (int i = 3; is >> field; ++i) { // field 3 is the state
        if (i == 14) utime = std::stoull(field);
        if (i == 15) {
            stime = std::stoull(field);
            break;
        }
    }
    st.cpu_s = static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
    std::ifstream stf(fmt::format("/proc/{}/status", pid));
    while (std::getline(stf, line)) {
        if (line.rfind("VmRSS:", 0) == 0) st.rss_kb = std::strtoull(line.c_str() + 6, nullptr, 10);
        if (line.rfind("VmHWM:", 0) == 0) st.hwm_kb = std::strtoull(line.c_str() + 6, nullptr, 10);
    }
    return st;
}

double machine_busy_cpu_s() {
    std::ifstream f("/proc/stat");
    std::string cpu;
    unsigned long long v[8] = {};
    if (!(f >> cpu) || cpu != "cpu") return 0;
    for (auto& x : v) f >> x; // user nice system idle iowait irq softirq steal
    unsigned long long busy = v[0] + v[1] + v[2] + v[5] + v[6];
    return static_cast<double>(busy) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

GatewayProcess::~GatewayProcess() {
    if (running()) {
        kill_now();
        int st;
        ::waitpid(pid_, &st, 0);
    }
}

Result<void> GatewayProcess::start(const GatewayParams& p) {
    auto outer = free_loopback_port();
    auto inner = free_loopback_port();
    auto upstream = free_loopback_port(); // nobody listens there: bounces toward a.test fail fast
    if (!outer) return make_error(outer.error());
    if (!inner) return make_error(inner.error());
    if (!upstream) return make_error(upstream.error());
    inner_port_ = *inner;

    std::string conf = "# generated by s2smux-load\n";
    conf += fmt::format("[gateway]\ndomains = [\"a.test\"]\n\n");
    conf += fmt::format("[listen]\nouter = \"127.0.0.1:{}\"\ninner = \"127.0.0.1:{}\"\n\n", *outer, *inner);
    conf += fmt::format("[upstream]\naddress = \"127.0.0.1:{}\"\n\n", *upstream);
    conf += fmt::format("[tls]\nca_file = {}\npolicy = \"required\"\n\n", toml_str(p.certs_dir + "/ca.pem"));
    conf += fmt::format("[[cert]]\ncert = {}\nkey = {}\n\n", toml_str(p.certs_dir + "/a.test.pem"),
                        toml_str(p.certs_dir + "/a.test.key"));
    conf += fmt::format("[[route]]\ndomain = \"b.test\"\naddress = \"127.0.0.1:{}\"\n\n", p.sink_port);
    conf += "[log]\nlevel = \"warn\"\n";
    return start_config(p.binary, p.work_dir, "s2smuxd", conf, inner_port_);
}

Result<void> GatewayProcess::start_config(const std::string& binary, const std::string& work_dir,
                                          const std::string& name, const std::string& config,
                                          std::uint16_t ready_port, int timeout_ms) {
    const std::string conf_path = work_dir + "/" + name + ".toml";
    {
        std::ofstream f(conf_path);
        f << config;
        if (!f) return make_error(fmt::format("cannot write {}", conf_path));
    }
    return start_program({binary, "--config", conf_path}, work_dir, name, ready_port, timeout_ms);
}

Result<void> GatewayProcess::start_program(const std::vector<std::string>& argv, const std::string& work_dir,
                                           const std::string& name, std::uint16_t ready_port, int timeout_ms) {
    name_ = name;
    log_path_ = work_dir + "/" + name + ".log";
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);

    std::fflush(nullptr);
    pid_t pid = ::fork();
    if (pid < 0) return make_error(fmt::format("fork: {}", std::strerror(errno)));
    if (pid == 0) {
        // Never outlive the tool, even if it crashes.
        ::prctl(PR_SET_PDEATHSIG, SIGKILL);
        int fd = ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            ::dup2(fd, 1);
            ::dup2(fd, 2);
            ::close(fd);
        }
        ::execv(args[0], args.data());
        std::fprintf(stderr, "exec %s: %s\n", args[0], std::strerror(errno));
        ::_exit(127);
    }
    pid_ = pid;
    exited_ = false;
    for (int waited = 0; waited < timeout_ms; waited += 10) {
        if (poll_exit()) return make_error(fmt::format("{} exited during start-up ({})", name_, exit_text()));
        if (accepts(ready_port)) return {};
        sleep_ms(10);
    }
    return make_error(fmt::format("{} did not accept connections on 127.0.0.1:{} within {} s", name_, ready_port,
                                  timeout_ms / 1000));
}

bool GatewayProcess::poll_exit() {
    if (pid_ <= 0) return false;
    if (exited_) return true;
    int st = 0;
    pid_t r = ::waitpid(pid_, &st, WNOHANG);
    if (r == pid_) {
        exited_ = true;
        status_ = st;
    }
    return exited_;
}

std::string GatewayProcess::exit_text() const {
    if (!exited_) return "running";
    if (WIFEXITED(status_)) return fmt::format("exit status {}", WEXITSTATUS(status_));
    if (WIFSIGNALED(status_)) return fmt::format("killed by signal {}", WTERMSIG(status_));
    return "stopped";
}

void GatewayProcess::terminate() {
    if (running()) ::kill(pid_, stop_signal_);
}

void GatewayProcess::kill_now() {
    if (running()) ::kill(pid_, SIGKILL);
}

bool reap_gateways(GatewayProcess& a, GatewayProcess& b, double waited_s, double timeout_s, std::string& error) {
    auto exited = [](GatewayProcess& g) { return g.pid() <= 0 || g.poll_exit(); };
    if (!exited(a) || !exited(b)) {
        if (waited_s < timeout_s) return false;
        for (GatewayProcess* g : {&a, &b}) {
            if (exited(*g)) continue;
            g->kill_now();
            if (error.empty()) error = fmt::format("{} did not exit within {:.0f} s of SIGTERM", g->name(), timeout_s);
            while (!g->poll_exit()) sleep_ms(10);
        }
    }
    if (error.empty())
        for (GatewayProcess* g : {&a, &b})
            if (!g->exited_cleanly())
                error = fmt::format("{} did not shut down cleanly on SIGTERM: {}", g->name(), g->exit_text());
    return true;
}

std::string wait_admin_sockets(const std::vector<std::string>& paths, int timeout_ms) {
    for (const auto& path : paths) {
        sockaddr_un sa{};
        sa.sun_family = AF_UNIX;
        if (path.size() >= sizeof sa.sun_path) return fmt::format("admin socket path too long: {}", path);
        std::memcpy(sa.sun_path, path.c_str(), path.size() + 1);
        for (int waited = 0;; waited += 10) {
            int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
            if (fd < 0) return fmt::format("socket: {}", std::strerror(errno));
            const bool up = ::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0;
            ::close(fd);
            if (up) break;
            if (waited >= timeout_ms)
                return fmt::format("admin socket {} not accepting connections within {} ms", path, timeout_ms);
            sleep_ms(10);
        }
    }
    return {};
}

std::string GatewayProcess::log_tail(std::size_t bytes) const {
    std::ifstream f(log_path_, std::ios::binary);
    std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    if (s.size() > bytes) s.erase(0, s.size() - bytes);
    return s;
}

} // namespace s2smux::load
