#include "tools/load/gateway_pair.h"

#include "tools/load/proc_util.h"

#include <fmt/format.h>

namespace s2smux::load {

std::string GatewayPair::prepare(const std::string& dir, const std::string& prefix) {
    auto ports = free_loopback_ports(5);
    if (!ports) return ports.error();
    const std::vector<std::uint16_t>& p = *ports;
    a_outer = p[0];
    a_inner = p[1];
    b_outer = p[2];
    b_inner = p[3];
    unused = p[4];
    a_sock = dir + "/" + prefix + "a.sock";
    b_sock = dir + "/" + prefix + "b.sock";
    return {};
}

AdminClient* GatewayPair::admin(const std::string& path, std::function<void(const std::string&)> on_error) {
    admins_.push_back(std::make_unique<AdminClient>(loop_));
    AdminClient* c = admins_.back().get();
    c->connect(path, [on_error = std::move(on_error)](const std::string& e) {
        if (!e.empty()) on_error(e);
    });
    return c;
}

void GatewayPair::close_admins() {
    for (auto& c : admins_) c->close();
}

void GatewayPair::query_stats(Stats* a_dst, Stats* b_dst, std::function<void()> done,
                              std::function<void(const std::string&)> failed) {
    stats_pending_ = 2;
    auto got = [this, done, failed](Stats* dst) {
        return [this, dst, done, failed](const admin::Reply& r, std::uint64_t) {
            if (!r.error.empty()) return failed("stats: " + r.error);
            *dst = parse_stats(r);
            if (--stats_pending_ == 0) done();
        };
    };
    admin(a_sock, [failed](const std::string& e) { failed("gateway A admin: " + e); })->send("stats", got(a_dst));
    admin(b_sock, [failed](const std::string& e) { failed("gateway B admin: " + e); })->send("stats", got(b_dst));
}

std::string GatewayPair::died() {
    for (GatewayProcess* g : {&a, &b})
        if (g->poll_exit()) return fmt::format("{} died during the run ({})", g->name(), g->exit_text());
    return {};
}

void GatewayPair::terminate() {
    a.terminate();
    b.terminate();
    term_sent_ = true;
}

bool GatewayPair::stop_step(bool streams_closed, double waited_s, double term_after_s, double timeout_s,
                            std::string& error) {
    if (!term_sent_ && (streams_closed || waited_s >= term_after_s)) terminate();
    if (!term_sent_) return false;
    return reap_gateways(a, b, waited_s, timeout_s, error);
}

std::string GatewayPair::log_tails() const {
    return "--- gw-a ---\n" + tail_of(a.log_path()) + "\n--- gw-b ---\n" + tail_of(b.log_path());
}

void GatewayPair::kill_now() {
    a.kill_now();
    b.kill_now();
}

} // namespace s2smux::load
