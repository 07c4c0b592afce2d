// Runtime control: configuration reload (SIGHUP, `s2smuxctl reload`),
// closing a peer's streams, and showing how a domain resolves.
//
// A reload reads and validates the whole file and every [[cert]] on the
// thread pool; only when all of it is valid does the loop apply the
// difference to live state, without reconnecting anything: local domains and
// certificates (added, replaced or withdrawn on every mux stream), routes,
// limits, TLS policy, mux settings, [[route]] captures and logging.
// Listeners, the admin socket, the trust store, the DNS server and the
// dialback secret keep their running values until a restart (the reply says
// which changed).
#include "daemon/gateway.h"
#include "daemon/listing.h"
#include "daemon/mux_peer.h"

#include "common/log.h"
#include "net/work.h"
#include "xmpp/jid.h"

#include <fmt/format.h>

#include <algorithm>

namespace s2smux {

using admin::Reply;

namespace {

constexpr const char* kCtx = "reload";

std::string ep(const std::optional<Endpoint>& e) { return e ? e->to_string() : "-"; }

std::string route_text(const RouteConfig& r) {
    return fmt::format("{}={}{}{}{}", r.domain, r.address.to_string(), r.direct_tls ? ",direct_tls" : "",
                       r.preconnect ? ",preconnect" : "", r.policy ? std::string(",") + xmpp::to_string(*r.policy) : "");
}

} // namespace

std::string Gateway::status_line() const {
    return fmt::format("{} stream(s), {} multiplexed; {} local domain(s); {} stanzas routed, {} bounced",
                       streams_.size(), muxes_.size(), local_domains_.size(), stats_.stanzas_routed,
                       stats_.stanzas_bounced);
}

void Gateway::reload(admin::Done done) {
    if (stopping_) return done(Reply::fail("gateway shutting down"));
    if (reloading_) return done(Reply::fail("a reload is already running"));
    reloading_ = true;
    struct Out {
        std::optional<Result<Config>> cfg;
        std::vector<std::shared_ptr<tls::LocalCert>> certs;
        std::string error;
    };
    auto out = std::make_shared<Out>();
    std::string path = cfg_.path;
    log::info(kCtx, "reloading {}", path);
    net::run_in_pool(
        loop_,
        [out, path] {
            out->cfg = load_config(path);
            if (!*out->cfg) return;
            const auto& certs = (*out->cfg)->certs;
            for (std::size_t i = 0; i < certs.size(); ++i) {
                auto lc = tls::load_cert_files(certs[i].cert, certs[i].key);
                if (!lc) {
                    out->error = fmt::format("{}: [[cert]] #{}: {}", path, i + 1, lc.error());
                    return;
                }
                out->certs.push_back(std::move(*lc));
            }
        },
        [this, out, done = std::move(done)]() mutable {
            reloading_ = false;
            if (stopping_) return done(Reply::fail("gateway shutting down"));
            std::string err = !*out->cfg ? out->cfg->error() : out->error;
            if (!err.empty()) {
                log::error(kCtx, "configuration rejected, the running one stays: {}", err);
                return done(Reply::fail(fmt::format("configuration rejected, nothing changed: {}", err)));
            }
            apply_config(std::move(**out->cfg), std::move(out->certs), std::move(done));
        });
}

void Gateway::apply_config(Config nc, std::vector<std::shared_ptr<tls::LocalCert>> loaded, admin::Done done) {
    std::vector<std::string> lines;
    auto note = [&](std::string l) {
        log::info(kCtx, "{}", l);
        lines.push_back(std::move(l));
    };

    // The one change that can still fail goes first, so a failure leaves
    // everything as it was.
    if (nc.log_file != cfg_.log_file) {
        std::string err;
        if (!log::set_file(nc.log_file, &err)) {
            log::error(kCtx, "configuration rejected, the running one stays: [log] file: {}", err);
            return done(Reply::fail(fmt::format("configuration rejected, nothing changed: [log] file: {}", err)));
        }
        note(fmt::format("[log] file: {}", nc.log_file.empty() ? "stderr" : nc.log_file));
    }

    // Restart-only keys keep their running values.
    std::vector<std::string> restart;
    auto keep = [&](bool changed, const char* key, auto& nv, const auto& ov) {
        if (!changed) return;
        restart.push_back(key);
        nv = ov;
    };
    keep(ep(nc.outer) != ep(cfg_.outer), "[listen] outer", nc.outer, cfg_.outer);
    keep(ep(nc.outer_tls) != ep(cfg_.outer_tls), "[listen] outer_tls", nc.outer_tls, cfg_.outer_tls);
    keep(ep(nc.inner) != ep(cfg_.inner), "[listen] inner", nc.inner, cfg_.inner);
    keep(nc.admin_socket != cfg_.admin_socket, "[gateway] admin_socket", nc.admin_socket, cfg_.admin_socket);
    keep(nc.dialback_secret != cfg_.dialback_secret, "[gateway] dialback_secret", nc.dialback_secret,
         cfg_.dialback_secret);
    keep(nc.ca_file != cfg_.ca_file, "[tls] ca_file", nc.ca_file, cfg_.ca_file);
    keep(nc.system_ca != cfg_.system_ca, "[tls] system_ca", nc.system_ca, cfg_.system_ca);
    keep(ep(nc.nameserver) != ep(cfg_.nameserver), "[dns] nameserver", nc.nameserver, cfg_.nameserver);
    keep(ep(nc.metrics_listen) != ep(cfg_.metrics_listen), "[metrics] listen", nc.metrics_listen, cfg_.metrics_listen);

    // Local domains: configured ones; names of certificates added at run
    // time (cert add / commit) stay.
    for (auto& d : nc.domains) d = xmpp::lowercase_domain(d);
    std::vector<std::string> added, removed;
    for (const auto& d : nc.domains)
        if (!is_local(d)) added.push_back(d);
    for (const auto& d : cfg_.domains)
        if (std::find(nc.domains.begin(), nc.domains.end(), d) == nc.domains.end()) removed.push_back(d);
    for (const auto& d : removed) remove_local(d);
    for (const auto& d : added) add_local(d);
    if (!added.empty()) note(fmt::format("domains added: {}", join(added)));
    if (!removed.empty()) note(fmt::format("domains removed: {}", join(removed)));

    // Certificates: the [[cert]] files are authoritative for their subjects.
    std::vector<std::shared_ptr<tls::LocalCert>> now_config;
    for (auto& lc : loaded) {
        auto live = cert_by_subject(lc->identity.subject);
        if (live && live->chain_der == lc->chain_der) {
            now_config.push_back(live); // unchanged
            continue;
        }
        auto sent = swap_cert(lc, live, false);
        note(fmt::format("certificate {} {} from {} (names {}; sent to {} mux stream(s))", lc->identity.subject,
                         live ? "replaced" : "added", lc->cert_path, join(lc->identity.names()), sent.size()));
        now_config.push_back(lc);
    }
    for (const auto& old : config_certs_) {
        if (cert_by_subject(old->identity.subject) != old) continue; // replaced at run time or above
        bool kept = std::any_of(now_config.begin(), now_config.end(),
                                [&](const auto& c) { return c->identity.subject == old->identity.subject; });
        if (kept) continue;
        auto streams = drop_cert(old, false);
        note(fmt::format("certificate {} removed (withdrawn from {} mux stream(s))", old->identity.subject,
                         streams.size()));
    }
    config_certs_ = std::move(now_config);

    // Domains that became local under an unchanged certificate: add them to
    // the mux streams; domains no longer local: withdraw a certificate that
    // serves no local domain any more.
    for (const auto& d : added) {
        auto cert = certs_.find(d);
        if (!cert) {
            note(fmt::format("no certificate for new domain {}: remotes can only use dialback", d));
            continue;
        }
        for (auto& [id, p] : muxes_)
            if (!p->closed && !p->mux->ours_has(d) && !p->mux->ours_pending(d)) p->mux->add(cert, d, now_ms());
    }
    for (const auto& d : removed) {
        auto cert = certs_.find(d);
        if (!cert) continue;
        bool serves_local = false;
        for (const auto& n : cert->identity.names()) serves_local = serves_local || is_local(n);
        if (!serves_local) {
            mux_withdraw(*cert);
        } else {
            note(fmt::format("{} stays on the mux streams until its certificate ({}) is replaced or removed: "
                             "stanzas for it are refused meanwhile",
                             d, cert->identity.subject));
        }
    }

    // Routes (new connections; preconnect routes open below).
    std::vector<std::string> old_routes, new_routes;
    for (const auto& r : cfg_.routes) old_routes.push_back(route_text(r));
    for (const auto& r : nc.routes) new_routes.push_back(route_text(r));
    if (old_routes != new_routes) {
        resolver_->set_routes(nc.routes);
        note(fmt::format("routes: {} (was {}): {}", nc.routes.size(), cfg_.routes.size(), join(new_routes, " ")));
    }

    // Limits, on live streams too.
    std::vector<std::string> changed;
    auto diff = [&](bool c, const char* key) {
        if (c) changed.push_back(key);
    };
    diff(nc.max_stanza_bytes != cfg_.max_stanza_bytes, "max_stanza_bytes");
    diff(nc.max_depth != cfg_.max_depth, "max_depth");
    diff(nc.max_attrs != cfg_.max_attrs, "max_attrs");
    diff(nc.max_queue_stanzas != cfg_.max_queue_stanzas, "max_queue_stanzas");
    diff(nc.connect_timeout_ms != cfg_.connect_timeout_ms, "connect_timeout");
    diff(nc.auth_timeout_ms != cfg_.auth_timeout_ms, "auth_timeout");
    diff(nc.queue_timeout_ms != cfg_.queue_timeout_ms, "queue_timeout");
    diff(nc.keepalive_ms != cfg_.keepalive_ms, "keepalive");
    diff(nc.dead_peer_ms != cfg_.dead_peer_ms, "dead_peer_timeout");
    diff(nc.stream_write_buffer != cfg_.stream_write_buffer, "stream_write_buffer");
    diff(nc.max_buffered_bytes != cfg_.max_buffered_bytes, "max_buffered_bytes");
    diff(nc.policy != cfg_.policy, "[tls] policy");
    diff(nc.upstream_tls != cfg_.upstream_tls, "[upstream] tls");
    diff(ep(nc.upstream) != ep(cfg_.upstream), "[upstream] address");
    diff(nc.mux_enabled != cfg_.mux_enabled, "[mux] enabled");
    diff(nc.mux_strict != cfg_.mux_strict, "[mux] strict");
    diff(nc.mux_max_domains != cfg_.mux_max_domains || nc.mux_max_pending != cfg_.mux_max_pending ||
             nc.mux_add_rate != cfg_.mux_add_rate || nc.mux_add_burst != cfg_.mux_add_burst,
         "[mux] limits");
    diff(nc.log_level != cfg_.log_level, "[log] level");
    log::Level lvl;
    if (log::parse_level(nc.log_level, lvl)) log::set_level(lvl);

    // [[route]] capture: started and stopped with their keys.
    for (auto& l : apply_route_captures(cfg_.routes, nc.routes)) note(std::move(l));

    cfg_ = std::move(nc);
    apply_buffer_limits(); // paused sources go on at the next write of what holds them
    xml::Limits lim = session_config(net::StreamKind::OuterIn).limits;
    for (auto& [id, s] : streams_) s->session().set_limits(lim);
    for (auto& [id, p] : muxes_) p->mux->set_limits(mux_limits());
    if (!changed.empty()) note(fmt::format("changed (live streams included): {}", join(changed, ", ")));
    if (!restart.empty())
        note(fmt::format("unchanged until a restart: {}", join(restart, ", ")));
    std::size_t n = lines.size();
    lines.insert(lines.begin(), fmt::format("reloaded {}: {} change(s)", cfg_.path, n));
    log::info(kCtx, "reloaded {}: {} change(s); {}", cfg_.path, n, status_line());
    preconnect();
    done(Reply::ok(std::move(lines)));
}

void Gateway::close_stream(std::string peer, std::string condition, admin::Done done) {
    xmpp::StreamError cond = xmpp::StreamError::SystemShutdown;
    if (!condition.empty() && !xmpp::parse_stream_error(condition, cond))
        return done(Reply::fail(fmt::format("unknown stream error condition '{}' (e.g. system-shutdown, reset, "
                                            "policy-violation)",
                                            condition)));
    if (cond == xmpp::StreamError::SeeOtherHost)
        return done(Reply::fail("see-other-host needs a host to send the peer to; use another condition"));
    std::vector<net::Stream*> hits;
    for (auto& [id, s] : streams_) {
        if (s->finished()) continue;
        const auto& sess = s->session();
        std::string addr = s->peer();
        std::string host = addr.substr(0, addr.rfind(':'));
        if (peer == fmt::format("s{}", id) || peer == sess.remote_domain() || peer == addr || peer == host ||
            peer == "[" + host + "]")
            hits.push_back(s);
    }
    if (hits.empty()) return done(Reply::fail(fmt::format("no open stream matches {} (see s2smuxctl streams)", peer)));
    std::vector<std::string> lines;
    for (net::Stream* s : hits) {
        lines.push_back(fmt::format("s{} {} peer={} address={} closed with <{}/>", s->id(), net::to_string(s->kind()),
                                    cell(s->session().remote_domain()), s->peer(), xmpp::condition_name(cond)));
        log::info(s->session().log_context(), "closed by the operator with <{}/>", xmpp::condition_name(cond));
        s->session().close(cond, "closed by the gateway operator");
    }
    flush_dirty();
    done(Reply::ok(std::move(lines)));
}

void Gateway::resolve(std::string domain, admin::Done done) {
    auto d = normalize_domain(domain);
    if (!d) return done(Reply::fail(fmt::format("invalid domain '{}': {}", domain, d.error())));
    if (!resolver_) return done(Reply::fail("resolver not running"));
    if (is_local(*d))
        return done(Reply::ok({fmt::format("{} is a local domain: stanzas for it go to the local server ({})", *d,
                                           ep(cfg_.upstream))}));
    std::vector<std::string> pre;
    for (const auto& [id, p] : muxes_)
        if (!p->closed && p->mux->peer_has(*d))
            pre.push_back(fmt::format("multiplexed on s{} (peer gateway {}): no new connection needed", id,
                                      cell(p->stream->session().remote_domain())));
    resolver_->resolve(*d, [pre = std::move(pre), done = std::move(done)](Result<route::Resolution> r) {
        std::vector<std::string> lines = pre;
        if (!r) {
            lines.push_back(r.error());
            return done(Reply{std::move(lines), "no route: " + r.error()});
        }
        for (auto l = std::string_view(r->explain); !l.empty();) {
            auto nl = l.find('\n');
            lines.emplace_back(l.substr(0, nl));
            l = nl == std::string_view::npos ? std::string_view() : l.substr(nl + 1);
        }
        admin::Table t{{"#", admin::Table::Right}, {"ADDRESS"}, {"PORT", admin::Table::Right}, {"TLS"}, {"HOST"}, {"SOURCE"}};
        int i = 0;
        for (const auto& tg : r->targets)
            t.add({std::to_string(++i), tg.address, std::to_string(tg.port), tg.direct_tls ? "direct" : "starttls",
                   cell(tg.host), cell(tg.source)});
        for (auto& l : t.render()) lines.push_back(std::move(l));
        done(Reply::ok(std::move(lines)));
    });
}

} // namespace s2smux
