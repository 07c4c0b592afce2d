#include "tools/load/fault_run.h"

#include "tools/load/payload.h"
#include "tools/load/loop_util.h"
#include "tools/load/proc_util.h"
#include "xmpp/ns.h"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <ctime>

namespace s2smux::load {

namespace {

constexpr std::uint64_t kTickMs = 100;
constexpr std::uint64_t kSecondNs = 1000000000ULL;
constexpr double kStartTimeoutS = 30;  // mux stream up, generator authenticated
constexpr double kStatsTimeoutS = 5;
constexpr double kTermAfterS = 1;      // SIGTERM even if streams are still closing
constexpr double kExitTimeoutS = 10;   // gateways exiting after SIGTERM
constexpr std::string_view kServerNs = "jabber:server";

double secs(std::uint64_t ns) { return static_cast<double>(ns) / 1e9; }


// How long each fault lasts before it is healed.
double fault_duration_s(Fault f) {
    switch (f) {
    case Fault::Kill9: return 1;        // restart after ~1 s
    case Fault::Blackhole: return 5;    // longer than keepalive 1 s + dead_peer_timeout 3 s
    case Fault::SlowReader: return 5;
    case Fault::LocalRestart: return 2;
    case Fault::DnsFail: return 0;      // lasts the whole run: the name never resolves
    case Fault::CertExpiry: return 0;   // for good: the certificate stays expired
    }
    return 0;
}

const char* method_of(Fault f) {
    switch (f) {
    case Fault::Kill9: return "SIGKILL of gateway B, restarted with the same config and ports after 1 s";
    case Fault::Blackhole:
        return "SIGSTOP of gateway B for 5 s, then SIGCONT (connections stay up, nothing comes back: a blackhole "
               "without FIN on loopback, no root needed); gateway A: [limits] keepalive = 1, dead_peer_timeout = 3";
    case Fault::SlowReader:
        return "the sink stops reading gateway B's upstream stream for 5 s (a relay in front of it stops reading; "
               "B's kernel buffers fill)";
    case Fault::LocalRestart:
        return "the sink (B's local server) closes its streams (</stream:stream>) and its listener, listens again "
               "after 2 s";
    case Fault::DnsFail:
        return "gateway A has no [[route]] for b.test and [dns] nameserver = a closed 127.0.0.1 port: b.test never "
               "resolves";
    case Fault::CertExpiry:
        return "gateway B's b.test certificate (the mux stream's TLS certificate) expires mid-stream";
    }
    return "";
}

bool parse_seq(std::string_view id, std::uint64_t& seq) {
    if (id.size() < 2 || id[0] != 'l') return false;
    auto r = std::from_chars(id.data() + 1, id.data() + id.size(), seq);
    return r.ec == std::errc() && r.ptr == id.data() + id.size();
}

// The gateway's accounting (s2smuxctl stats): every stanza accepted, or
// taken back from a broken stream (requeued), was sent (routed: itself or
// its bounce), dropped (logged), refused, or is still queued.
std::string check_invariant(const std::map<std::string, std::uint64_t>& st) {
    if (st.empty()) return "n/a (no stats)";
    const char* parts[] = {"stanzas.accepted", "stanzas.requeued", "stanzas.routed", "stanzas.dropped",
                           "mux.refused_in", "stanzas.queued_now"};
    for (const char* k : parts)
        if (!st.count(k)) return fmt::format("n/a (no {} counter)", k);
    const std::uint64_t in = stat_of(st, "stanzas.accepted") + stat_of(st, "stanzas.requeued");
    const std::uint64_t out = stat_of(st, "stanzas.routed") + stat_of(st, "stanzas.dropped") +
                              stat_of(st, "mux.refused_in") + stat_of(st, "stanzas.queued_now");
    if (in == out)
        return fmt::format("OK (accepted + requeued {} = routed + dropped + refused + queued {})", in, out);
    return fmt::format("VIOLATED: accepted {} + requeued {} != routed {} + dropped {} + refused {} + queued {}",
                       stat_of(st, "stanzas.accepted"), stat_of(st, "stanzas.requeued"), stat_of(st, "stanzas.routed"),
                       stat_of(st, "stanzas.dropped"), stat_of(st, "mux.refused_in"),
                       stat_of(st, "stanzas.queued_now"));
}

} // namespace

const char* to_string(Fault f) {
    switch (f) {
    case Fault::Kill9: return "kill9";
    case Fault::Blackhole: return "blackhole";
    case Fault::SlowReader: return "slow-reader";
    case Fault::LocalRestart: return "local-restart";
    case Fault::DnsFail: return "dns-fail";
    case Fault::CertExpiry: return "cert-expiry";
    }
    return "?";
}

std::optional<Fault> parse_fault(std::string_view s) {
    for (Fault f : kAllFaults)
        if (s == to_string(f)) return f;
    return std::nullopt;
}

FaultRun::FaultRun(const Env& env, const FaultOptions& opts, Fault fault)
    : LoopDriver(&certs_, &trust_, env.keys), env_(env), o_(opts), fault_(fault), relay_(&loop_) {
    res_.fault = fault;
    res_.method = method_of(fault);
}

FaultRun::~FaultRun() = default;

void FaultRun::log(const std::string& line) const {
    if (o_.progress)
        std::fprintf(stderr, "[faults:%s] %5.1f s  %s\n", to_string(fault_), secs(uv_hrtime() - start_ns_),
                     line.c_str());
}

// ----------------------------------------------------------------- setup

std::string FaultRun::prepare_certs() {
    certs_dir_ = dir_ + "/certs";
    if (::mkdir(certs_dir_.c_str(), 0700) != 0 && errno != EEXIST)
        return fmt::format("mkdir {}: {}", certs_dir_, std::strerror(errno));
    if (::access(o_.gencerts.c_str(), X_OK) != 0)
        return fmt::format("s2smux-gencerts not found or not executable at {} (use --gencerts; it is built "
                           "with the tests, -Dtests=enabled)",
                           o_.gencerts);
    std::vector<std::string> argv = {o_.gencerts, "--out", certs_dir_, "--count", "1", "--also", "a.test"};
    if (fault_ == Fault::CertExpiry) {
        argv.insert(argv.end(), {"--also-short", "b.test", std::to_string(o_.cert_life_s)});
    } else {
        argv.insert(argv.end(), {"--also", "b.test"});
    }
    if (std::string err = run_program(argv, dir_ + "/gencerts.log"); !err.empty()) return err;
    for (const char* d : {"a.test", "b.test"}) {
        auto lc = tls::load_cert_files(certs_dir_ + "/" + d + ".pem", certs_dir_ + "/" + d + ".key");
        if (!lc) return fmt::format("generated certificate {}: {}", d, lc.error());
        if (std::string_view(d) == "b.test") cert_not_after_ = (*lc)->identity.not_after;
        certs_.add(std::move(*lc));
    }
    if (auto r = trust_.add_ca_file(certs_dir_ + "/ca.pem"); !r) return fmt::format("generated CA: {}", r.error());
    return {};
}

std::string FaultRun::listen(uv_tcp_t& l, std::uint16_t port, std::uint16_t* bound) {
    uv_tcp_init(&loop_, &l);
    l.data = this;
    sockaddr_in addr{};
    uv_ip4_addr("127.0.0.1", port, &addr);
    int rc = uv_tcp_bind(&l, reinterpret_cast<sockaddr*>(&addr), 0);
    if (rc == 0)
        rc = uv_listen(reinterpret_cast<uv_stream_t*>(&l), 64, [](uv_stream_t* srv, int status) {
            if (status == 0) static_cast<FaultRun*>(srv->data)->on_accept(reinterpret_cast<uv_tcp_t*>(srv));
        });
    int len = sizeof addr;
    if (rc == 0) rc = uv_tcp_getsockname(&l, reinterpret_cast<sockaddr*>(&addr), &len);
    if (rc != 0) return fmt::format("listen on 127.0.0.1:{}: {}", port, uv_strerror(rc));
    if (bound) *bound = ntohs(addr.sin_port);
    return {};
}

std::string FaultRun::write_configs() {
    if (std::string e = gws_.prepare(dir_, ""); !e.empty()) return e;
    const std::uint16_t dead_dns = gws_.unused; // nobody listens there
    const std::string ca = certs_dir_ + "/ca.pem";
    // Queued stanzas bounce within the settle time; SIGTERM is quick.
    std::string limits = fmt::format("[limits]\nqueue_timeout = {}\nconnect_timeout = 5\ndrain_timeout = 5\n",
                                     o_.queue_timeout_s);
    if (fault_ == Fault::Blackhole) limits += "keepalive = 1\ndead_peer_timeout = 3\n";
    limits += "\n";
    const std::string log = fmt::format("[log]\nlevel = \"{}\"\n", o_.gw_log_level);
    const std::uint16_t b_upstream = fault_ == Fault::SlowReader ? relay_.port() : sink_port_;

    std::string& b = gws_.b_conf;
    b = fmt::format("# generated by s2smux-load --topology faults ({}): gateway B\n", to_string(fault_));
    b += gws_.config_head(true, {"b.test"}, b_upstream, ca);
    b += GatewayPair::cert_section(certs_dir_ + "/b.test") + limits + log;

    // A's upstream: a.test's local server, where the bounces go.
    std::string& a = gws_.a_conf;
    a = fmt::format("# generated by s2smux-load --topology faults ({}): gateway A\n", to_string(fault_));
    a += gws_.config_head(false, {"a.test"}, bounce_port_, ca);
    a += GatewayPair::cert_section(certs_dir_ + "/a.test");
    if (fault_ == Fault::DnsFail)
        a += fmt::format("[dns]\nnameserver = \"127.0.0.1:{}\"\n\n", dead_dns);
    else
        a += gws_.route_to_b("b.test", true);
    a += limits + log;
    return {};
}

std::string FaultRun::setup() {
    dir_ = env_.work_dir + "/" + to_string(fault_);
    if (::mkdir(dir_.c_str(), 0700) != 0 && errno != EEXIST)
        return fmt::format("mkdir {}: {}", dir_, std::strerror(errno));
    if (std::string e = prepare_certs(); !e.empty()) return e;
    if (std::string e = listen(bounce_l_, 0, &bounce_port_); !e.empty()) return "a.test server: " + e;
    if (std::string e = listen(sink_l_, 0, &sink_port_); !e.empty()) return "sink: " + e;
    if (fault_ == Fault::SlowReader)
        if (std::string e = relay_.listen(sink_port_); !e.empty()) return e;
    if (std::string e = write_configs(); !e.empty()) return e;
    return gws_.start(env_.s2smuxd, dir_, "gw-", 5000);
}

FaultResult FaultRun::run() {
    start_ns_ = last_report_ns_ = uv_hrtime();
    sink_listening_ = true; // the handles are initialized by setup() (closed by teardown())
    uv_prepare_init(&loop_, &prepare_);
    uv_check_init(&loop_, &check_);
    uv_timer_init(&loop_, &timer_);
    uv_timer_init(&loop_, &pace_);
    prepare_.data = check_.data = timer_.data = pace_.data = this;
    if (std::string err = setup(); !err.empty()) {
        res_.error = err;
        phase_ = Phase::Closing;
        gws_.kill_now();
        teardown();
    } else {
        log(fmt::format("gateways up (A pid {}, B pid {}); {}", gws_.a.pid(), gws_.b.pid(), res_.method));
        delivered_.reserve(1 << 20);
        bounced_.reserve(1 << 20);
        uv_prepare_start(&prepare_, [](uv_prepare_t* h) { static_cast<FaultRun*>(h->data)->pump(); });
        uv_check_start(&check_, [](uv_check_t* h) { static_cast<FaultRun*>(h->data)->pump(); });
        uv_timer_start(&timer_, [](uv_timer_t* h) { static_cast<FaultRun*>(h->data)->tick(); }, kTickMs, kTickMs);
        uv_timer_start(&pace_, [](uv_timer_t*) {}, 1, 1);
        res_.a_start_kb = res_.a_peak_kb = rss_kb(gws_.a.pid());
        res_.b_start_kb = res_.b_peak_kb = rss_kb(gws_.b.pid());
        if (fault_ == Fault::DnsFail) start_generator(); // no mux stream will ever come up
        else poller_ = gws_.admin(gws_.a_sock, [this](const std::string& e) {
            if (phase_ < Phase::Stats) fail("gateway A admin: " + e);
        });
    }
    run_loop(res_.error, true);
    // The account, per stanza.
    res_.sent = sent_;
    for (std::uint64_t i = 0; i < sent_; ++i) {
        const bool d = delivered_[i] > 0, b = bounced_[i] > 0;
        res_.delivered += d;
        res_.bounced += b;
        res_.dup += delivered_[i] > 1;
        res_.dup_bounces += bounced_[i] > 1;
        res_.both += d && b;
        res_.lost += !d && !b;
    }
    res_.a_invariant = check_invariant(res_.a_stats);
    res_.b_invariant = check_invariant(res_.b_stats);
    if (!res_.error.empty())
        res_.log_tail = gws_.log_tails();
    return res_;
}

void FaultRun::poll_mux() {
    if (poll_inflight_ || !poller_ || !poller_->usable()) return;
    poll_inflight_ = true;
    poller_->send("stats", [this](const admin::Reply& r, std::uint64_t) {
        poll_inflight_ = false;
        if (phase_ != Phase::Starting) return;
        if (!r.error.empty()) return fail("gateway A stats: " + r.error);
        if (stat_of(parse_stats(r), "streams.mux") >= 1) {
            poller_->close();
            poller_ = nullptr;
            log("mux stream A -> B up");
            start_generator();
        }
    });
}

void FaultRun::start_generator() {
    phase_ = Phase::Connecting;
    // The local server a.test on gateway A's inner side (as in the mux topology).
    gen_ = connect_local_server(ctx_, "a.test", "b.test", gws_.a_inner, true, next_id_++);
}

void FaultRun::on_accept(uv_tcp_t* l) {
    net::Stream* s = accept_upstream(ctx_, *l, true, next_id_++);
    if (!s) return;
    const bool sink = l == &sink_l_;
    is_sink_[s] = sink;
    (sink ? sinks_ : bouncers_).push_back(s);
    if (sink) ++res_.sink_streams;
}

// ----------------------------------------------------------------- owner

bool FaultRun::stream_hosts(net::Stream& s, std::string_view domain) {
    auto it = is_sink_.find(&s);
    if (it == is_sink_.end()) return false;
    return domain == (it->second ? "b.test" : "a.test");
}

bool FaultRun::stream_has_cert(std::string_view domain) { return certs_.find(domain) != nullptr; }

xmpp::DialbackVerdict FaultRun::stream_dialback_request(net::Stream& s, const xmpp::DialbackRequest& r) {
    auto it = is_sink_.find(&s);
    if (it == is_sink_.end()) return xmpp::DialbackVerdict::Invalid;
    // Each local server trusts its own gateway (no db:verify round trip).
    const bool ok = it->second ? r.from == "a.test" && r.to == "b.test" : r.from == "b.test" && r.to == "a.test";
    return ok ? xmpp::DialbackVerdict::Valid : xmpp::DialbackVerdict::Invalid;
}

void FaultRun::stream_authenticated(net::Stream& s, std::string_view from, std::string_view to, bool dir_in,
                                    xmpp::AuthMethod) {
    if (&s != gen_ || dir_in || from != "a.test" || to != "b.test" || phase_ != Phase::Connecting) return;
    phase_ = Phase::Pre;
    phase_ns_ = last_account_ns_ = uv_hrtime();
    log(fmt::format("generator authenticated; closed loop, window {}", o_.window));
}

void FaultRun::stream_stanza(net::Stream& s, const xml::Node& el, const xmpp::StanzaRoute& r) {
    auto it = is_sink_.find(&s);
    std::string bad;
    if (it == is_sink_.end()) bad = fmt::format("<{}/> from {} to {} on the generator's stream", el.name, r.head.from, r.head.to);
    else if (it->second && (r.from_domain != "a.test" || r.to_domain != "b.test" || el.attr("type") == "error"))
        bad = fmt::format("sink got <{} type='{}'/> from {} to {}", el.name, el.attr("type"), r.head.from, r.head.to);
    else if (!it->second && (r.from_domain != "b.test" || r.to_domain != "a.test" || el.attr("type") != "error"))
        bad = fmt::format("a.test got <{} type='{}'/> from {} to {}", el.name, el.attr("type"), r.head.from, r.head.to);
    if (!bad.empty()) {
        ++res_.corrupt;
        if (res_.first_corrupt.empty()) res_.first_corrupt = bad;
        return;
    }
    if (it->second) on_delivered(el);
    else on_bounce(el);
}

void FaultRun::on_delivered(const xml::Node& el) {
    Stamp got;
    std::string err = check_stanza(el, *env_.pool, got);
    if (err.empty() && got.seq >= sent_) err = fmt::format("seq {} was never sent", got.seq);
    if (!err.empty()) {
        ++res_.corrupt;
        if (res_.first_corrupt.empty()) res_.first_corrupt = err;
        return;
    }
    account(got.seq);
    if (delivered_[got.seq] < 255) ++delivered_[got.seq];
    if (res_.recover_s < 0 && fault_ns_ && got.seq >= seq_at_fault_) {
        res_.recover_s = secs(uv_hrtime() - fault_ns_);
        log(fmt::format("first delivery of a stanza sent after the fault: {:.2f} s after it", res_.recover_s));
    }
}

void FaultRun::on_bounce(const xml::Node& el) {
    std::uint64_t seq = 0;
    if (!parse_seq(el.attr("id"), seq) || seq >= sent_) {
        ++res_.corrupt;
        if (res_.first_corrupt.empty()) res_.first_corrupt = fmt::format("bounce with id '{}'", el.attr("id"));
        return;
    }
    std::string cond = "?";
    if (const xml::Node* e = el.child(kServerNs, "error"))
        for (const xml::Node* c = e->first; c; c = c->next)
            if (c->kind == xml::Node::Kind::Element && c->ns == xmpp::ns::kStanzas && c->name != "text") {
                cond = std::string(c->name);
                break;
            }
    if (bounced_[seq] == 0) ++res_.bounced_by[cond];
    account(seq);
    if (bounced_[seq] < 255) ++bounced_[seq];
}

void FaultRun::account(std::uint64_t seq) {
    if (delivered_[seq] == 0 && bounced_[seq] == 0) {
        ++accounted_;
        last_account_ns_ = uv_hrtime();
    }
}

void FaultRun::stream_closed(net::Stream& s, const xmpp::CloseInfo& info) {
    if (&s == gen_) {
        gen_ = nullptr;
        if (phase_ < Phase::Stats) fail(fmt::format("the generator's stream to gateway A closed: {}", info.reason));
        return;
    }
    auto it = is_sink_.find(&s);
    if (it == is_sink_.end()) return;
    if (it->second) {
        std::erase(sinks_, &s);
        if (phase_ < Phase::Stats) {
            ++res_.sink_closed;
            log(fmt::format("stream gateway B -> sink closed: {}", info.reason));
        }
    } else {
        std::erase(bouncers_, &s);
    }
    // Kept: a stream we closed still delivers what was on its way (RFC 6120
    // §4.4). A later stream at the same address overwrites the entry.
}

// ------------------------------------------------------------------ flow

void FaultRun::send_one() {
    scratch_.clear();
    write_stanza(scratch_, *env_.pool, sent_, uv_hrtime());
    gen_->session().send_raw(scratch_);
    delivered_.push_back(0);
    bounced_.push_back(0);
    ++sent_;
}

void FaultRun::pump() {
    if (gen_ && phase_ >= Phase::Pre && phase_ <= Phase::Post) {
        const std::uint64_t now = uv_hrtime();
        if (phase_ == Phase::Pre) { // topped up first: the fault finds the window full
            while (sent_ - accounted_ < o_.window) send_one();
            const bool due = fault_ == Fault::CertExpiry ? std::time(nullptr) > cert_not_after_
                                                         : secs(now - phase_ns_) >= o_.pre_s;
            if (due) inject();
        } else if (phase_ == Phase::Fault && secs(now - fault_ns_) >= fault_duration_s(fault_)) {
            heal();
        } else if (phase_ == Phase::Post && secs(now - heal_ns_) >= o_.post_s) {
            phase_ = Phase::Settle;
            phase_ns_ = now;
            log(fmt::format("sending stopped ({} sent, {} not yet accounted for); settling", sent_, sent_ - accounted_));
        }
        if (phase_ == Phase::Fault || phase_ == Phase::Post) {
            const double elapsed = now > pace_t0_ ? secs(now - pace_t0_) : 0; // pace_t0_ may be later than `now`
            const auto due = pace_seq0_ + static_cast<std::uint64_t>(elapsed * o_.rate);
            while (sent_ < due && sent_ - accounted_ < o_.max_inflight) send_one();
        }
    }
    flush_dirty(ctx_);
}

void FaultRun::inject() {
    const std::uint64_t now = uv_hrtime();
    fault_ns_ = pace_t0_ = now;
    seq_at_fault_ = pace_seq0_ = sent_;
    res_.inflight_at_fault = sent_ - accounted_;
    phase_ = Phase::Fault;
    switch (fault_) {
    case Fault::Kill9:
        b_expected_down_ = true;
        ::kill(gws_.b.pid(), SIGKILL);
        for (int i = 0; i < 1000 && !gws_.b.poll_exit(); ++i) uv_sleep(1);
        break;
    case Fault::Blackhole: ::kill(gws_.b.pid(), SIGSTOP); break;
    case Fault::SlowReader: relay_.pause(true); break;
    case Fault::LocalRestart: stop_sink(); break;
    case Fault::DnsFail:
    case Fault::CertExpiry: break; // already in place
    }
    log(fmt::format("FAULT {}: {} stanzas in flight; open loop at {:.0f}/s from now", to_string(fault_),
                    res_.inflight_at_fault, o_.rate));
}

void FaultRun::heal() {
    if (fault_ == Fault::LocalRestart && sink_listening_) return; // the old listener is still closing
    switch (fault_) {
    case Fault::Kill9:
        if (std::string e = gws_.start_b(env_.s2smuxd, dir_, "gw-b-restarted"); !e.empty())
            return fail("restarting gateway B: " + e);
        b_expected_down_ = false;
        break;
    case Fault::Blackhole: ::kill(gws_.b.pid(), SIGCONT); break;
    case Fault::SlowReader: relay_.pause(false); break;
    case Fault::LocalRestart:
        if (std::string e = restart_sink(); !e.empty()) return fail("sink: " + e);
        break;
    case Fault::DnsFail:
    case Fault::CertExpiry: break;
    }
    healed_ = true;
    heal_ns_ = uv_hrtime();
    res_.fault_s = secs(heal_ns_ - fault_ns_);
    phase_ = Phase::Post;
    if (fault_duration_s(fault_) > 0) log(fmt::format("healed after {:.2f} s", res_.fault_s));
}

void FaultRun::stop_sink() {
    // A restart: the listener goes away, the streams are closed cleanly.
    uv_close(reinterpret_cast<uv_handle_t*>(&sink_l_), [](uv_handle_t* h) {
        static_cast<FaultRun*>(h->data)->sink_listening_ = false;
    });
    for (net::Stream* s : sinks_) s->session().close();
}

std::string FaultRun::restart_sink() {
    std::uint16_t bound = 0;
    std::string e = listen(sink_l_, sink_port_, &bound);
    sink_listening_ = true; // initialized, even if bind failed: closed by teardown()
    return e;
}

void FaultRun::query_stats() {
    phase_ = Phase::Stats;
    phase_ns_ = uv_hrtime();
    // The figures are reported without the counters of a gateway that does not answer.
    gws_.query_stats_lenient(&res_.a_stats, &res_.b_stats, [this] { finish(); }, [this](const std::string& e) {
        if (phase_ == Phase::Stats) log(e);
    });
}

void FaultRun::finish() {
    if (phase_ != Phase::Stats) return;
    log(fmt::format("settled: {} sent, {} accounted for", sent_, accounted_));
    phase_ = Phase::Closing;
    closing_ns_ = uv_hrtime();
    gws_.close_admins();
    if (gen_) gen_->session().close();
    for (net::Stream* s : sinks_) s->session().close();
    for (net::Stream* s : bouncers_) s->session().close();
}

void FaultRun::fail(std::string why) {
    if (res_.error.empty()) res_.error = std::move(why);
    if (phase_ >= Phase::Closing) return;
    log("FAILED: " + res_.error);
    phase_ = Phase::Closing;
    closing_ns_ = uv_hrtime();
    if (fault_ == Fault::Blackhole && gws_.b.running()) ::kill(gws_.b.pid(), SIGCONT); // or SIGTERM waits
    close_streams("load test failed");
    gws_.close_admins();
    poller_ = nullptr;
    gws_.terminate();
}

void FaultRun::close_streams(std::string_view why) {
    if (gen_) gen_->shutdown(why);
    gen_ = nullptr;
    for (net::Stream* s : sinks_) s->shutdown(why);
    for (net::Stream* s : bouncers_) s->shutdown(why);
    sinks_.clear();
    bouncers_.clear();
    is_sink_.clear();
}

void FaultRun::tick() {
    const std::uint64_t now = uv_hrtime();
    if (phase_ < Phase::Closing) {
        if (gws_.a.poll_exit()) return fail(fmt::format("gateway A died ({})", gws_.a.exit_text()));
        if (!b_expected_down_ && gws_.b.poll_exit())
            return fail(fmt::format("gateway B died ({})", gws_.b.exit_text()));
        for (auto [g, peak] : {std::pair{&gws_.a, &res_.a_peak_kb}, std::pair{&gws_.b, &res_.b_peak_kb}})
            if (g->running()) *peak = std::max(*peak, rss_kb(g->pid()));
    }
    switch (phase_) {
    case Phase::Starting:
    case Phase::Connecting:
        if (secs(now - start_ns_) > kStartTimeoutS)
            return fail(fmt::format("{} within {:.0f} s", phase_ == Phase::Starting ? "no mux stream A -> B"
                                                                                     : "generator not authenticated",
                                    kStartTimeoutS));
        if (phase_ == Phase::Starting) poll_mux();
        return;
    case Phase::Settle:
        if (accounted_ == sent_) {
            res_.settle_s = secs(now - heal_ns_);
            log("every stanza accounted for");
            query_stats();
        } else if (secs(now - last_account_ns_) >= o_.quiet_s || secs(now - phase_ns_) >= o_.settle_s) {
            log(fmt::format("gave up waiting: {} stanza(s) unaccounted for, none for {:.0f} s", sent_ - accounted_,
                            secs(now - last_account_ns_)));
            query_stats();
        }
        break;
    case Phase::Stats:
        if (secs(now - phase_ns_) > kStatsTimeoutS) {
            log("stats: no answer");
            gws_.cancel_stats();
            finish();
        }
        return;
    default:
        break;
    }
    if (phase_ < Phase::Closing) {
        if (o_.progress && now - last_report_ns_ >= kSecondNs) {
            log(fmt::format("sent {}  accounted {}  in flight {}  (A {:.0f} MiB, B {:.0f} MiB)", sent_, accounted_,
                            sent_ - accounted_, double(res_.a_peak_kb) / 1024, double(res_.b_peak_kb) / 1024));
            last_report_ns_ = now;
        }
        return;
    }
    if (phase_ != Phase::Closing) return;
    const double waited = secs(now - closing_ns_);
    if (!gws_.stop_step(!gen_, waited, kTermAfterS, kExitTimeoutS, res_.error, res_.a_exit, res_.b_exit)) return;
    if ((gen_ || !sinks_.empty() || !bouncers_.empty()) && waited < kExitTimeoutS) return;
    teardown();
}

void FaultRun::teardown() {
    phase_ = Phase::Closed;
    close_streams("load test over");
    gws_.close_admins();
    poller_ = nullptr;
    relay_.close();
    auto close = [](auto* h) {
        if (!uv_is_closing(reinterpret_cast<uv_handle_t*>(h))) uv_close(reinterpret_cast<uv_handle_t*>(h), nullptr);
    };
    if (bounce_l_.loop) close(&bounce_l_);
    if (sink_l_.loop) close(&sink_l_);
    close(&prepare_);
    close(&check_);
    close(&timer_);
    close(&pace_);
}

} // namespace s2smux::load
