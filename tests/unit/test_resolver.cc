#define BOOST_TEST_MODULE test_resolver
#include <boost/test/unit_test.hpp>

#include "route/resolver.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <optional>
#include <random>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

using namespace s2smux;
using namespace s2smux::route;
namespace fs = std::filesystem;

namespace {

// ---------------------------------------------------------------------------
// Helpers for the pure tests

SrvRecord srv(std::string target, std::uint16_t prio, std::uint16_t weight, bool tls = false, std::uint16_t port = 5269) {
    SrvRecord r;
    r.target = std::move(target);
    r.port = port;
    r.priority = prio;
    r.weight = weight;
    r.direct_tls = tls;
    return r;
}

std::vector<std::string> targets_of(const std::vector<SrvRecord>& v) {
    std::vector<std::string> out;
    for (const auto& r : v) out.push_back(r.target);
    return out;
}

// rnd() returning the given values in turn (then the last one forever).
std::function<double()> sequence(std::vector<double> values) {
    auto state = std::make_shared<std::pair<std::vector<double>, std::size_t>>(std::move(values), 0);
    return [state] {
        auto& [v, i] = *state;
        double x = v[std::min(i, v.size() - 1)];
        ++i;
        return x;
    };
}

RouteConfig mkroute(std::string domain, std::string host, std::uint16_t port, bool direct_tls = false,
                  std::optional<xmpp::TlsPolicy> policy = std::nullopt) {
    RouteConfig r;
    r.domain = std::move(domain);
    r.address.host = std::move(host);
    r.address.port = port;
    r.direct_tls = direct_tls;
    r.policy = policy;
    return r;
}

} // namespace

// ---------------------------------------------------------------------------
// order_srv

BOOST_AUTO_TEST_CASE(order_srv_priority_ascending) {
    auto out = order_srv({srv("c", 30, 0), srv("a", 10, 0), srv("b", 20, 0), srv("a2", 10, 0)}, [] { return 0.0; });
    BOOST_TEST(targets_of(out) == (std::vector<std::string>{"a", "a2", "b", "c"}), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(order_srv_weighted_selection) {
    // One priority: z (weight 0), a (10), b (30). Weight-0 first, running sums
    // 0, 10, 40; pick = floor(rnd * (sum + 1)).
    std::vector<SrvRecord> recs{srv("a", 10, 10), srv("b", 10, 30), srv("z", 10, 0)};

    // rnd 0.5: pick 20 of 0..40 -> b; then z,a sums 0,10: pick 5 -> a; then z.
    BOOST_TEST(targets_of(order_srv(recs, sequence({0.5}))) == (std::vector<std::string>{"b", "a", "z"}),
               boost::test_tools::per_element());
    // rnd 0: pick 0 -> the weight-0 record first, then a (running 10 >= 0), then b.
    BOOST_TEST(targets_of(order_srv(recs, sequence({0.0}))) == (std::vector<std::string>{"z", "a", "b"}),
               boost::test_tools::per_element());
    // 0.2 -> pick 8 -> a (10 >= 8); then z,b sums 0,30, 0.99 -> pick 30 -> b; then z.
    BOOST_TEST(targets_of(order_srv(recs, sequence({0.2, 0.99}))) == (std::vector<std::string>{"a", "b", "z"}),
               boost::test_tools::per_element());
    // Out-of-range rnd values are clamped rather than trusted.
    BOOST_TEST(order_srv(recs, sequence({1.5})).size() == 3u);
    BOOST_TEST(order_srv(recs, sequence({-1.0})).front().target == "z");
}

BOOST_AUTO_TEST_CASE(order_srv_weights_are_honoured_statistically) {
    std::mt19937 gen(42);
    std::uniform_real_distribution<double> dist(0.0, 1.0);
    auto rnd = [&] { return dist(gen); };
    int heavy_first = 0;
    const int runs = 4000;
    for (int i = 0; i < runs; ++i) {
        auto out = order_srv({srv("light", 1, 10), srv("heavy", 1, 30)}, rnd);
        if (out.front().target == "heavy") ++heavy_first;
    }
    // Expected 30/41 (~73%) with RFC 2782's 0..sum pick.
    BOOST_TEST(heavy_first > runs * 65 / 100);
    BOOST_TEST(heavy_first < runs * 81 / 100);
}

BOOST_AUTO_TEST_CASE(order_srv_direct_tls_first_at_equal_priority) {
    auto out = order_srv({srv("starttls10", 10, 100), srv("tls10", 10, 0, true), srv("starttls5", 5, 0),
                          srv("tls20", 20, 0, true), srv("tls10b", 10, 50, true)},
                         [] { return 0.0; });
    BOOST_TEST(targets_of(out) == (std::vector<std::string>{"starttls5", "tls10", "tls10b", "starttls10", "tls20"}),
               boost::test_tools::per_element());
    BOOST_TEST(out[1].direct_tls);
    BOOST_TEST(!out[3].direct_tls);
}

BOOST_AUTO_TEST_CASE(order_srv_empty) { BOOST_TEST(order_srv({}, [] { return 0.5; }).empty()); }

// ---------------------------------------------------------------------------
// find_route

BOOST_AUTO_TEST_CASE(find_route_exact_beats_wildcard) {
    std::vector<RouteConfig> routes{mkroute("*.b.test", "10.0.0.1", 1), mkroute("x.b.test", "10.0.0.2", 2)};
    const RouteConfig* r = find_route(routes, "x.b.test");
    BOOST_REQUIRE(r);
    BOOST_TEST(r->domain == "x.b.test");
    r = find_route(routes, "y.b.test");
    BOOST_REQUIRE(r);
    BOOST_TEST(r->domain == "*.b.test");
    r = find_route(routes, "X.B.Test.");
    BOOST_REQUIRE(r);
    BOOST_TEST(r->domain == "x.b.test");
}

BOOST_AUTO_TEST_CASE(find_route_wildcard_does_not_match_parent) {
    std::vector<RouteConfig> routes{mkroute("*.b.test", "10.0.0.1", 1)};
    BOOST_TEST(find_route(routes, "b.test") == nullptr);
    BOOST_TEST(find_route(routes, "xb.test") == nullptr);
    BOOST_TEST(find_route(routes, "c.test") == nullptr);
    BOOST_TEST(find_route(routes, "") == nullptr);
    BOOST_TEST(find_route(routes, "deep.x.b.test") != nullptr);
}

BOOST_AUTO_TEST_CASE(find_route_longest_wildcard_wins) {
    std::vector<RouteConfig> routes{mkroute("*.test", "10.0.0.1", 1), mkroute("*.c.b.test", "10.0.0.3", 3),
                                    mkroute("*.b.test", "10.0.0.2", 2)};
    BOOST_TEST(find_route(routes, "x.b.test")->domain == "*.b.test");
    BOOST_TEST(find_route(routes, "x.c.b.test")->domain == "*.c.b.test");
    BOOST_TEST(find_route(routes, "c.b.test")->domain == "*.b.test");
    BOOST_TEST(find_route(routes, "y.test")->domain == "*.test");
    BOOST_TEST(find_route(routes, "test") == nullptr);
}

// ---------------------------------------------------------------------------
// Integration: a real dnsmasq and a real uv loop

namespace {

// S2SMUX_DNSMASQ overrides the binary (e.g. another install location).
std::string dnsmasq_path() {
    const char* e = std::getenv("S2SMUX_DNSMASQ");
    return e && *e ? e : "/usr/sbin/dnsmasq";
}

// Finds a port free for both UDP and TCP on 127.0.0.1.
std::uint16_t free_port() {
    for (int attempt = 0; attempt < 50; ++attempt) {
        int t = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        a.sin_port = 0;
        if (::bind(t, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
            ::close(t);
            continue;
        }
        socklen_t len = sizeof a;
        ::getsockname(t, reinterpret_cast<sockaddr*>(&a), &len);
        int u = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        bool ok = ::bind(u, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
        ::close(u);
        ::close(t);
        if (ok) return ntohs(a.sin_port);
    }
    BOOST_FAIL("no free port on 127.0.0.1");
    return 0;
}

// A UDP socket that never answers: queries sent to it time out.
struct SilentServer {
    int fd = -1;
    std::uint16_t port = 0;
    SilentServer() {
        fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        BOOST_REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
        socklen_t len = sizeof a;
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
        port = ntohs(a.sin_port);
    }
    ~SilentServer() { ::close(fd); }
    Endpoint endpoint() const { return Endpoint{"127.0.0.1", port}; }
};

// Sends one DNS query over UDP and waits up to `ms` for any answer.
bool dns_answers(std::uint16_t port, int ms) {
    unsigned char q[] = {0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0,
                         5, 'r', 'e', 'a', 'd', 'y', 4, 't', 'e', 's', 't', 0, 0, 1, 0, 1};
    int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(port);
    bool ok = false;
    if (::sendto(fd, q, sizeof q, 0, reinterpret_cast<sockaddr*>(&a), sizeof a) == static_cast<ssize_t>(sizeof q)) {
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, ms) == 1 && (p.revents & POLLIN)) {
            unsigned char buf[512];
            ok = ::recv(fd, buf, sizeof buf, 0) >= 12 && buf[0] == 0x12 && buf[1] == 0x34;
        }
    }
    ::close(fd);
    return ok;
}

std::string read_file(const fs::path& p) {
    std::ifstream in(p);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

// dnsmasq serving the test zone on 127.0.0.1:port, killed at exit.
class Dnsmasq {
public:
    static Dnsmasq& get() {
        static std::unique_ptr<Dnsmasq> instance;
        if (!instance) instance.reset(new Dnsmasq());
        BOOST_REQUIRE_MESSAGE(instance->pid_ > 0, instance->error_);
        return *instance;
    }
    ~Dnsmasq() {
        if (pid_ > 0) {
            ::kill(pid_, SIGTERM);
            int st;
            ::waitpid(pid_, &st, 0);
        }
        std::error_code ec;
        if (!dir_.empty()) fs::remove_all(dir_, ec);
    }
    std::uint16_t port() const { return port_; }
    Endpoint endpoint() const { return Endpoint{"127.0.0.1", port_}; }

private:
    Dnsmasq() {
        const std::string bin = dnsmasq_path();
        if (::access(bin.c_str(), X_OK) != 0) {
            error_ = bin + " not found (" + std::strerror(errno) +
                     "): the resolver integration tests need dnsmasq; install the Debian package dnsmasq-base "
                     "(or point S2SMUX_DNSMASQ at the binary)";
            return;
        }
        std::string tmpl = (fs::temp_directory_path() / "s2smux-test-dns-XXXXXX").string();
        if (!::mkdtemp(tmpl.data())) {
            error_ = "mkdtemp failed";
            return;
        }
        dir_ = tmpl;
        fs::path log = dir_ / "dnsmasq.log";
        port_ = free_port();

        std::vector<std::string> args = {
            bin, "--no-daemon", "--port=" + std::to_string(port_), "--listen-address=127.0.0.1",
            "--bind-interfaces", "--no-resolv", "--no-hosts", "--conf-file=/dev/null", "--local=/#/",
            "--pid-file=", "--log-facility=-",
            // b.test: both services, two priorities each; equal priority 20 for one of each.
            "--srv-host=_xmpps-server._tcp.b.test,tls.b.test,5270,5,0",
            "--srv-host=_xmpp-server._tcp.b.test,xmpp1.b.test,5269,10,0",
            "--srv-host=_xmpp-server._tcp.b.test,xmpp2.b.test,5279,20,0",
            "--srv-host=_xmpps-server._tcp.b.test,tls2.b.test,5271,20,0",
            "--host-record=tls.b.test,127.0.0.10",
            "--host-record=xmpp1.b.test,127.0.0.11,fd00::11",
            "--host-record=xmpp2.b.test,127.0.0.12",
            "--host-record=tls2.b.test,127.0.0.13",
            // u.test: both services explicitly unavailable.
            "--srv-host=_xmpp-server._tcp.u.test",
            "--srv-host=_xmpps-server._tcp.u.test",
            // v.test: direct TLS unavailable, STARTTLS available.
            "--srv-host=_xmpps-server._tcp.v.test",
            "--srv-host=_xmpp-server._tcp.v.test,xmpp.v.test,5269,0,0",
            "--host-record=xmpp.v.test,127.0.0.50",
            // y.test: direct TLS unavailable, no STARTTLS SRV: A fallback.
            "--srv-host=_xmpps-server._tcp.y.test",
            "--host-record=y.test,127.0.0.70",
            // z.test: STARTTLS unavailable, no direct TLS SRV: no fallback.
            "--srv-host=_xmpp-server._tcp.z.test",
            "--host-record=z.test,127.0.0.71",
            // f.test: no SRV, A and AAAA.
            "--host-record=f.test,127.0.0.20,fd00::20",
            // m.test: one SRV target without addresses.
            "--srv-host=_xmpp-server._tcp.m.test,missing.m.test,5269,1,0",
            "--srv-host=_xmpp-server._tcp.m.test,ok.m.test,5270,2,0",
            "--host-record=ok.m.test,127.0.0.60",
            // n.test: only SRV targets without addresses.
            "--srv-host=_xmpp-server._tcp.n.test,missing.n.test,5269,1,0",
            // lit.test: SRV target that is an IP literal (answered inside c-ares).
            "--srv-host=_xmpp-server._tcp.lit.test,127.0.0.40,5269,0,0",
            // static route host.
            "--host-record=gw.w.test,127.0.0.31",
        };
        if (::geteuid() == 0) args.push_back("--user=root");

        pid_t pid = ::fork();
        if (pid < 0) {
            error_ = std::string("fork: ") + std::strerror(errno);
            return;
        }
        if (pid == 0) {
            ::prctl(PR_SET_PDEATHSIG, SIGKILL);
            int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
            if (fd >= 0) {
                ::dup2(fd, 1);
                ::dup2(fd, 2);
            }
            std::vector<char*> argv;
            for (auto& a : args) argv.push_back(a.data());
            argv.push_back(nullptr);
            ::execv(bin.c_str(), argv.data());
            ::_exit(127);
        }
        pid_ = pid;

        auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
        while (std::chrono::steady_clock::now() < deadline) {
            int st;
            if (::waitpid(pid_, &st, WNOHANG) == pid_) {
                pid_ = -1;
                error_ = "dnsmasq exited at start-up: " + read_file(log);
                return;
            }
            if (dns_answers(port_, 100)) return;
        }
        error_ = "dnsmasq did not answer on 127.0.0.1:" + std::to_string(port_) + ": " + read_file(log);
        ::kill(pid_, SIGKILL);
        int st;
        ::waitpid(pid_, &st, 0);
        pid_ = -1;
    }

    pid_t pid_ = -1;
    std::uint16_t port_ = 0;
    fs::path dir_;
    std::string error_;
};

// A uv loop per test; at the end every handle must be closed.
struct Loop {
    uv_loop_t loop;
    Loop() { BOOST_REQUIRE(uv_loop_init(&loop) == 0); }
    ~Loop() {
        // Only close callbacks should be left.
        for (int i = 0; i < 100 && uv_loop_alive(&loop); ++i) uv_run(&loop, UV_RUN_NOWAIT);
        int rc = uv_loop_close(&loop);
        BOOST_TEST(rc == 0, "uv_loop_close: " << (rc ? uv_strerror(rc) : "ok"));
        if (rc != 0) {
            uv_walk(&loop, [](uv_handle_t* h, void*) { BOOST_TEST_MESSAGE("open handle: " << uv_handle_type_name(h->type)); }, nullptr);
        }
    }
    // Runs the loop until pred() or the deadline.
    template <class Pred>
    bool run_until(Pred pred, int ms = 10000) {
        auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
        while (!pred()) {
            if (std::chrono::steady_clock::now() > deadline) return false;
            uv_run(&loop, UV_RUN_NOWAIT);
            if (!pred()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        return true;
    }
};

// Resolves and waits, checking the callback never runs inside resolve().
Result<Resolution> resolve_wait(Loop& l, Resolver& r, const std::string& domain) {
    std::optional<Result<Resolution>> out;
    r.resolve(domain, [&](Result<Resolution> res) { out.emplace(std::move(res)); });
    BOOST_TEST(!out.has_value(), "callback ran synchronously inside resolve(" << domain << ")");
    BOOST_REQUIRE_MESSAGE(l.run_until([&] { return out.has_value(); }), "no answer for " << domain);
    return std::move(*out);
}

ResolverOptions fast_options() {
    ResolverOptions o;
    o.timeout_ms = 2000;
    o.tries = 2;
    o.rnd = [] { return 0.0; };
    return o;
}

#define REQUIRE_OK(expr)                                                                  \
    do {                                                                                  \
        const auto& require_ok_ = (expr);                                                 \
        BOOST_REQUIRE_MESSAGE(require_ok_.ok(), (require_ok_.ok() ? std::string() : require_ok_.error())); \
    } while (0)

struct Shut {
    Resolver& r;
    ~Shut() { r.shutdown(); }
};

std::string describe(const Resolution& res) {
    std::string s;
    for (const auto& t : res.targets)
        s += t.address + "/" + std::to_string(t.port) + (t.direct_tls ? "/tls" : "/starttls") + " ";
    return s + "\n" + res.explain;
}

} // namespace

BOOST_AUTO_TEST_CASE(dns_srv_two_priorities_both_services) {
    auto& dns = Dnsmasq::get();
    Loop l;
    Resolver r(&l.loop, {}, dns.endpoint(), fast_options());
    Shut s{r};
    REQUIRE_OK(r.init());
    auto res = resolve_wait(l, r, "B.test");
    REQUIRE_OK(res);
    BOOST_TEST_MESSAGE(describe(*res));
    const auto& t = res->targets;
    BOOST_REQUIRE_EQUAL(t.size(), 5u);
    // priority 5 (TLS), 10 (STARTTLS, two addresses), 20 TLS, 20 STARTTLS.
    BOOST_TEST(t[0].address == "127.0.0.10");
    BOOST_TEST(t[0].port == 5270);
    BOOST_TEST(t[0].direct_tls);
    BOOST_TEST(t[0].host == "tls.b.test");
    BOOST_TEST(t[0].source == "SRV _xmpps-server._tcp.b.test");
    std::vector<std::string> x1{t[1].address, t[2].address};
    std::sort(x1.begin(), x1.end());
    BOOST_TEST(x1 == (std::vector<std::string>{"127.0.0.11", "fd00::11"}), boost::test_tools::per_element());
    for (int i : {1, 2}) {
        BOOST_TEST(t[i].port == 5269);
        BOOST_TEST(!t[i].direct_tls);
        BOOST_TEST(t[i].host == "xmpp1.b.test");
        BOOST_TEST(t[i].source == "SRV _xmpp-server._tcp.b.test");
        BOOST_TEST(!t[i].policy.has_value());
    }
    BOOST_TEST(t[3].address == "127.0.0.13");
    BOOST_TEST(t[3].port == 5271);
    BOOST_TEST(t[3].direct_tls);
    BOOST_TEST(t[4].address == "127.0.0.12");
    BOOST_TEST(t[4].port == 5279);
    BOOST_TEST(!t[4].direct_tls);
    BOOST_TEST(res->explain.find("SRV _xmpps-server._tcp.b.test:") != std::string::npos);
    BOOST_TEST(res->explain.find("SRV order:") != std::string::npos);
    BOOST_TEST(res->explain.find("A/AAAA xmpp2.b.test: 127.0.0.12") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(dns_srv_dot_means_unavailable) {
    auto& dns = Dnsmasq::get();
    Loop l;
    Resolver r(&l.loop, {}, dns.endpoint(), fast_options());
    Shut s{r};
    REQUIRE_OK(r.init());
    auto res = resolve_wait(l, r, "u.test");
    BOOST_REQUIRE(!res.ok());
    BOOST_TEST(res.error() == "u.test: service explicitly unavailable (SRV '.')");

    // "." for direct TLS only: the STARTTLS service is still used.
    auto v = resolve_wait(l, r, "v.test");
    REQUIRE_OK(v);
    BOOST_REQUIRE_EQUAL(v->targets.size(), 1u);
    BOOST_TEST(v->targets[0].address == "127.0.0.50");
    BOOST_TEST(!v->targets[0].direct_tls);
    BOOST_TEST(v->explain.find("service explicitly unavailable") != std::string::npos);

    // "." for STARTTLS, nothing for direct TLS: unavailable, no A fallback.
    auto z = resolve_wait(l, r, "z.test");
    BOOST_REQUIRE(!z.ok());
    BOOST_TEST(z.error() == "z.test: service explicitly unavailable (SRV '.')");

    // "." for direct TLS only, no STARTTLS SRV: the A/AAAA fallback still applies.
    auto y = resolve_wait(l, r, "y.test");
    REQUIRE_OK(y);
    BOOST_REQUIRE_EQUAL(y->targets.size(), 1u);
    BOOST_TEST(y->targets[0].address == "127.0.0.70");
    BOOST_TEST(y->targets[0].port == 5269);
    BOOST_TEST(!y->targets[0].direct_tls);
}

BOOST_AUTO_TEST_CASE(dns_no_srv_falls_back_to_a_aaaa_on_5269) {
    auto& dns = Dnsmasq::get();
    Loop l;
    Resolver r(&l.loop, {}, dns.endpoint(), fast_options());
    Shut s{r};
    REQUIRE_OK(r.init());
    auto res = resolve_wait(l, r, "f.test");
    REQUIRE_OK(res);
    BOOST_TEST_MESSAGE(describe(*res));
    BOOST_REQUIRE_EQUAL(res->targets.size(), 2u);
    std::vector<std::string> addrs;
    for (const auto& t : res->targets) {
        addrs.push_back(t.address);
        BOOST_TEST(t.port == 5269);
        BOOST_TEST(!t.direct_tls);
        BOOST_TEST(t.host == "f.test");
        BOOST_TEST(t.source == "A/AAAA f.test");
    }
    std::sort(addrs.begin(), addrs.end());
    BOOST_TEST(addrs == (std::vector<std::string>{"127.0.0.20", "fd00::20"}), boost::test_tools::per_element());
    BOOST_TEST(res->explain.find("no SRV records: A/AAAA f.test port 5269") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(dns_nxdomain) {
    auto& dns = Dnsmasq::get();
    Loop l;
    Resolver r(&l.loop, {}, dns.endpoint(), fast_options());
    Shut s{r};
    REQUIRE_OK(r.init());
    auto res = resolve_wait(l, r, "nx.test");
    BOOST_REQUIRE(!res.ok());
    BOOST_TEST(res.error() == "nx.test: no SRV, A or AAAA records (NXDOMAIN)");
}

BOOST_AUTO_TEST_CASE(dns_srv_targets_without_addresses) {
    auto& dns = Dnsmasq::get();
    Loop l;
    Resolver r(&l.loop, {}, dns.endpoint(), fast_options());
    Shut s{r};
    REQUIRE_OK(r.init());
    auto m = resolve_wait(l, r, "m.test");
    REQUIRE_OK(m);
    BOOST_REQUIRE_EQUAL(m->targets.size(), 1u);
    BOOST_TEST(m->targets[0].address == "127.0.0.60");
    BOOST_TEST(m->targets[0].port == 5270);
    BOOST_TEST(m->explain.find("A/AAAA missing.m.test: NXDOMAIN") != std::string::npos, m->explain);

    auto n = resolve_wait(l, r, "n.test");
    BOOST_REQUIRE(!n.ok());
    BOOST_TEST(n.error() == "n.test: no SRV target has an address (missing.n.test: NXDOMAIN)");
}

BOOST_AUTO_TEST_CASE(dns_srv_target_ip_literal) {
    auto& dns = Dnsmasq::get();
    Loop l;
    Resolver r(&l.loop, {}, dns.endpoint(), fast_options());
    Shut s{r};
    REQUIRE_OK(r.init());
    auto res = resolve_wait(l, r, "lit.test");
    REQUIRE_OK(res);
    BOOST_REQUIRE_EQUAL(res->targets.size(), 1u);
    BOOST_TEST(res->targets[0].address == "127.0.0.40");
}

BOOST_AUTO_TEST_CASE(static_route_ip_literal) {
    Loop l;
    // No DNS at all: the name server is silent.
    SilentServer silent;
    Resolver r(&l.loop,
               {mkroute("s.test", "127.0.0.30", 7000, true, xmpp::TlsPolicy::Required), mkroute("*.v6.test", "::1", 7002)},
               silent.endpoint(), fast_options());
    Shut s{r};
    REQUIRE_OK(r.init());
    auto res = resolve_wait(l, r, "s.test");
    REQUIRE_OK(res);
    BOOST_REQUIRE_EQUAL(res->targets.size(), 1u);
    const Target& t = res->targets[0];
    BOOST_TEST(t.address == "127.0.0.30");
    BOOST_TEST(t.port == 7000);
    BOOST_TEST(t.direct_tls);
    BOOST_TEST(t.source == "route s.test");
    BOOST_REQUIRE(t.policy.has_value());
    BOOST_TEST((*t.policy == xmpp::TlsPolicy::Required));
    BOOST_TEST(res->explain == "route s.test: 127.0.0.30:7000 (direct TLS), policy required");

    auto v6 = resolve_wait(l, r, "x.v6.test");
    REQUIRE_OK(v6);
    BOOST_TEST(v6->targets.at(0).address == "::1");
    BOOST_TEST(v6->targets.at(0).port == 7002);
    BOOST_TEST(!v6->targets.at(0).direct_tls);

    // set_routes replaces the table for later lookups.
    r.set_routes({mkroute("s.test", "127.0.0.99", 7099)});
    auto again = resolve_wait(l, r, "s.test");
    REQUIRE_OK(again);
    BOOST_TEST(again->targets.at(0).address == "127.0.0.99");

    // IP literal domains need no DNS either.
    auto lit = resolve_wait(l, r, "[::1]");
    REQUIRE_OK(lit);
    BOOST_TEST(lit->targets.at(0).address == "::1");
    BOOST_TEST(lit->targets.at(0).port == 5269);
}

BOOST_AUTO_TEST_CASE(static_route_hostname) {
    auto& dns = Dnsmasq::get();
    Loop l;
    Resolver r(&l.loop, {mkroute("*.w.test", "gw.w.test", 7001, false, xmpp::TlsPolicy::Optional),
                         mkroute("bad.test", "nothing.w.test", 7001)},
               dns.endpoint(), fast_options());
    Shut s{r};
    REQUIRE_OK(r.init());
    auto res = resolve_wait(l, r, "chat.w.test");
    REQUIRE_OK(res);
    BOOST_REQUIRE_EQUAL(res->targets.size(), 1u);
    BOOST_TEST(res->targets[0].address == "127.0.0.31");
    BOOST_TEST(res->targets[0].port == 7001);
    BOOST_TEST(res->targets[0].host == "gw.w.test");
    BOOST_TEST(res->targets[0].source == "route *.w.test");
    BOOST_TEST((res->targets[0].policy == xmpp::TlsPolicy::Optional));

    auto bad = resolve_wait(l, r, "bad.test");
    BOOST_REQUIRE(!bad.ok());
    BOOST_TEST(bad.error() == "bad.test: route bad.test host nothing.w.test: no A or AAAA records (NXDOMAIN)");
}

BOOST_AUTO_TEST_CASE(dns_timeout) {
    Loop l;
    SilentServer silent;
    ResolverOptions o;
    o.timeout_ms = 100;
    o.tries = 1;
    Resolver r(&l.loop, {}, silent.endpoint(), o);
    Shut s{r};
    REQUIRE_OK(r.init());
    auto start = std::chrono::steady_clock::now();
    auto res = resolve_wait(l, r, "t.test");
    auto took = std::chrono::steady_clock::now() - start;
    BOOST_REQUIRE(!res.ok());
    BOOST_TEST(res.error() == "t.test: DNS timeout talking to 127.0.0.1:" + std::to_string(silent.port));
    BOOST_TEST(std::chrono::duration_cast<std::chrono::milliseconds>(took).count() < 5000);
}

BOOST_AUTO_TEST_CASE(shutdown_with_query_in_flight) {
    Loop l;
    SilentServer silent;
    ResolverOptions o;
    o.timeout_ms = 5000;
    o.tries = 1;
    auto r = std::make_unique<Resolver>(&l.loop, std::vector<RouteConfig>{mkroute("s.test", "127.0.0.30", 7000)},
                                        silent.endpoint(), o);
    REQUIRE_OK(r->init());
    std::vector<std::string> errors;
    int calls = 0;
    auto cb = [&](Result<Resolution> res) {
        ++calls;
        BOOST_TEST(!res.ok());
        if (!res.ok()) errors.push_back(res.error());
    };
    r->resolve("q.test", cb);
    // Let the SRV queries go out.
    for (int i = 0; i < 5; ++i) uv_run(&l.loop, UV_RUN_NOWAIT);
    r->resolve("s.test", cb); // static answer queued, not yet delivered
    BOOST_TEST(calls == 0);
    r->shutdown();
    BOOST_TEST(calls == 2); // before shutdown() returns
    std::sort(errors.begin(), errors.end());
    BOOST_TEST(errors == (std::vector<std::string>{"q.test: resolver shut down", "s.test: resolver shut down"}),
               boost::test_tools::per_element());
    r->shutdown(); // idempotent

    // After shutdown the callback still runs, later, with an error.
    std::optional<Result<Resolution>> late;
    r->resolve("late.test", [&](Result<Resolution> res) { late.emplace(std::move(res)); });
    BOOST_TEST(!late.has_value());
    BOOST_REQUIRE(l.run_until([&] { return late.has_value(); }));
    BOOST_TEST(late->error() == "late.test: resolver shut down");
    r.reset();
    BOOST_TEST(calls == 2);
}

BOOST_AUTO_TEST_CASE(destroy_without_shutdown_and_reentrant_callbacks) {
    auto& dns = Dnsmasq::get();
    Loop l;
    auto r = std::make_unique<Resolver>(&l.loop, std::vector<RouteConfig>{}, dns.endpoint(), fast_options());
    REQUIRE_OK(r->init());
    // A callback that starts another resolution (re-entrancy).
    std::optional<Result<Resolution>> second;
    bool first_done = false;
    r->resolve("f.test", [&](Result<Resolution> res) {
        BOOST_TEST(res.ok());
        first_done = true;
        r->resolve("B.test", [&](Result<Resolution> res2) { second.emplace(std::move(res2)); });
    });
    BOOST_REQUIRE(l.run_until([&] { return second.has_value(); }));
    BOOST_TEST(first_done);
    BOOST_TEST(second->ok());

    // Many at once, then destroy with some in flight (no explicit shutdown).
    int done = 0;
    for (const char* d : {"b.test", "f.test", "nx.test", "u.test", "m.test"})
        r->resolve(d, [&](Result<Resolution>) { ++done; });
    uv_run(&l.loop, UV_RUN_NOWAIT);
    r.reset();
    BOOST_TEST(done == 5);
}

BOOST_AUTO_TEST_CASE(concurrent_resolutions) {
    auto& dns = Dnsmasq::get();
    Loop l;
    Resolver r(&l.loop, {}, dns.endpoint(), fast_options());
    Shut s{r};
    REQUIRE_OK(r.init());
    std::map<std::string, std::string> out;
    const std::vector<std::string> names{"b.test", "f.test", "nx.test", "u.test", "m.test", "v.test", "b.test"};
    int n = 0;
    for (const auto& d : names)
        r.resolve(d, [&, d](Result<Resolution> res) {
            ++n;
            out[d] = res.ok() ? res->targets.at(0).address : res.error();
        });
    BOOST_REQUIRE(l.run_until([&] { return n == static_cast<int>(names.size()); }));
    BOOST_TEST(out["b.test"] == "127.0.0.10");
    BOOST_TEST((out["f.test"] == "127.0.0.20" || out["f.test"] == "fd00::20"));
    BOOST_TEST(out["nx.test"] == "nx.test: no SRV, A or AAAA records (NXDOMAIN)");
    BOOST_TEST(out["u.test"] == "u.test: service explicitly unavailable (SRV '.')");
    BOOST_TEST(out["m.test"] == "127.0.0.60");
    BOOST_TEST(out["v.test"] == "127.0.0.50");
}

BOOST_AUTO_TEST_CASE(errors_without_dns) {
    Loop l;
    Resolver r(&l.loop, {}, std::nullopt);
    // Not initialized: still asynchronous, with an error.
    auto res = resolve_wait(l, r, "a.test");
    BOOST_REQUIRE(!res.ok());
    BOOST_TEST(res.error() == "a.test: resolver not initialized");
    REQUIRE_OK(r.init());
    BOOST_TEST(!r.init().ok());
    auto bad = resolve_wait(l, r, "a b.test");
    BOOST_REQUIRE(!bad.ok());
    BOOST_TEST(bad.error() == "a b.test: invalid domain (contains a space)");
    r.shutdown();
}
