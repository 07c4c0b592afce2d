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

std::string GatewayPair::config_head(bool b, const std::vector<std::string>& domains, std::uint16_t upstream,
                                     const std::string& ca_file) const {
    std::string c = "[gateway]\ndomains = [";
    for (std::size_t i = 0; i < domains.size(); ++i) c += fmt::format("{}\"{}\"", i > 0 ? ", " : "", domains[i]);
    c += fmt::format("]\nadmin_socket = {}\n\n", toml_str(b ? b_sock : a_sock));
    c += fmt::format("[listen]\nouter = \"127.0.0.1:{}\"\ninner = \"127.0.0.1:{}\"\n\n", b ? b_outer : a_outer,
                     b ? b_inner : a_inner);
    c += fmt::format("[upstream]\naddress = \"127.0.0.1:{}\"\n\n", upstream);
    c += fmt::format("[tls]\nca_file = {}\npolicy = \"required\"\n\n", toml_str(ca_file));
    return c;
}

std::string GatewayPair::cert_section(const std::string& base) {
    return fmt::format("[[cert]]\ncert = {}\nkey = {}\n\n", toml_str(base + ".pem"), toml_str(base + ".key"));
}

std::string GatewayPair::route_to_b(const std::string& domain, bool preconnect) const {
    return fmt::format("[[route]]\ndomain = \"{}\"\naddress = \"127.0.0.1:{}\"\n{}\n", domain, b_outer,
                       preconnect ? "preconnect = true\n" : "");
}

std::string GatewayPair::start(const std::string& s2smuxd, const std::string& dir, const std::string& name_prefix,
                               int wait_ms, int start_ms) {
    if (auto r = b.start_config(s2smuxd, dir, name_prefix + "b", b_conf, b_inner, start_ms); !r) return r.error();
    if (auto r = a.start_config(s2smuxd, dir, name_prefix + "a", a_conf, a_inner, start_ms); !r) return r.error();
    return wait_admin_sockets({a_sock, b_sock}, wait_ms);
}

std::string GatewayPair::start_b(const std::string& s2smuxd, const std::string& dir, const std::string& name) {
    if (auto r = b.start_config(s2smuxd, dir, name, b_conf, b_inner); !r) return r.error();
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

void GatewayPair::query_stats_lenient(Stats* a_dst, Stats* b_dst, std::function<void()> done,
                                      std::function<void(const std::string&)> note) {
    stats_pending_ = 2;
    auto answered = [this, done] {
        if (stats_pending_ > 0 && --stats_pending_ == 0) done();
    };
    auto ask = [&](const std::string& sock, const char* who, Stats* dst) {
        AdminClient* c = admin(sock, [note, answered, who](const std::string& e) {
            note(fmt::format("gateway {} admin: {}", who, e));
            answered();
        });
        c->send("stats", [this, note, answered, who, dst](const admin::Reply& r, std::uint64_t) {
            if (stats_pending_ == 0) return;
            if (r.error.empty()) *dst = parse_stats(r);
            else note(fmt::format("gateway {} stats: {}", who, r.error));
            answered();
        });
    };
    ask(a_sock, "A", a_dst);
    ask(b_sock, "B", b_dst);
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
                            std::string& error, std::string& a_exit, std::string& b_exit) {
    if (!term_sent_ && (streams_closed || waited_s >= term_after_s)) terminate();
    if (!term_sent_) return false;
    if (!reap_gateways(a, b, waited_s, timeout_s, error)) return false;
    a_exit = a.exit_text();
    b_exit = b.exit_text();
    return true;
}

std::string GatewayPair::log_tails() const {
    return "--- gw-a ---\n" + tail_of(a.log_path()) + "\n--- gw-b ---\n" + tail_of(b.log_path());
}

void GatewayPair::kill_now() {
    a.kill_now();
    b.kill_now();
}

} // namespace s2smux::load
