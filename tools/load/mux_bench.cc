#include "tools/load/mux_bench.h"

#include "common/log.h"

#include <fcntl.h>
#include <dirent.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <sstream>

namespace s2smux::load {

namespace {

constexpr std::uint64_t kTickMs = 100;
constexpr std::uint64_t kSecondNs = 1000000000ULL;
constexpr double kDrainTimeoutS = 10; // streams closing, gateways exiting after SIGTERM
constexpr double kTermAfterS = 1;     // SIGTERM even if the generator's stream is still closing
constexpr double kStartTimeoutS = 30; // gateways up and the mux stream enabled
constexpr double kAddsTimeoutS = 300; // every `cert add` answered

const char* kExtraSuffix = "bench.test"; // d1.bench.test ... (s2smux-gencerts defaults)

double self_cpu_s() {
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

double pct_ms(const std::vector<std::uint64_t>& sorted, double q) {
    if (sorted.empty()) return 0;
    auto idx = static_cast<std::size_t>(std::ceil(q * static_cast<double>(sorted.size())));
    idx = std::clamp<std::size_t>(idx, 1, sorted.size()) - 1;
    return static_cast<double>(sorted[idx]) / 1e6;
}

double secs(std::uint64_t ns) { return static_cast<double>(ns) / 1e9; }

std::map<std::string, std::uint64_t> parse_stats(const admin::Reply& r) {
    std::map<std::string, std::uint64_t> m;
    for (const auto& line : r.lines) {
        std::istringstream is(line);
        std::string k, v;
        if (is >> k >> v && !v.empty() && std::all_of(v.begin(), v.end(), [](unsigned char ch) { return std::isdigit(ch) != 0; })) m[k] = std::stoull(v);
    }
    return m;
}

std::uint64_t stat_of(const std::map<std::string, std::uint64_t>& m, const char* k) {
    auto it = m.find(k);
    return it == m.end() ? 0 : it->second;
}

const char* phase_name(int k) {
    static const char* names[] = {"idle", "adds", "after"};
    return k >= 0 && k < 3 ? names[k] : "-";
}

// Runs argv, output to `log`, waits. Empty string: success.
std::string run_program(const std::vector<std::string>& argv, const std::string& log) {
    std::fflush(nullptr);
    pid_t pid = ::fork();
    if (pid < 0) return fmt::format("fork: {}", std::strerror(errno));
    if (pid == 0) {
        int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            ::dup2(fd, 1);
            ::dup2(fd, 2);
            ::close(fd);
        }
        std::vector<char*> a;
        for (const auto& s : argv) a.push_back(const_cast<char*>(s.c_str()));
        a.push_back(nullptr);
        ::execv(a[0], a.data());
        std::fprintf(stderr, "exec %s: %s\n", a[0], std::strerror(errno));
        ::_exit(127);
    }
    int st = 0;
    while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0) return {};
    return fmt::format("{} failed ({}); see {}", argv[0],
                       WIFEXITED(st) ? fmt::format("exit status {}", WEXITSTATUS(st))
                                     : fmt::format("signal {}", WTERMSIG(st)),
                       log);
}

std::uint64_t rss_kb(pid_t pid) {
    auto st = read_proc_stats(pid);
    return st ? st->rss_kb : 0;
}

std::string tail_of(const std::string& path, std::size_t bytes = 3000) {
    FILE* f = std::fopen(path.c_str(), "rb");
    if (!f) return {};
    std::string s;
    char buf[8192];
    std::size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) s.append(buf, n);
    std::fclose(f);
    if (s.size() > bytes) s.erase(0, s.size() - bytes);
    return s;
}

} // namespace

MuxBench::MuxBench(const Env& env, MuxOptions opts) : env_(env), o_(std::move(opts)) {
    uv_loop_init(&loop_);
    ctx_.loop = &loop_;
    ctx_.certs = &certs_;
    ctx_.trust = &trust_;
    ctx_.keys = env_.keys;
    ctx_.owner = this;
}

MuxBench::~MuxBench() = default;

// ----------------------------------------------------------------- setup

std::string MuxBench::prepare_certs() {
    certs_dir_ = env_.work_dir + "/certs";
    if (::mkdir(certs_dir_.c_str(), 0700) != 0 && errno != EEXIST)
        return fmt::format("mkdir {}: {}", certs_dir_, std::strerror(errno));
    if (::access(o_.gencerts.c_str(), X_OK) != 0)
        return fmt::format("s2smux-gencerts not found or not executable at {} (use --gencerts; it is built "
                           "with the tests, -Dtests=enabled)",
                           o_.gencerts);
    const std::uint64_t t0 = uv_hrtime();
    std::string err = run_program({o_.gencerts, "--out", certs_dir_, "--count", std::to_string(std::max<std::uint64_t>(1, o_.adds)),
                                   "--also", "a.test", "--also", "b.test"},
                                  env_.work_dir + "/gencerts.log");
    if (!err.empty()) return err;
    res_.certgen_s = secs(uv_hrtime() - t0);
    for (const char* d : {"a.test", "b.test"}) {
        auto lc = tls::load_cert_files(certs_dir_ + "/" + d + ".pem", certs_dir_ + "/" + d + ".key");
        if (!lc) return fmt::format("generated certificate {}: {}", d, lc.error());
        certs_.add(std::move(*lc));
    }
    if (auto r = trust_.add_ca_file(certs_dir_ + "/ca.pem"); !r) return fmt::format("generated CA: {}", r.error());
    return {};
}

std::string MuxBench::start_gateways() {
    std::uint16_t port[5];
    for (auto& p : port) {
        auto r = free_loopback_port();
        if (!r) return r.error();
        p = *r;
    }
    const std::uint16_t a_outer = port[0], b_outer = port[2], a_upstream = port[4];
    a_inner_ = port[1];
    b_inner_ = port[3];
    a_sock_ = env_.work_dir + "/a.sock";
    b_sock_ = env_.work_dir + "/b.sock";
    const std::string ca = toml_str(certs_dir_ + "/ca.pem");
    auto cert = [&](const char* d) {
        return fmt::format("[[cert]]\ncert = {}\nkey = {}\n\n", toml_str(certs_dir_ + "/" + d + ".pem"),
                           toml_str(certs_dir_ + "/" + d + ".key"));
    };
    std::string log = fmt::format("[log]\nlevel = \"{}\"\n", o_.gw_log_level);

    // B: b.test; its local server is the sink.
    std::string b = "# generated by s2smux-load --topology mux: gateway B\n";
    b += fmt::format("[gateway]\ndomains = [\"b.test\"]\nadmin_socket = {}\n\n", toml_str(b_sock_));
    b += fmt::format("[listen]\nouter = \"127.0.0.1:{}\"\ninner = \"127.0.0.1:{}\"\n\n", b_outer, b_inner_);
    b += fmt::format("[upstream]\naddress = \"127.0.0.1:{}\"\n\n", sink_port_);
    b += fmt::format("[tls]\nca_file = {}\npolicy = \"required\"\n\n", ca);
    b += cert("b.test");
    if (o_.adds + 10 > 10000) b += fmt::format("[mux]\nmax_domains = {}\n\n", o_.adds + 10);
    b += log;

    // A: a.test only; the mux stream to B is opened at start-up.
    std::string a = "# generated by s2smux-load --topology mux: gateway A\n";
    a += fmt::format("[gateway]\ndomains = [\"a.test\"]\nadmin_socket = {}\n\n", toml_str(a_sock_));
    a += fmt::format("[listen]\nouter = \"127.0.0.1:{}\"\ninner = \"127.0.0.1:{}\"\n\n", a_outer, a_inner_);
    a += fmt::format("[upstream]\naddress = \"127.0.0.1:{}\"\n\n", a_upstream); // nobody listens: nothing goes there
    a += fmt::format("[tls]\nca_file = {}\npolicy = \"required\"\n\n", ca);
    a += cert("a.test");
    a += fmt::format("[[route]]\ndomain = \"b.test\"\naddress = \"127.0.0.1:{}\"\npreconnect = true\n\n", b_outer);
    a += log;

    if (auto r = gb_.start_config(env_.s2smuxd, env_.work_dir, "gw-b", b, b_inner_); !r) return r.error();
    if (auto r = ga_.start_config(env_.s2smuxd, env_.work_dir, "gw-a", a, a_inner_); !r) return r.error();
    // The admin sockets are created just after the listeners.
    for (int i = 0; i < 500; ++i) {
        struct stat st{};
        if (::stat(a_sock_.c_str(), &st) == 0 && ::stat(b_sock_.c_str(), &st) == 0) return {};
        uv_sleep(10);
    }
    return "the gateways' admin sockets did not appear within 5 s";
}

MuxResult MuxBench::run() {
    res_.window = o_.window;
    res_.adds = o_.adds;
    uv_tcp_init(&loop_, &listener_);
    listener_.data = this;
    sockaddr_in addr{};
    uv_ip4_addr("127.0.0.1", 0, &addr);
    int rc = uv_tcp_bind(&listener_, reinterpret_cast<sockaddr*>(&addr), 0);
    if (rc == 0)
        rc = uv_listen(reinterpret_cast<uv_stream_t*>(&listener_), 64, [](uv_stream_t* srv, int status) {
            if (status == 0) static_cast<MuxBench*>(srv->data)->on_accept();
        });
    int len = sizeof addr;
    if (rc == 0) rc = uv_tcp_getsockname(&listener_, reinterpret_cast<sockaddr*>(&addr), &len);
    std::string err;
    if (rc != 0) err = fmt::format("sink listener: {}", uv_strerror(rc));
    sink_port_ = ntohs(addr.sin_port);
    if (err.empty()) err = prepare_certs();
    if (err.empty()) err = start_gateways();
    if (!err.empty()) {
        res_.error = err;
        res_.log_tail = "--- gw-a ---\n" + tail_of(ga_.log_path()) + "\n--- gw-b ---\n" + tail_of(gb_.log_path());
        ga_.kill_now();
        gb_.kill_now();
        uv_close(reinterpret_cast<uv_handle_t*>(&listener_), nullptr);
        uv_run(&loop_, UV_RUN_DEFAULT);
        uv_loop_close(&loop_);
        return res_;
    }

    // Room for every stanza of the run: the open-loop rate is not known yet.
    due_ns_.reserve(1 << 20);
    lat_ns_.reserve(1 << 20);
    lag_ns_.reserve(1 << 20);

    handles_ = true;
    uv_prepare_init(&loop_, &prepare_);
    prepare_.data = this;
    uv_prepare_start(&prepare_, [](uv_prepare_t* h) { static_cast<MuxBench*>(h->data)->pump(); });
    uv_check_init(&loop_, &check_);
    check_.data = this;
    uv_check_start(&check_, [](uv_check_t* h) { static_cast<MuxBench*>(h->data)->pump(); });
    uv_timer_init(&loop_, &timer_);
    timer_.data = this;
    uv_timer_start(&timer_, [](uv_timer_t* h) { static_cast<MuxBench*>(h->data)->tick(); }, kTickMs, kTickMs);
    start_ns_ = last_progress_ns_ = last_report_ns_ = uv_hrtime();

    poller_ = admin(a_sock_, "gateway A admin");

    uv_run(&loop_, UV_RUN_DEFAULT);
    if (int c = uv_loop_close(&loop_); c != 0) {
        uv_walk(&loop_, [](uv_handle_t* h, void*) {
            std::fprintf(stderr, "s2smux-load: open handle at exit: %s\n", uv_handle_type_name(h->type));
        }, nullptr);
        if (res_.error.empty()) res_.error = "event loop closed with open handles";
    }
    if (res_.error.empty()) compute();
    res_.ok = res_.error.empty();
    if (!res_.ok)
        res_.log_tail = "--- gw-a ---\n" + tail_of(ga_.log_path()) + "\n--- gw-b ---\n" + tail_of(gb_.log_path());
    return res_;
}

AdminClient* MuxBench::admin(const std::string& path, const char* who) {
    admins_.push_back(std::make_unique<AdminClient>(&loop_));
    AdminClient* c = admins_.back().get();
    c->connect(path, [this, who](const std::string& e) {
        if (!e.empty()) fail(fmt::format("{}: {}", who, e));
    });
    return c;
}

void MuxBench::close_admins() {
    for (auto& c : admins_) c->close();
    poller_ = nullptr;
}

void MuxBench::poll_mux() {
    if (poll_inflight_ || !poller_ || !poller_->usable()) return;
    poll_inflight_ = true;
    poller_->send("stats", [this](const admin::Reply& r, std::uint64_t) {
        poll_inflight_ = false;
        if (phase_ != Phase::Starting) return;
        if (!r.error.empty()) return fail("gateway A stats: " + r.error);
        if (stat_of(parse_stats(r), "streams.mux") >= 1) {
            poller_->close();
            poller_ = nullptr;
            start_generator();
        }
    });
}

// An experiment, not a setting of the daemon: lower the priority of every
// thread of both gateways but the event loop (libuv's pool: certificate
// loading, signatures, verification), to tell CPU contention from the
// pool apart from work on the loop.
std::string MuxBench::renice_pools() {
    std::string done;
    for (GatewayProcess* g : {&ga_, &gb_}) {
        std::string dir = fmt::format("/proc/{}/task", g->pid());
        DIR* d = ::opendir(dir.c_str());
        if (!d) return fmt::format("cannot list {}", dir);
        int n = 0;
        while (dirent* e = ::readdir(d)) {
            int tid = std::atoi(e->d_name);
            if (tid <= 0 || tid == g->pid()) continue;
            int rc = 0;
            if (o_.nice_pool == kSchedIdle) {
                sched_param sp{};
                rc = ::sched_setscheduler(tid, SCHED_IDLE, &sp);
            } else {
                rc = ::setpriority(PRIO_PROCESS, static_cast<id_t>(tid), o_.nice_pool);
            }
            if (rc != 0) {
                ::closedir(d);
                return fmt::format("setpriority {}: {}", tid, std::strerror(errno));
            }
            ++n;
        }
        ::closedir(d);
        done += fmt::format("{}{}: {} thread(s)", done.empty() ? "" : ", ", g->name(), n);
    }
    if (o_.progress)
        std::fprintf(stderr, "[mux] thread pools at %s (%s)\n",
                     o_.nice_pool == kSchedIdle ? "SCHED_IDLE" : fmt::format("nice {}", o_.nice_pool).c_str(), done.c_str());
    return {};
}

void MuxBench::start_generator() {
    if (o_.nice_pool != 0)
        if (std::string e = renice_pools(); !e.empty()) return fail(e);
    phase_ = Phase::Connecting;
    if (o_.progress) std::fprintf(stderr, "[mux] %5.1f s  mux stream A -> B enabled\n", secs(uv_hrtime() - start_ns_));
    xmpp::SessionConfig c;
    c.role = xmpp::Role::Initiator;
    c.from = "a.test";
    c.to = "b.test";
    c.want_bidi = false;
    c.auth_timeout_ms = 10000;
    // The local server a.test on gateway A's trusted inner side: dialback,
    // certificate not verified (as the daemon's own UpstreamOut does).
    c.tls_policy = o_.inner_tls ? xmpp::TlsPolicy::Optional : xmpp::TlsPolicy::Disabled;
    c.verify_peer = false;
    c.use_external = false;
    route::Target t;
    t.address = "127.0.0.1";
    t.port = a_inner_;
    t.source = "gateway A inner";
    last_progress_ns_ = uv_hrtime();
    gen_ = net::Stream::connect(ctx_, net::StreamKind::UpstreamOut, c, {t}, next_id_++, 10000);
}

void MuxBench::on_accept() {
    if (phase_ >= Phase::Closing) return;
    // Gateway B's upstream-out stream, delivering what arrives for b.test.
    xmpp::SessionConfig c;
    c.role = xmpp::Role::Receiver;
    c.tls_policy = xmpp::TlsPolicy::Optional;
    c.tls_possible = true;
    c.offer_external = false;
    c.offer_dialback = true;
    c.offer_bidi = false;
    c.auth_timeout_ms = 10000;
    net::Stream* s = net::Stream::accept(ctx_, reinterpret_cast<uv_stream_t*>(&listener_), net::StreamKind::OuterIn,
                                         false, c, next_id_++);
    if (s) sinks_.push_back(s);
}

// ----------------------------------------------------------------- owner

bool MuxBench::stream_hosts(net::Stream& s, std::string_view domain) {
    return (s.kind() == net::StreamKind::OuterIn || s.kind() == net::StreamKind::VerifyOut) && domain == "b.test";
}

bool MuxBench::stream_has_cert(std::string_view domain) { return certs_.find(domain) != nullptr; }

xmpp::DialbackVerdict MuxBench::stream_dialback_request(net::Stream& s, const xmpp::DialbackRequest& r) {
    if (s.kind() != net::StreamKind::OuterIn || r.from != "a.test" || r.to != "b.test")
        return xmpp::DialbackVerdict::Invalid;
    if (!o_.dialback_verify) return xmpp::DialbackVerdict::Valid; // a test tool may trust its own gateway
    // As a real local server would: ask the authoritative server (gateway B,
    // through its inner listener) whether the key is valid.
    xmpp::SessionConfig c;
    c.role = xmpp::Role::Initiator;
    c.from = std::string(r.to);
    c.to = std::string(r.from);
    c.verify_only = true;
    c.tls_policy = xmpp::TlsPolicy::Optional;
    c.verify_peer = false;
    c.use_external = false;
    c.want_bidi = false;
    c.auth_timeout_ms = 10000;
    route::Target t;
    t.address = "127.0.0.1";
    t.port = b_inner_;
    t.source = "gateway B inner (dialback verify)";
    net::Stream* v = net::Stream::connect(ctx_, net::StreamKind::VerifyOut, c, {t}, next_id_++, 10000);
    verifies_[v] = Verify{&s, std::string(r.from), std::string(r.to), std::string(r.stream_id), std::string(r.key)};
    return xmpp::DialbackVerdict::Pending;
}

void MuxBench::stream_ready(net::Stream& s) {
    auto it = verifies_.find(&s);
    if (it == verifies_.end()) return;
    s.session().send_db_verify(it->second.local, it->second.remote, it->second.id, it->second.key);
}

void MuxBench::stream_verify_answer(net::Stream& s, std::string_view from, std::string_view to, std::string_view id,
                                    bool valid) {
    auto it = verifies_.find(&s);
    if (it == verifies_.end() || it->second.remote != from || it->second.local != to || it->second.id != id) return;
    Verify v = std::move(it->second);
    verifies_.erase(it);
    s.session().close();
    if (std::find(sinks_.begin(), sinks_.end(), v.requester) == sinks_.end()) return;
    key_verified_ = valid;
    v.requester->session().dialback_result(v.remote, v.local, valid); // authenticates the sink stream
    if (!valid) fail("gateway B's dialback key did not verify (db:verify answered invalid)");
}

void MuxBench::stream_authenticated(net::Stream& s, std::string_view from, std::string_view to, bool dir_in,
                                    xmpp::AuthMethod m) {
    if (s.kind() == net::StreamKind::OuterIn) {
        if (dir_in) {
            std::string how = !o_.dialback_verify ? "key accepted without verification"
                              : key_verified_   ? "key verified with gateway B (db:verify on its inner listener)"
                                                : "key not verified";
            const auto& tls = s.session().tls();
            sink_auth_ = fmt::format("{}, {} ({})", s.session().tls_active() ? tls.version + " " + tls.cipher : "plaintext",
                                     xmpp::to_string(m), how);
        }
        return;
    }
    if (&s != gen_ || dir_in || from != "a.test" || to != "b.test" || phase_ != Phase::Connecting) return;
    phase_ = Phase::Warmup;
    last_progress_ns_ = uv_hrtime();
}

void MuxBench::stream_stanza(net::Stream& s, const xml::Node& el, const xmpp::StanzaRoute& r) {
    if (phase_ >= Phase::Closing) return;
    if (s.kind() != net::StreamKind::OuterIn) {
        fail(fmt::format("unexpected <{}/> from {} to {} on the {} stream (a bounce?)", el.name, r.head.from, r.head.to,
                         &s == gen_ ? "generator's" : net::to_string(s.kind())));
        return;
    }
    Stamp got;
    if (std::string err = check_in_order(el, r.from_domain, r.to_domain, *env_.pool, received_, got); !err.empty()) {
        fail(err);
        return;
    }
    const std::uint64_t now = uv_hrtime();
    lat_ns_.push_back(now > got.ts_ns ? now - got.ts_ns : 0);
    ++received_;
    last_progress_ns_ = now;
    if (phase_ == Phase::Warmup && received_ == o_.warmup) {
        if (o_.rate < 0) enter(Phase::Capacity, now);
        else {
            rate_ = o_.rate;
            enter(Phase::Settle, now);
        }
    } else if (phase_ == Phase::Drain && received_ == sent_) {
        query_stats();
    }
}

void MuxBench::stream_closed(net::Stream& s, const xmpp::CloseInfo& info) {
    const bool was_gen = &s == gen_;
    if (was_gen) gen_ = nullptr;
    std::erase(sinks_, &s);
    if (auto it = verifies_.find(&s); it != verifies_.end()) {
        verifies_.erase(it);
        if (phase_ < Phase::Closing) fail(fmt::format("dialback verification stream to gateway B closed: {}", info.reason));
        return;
    }
    if (s.kind() == net::StreamKind::VerifyOut) return; // answered, then closed by us
    if (phase_ >= Phase::Closing) return;
    std::string why = fmt::format("{} stream closed during the run: {}", was_gen ? "generator" : "sink", info.reason);
    for (int i = 0; i < 20 && !ga_.poll_exit() && !gb_.poll_exit(); ++i) uv_sleep(10);
    if (ga_.poll_exit()) why = fmt::format("gateway A died ({}); {}", ga_.exit_text(), why);
    if (gb_.poll_exit()) why = fmt::format("gateway B died ({}); {}", gb_.exit_text(), why);
    fail(std::move(why));
}

// ------------------------------------------------------------------ flow

void MuxBench::send_one(std::uint64_t ts_ns) {
    scratch_.clear();
    write_stanza(scratch_, *env_.pool, sent_, ts_ns);
    gen_->session().send_raw(scratch_);
    due_ns_.push_back(ts_ns);
    ++sent_;
}

void MuxBench::pump() {
    if (gen_ && phase_ >= Phase::Warmup && phase_ <= Phase::After) {
        std::uint64_t now = uv_hrtime();
        advance(now);
        const bool open_loop = rate_ > 0 && phase_ >= Phase::Settle && phase_ <= Phase::After;
        if (phase_ == Phase::Warmup) {
            while (sent_ < o_.warmup) {
                send_one(uv_hrtime());
                lag_ns_.push_back(0);
            }
        } else if (open_loop) {
            const double elapsed = static_cast<double>(now - pace_t0_);
            const auto due = pace_seq0_ + static_cast<std::uint64_t>(elapsed * rate_ / 1e9);
            bool capped = false;
            while (sent_ < due) {
                if (sent_ - received_ >= o_.max_inflight) {
                    capped = true;
                    break;
                }
                const auto ts = pace_t0_ + static_cast<std::uint64_t>(static_cast<double>(sent_ - pace_seq0_) * 1e9 / rate_);
                send_one(ts);
                lag_ns_.push_back(now > ts ? now - ts : 0);
            }
            if (capped) ++res_.cap_limited;
        } else if (phase_ >= Phase::Capacity) {
            while (sent_ - received_ < o_.window) {
                send_one(uv_hrtime());
                lag_ns_.push_back(0);
            }
        }
        if (phase_ >= Phase::Idle && phase_ <= Phase::After) { // the measured phases only
            auto& m = max_inflight_[static_cast<std::size_t>(phase_) - static_cast<std::size_t>(Phase::Idle)];
            m = std::max(m, sent_ - received_);
        }
    }
    if (ctx_.dirty.empty()) return;
    std::vector<net::Stream*> batch;
    batch.swap(ctx_.dirty);
    for (net::Stream* s : batch) s->flush();
}

void MuxBench::advance(std::uint64_t now) {
    const double in_phase = secs(now - phase_t0_);
    switch (phase_) {
    case Phase::Capacity:
        if (in_phase >= o_.capacity_s) {
            res_.capacity = static_cast<double>(received_ - cap_recv0_) / secs(now - cap_t0_);
            rate_ = o_.rate_fraction * res_.capacity;
            enter(Phase::Settle, now);
        }
        break;
    case Phase::Settle:
        if (in_phase >= o_.settle_s) enter(Phase::Idle, now);
        break;
    case Phase::Idle:
        if (in_phase >= o_.idle_s) enter(Phase::Adds, now);
        break;
    case Phase::After:
        if (in_phase >= o_.after_s) enter(Phase::Drain, now);
        break;
    default:
        break;
    }
}

MuxBench::Snapshot MuxBench::snapshot(std::uint64_t now) const {
    Snapshot s;
    s.t_ns = now;
    s.seq = sent_;
    s.inflight = sent_ - received_;
    if (auto a = read_proc_stats(ga_.pid())) s.a_cpu = a->cpu_s;
    if (auto b = read_proc_stats(gb_.pid())) s.b_cpu = b->cpu_s;
    s.a_loop = read_thread_cpu_s(ga_.pid(), ga_.pid());
    s.b_loop = read_thread_cpu_s(gb_.pid(), gb_.pid());
    s.tool_cpu = self_cpu_s();
    s.machine = machine_busy_cpu_s();
    return s;
}

void MuxBench::enter(Phase p, std::uint64_t now) {
    phase_ = p;
    phase_t0_ = now;
    const char* name = "";
    switch (p) {
    case Phase::Capacity:
        cap_t0_ = now;
        cap_recv0_ = received_;
        name = "capacity (closed loop)";
        break;
    case Phase::Settle:
        pace_t0_ = now;
        pace_seq0_ = sent_;
        res_.rate = rate_;
        if (rate_ > 0) {
            start_pacer();
            name = "settle (open loop)";
        } else {
            name = "settle (closed loop)";
        }
        break;
    case Phase::Idle:
        marks_[0] = snapshot(now);
        res_.a_rss0_kb = rss_kb(ga_.pid());
        res_.b_rss0_kb = rss_kb(gb_.pid());
        name = "idle";
        break;
    case Phase::Adds:
        marks_[1] = snapshot(now);
        name = "adds";
        break;
    case Phase::After:
        marks_[2] = snapshot(now);
        name = "after";
        break;
    case Phase::Drain:
        marks_[3] = snapshot(now);
        res_.a_rss1_kb = rss_kb(ga_.pid());
        res_.b_rss1_kb = rss_kb(gb_.pid());
        stop_pacer();
        name = "drain";
        break;
    default:
        break;
    }
    if (o_.progress && *name) {
        std::string extra;
        if (p == Phase::Settle && res_.capacity > 0)
            extra = fmt::format(": capacity {:.0f} stanzas/s, rate {:.0f} stanzas/s", res_.capacity, rate_);
        else if (p == Phase::Settle && rate_ > 0)
            extra = fmt::format(": rate {:.0f} stanzas/s", rate_);
        std::fprintf(stderr, "[mux] %5.1f s  phase %s%s\n", secs(now - start_ns_), name, extra.c_str());
    }
    if (p == Phase::Adds) start_adds();
    if (p == Phase::Drain && received_ == sent_) query_stats();
}

void MuxBench::start_adds() {
    adds_sent_t_ = uv_hrtime();
    if (o_.adds == 0) {
        enter(Phase::After, uv_hrtime());
        return;
    }
    // s2smuxctl would connect too: the connections are part of the phase.
    std::vector<AdminClient*> conns;
    for (std::size_t k = 0; k < std::max<std::size_t>(1, o_.add_conns); ++k)
        conns.push_back(admin(a_sock_, "gateway A admin (cert add)"));
    std::vector<std::vector<std::string>> lines(conns.size());
    for (std::uint64_t i = 1; i <= o_.adds; ++i) {
        const std::string base = fmt::format("{}/d{}.{}", certs_dir_, i, kExtraSuffix);
        auto line = admin::format_command_line({"cert", "add", base + ".pem", base + ".key"});
        if (!line) return fail(fmt::format("cert add line: {}", line.error()));
        lines[(i - 1) % conns.size()].push_back(std::move(*line));
    }
    for (std::size_t k = 0; k < conns.size(); ++k)
        conns[k]->send(lines[k], [this](const admin::Reply& r, std::uint64_t t) { on_add_reply(r, t); });
}

void MuxBench::on_add_reply(const admin::Reply& r, std::uint64_t t_ns) {
    if (phase_ != Phase::Adds) return;
    ++adds_answered_;
    add_reply_ns_.push_back(t_ns);
    bool accepted = false;
    std::string detail = r.error;
    if (r.error.empty()) {
        // "loaded CN=... names=...", then "s<id> peer=b.test accepted" per mux stream.
        for (std::size_t i = 1; i < r.lines.size(); ++i) {
            if (r.lines[i].find(" peer=b.test accepted") != std::string::npos) accepted = true;
            else detail = r.lines[i];
        }
        if (!accepted && detail.empty()) detail = r.lines.empty() ? "empty reply" : r.lines.back();
    }
    if (accepted) ++res_.adds_ok;
    else {
        ++res_.adds_failed;
        if (res_.first_add_error.empty()) res_.first_add_error = detail;
    }
    if (adds_answered_ == o_.adds) {
        res_.add_phase_s = secs(t_ns - adds_sent_t_);
        enter(Phase::After, uv_hrtime());
    }
}

void MuxBench::query_stats() {
    if (phase_ != Phase::Drain) return;
    phase_ = Phase::Finishing;
    stats_pending_ = 2;
    auto got = [this](std::map<std::string, std::uint64_t>* dst) {
        return [this, dst](const admin::Reply& r, std::uint64_t) {
            if (!r.error.empty()) return fail("stats: " + r.error);
            *dst = parse_stats(r);
            if (--stats_pending_ == 0) finish();
        };
    };
    admin(a_sock_, "gateway A admin")->send("stats", got(&res_.a_stats));
    admin(b_sock_, "gateway B admin")->send("stats", got(&res_.b_stats));
}

void MuxBench::finish() {
    if (phase_ != Phase::Finishing) return;
    res_.stanzas_total = received_;
    res_.sink_stream = sink_auth_;
    // What the gateways say must match what the tool saw.
    const std::uint64_t b_ok = stat_of(res_.b_stats, "mux.peer_adds_ok");
    const std::uint64_t b_failed = stat_of(res_.b_stats, "mux.peer_adds_failed");
    if (res_.adds_ok != o_.adds)
        return fail(fmt::format("{} of {} cert add commands were not accepted by gateway B; first: {}",
                                o_.adds - res_.adds_ok, o_.adds, res_.first_add_error));
    if (b_ok != o_.adds || b_failed != 0)
        return fail(fmt::format("gateway B stats: mux.peer_adds_ok {}, mux.peer_adds_failed {} (expected {} and 0)", b_ok,
                                b_failed, o_.adds));
    for (const auto* st : {&res_.a_stats, &res_.b_stats})
        for (const char* k : {"stanzas.bounced", "stanzas.dropped", "mux.refused_in", "mux.refused_out"})
            if (stat_of(*st, k) != 0)
                return fail(fmt::format("gateway {}: {} = {}", st == &res_.a_stats ? "A" : "B", k, stat_of(*st, k)));
    if (o_.progress)
        std::fprintf(stderr, "[mux] %5.1f s  done: %llu stanzas, %llu adds accepted\n", secs(uv_hrtime() - start_ns_),
                     static_cast<unsigned long long>(received_), static_cast<unsigned long long>(res_.adds_ok));
    phase_ = Phase::Closing;
    closing_ns_ = uv_hrtime();
    close_admins();
    if (gen_) gen_->session().close();
}

void MuxBench::fail(std::string why) {
    if (res_.error.empty()) res_.error = std::move(why);
    if (phase_ >= Phase::Closing) return;
    phase_ = Phase::Closing;
    closing_ns_ = uv_hrtime();
    if (gen_) gen_->shutdown("load test failed");
    gen_ = nullptr;
    for (net::Stream* s : sinks_) s->shutdown("load test failed");
    sinks_.clear();
    for (auto& [v, _] : verifies_) v->shutdown("load test failed");
    verifies_.clear();
    close_admins();
    ga_.terminate();
    gb_.terminate();
    term_sent_ = true;
}

void MuxBench::tick() {
    const std::uint64_t now = uv_hrtime();
    if (phase_ < Phase::Closing) {
        for (GatewayProcess* g : {&ga_, &gb_})
            if (g->poll_exit()) return fail(fmt::format("{} died during the run ({})", g->name(), g->exit_text()));
        if (phase_ <= Phase::Connecting) {
            if (secs(now - start_ns_) > kStartTimeoutS)
                return fail(fmt::format("no multiplexed stream A -> B within {:.0f} s", kStartTimeoutS));
            if (phase_ == Phase::Starting) poll_mux();
            return;
        }
        if (secs(now - last_progress_ns_) > o_.stall_timeout_s)
            return fail(fmt::format("no stanza received for {:.0f} s ({} of {} sent received)", o_.stall_timeout_s,
                                    received_, sent_));
        if (phase_ == Phase::Adds && secs(now - adds_sent_t_) > kAddsTimeoutS)
            return fail(fmt::format("{} of {} cert add commands unanswered after {:.0f} s", o_.adds - adds_answered_,
                                    o_.adds, kAddsTimeoutS));
        if (o_.progress && now - last_report_ns_ >= kSecondNs) {
            const double dt = secs(now - last_report_ns_);
            std::fprintf(stderr, "[mux] %5.1f s  sent %llu  received %llu  (%.0f stanzas/s)  in flight %llu  adds %llu/%llu\n",
                         secs(now - start_ns_), static_cast<unsigned long long>(sent_),
                         static_cast<unsigned long long>(received_),
                         static_cast<double>(received_ - last_report_recv_) / dt,
                         static_cast<unsigned long long>(sent_ - received_),
                         static_cast<unsigned long long>(adds_answered_), static_cast<unsigned long long>(o_.adds));
            last_report_ns_ = now;
            last_report_recv_ = received_;
        }
        return;
    }
    if (phase_ != Phase::Closing) return;
    const double waited = secs(now - closing_ns_);
    if (!term_sent_ && (!gen_ || waited >= kTermAfterS)) {
        ga_.terminate();
        gb_.terminate();
        term_sent_ = true;
    }
    if (!term_sent_) return;
    auto exited = [](GatewayProcess& g) { return g.pid() <= 0 || g.poll_exit(); };
    if (!exited(ga_) || !exited(gb_)) {
        if (waited < kDrainTimeoutS) return;
        for (GatewayProcess* g : {&ga_, &gb_}) {
            if (exited(*g)) continue;
            g->kill_now();
            if (res_.error.empty()) res_.error = fmt::format("{} did not exit within 10 s of SIGTERM", g->name());
            while (!g->poll_exit()) uv_sleep(10);
        }
    }
    res_.a_exit = ga_.exit_text();
    res_.b_exit = gb_.exit_text();
    if (res_.error.empty())
        for (GatewayProcess* g : {&ga_, &gb_})
            if (!g->exited_cleanly())
                res_.error = fmt::format("{} did not shut down cleanly on SIGTERM: {}", g->name(), g->exit_text());
    if ((gen_ || !sinks_.empty() || !verifies_.empty()) && waited < kDrainTimeoutS) return;
    teardown();
}

void MuxBench::teardown() {
    phase_ = Phase::Closed;
    if (gen_) gen_->shutdown("load test over");
    gen_ = nullptr;
    for (net::Stream* s : sinks_) s->shutdown("load test over");
    sinks_.clear();
    for (auto& [v, _] : verifies_) v->shutdown("load test over");
    verifies_.clear();
    close_admins();
    uv_close(reinterpret_cast<uv_handle_t*>(&listener_), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&prepare_), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&check_), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&timer_), nullptr);
    stop_pacer();
}

// The open-loop sender runs from pump(), once per loop iteration; this
// wakes the loop every pace_us (libuv timers have 1 ms resolution, which
// alone would add up to 1 ms of schedule lag to every stanza).
void MuxBench::start_pacer() {
    if (pacer_on_ || pacer_fd_ >= 0) return;
    pacer_fd_ = ::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (pacer_fd_ < 0) return fail(fmt::format("timerfd_create: {}", std::strerror(errno)));
    itimerspec its{};
    its.it_interval.tv_nsec = static_cast<long>(o_.pace_us) * 1000;
    its.it_value = its.it_interval;
    ::timerfd_settime(pacer_fd_, 0, &its, nullptr);
    uv_poll_init(&loop_, &pacer_, pacer_fd_);
    pacer_on_ = true;
    pacer_.data = this;
    uv_poll_start(&pacer_, UV_READABLE, [](uv_poll_t* h, int, int) {
        std::uint64_t n;
        while (::read(static_cast<MuxBench*>(h->data)->pacer_fd_, &n, sizeof n) == sizeof n) {
        }
    });
}

void MuxBench::stop_pacer() {
    if (!pacer_on_) return;
    pacer_on_ = false;
    uv_close(reinterpret_cast<uv_handle_t*>(&pacer_), [](uv_handle_t* h) {
        auto* b = static_cast<MuxBench*>(h->data);
        ::close(b->pacer_fd_);
        b->pacer_fd_ = -1;
    });
}

// --------------------------------------------------------------- figures

void MuxBench::compute() {
    // Stanza k belongs to the phase during which it was due to be sent.
    auto seq_at = [this](std::uint64_t t) {
        return static_cast<std::uint64_t>(std::lower_bound(due_ns_.begin(), due_ns_.end(), t) - due_ns_.begin());
    };
    auto fill = [&](std::uint64_t b, std::uint64_t e, std::vector<std::uint64_t>& lat, std::vector<std::uint64_t>* lag) {
        lat.assign(lat_ns_.begin() + static_cast<std::ptrdiff_t>(b), lat_ns_.begin() + static_cast<std::ptrdiff_t>(e));
        std::sort(lat.begin(), lat.end());
        if (lag) {
            lag->assign(lag_ns_.begin() + static_cast<std::ptrdiff_t>(b), lag_ns_.begin() + static_cast<std::ptrdiff_t>(e));
            std::sort(lag->begin(), lag->end());
        }
    };
    std::vector<std::uint64_t> lat, lag;
    for (int k = 0; k < kMeasured; ++k) {
        const Snapshot& s0 = marks_[static_cast<std::size_t>(k)];
        const Snapshot& s1 = marks_[static_cast<std::size_t>(k) + 1];
        PhaseStats ps;
        ps.name = phase_name(k);
        ps.seconds = secs(s1.t_ns - s0.t_ns);
        const std::uint64_t b = seq_at(s0.t_ns), e = seq_at(s1.t_ns);
        ps.stanzas = e - b;
        fill(b, e, lat, &lag);
        ps.p50_ms = pct_ms(lat, 0.50);
        ps.p99_ms = pct_ms(lat, 0.99);
        ps.p999_ms = pct_ms(lat, 0.999);
        ps.max_ms = lat.empty() ? 0 : static_cast<double>(lat.back()) / 1e6;
        ps.lag_p99_ms = pct_ms(lag, 0.99);
        ps.lag_max_ms = lag.empty() ? 0 : static_cast<double>(lag.back()) / 1e6;
        ps.gw_a_cpu_s = s1.a_cpu - s0.a_cpu;
        ps.gw_b_cpu_s = s1.b_cpu - s0.b_cpu;
        ps.gw_a_loop_s = s1.a_loop - s0.a_loop;
        ps.gw_b_loop_s = s1.b_loop - s0.b_loop;
        ps.tool_cpu_s = s1.tool_cpu - s0.tool_cpu;
        ps.other_cpu_s = std::max(0.0, (s1.machine - s0.machine) - ps.gw_a_cpu_s - ps.gw_b_cpu_s - ps.tool_cpu_s);
        ps.max_inflight = max_inflight_[static_cast<std::size_t>(k)];
        ps.end_inflight = s1.inflight;
        res_.phases.push_back(std::move(ps));
    }
    // Busy, not saturated: after the adds the backlog must be back to what
    // a quarter of a second of traffic holds at most.
    if (res_.rate > 0 && static_cast<double>(marks_[kMeasured].inflight) > res_.rate / 4) res_.saturated = true;
    if (res_.phases[0].p99_ms > 0) {
        res_.ratio_p99 = res_.phases[1].p99_ms / res_.phases[0].p99_ms;
        res_.ratio_p99_after = res_.phases[2].p99_ms / res_.phases[0].p99_ms;
    }
    if (res_.add_phase_s > 0) res_.adds_per_s = static_cast<double>(res_.adds_ok) / res_.add_phase_s;
    if (!add_reply_ns_.empty()) {
        res_.add_first_ms = static_cast<double>(add_reply_ns_.front() - adds_sent_t_) / 1e6;
        std::vector<std::uint64_t> gaps;
        for (std::size_t i = 1; i < add_reply_ns_.size(); ++i) gaps.push_back(add_reply_ns_[i] - add_reply_ns_[i - 1]);
        std::sort(gaps.begin(), gaps.end());
        res_.add_gap_p50_ms = pct_ms(gaps, 0.5);
        res_.add_gap_p99_ms = pct_ms(gaps, 0.99);
        res_.add_gap_max_ms = gaps.empty() ? 0 : static_cast<double>(gaps.back()) / 1e6;
    }
    // Timeline by due time, from the start of the idle phase.
    const std::uint64_t t0 = marks_[0].t_ns, t1 = marks_[kMeasured].t_ns;
    const auto step = static_cast<std::uint64_t>(o_.bucket_s * 1e9);
    for (std::uint64_t t = t0; step > 0 && t < t1; t += step) {
        Bucket bk;
        bk.t_s = secs(t - t0);
        const std::uint64_t mid = t + step / 2; // a bucket is named after the phase at its middle
        bk.phase = mid < marks_[1].t_ns ? "idle" : mid < marks_[2].t_ns ? "adds" : "after";
        const std::uint64_t b = seq_at(t), e = seq_at(std::min(t + step, t1));
        bk.stanzas = e - b;
        fill(b, e, lat, nullptr);
        bk.p99_ms = pct_ms(lat, 0.99);
        bk.max_ms = lat.empty() ? 0 : static_cast<double>(lat.back()) / 1e6;
        for (std::uint64_t r : add_reply_ns_)
            if (r >= t && r < t + step) ++bk.adds_answered;
        res_.timeline.push_back(std::move(bk));
    }
}

} // namespace s2smux::load
