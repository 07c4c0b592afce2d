// s2smuxd: XMPP server-to-server multiplexing gateway.
#include "common/log.h"
#include "common/sd_notify.h"
#include "daemon/config.h"
#include "daemon/gateway.h"
#include "s2smux_version.h"
#include "tls/certs.h"
#include "tls/channel.h"
#include "tls/trust.h"

#include <fmt/format.h>
#include <uv.h>

#include <sys/resource.h>

#include <csignal>
#include <cstdio>
#include <cstring>
#include <string>

using namespace s2smux;

namespace {

void usage(std::FILE* f) {
    std::fputs("usage: s2smuxd --config FILE [-t]\n"
               "       s2smuxd --version\n"
               "\n"
               "  -c, --config FILE  configuration file (TOML)\n"
               "  -t, --test         check the configuration (and load its certificates), then exit\n"
               "  -v, --version      print the version and exit\n"
               "  -h, --help         this help\n",
               f);
}

// -t: everything start() would load, without binding sockets.
int check_config(const Config& cfg) {
    for (std::size_t i = 0; i < cfg.certs.size(); ++i) {
        auto lc = tls::load_cert_files(cfg.certs[i].cert, cfg.certs[i].key);
        if (!lc) {
            // The loader's message names the files involved.
            std::fprintf(stderr, "%s: [[cert]] #%zu: %s\n", cfg.path.c_str(), i + 1, lc.error().c_str());
            return 1;
        }
    }
    if (!cfg.ca_file.empty()) {
        tls::TrustStore t;
        if (auto r = t.add_ca_file(cfg.ca_file); !r) {
            std::fprintf(stderr, "%s: [tls] ca_file: %s\n", cfg.path.c_str(), r.error().c_str());
            return 1;
        }
    }
    std::printf("%s: configuration OK (%zu domain(s), %zu certificate(s), %zu route(s))\n", cfg.path.c_str(),
                cfg.domains.size(), cfg.certs.size(), cfg.routes.size());
    return 0;
}

// Standard S2S costs sockets per domain pair on the inner and upstream
// sides: use every descriptor the hard limit allows, as HAProxy does.
void raise_fd_limit() {
    rlimit rl{};
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= rl.rlim_max) return;
    rlim_t before = rl.rlim_cur;
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) == 0)
        log::info("", "file descriptor limit raised from {} to {}", static_cast<unsigned long long>(before),
                  static_cast<unsigned long long>(rl.rlim_cur));
}

struct Signals {
    uv_signal_t term{}, intr{}, hup{}, usr1{};
    uv_timer_t status{}; // STATUS= for systemd, every few seconds
    Gateway* gw = nullptr;
    bool stopping = false;

    bool closed = false;
    void close_all() {
        if (closed) return;
        closed = true;
        for (uv_signal_t* h : {&term, &intr, &hup, &usr1}) uv_close(reinterpret_cast<uv_handle_t*>(h), nullptr);
        uv_close(reinterpret_cast<uv_handle_t*>(&status), nullptr);
    }
};

void notify(const std::string& state) {
    std::string err;
    if (!sd::notify(state, &err)) log::warn("systemd", "sd_notify failed: {}", err);
}

Signals* signals_of(uv_handle_t* h) { return static_cast<Signals*>(h->data); }

// SIGTERM drains (queued stanzas go out first); a second SIGTERM, or
// SIGINT, stops at once. The gateway's stop hook closes the signal handles.
void on_stop(uv_signal_t* h, int signum) {
    Signals* s = signals_of(reinterpret_cast<uv_handle_t*>(h));
    const char* name = signum == SIGTERM ? "SIGTERM" : "SIGINT";
    notify("STOPPING=1\nSTATUS=shutting down");
    if (signum == SIGTERM && !s->stopping) {
        s->stopping = true;
        log::info("", "received {}, draining (send it again to stop at once)", name);
        s->gw->drain();
    } else {
        s->stopping = true;
        log::info("", "received {}, shutting down now", name);
        s->gw->stop();
    }
}

void on_hup(uv_signal_t* h, int) {
    Signals* s = signals_of(reinterpret_cast<uv_handle_t*>(h));
    log::info("", "received SIGHUP, reloading the configuration");
    notify(fmt::format("RELOADING=1\nMONOTONIC_USEC={}\nSTATUS=reloading the configuration", sd::monotonic_usec()));
    s->gw->reload([s](admin::Reply r) {
        // The outcome is logged by the gateway; systemd gets READY=1 either
        // way (a rejected file leaves the old configuration serving).
        notify("READY=1\nSTATUS=" + (r.error.empty() ? s->gw->status_line() : "reload rejected: " + r.error));
    });
}

void on_usr1(uv_signal_t*, int) {
    std::string err;
    if (log::reopen(&err)) log::info("", "received SIGUSR1, log file reopened");
    else log::error("", "received SIGUSR1, cannot reopen the log file: {}", err);
}

} // namespace

int main(int argc, char** argv) {
    std::string config_path;
    bool test = false;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if ((a == "-c" || a == "--config") && i + 1 < argc) {
            config_path = argv[++i];
        } else if (a.rfind("--config=", 0) == 0) {
            config_path = a.substr(9);
        } else if (a == "-t" || a == "--test") {
            test = true;
        } else if (a == "-v" || a == "--version" || a == "-V") {
            std::printf("s2smuxd %s (GnuTLS %s, libuv %s)\n", S2SMUX_VERSION, gnutls_check_version(nullptr),
                        uv_version_string());
            return 0;
        } else if (a == "-h" || a == "--help") {
            usage(stdout);
            return 0;
        } else {
            std::fprintf(stderr, "s2smuxd: unknown argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (config_path.empty()) {
        std::fputs("s2smuxd: --config FILE is required\n", stderr);
        usage(stderr);
        return 2;
    }

    tls::global_init();
    auto cfg = load_config(config_path);
    if (!cfg) {
        std::fprintf(stderr, "%s\n", cfg.error().c_str());
        return 1;
    }
    if (test) return check_config(*cfg);

    log::Level lvl;
    if (log::parse_level(cfg->log_level, lvl)) log::set_level(lvl);
    if (!cfg->log_file.empty()) {
        std::string err;
        if (!log::set_file(cfg->log_file, &err)) {
            std::fprintf(stderr, "%s: [log] file: %s\n", cfg->path.c_str(), err.c_str());
            return 1;
        }
    }
    std::signal(SIGPIPE, SIG_IGN);
    raise_fd_limit();

    uv_loop_t loop;
    uv_loop_init(&loop);
    int rc = 0;
    {
        Gateway gw(&loop, *cfg);
        if (auto r = gw.start(); !r) {
            log::error("", "cannot start: {}", r.error());
            gw.stop();
            uv_run(&loop, UV_RUN_DEFAULT);
            uv_loop_close(&loop);
            return 1;
        }
        log::info("", "s2smuxd {} started", S2SMUX_VERSION);

        Signals sig;
        sig.gw = &gw;
        gw.on_stopped([&sig] { sig.close_all(); });
        for (uv_signal_t* h : {&sig.term, &sig.intr, &sig.hup, &sig.usr1}) {
            uv_signal_init(&loop, h);
            h->data = &sig;
        }
        uv_signal_start(&sig.term, on_stop, SIGTERM);
        uv_signal_start(&sig.intr, on_stop, SIGINT);
        uv_signal_start(&sig.hup, on_hup, SIGHUP);
        uv_signal_start(&sig.usr1, on_usr1, SIGUSR1);
        uv_timer_init(&loop, &sig.status);
        sig.status.data = &sig;
        if (sd::enabled()) {
            uv_timer_start(&sig.status, [](uv_timer_t* t) {
                Signals* s = signals_of(reinterpret_cast<uv_handle_t*>(t));
                if (!s->stopping) notify("STATUS=" + s->gw->status_line());
            }, 5000, 5000);
            uv_unref(reinterpret_cast<uv_handle_t*>(&sig.status));
        }
        notify("READY=1\nSTATUS=" + gw.status_line());

        uv_run(&loop, UV_RUN_DEFAULT);
        const auto& st = gw.stats();
        log::info("", "stopped: {} stanzas routed, {} queued, {} bounced, {} dropped", st.stanzas_routed,
                  st.stanzas_queued, st.stanzas_bounced, st.stanzas_dropped);
    }
    int close_rc = uv_loop_close(&loop);
    if (close_rc != 0) {
        log::error("", "event loop closed with open handles ({})", uv_strerror(close_rc));
        rc = 1;
    }
    return rc;
}
