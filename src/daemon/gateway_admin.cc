// The gateway's answers to the admin socket (s2smuxctl): listings and live
// certificate changes. Certificate loading runs on the thread pool; a
// `cert add` answers once every live mux stream accepted or refused it.
#include "daemon/gateway.h"
#include "daemon/listing.h"
#include "daemon/mux_peer.h"

#include "common/log.h"
#include "common/timefmt.h"
#include "net/work.h"

#include <fmt/format.h>

#include <ctime>

namespace s2smux {

using admin::Reply;
using admin::Table;

namespace {

constexpr TimeMs kAdminAddTimeoutMs = 15000;


} // namespace

void Gateway::domains(admin::Done done) {
    Table t{{"DOMAIN"}, {"CERT_EXPIRES"}, {"STREAM"}, {"PEER"}, {"STATE"}};
    for (const auto& d : local_domains_) {
        auto cert = certs_.find(d);
        std::string exp = cert ? iso8601_utc(cert->identity.not_after) : "no-certificate";
        if (muxes_.empty()) {
            t.add({d, exp, "-", "-", "no-mux-stream"});
            continue;
        }
        for (const auto& [id, p] : muxes_) {
            auto& m = *p->mux;
            std::string state = m.ours_has(d)       ? "accepted"
                                : m.ours_pending(d) ? "pending"
                                : m.ours_failure(d) ? "failed:" + cell(*m.ours_failure(d)).substr(0, 60)
                                                    : "not-added";
            t.add({d, exp, fmt::format("s{}", id), cell(p->stream->session().remote_domain()), state});
        }
    }
    done(Reply::ok(t.render()));
}

void Gateway::certs(admin::Done done) {
    Table t{{"SIDE"}, {"STREAM"}, {"EXPIRES"}, {"NAMES"}, {"SUBJECT"}};
    for (const auto& c : certs_.all())
        t.add({"local", "-", iso8601_utc(c->identity.not_after), join(c->identity.names()), cell(c->identity.subject)});
    for (const auto& [id, p] : muxes_)
        for (const auto& e : p->mux->peer())
            t.add({e.add_id == "tls" ? "peer-tls" : "peer", fmt::format("s{}", id), iso8601_utc(e.not_after), join(e.names),
                   cell(e.subject)});
    done(Reply::ok(t.render()));
}

void Gateway::streams(admin::Done done) {
    Table t{{"ID"}, {"KIND"}, {"PEER"}, {"DIR"}, {"TLS"}, {"MUX"}, {"LOCAL"}, {"REMOTE"},
            {"DOMAINS_OUT", Table::Right}, {"DOMAINS_IN", Table::Right}, {"STANZAS_OUT", Table::Right},
            {"STANZAS_IN", Table::Right}, {"BYTES_OUT", Table::Right}, {"BYTES_IN", Table::Right}};
    std::vector<std::uint64_t> ids;
    for (const auto& [id, s] : streams_) ids.push_back(id);
    std::sort(ids.begin(), ids.end());
    for (auto id : ids) {
        net::Stream* s = streams_.at(id);
        auto& sess = s->session();
        std::size_t out = sess.pairs_out().size(), in = sess.pairs_in().size();
        auto m = muxes_.find(id);
        if (m != muxes_.end()) {
            out = 0;
            in = 0;
            for (const auto& e : m->second->mux->ours()) out += e.names.size();
            for (const auto& e : m->second->mux->peer()) in += e.names.size();
        }
        t.add({fmt::format("s{}", id), net::to_string(s->kind()), s->peer(), net::is_outgoing(s->kind()) ? "out" : "in",
               sess.tls_active() ? sess.tls().version : "-", m != muxes_.end() ? "on" : "off",
               cell(sess.local_domain()), cell(sess.remote_domain()), std::to_string(out), std::to_string(in),
               std::to_string(sess.stanzas_out()), std::to_string(sess.stanzas_in()),
               std::to_string(s->stats().bytes_out), std::to_string(s->stats().bytes_in)});
    }
    done(Reply::ok(t.render()));
}

void Gateway::stats(admin::Done done) {
    std::uint64_t adds_ok = stats_.mux_adds_ok, adds_failed = stats_.mux_adds_failed;
    std::uint64_t peer_ok = stats_.mux_peer_adds_ok, peer_failed = stats_.mux_peer_adds_failed;
    std::map<std::string, std::uint64_t> by_reason(stats_.mux_peer_add_failures.begin(),
                                                    stats_.mux_peer_add_failures.end()); // closed streams
    for (const auto& [id, p] : muxes_) {
        const auto& ms = p->mux->stats();
        adds_ok += ms.adds_ok;
        adds_failed += ms.adds_failed;
        peer_ok += ms.peer_adds_ok;
        peer_failed += ms.peer_adds_failed;
        for (const auto& [r, n] : ms.peer_failures) by_reason[r] += n;
    }
    std::map<std::string, std::uint64_t> kinds;
    for (const auto& [id, s] : streams_) ++kinds[net::to_string(s->kind())];
    Table t{{""}, {"", Table::Right}};
    t.add({"streams", std::to_string(streams_.size())});
    for (const auto& [k, n] : kinds) t.add({"streams." + k, std::to_string(n)});
    t.add({"streams.mux", std::to_string(muxes_.size())});
    t.add({"streams.mux_parked", std::to_string(parked_.size())});
    t.add({"streams.mux_resumed_total", std::to_string(stats_.mux_resumed)});
    t.add({"streams.accepted_total", std::to_string(stats_.streams_accepted)});
    t.add({"streams.connected_total", std::to_string(stats_.streams_connected)});
    t.add({"streams.paused", std::to_string(ctx_.pauses.paused_count())});
    t.add({"streams.pauses_total", std::to_string(ctx_.pauses.episodes())});
    t.add({"buffers.bytes", std::to_string(ctx_.buffered)});
    t.add({"domains.local", std::to_string(local_domains_.size())});
    const std::size_t queued_now = queued_stanzas(), in_flight = in_flight_stanzas();
    t.add({"stanzas.accepted", std::to_string(stats_.stanzas_accepted)});
    t.add({"stanzas.requeued", std::to_string(stats_.stanzas_requeued)});
    t.add({"stanzas.routed", std::to_string(stats_.stanzas_routed)});
    t.add({"stanzas.in_flight", std::to_string(in_flight)});
    t.add({"stanzas.queued_now", std::to_string(queued_now)});
    t.add({"stanzas.queued", std::to_string(stats_.stanzas_queued)});
    t.add({"stanzas.bounced", std::to_string(stats_.stanzas_bounced)});
    t.add({"stanzas.dropped", std::to_string(stats_.stanzas_dropped)});
    t.add({"mux.refused_in", std::to_string(stats_.mux_refused_in)});
    t.add({"mux.refused_out", std::to_string(stats_.mux_refused_out)});
    t.add({"mux.adds_ok", std::to_string(adds_ok)});
    t.add({"mux.adds_failed", std::to_string(adds_failed)});
    t.add({"mux.peer_adds_ok", std::to_string(peer_ok)});
    t.add({"mux.peer_adds_failed", std::to_string(peer_failed)});
    for (const auto& [r, n] : by_reason) t.add({"mux.peer_adds_failed." + r, std::to_string(n)});
    // accepted + requeued = routed + dropped + refused + queued: nothing vanished.
    const std::uint64_t in = stats_.stanzas_accepted + stats_.stanzas_requeued;
    const std::uint64_t out = stats_.stanzas_routed + stats_.stanzas_dropped + stats_.mux_refused_in + queued_now;
    t.add({"accounting", in == out ? std::string("ok")
                                   : fmt::format("MISMATCH: accepted+requeued {} != routed+dropped+refused+queued {}",
                                                 in, out)});
    done(Reply::ok(t.render()));
}

void Gateway::cert_add(std::string cert_path, std::string key_path, bool replace, admin::Done done) {
    struct Out {
        std::optional<Result<std::shared_ptr<tls::LocalCert>>> r;
    };
    auto out = std::make_shared<Out>();
    // Key loading and parsing off the loop: traffic keeps flowing.
    net::run_in_pool(
        loop_, [out, cert_path, key_path] { out->r = tls::load_cert_files(cert_path, key_path); },
        [this, out, replace, done = std::move(done)]() mutable {
            if (stopping_) return done(Reply::fail("gateway shutting down"));
            if (!*out->r) return done(Reply::fail(out->r->error()));
            install_cert(std::move(**out->r), replace, std::move(done));
        });
}

std::shared_ptr<tls::LocalCert> Gateway::cert_by_subject(const std::string& subject) const {
    if (subject.empty()) return nullptr;
    for (const auto& c : certs_.all())
        if (c->identity.subject == subject) return c;
    return nullptr;
}

std::vector<std::string> Gateway::domain_names(const tls::LocalCert& cert) {
    std::vector<std::string> names;
    for (const auto& n : cert.identity.names())
        if (n.rfind("*.", 0) != 0) names.push_back(n);
    return names;
}

std::vector<std::uint64_t> Gateway::swap_cert(std::shared_ptr<tls::LocalCert> cert, std::shared_ptr<tls::LocalCert> old,
                                              bool make_local) {
    std::vector<std::string> names = domain_names(*cert);
    if (old) {
        certs_.remove_cert(old);
        if (make_local)
            for (const auto& n : old->identity.names())
                if (std::find(names.begin(), names.end(), n) == names.end()) remove_local(n);
    }
    certs_.add(cert);
    if (make_local)
        for (const auto& n : names) add_local(n);
    std::vector<std::uint64_t> sent;
    std::string first;
    for (const auto& n : names)
        if (is_local(n)) {
            first = n;
            break;
        }
    if (first.empty()) return sent; // serves no local domain: nothing to multiplex
    for (auto& [id, p] : muxes_) {
        if (p->closed) continue;
        p->mux->add(cert, first, now_ms());
        sent.push_back(id);
    }
    return sent;
}

void Gateway::install_cert(std::shared_ptr<tls::LocalCert> cert, bool replace, admin::Done done) {
    const std::string& subject = cert->identity.subject;
    std::shared_ptr<tls::LocalCert> old = cert_by_subject(subject);
    if (replace && !old) return done(Reply::fail(fmt::format("no loaded certificate has subject {} (use cert add)", subject)));
    if (!replace && old)
        return done(Reply::fail(fmt::format("a certificate with subject {} is already loaded (use cert replace)", subject)));
    std::vector<std::string> names = domain_names(*cert);
    if (names.empty()) return done(Reply::fail("the certificate names no domain (wildcards cannot be local domains)"));
    auto sent = swap_cert(cert, old, true);
    log::info("admin", "{} certificate {} for {} (valid until {})", replace ? "replaced" : "added", subject, join(names),
              iso8601_utc(cert->identity.not_after));

    auto a = std::make_shared<AdminAdd>();
    a->done = std::move(done);
    a->domain = names.front();
    a->started = static_cast<TimeMs>(uv_now(loop_));
    a->lines.push_back(fmt::format("{} {} names={} expires={}", replace ? "replaced" : "loaded", cell(subject), join(names),
                                   iso8601_utc(cert->identity.not_after)));
    for (auto id : sent)
        a->waiting[id] = fmt::format("s{} peer={}", id, cell(muxes_.at(id)->stream->session().remote_domain()));
    if (a->waiting.empty()) {
        a->lines.push_back("no multiplexed stream: used by new streams");
        admin_add_finish(*a);
        return;
    }
    admin_adds_.push_back(std::move(a));
}

void Gateway::admin_add_answered(std::uint64_t stream_id, std::string_view domain, bool ok, std::string_view why) {
    for (auto it = admin_adds_.begin(); it != admin_adds_.end();) {
        AdminAdd& a = **it;
        auto w = a.waiting.find(stream_id);
        if (a.domain != domain || w == a.waiting.end()) {
            ++it;
            continue;
        }
        a.lines.push_back(fmt::format("{} {}", w->second, ok ? "accepted" : "failed:" + cell(std::string(why))));
        a.waiting.erase(w);
        if (a.waiting.empty()) {
            admin_add_finish(a);
            it = admin_adds_.erase(it);
        } else {
            ++it;
        }
    }
}

void Gateway::admin_add_finish(AdminAdd& a) {
    if (a.done) a.done(Reply::ok(std::move(a.lines)));
    a.done = nullptr;
}

void Gateway::admin_tick(TimeMs now) {
    for (auto it = admin_adds_.begin(); it != admin_adds_.end();) {
        AdminAdd& a = **it;
        // Streams that closed meanwhile, or peers that never answered.
        for (auto w = a.waiting.begin(); w != a.waiting.end();) {
            bool gone = muxes_.find(w->first) == muxes_.end();
            if (gone || now - a.started >= kAdminAddTimeoutMs) {
                a.lines.push_back(fmt::format("{} {}", w->second, gone ? "stream-closed" : "no-answer"));
                w = a.waiting.erase(w);
            } else {
                ++w;
            }
        }
        if (a.waiting.empty()) {
            admin_add_finish(a);
            it = admin_adds_.erase(it);
        } else {
            ++it;
        }
    }
}

std::vector<std::string> Gateway::drop_cert(const std::shared_ptr<tls::LocalCert>& cert, bool remove_names) {
    std::vector<std::string> lines = mux_withdraw(*cert);
    certs_.remove_cert(cert);
    if (remove_names)
        for (const auto& n : cert->identity.names()) remove_local(n);
    return lines;
}

std::vector<std::string> Gateway::mux_withdraw(const tls::LocalCert& cert) {
    std::vector<std::string> lines;
    std::vector<std::string> names = cert.identity.names();
    for (auto& [id, p] : muxes_) {
        if (p->closed) continue;
        // The mux stream knows the certificate by any of its names.
        for (const auto& n : names) {
            if (p->mux->remove(n, now_ms())) {
                lines.push_back(fmt::format("s{} peer={} removed", id, cell(p->stream->session().remote_domain())));
                break;
            }
        }
    }
    return lines;
}

void Gateway::cert_remove(std::string domain, admin::Done done) {
    auto cert = certs_.find(domain);
    if (!cert) return done(Reply::fail(fmt::format("no certificate serves {}", domain)));
    std::vector<std::string> lines = drop_cert(cert, true);
    std::vector<std::string> names = cert->identity.names();
    log::info("admin", "removed certificate {} ({})", cert->identity.subject, join(names));
    lines.insert(lines.begin(), fmt::format("removed {} names={}", cell(cert->identity.subject), join(names)));
    done(Reply::ok(std::move(lines)));
}

} // namespace s2smux
