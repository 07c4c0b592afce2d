// The two s2smuxd of a two-gateway run (MuxBench, PairsBench, FaultRun):
// their ports, the configuration they all write, start-up, their processes,
// admin sockets and admin connections on the run's loop, the end-of-run
// `stats` of both, and the stop sequence.
#pragma once

#include "tools/load/admin_client.h"
#include "tools/load/gateway_process.h"

#include <uv.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace s2smux::load {

using Stats = std::map<std::string, std::uint64_t>;

class GatewayPair {
public:
    explicit GatewayPair(uv_loop_t* loop) : loop_(loop) {}

    GatewayProcess a, b;
    std::string a_sock, b_sock; // admin sockets
    // Listener ports, and one nobody listens on (an [upstream] never used).
    std::uint16_t a_outer = 0, a_inner = 0, b_outer = 0, b_inner = 0, unused = 0;

    // Their configurations (TOML), written by the run, kept for a restart.
    std::string a_conf, b_conf;

    // Picks the ports; the admin sockets are <dir>/<prefix>a.sock and b.sock.
    std::string prepare(const std::string& dir, const std::string& prefix);

    // What every two-gateway configuration starts with, for gateway B if `b`
    // else A: [gateway] (`domains`, its admin socket), [listen] (its ports),
    // [upstream] at 127.0.0.1:`upstream`, [tls] (`ca_file`, policy required).
    std::string config_head(bool b, const std::vector<std::string>& domains, std::uint16_t upstream,
                            const std::string& ca_file) const;
    // A [[cert]]: <base>.pem and <base>.key.
    static std::string cert_section(const std::string& base);
    // Gateway A's [[route]] for `domain` to B's outer listener.
    std::string route_to_b(const std::string& domain, bool preconnect) const;

    // Starts B (<name_prefix>b) then A (<name_prefix>a) from b_conf and
    // a_conf in `dir`, each given `start_ms` to listen on its inner port,
    // then waits up to `wait_ms` for both admin sockets. Empty, or the error.
    std::string start(const std::string& s2smuxd, const std::string& dir, const std::string& name_prefix,
                      int wait_ms, int start_ms = 10000);
    // Starts B again (after it died or was killed) from b_conf, as `name`.
    std::string start_b(const std::string& s2smuxd, const std::string& dir, const std::string& name);

    // A new admin connection (kept until close_admins(); the daemon closes
    // idle ones after 60 s); `on_error` if it fails.
    AdminClient* admin(const std::string& path, std::function<void(const std::string&)> on_error);
    void close_admins();
    // `stats` of both into *a_dst and *b_dst; then `done`, or `failed` once.
    void query_stats(Stats* a_dst, Stats* b_dst, std::function<void()> done,
                     std::function<void(const std::string&)> failed);
    // The same for a run that reports without the counters: an error
    // ("gateway A admin: ...", "gateway A stats: ...") goes to `note` and
    // counts as that gateway's answer; `done` once both answered.
    void query_stats_lenient(Stats* a_dst, Stats* b_dst, std::function<void()> done,
                             std::function<void(const std::string&)> note);
    // No more `stats` answers are wanted (given up waiting): later ones are dropped.
    void cancel_stats() { stats_pending_ = 0; }
    // "gw-a died during the run (killed by signal 9)", or "" while both run.
    std::string died();
    // SIGTERM both (once).
    void terminate();
    bool terminated() const { return term_sent_; }
    // Called every tick while stopping, `waited_s` since the stop began:
    // SIGTERM once `streams_closed` or after `term_after_s`, then true once
    // both are reaped (SIGKILL after `timeout_s`); `error` says what went wrong,
    // `a_exit` and `b_exit` how each ended.
    bool stop_step(bool streams_closed, double waited_s, double term_after_s, double timeout_s, std::string& error,
                   std::string& a_exit, std::string& b_exit);
    // Both logs' ends, for a failure report.
    std::string log_tails() const;
    // Failed before the loop ran: kill both.
    void kill_now();

private:
    uv_loop_t* loop_;
    std::vector<std::unique_ptr<AdminClient>> admins_;
    int stats_pending_ = 0;
    bool term_sent_ = false;
};

} // namespace s2smux::load
