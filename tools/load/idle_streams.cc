#include "tools/load/idle_streams.h"

#include "tools/load/loop_util.h"
#include "tools/load/proc_util.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdio>

namespace s2smux::load {

namespace {
constexpr std::uint64_t kTickMs = 50;
constexpr double kExitTimeoutS = 10;
double secs(std::uint64_t ns) { return static_cast<double>(ns) / 1e9; }
} // namespace

IdleStreams::IdleStreams(const Env& env, IdleOptions opts)
    : LoopDriver(env.certs, env.trust, env.keys), env_(env), o_(opts) {}

IdleStreams::~IdleStreams() = default;

IdleResult IdleStreams::run() {
    GatewayParams p{env_.s2smuxd, env_.certs_dir, env_.work_dir, 0};
    auto port = free_loopback_port(); // b.test's route: never used
    if (port) p.sink_port = *port;
    if (auto r = gw_.start(p); !r) {
        res_.error = r.error();
        uv_loop_close(&loop_);
        return res_;
    }
    uv_sleep(static_cast<unsigned>(o_.settle_s * 1000));
    res_.rss0_kb = rss_kb(gw_.pid());
    for (std::uint64_t i = 0; i < o_.streams; ++i)
        streams_.push_back(connect_local_server(ctx_, "a.test", "b.test", gw_.inner_port(), o_.inner_tls, i + 1,
                                                static_cast<TimeMs>(o_.timeout_s * 1000)));
    uv_check_init(&loop_, &check_);
    check_.data = this;
    uv_check_start(&check_, [](uv_check_t* h) { flush_dirty(static_cast<IdleStreams*>(h->data)->ctx_); });
    uv_timer_init(&loop_, &timer_);
    timer_.data = this;
    uv_timer_start(&timer_, [](uv_timer_t* h) { static_cast<IdleStreams*>(h->data)->tick(); }, kTickMs, kTickMs);
    t0_ = uv_hrtime();
    run_loop(res_.error, false);
    res_.gw_exit = gw_.exit_text();
    res_.ok = res_.error.empty();
    return res_;
}

void IdleStreams::stream_authenticated(net::Stream& s, std::string_view, std::string_view, bool dir_in,
                                       xmpp::AuthMethod) {
    if (dir_in) return;
    if (authenticated_++ == 0)
        res_.tls = s.session().tls_active() ? s.session().tls().version + " " + s.session().tls().cipher : "plaintext";
    if (authenticated_ == o_.streams) t_all_ = uv_hrtime();
}

void IdleStreams::stream_stanza(net::Stream&, const xml::Node& el, const xmpp::StanzaRoute&) {
    fail(fmt::format("unexpected <{}/> on an idle stream", el.name));
}

void IdleStreams::stream_closed(net::Stream& s, const xmpp::CloseInfo& info) {
    std::erase(streams_, &s);
    if (!closing_) fail(fmt::format("an idle stream closed: {}", info.reason));
}

void IdleStreams::fail(std::string why) {
    if (res_.error.empty()) res_.error = std::move(why);
    close_all();
}

void IdleStreams::close_all() {
    if (closing_) return;
    closing_ = true;
    t_close_ = uv_hrtime();
    for (net::Stream* s : std::vector<net::Stream*>(streams_)) s->session().close();
}

void IdleStreams::tick() {
    const std::uint64_t now = uv_hrtime();
    if (!closing_) {
        if (gw_.poll_exit()) return fail(fmt::format("s2smuxd died ({})", gw_.exit_text()));
        if (t_all_ == 0) {
            if (secs(now - t0_) > o_.timeout_s)
                fail(fmt::format("{} of {} idle streams authenticated after {:.0f} s", authenticated_, o_.streams,
                                 o_.timeout_s));
            return;
        }
        if (secs(now - t_all_) < o_.settle_s) return;
        res_.rss1_kb = rss_kb(gw_.pid());
        res_.streams = streams_.size();
        res_.established = count_established(gw_.inner_port());
        if (res_.streams > 0)
            res_.bytes_per_stream =
                (static_cast<double>(res_.rss1_kb) - static_cast<double>(res_.rss0_kb)) * 1024 / double(res_.streams);
        if (o_.progress)
            std::fprintf(stderr, "[idle] %llu streams authenticated (%s): RSS %llu -> %llu KiB\n",
                         static_cast<unsigned long long>(res_.streams), res_.tls.c_str(),
                         static_cast<unsigned long long>(res_.rss0_kb), static_cast<unsigned long long>(res_.rss1_kb));
        close_all();
        return;
    }
    const double waited = secs(now - t_close_);
    if (!term_sent_ && (streams_.empty() || waited > 2)) {
        for (net::Stream* s : std::vector<net::Stream*>(streams_)) s->shutdown("benchmark over");
        gw_.terminate();
        term_sent_ = true;
    }
    if (!term_sent_) return;
    if (!gw_.poll_exit()) {
        if (waited < kExitTimeoutS) return;
        gw_.kill_now();
        gw_.poll_exit();
        if (res_.error.empty()) res_.error = "s2smuxd did not exit after SIGTERM";
    } else if (!gw_.exited_cleanly() && res_.error.empty()) {
        res_.error = fmt::format("s2smuxd: {}", gw_.exit_text());
    }
    uv_close(reinterpret_cast<uv_handle_t*>(&timer_), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&check_), nullptr);
}


} // namespace s2smux::load
