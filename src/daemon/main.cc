// s2smuxd: XMPP server-to-server multiplexing gateway.
#include "common/log.h"
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
    uv_signal_t term{}, intr{}, hup{};
};

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
        auto on_stop = [](uv_signal_t* h, int signum) {
            auto* g = static_cast<Gateway*>(h->data);
            log::info("", "received {}, shutting down", signum == SIGTERM ? "SIGTERM" : "SIGINT");
            g->stop();
            auto* sigs = static_cast<Signals*>(h->loop->data);
            uv_close(reinterpret_cast<uv_handle_t*>(&sigs->term), nullptr);
            uv_close(reinterpret_cast<uv_handle_t*>(&sigs->intr), nullptr);
            uv_close(reinterpret_cast<uv_handle_t*>(&sigs->hup), nullptr);
        };
        loop.data = &sig;
        for (uv_signal_t* h : {&sig.term, &sig.intr, &sig.hup}) {
            uv_signal_init(&loop, h);
            h->data = &gw;
        }
        uv_signal_start(&sig.term, on_stop, SIGTERM);
        uv_signal_start(&sig.intr, on_stop, SIGINT);
        uv_signal_start(&sig.hup, [](uv_signal_t*, int) {
            log::warn("", "SIGHUP: configuration reload is not implemented yet; restart to apply changes");
        }, SIGHUP);

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
