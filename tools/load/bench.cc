#include "tools/load/bench.h"

#include "common/log.h"
#include "tools/load/haproxy_process.h"
#include "tools/load/loop_util.h"
#include "tools/load/proc_util.h"

#include <fmt/format.h>
#include <sys/resource.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace s2smux::load {

namespace {

constexpr std::uint64_t kTickMs = 100;
constexpr std::uint64_t kSecondNs = 1000000000ULL;
constexpr double kDrainTimeoutS = 10;  // for closing streams and s2smuxd's exit after SIGTERM
constexpr double kTermAfterS = 1;      // SIGTERM even if the generator's stream is still closing

} // namespace

const char* to_string(Mode m) {
    switch (m) {
    case Mode::Direct: return "direct";
    case Mode::Gateway: return "gateway";
    case Mode::Haproxy: return "haproxy";
    }
    return "?";
}

Bench::Bench(const Env& env, BenchOptions opts)
    : LoopDriver(env.certs, env.trust, env.keys), env_(env), o_(std::move(opts)) {}

Bench::~Bench() = default;

// ------------------------------------------------------------- configs

xmpp::SessionConfig Bench::generator_config() const {
    xmpp::SessionConfig c;
    c.role = xmpp::Role::Initiator;
    c.from = "a.test";
    c.to = "b.test";
    c.want_bidi = false;
    c.auth_timeout_ms = 10000;
    if (o_.mode == Mode::Gateway) {
        // Like the local server on the trusted inner side (the daemon's
        // UpstreamOut settings): dialback, certificate not verified.
        c.tls_policy = o_.inner_tls ? xmpp::TlsPolicy::Optional : xmpp::TlsPolicy::Disabled;
        c.verify_peer = false;
        c.use_external = false;
    } else {
        // Must satisfy the sink exactly as s2smuxd's outer-out does. Through
        // haproxy the same, over direct TLS (the sink sees haproxy's a.test
        // client certificate).
        c.tls_policy = xmpp::TlsPolicy::Required;
        c.verify_peer = true;
        c.use_dialback = false;
    }
    return c;
}

xmpp::SessionConfig Bench::sink_config() const {
    // A remote server b.test that accepts only TLS + SASL EXTERNAL.
    xmpp::SessionConfig c;
    c.role = xmpp::Role::Receiver;
    c.tls_policy = xmpp::TlsPolicy::Required;
    c.tls_possible = true;
    c.offer_dialback = false;
    c.offer_bidi = false;
    c.auth_timeout_ms = 10000;
    return c;
}

// ----------------------------------------------------------------- run

BenchResult Bench::run() {
    res_.hop = has_hop();
    lat_ns_.reserve(o_.stanzas);

    auto port = listen_loopback<Bench, &Bench::on_accept>(&loop_, listener_, this, 64);
    if (!port) {
        res_.error = fmt::format("sink listener: {}", port.error());
        abandon_loop(&loop_, listener_);
        return res_;
    }
    sink_port_ = *port;

    std::uint16_t target_port = sink_port_;
    if (has_hop()) {
        Result<void> started;
        if (o_.mode == Mode::Gateway) {
            started = gw_.start(GatewayParams{env_.s2smuxd, env_.certs_dir, env_.work_dir, sink_port_});
            target_port = gw_.inner_port();
        } else if (auto port = start_haproxy(gw_, HaproxyParams{env_.haproxy, env_.certs_dir, env_.work_dir,
                                                                 sink_port_})) {
            target_port = *port;
        } else {
            started = make_error(port.error());
        }
        if (!started) {
            res_.error = started.error();
            res_.gateway_log = gw_.log_tail();
            abandon_loop(&loop_, listener_);
            return res_;
        }
    }

    start_driver<Bench, &Bench::pump, &Bench::tick>(&loop_, prepare_, check_, timer_, this, kTickMs);

    start_ns_ = last_progress_ns_ = last_report_ns_ = uv_hrtime();
    route::Target t;
    t.address = "127.0.0.1";
    t.port = target_port;
    t.source = o_.mode == Mode::Gateway ? "s2smuxd inner" : o_.mode == Mode::Haproxy ? "haproxy" : "sink";
    // A TLS-terminating TCP proxy cannot pass STARTTLS: direct TLS (XEP-0368).
    t.direct_tls = o_.mode == Mode::Haproxy;
    // UpstreamOut presents no client certificate; OuterOut presents a.test's (for EXTERNAL).
    auto kind = o_.mode == Mode::Gateway ? net::StreamKind::UpstreamOut : net::StreamKind::OuterOut;
    gen_ = net::Stream::connect(ctx_, kind, generator_config(), {t}, next_id_++, 10000);

    run_loop(res_.error, true);
    res_.ok = res_.error.empty();
    if (!res_.ok && has_hop()) res_.gateway_log = gw_.log_tail();
    return res_;
}

void Bench::on_accept() {
    if (phase_ >= Phase::Draining) return;
    net::Stream* s = net::Stream::accept(ctx_, reinterpret_cast<uv_stream_t*>(&listener_), net::StreamKind::OuterIn,
                                         o_.mode == Mode::Haproxy, sink_config(), next_id_++);
    if (s) sinks_.push_back(s);
}

// ------------------------------------------------------------- owner

bool Bench::stream_hosts(net::Stream& s, std::string_view domain) {
    return s.kind() == net::StreamKind::OuterIn && domain == "b.test";
}

bool Bench::stream_has_cert(std::string_view domain) { return env_.certs->find(domain) != nullptr; }

void Bench::stream_authenticated(net::Stream& s, std::string_view from, std::string_view to, bool dir_in,
                                 xmpp::AuthMethod m) {
    if (s.kind() == net::StreamKind::OuterIn) {
        if (dir_in) sink_auth_ = xmpp::to_string(m);
        return;
    }
    if (&s != gen_ || dir_in || from != "a.test" || to != "b.test" || phase_ != Phase::Connecting) return;
    if (o_.warmup > 0) phase_ = Phase::Warmup;
    else begin_measure();
}

void Bench::stream_stanza(net::Stream& s, const xml::Node& el, const xmpp::StanzaRoute& r) {
    if (phase_ >= Phase::Draining) return;
    if (s.kind() != net::StreamKind::OuterIn) {
        fail(fmt::format("unexpected <{}/> from {} to {} on the generator's stream (a bounce?)", el.name,
                         r.head.from, r.head.to));
        return;
    }
    Stamp got;
    if (std::string err = check_in_order(el, r.from_domain, r.to_domain, *env_.pool, received_, got); !err.empty()) {
        fail(err);
        return;
    }
    std::uint64_t now = uv_hrtime();
    if (received_ >= o_.warmup) lat_ns_.push_back(now > got.ts_ns ? now - got.ts_ns : 0);
    ++received_;
    last_progress_ns_ = now;
    if (received_ == o_.warmup && phase_ == Phase::Warmup) begin_measure();
    if (received_ == o_.warmup + o_.stanzas) finish_measure();
}

void Bench::stream_closed(net::Stream& s, const xmpp::CloseInfo& info) {
    bool was_gen = &s == gen_;
    if (was_gen) gen_ = nullptr;
    std::erase(sinks_, &s);
    if (phase_ >= Phase::Draining) return;
    std::string why = fmt::format("{} stream closed during the run: {}", was_gen ? "generator" : "sink", info.reason);
    if (has_hop()) {
        // A dead daemon resets its sockets just before it can be reaped: name the real cause.
        for (int i = 0; i < 20 && !gw_.poll_exit(); ++i) uv_sleep(10);
        if (gw_.poll_exit()) why = fmt::format("{} died during the run ({}); {}", gw_.name(), gw_.exit_text(), why);
    }
    fail(std::move(why));
}

// --------------------------------------------------------------- flow

void Bench::pump() {
    top_up();
    flush_dirty(ctx_);
}

void Bench::top_up() {
    if ((phase_ != Phase::Warmup && phase_ != Phase::Measure) || !gen_) return;
    const std::uint64_t limit = phase_ == Phase::Warmup ? o_.warmup : o_.warmup + o_.stanzas;
    xmpp::Session& sess = gen_->session();
    while (sent_ < limit && sent_ - received_ < o_.window) {
        scratch_.clear();
        write_stanza(scratch_, *env_.pool, sent_, uv_hrtime());
        sess.send_raw(scratch_);
        if (sent_ >= o_.warmup) bytes_ += scratch_.size();
        ++sent_;
    }
}

std::uint64_t Bench::sink_bytes_in() const {
    std::uint64_t n = 0;
    for (const net::Stream* s : sinks_) n += s->stats().bytes_in;
    return n;
}

void Bench::begin_measure() {
    phase_ = Phase::Measure;
    tool_cpu0_ = self_cpu_s();
    machine_cpu0_ = machine_busy_cpu_s();
    if (has_hop()) {
        auto st = read_proc_stats(gw_.pid());
        if (!st) return fail(st.error());
        gw_cpu0_ = st->cpu_s;
    }
    wire0_ = sink_bytes_in();
    t0_ns_ = uv_hrtime();
}

void Bench::finish_measure() {
    t1_ns_ = uv_hrtime();
    res_.tool_cpu_s = self_cpu_s() - tool_cpu0_;
    const double machine = machine_busy_cpu_s() - machine_cpu0_;
    res_.wire_bytes = sink_bytes_in() - wire0_;
    if (has_hop()) {
        auto st = read_proc_stats(gw_.pid());
        if (!st) return fail(st.error());
        res_.gw_cpu_s = st->cpu_s - gw_cpu0_;
        res_.gw_end = *st;
    }
    // Tick granularity (10 ms) makes this approximate; it only flags contended runs.
    res_.other_cpu_s = std::max(0.0, machine - res_.tool_cpu_s - res_.gw_cpu_s);
    res_.stanzas = received_ - o_.warmup;
    res_.bytes = bytes_;
    res_.seconds = static_cast<double>(t1_ns_ - t0_ns_) / 1e9;
    std::sort(lat_ns_.begin(), lat_ns_.end());
    res_.p50_ms = percentile_ms(lat_ns_, 0.50);
    res_.p99_ms = percentile_ms(lat_ns_, 0.99);
    res_.p999_ms = percentile_ms(lat_ns_, 0.999);
    res_.max_ms = lat_ns_.empty() ? 0 : static_cast<double>(lat_ns_.back()) / 1e6;
    if (gen_) {
        const auto& tls = gen_->session().tls();
        res_.gen_tls = tls.active ? fmt::format("{} {}", tls.version, tls.cipher) : "none";
    }
    if (!sinks_.empty()) {
        const auto& tls = sinks_.front()->session().tls();
        res_.sink_tls = fmt::format("{} {}, {}", tls.version, tls.cipher, sink_auth_);
    }
    if (o_.progress)
        std::fprintf(stderr, "[%s] done: %llu stanzas in %.2f s\n", to_string(o_.mode),
                     static_cast<unsigned long long>(res_.stanzas), res_.seconds);
    // Close gracefully: generator first; the hop gets its stop signal from tick().
    phase_ = Phase::Draining;
    drain_start_ns_ = uv_hrtime();
    if (gen_) gen_->session().close();
}

void Bench::fail(std::string why) {
    if (res_.error.empty()) res_.error = std::move(why);
    if (phase_ >= Phase::Draining) return;
    phase_ = Phase::Draining;
    drain_start_ns_ = uv_hrtime();
    // Nothing more to learn from these streams; the owner is not called again.
    if (gen_) gen_->shutdown("load test failed");
    gen_ = nullptr;
    for (net::Stream* s : sinks_) s->shutdown("load test failed");
    sinks_.clear();
    gw_.terminate();
    term_sent_ = true;
}

void Bench::tick() {
    std::uint64_t now = uv_hrtime();
    if (has_hop() && gw_.poll_exit() && phase_ < Phase::Draining) {
        fail(fmt::format("{} died during the run ({})", gw_.name(), gw_.exit_text()));
        return;
    }
    if (phase_ < Phase::Draining) {
        if (now - last_progress_ns_ > static_cast<std::uint64_t>(o_.stall_timeout_s * 1e9)) {
            fail(fmt::format("no progress for {:.0f} s ({} of {} stanzas received, phase {})", o_.stall_timeout_s,
                             received_, o_.warmup + o_.stanzas,
                             phase_ == Phase::Connecting ? "connecting" : phase_ == Phase::Warmup ? "warm-up"
                                                                                                  : "measure"));
            return;
        }
        if (o_.progress && now - last_report_ns_ >= kSecondNs) {
            double dt = static_cast<double>(now - last_report_ns_) / 1e9;
            std::fprintf(stderr, "[%s] %5.1f s  sent %llu  received %llu  (%.0f stanzas/s)\n", to_string(o_.mode),
                         static_cast<double>(now - start_ns_) / 1e9, static_cast<unsigned long long>(sent_),
                         static_cast<unsigned long long>(received_),
                         static_cast<double>(received_ - last_report_recv_) / dt);
            last_report_ns_ = now;
            last_report_recv_ = received_;
        }
        return;
    }
    if (phase_ != Phase::Draining) return;
    const double waited = static_cast<double>(now - drain_start_ns_) / 1e9;
    if (has_hop()) {
        if (!term_sent_ && (!gen_ || waited >= kTermAfterS)) {
            gw_.terminate();
            term_sent_ = true;
        }
        if (!gw_.poll_exit()) {
            if (waited < kDrainTimeoutS) return;
            gw_.kill_now();
            if (res_.error.empty()) res_.error = fmt::format("{} did not exit within 10 s of its stop signal", gw_.name());
            while (!gw_.poll_exit()) uv_sleep(10);
        }
        res_.gw_exit = gw_.exit_text();
        // A failure already explains itself; after a clean run, an unclean exit is a finding.
        if (res_.error.empty() && !gw_.exited_cleanly())
            res_.error = fmt::format("{} did not shut down cleanly on its stop signal: {}", gw_.name(), res_.gw_exit);
    }
    if ((gen_ || !sinks_.empty()) && waited < kDrainTimeoutS) return;
    teardown();
}

void Bench::teardown() {
    phase_ = Phase::Closed;
    if (gen_) gen_->shutdown("load test over");
    gen_ = nullptr;
    for (net::Stream* s : sinks_) s->shutdown("load test over");
    sinks_.clear();
    uv_close(reinterpret_cast<uv_handle_t*>(&listener_), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&prepare_), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&check_), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&timer_), nullptr);
}

} // namespace s2smux::load
