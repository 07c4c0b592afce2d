// Certificate transactions on the admin socket, after HAProxy's runtime
// certificate API (new / set / commit / abort / show): an operator stages a
// certificate, sees it validated, and swaps it in with one command that
// either changes everything (certificate, local domains, every mux stream)
// or nothing. Files are read and chains verified on the thread pool.
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

constexpr std::size_t kMaxTransactions = 64;
constexpr const char* kCtx = "admin";

bool valid_tx_name(const std::string& n) {
    if (n.empty() || n.size() > 128) return false;
    for (unsigned char c : n)
        if (c <= ' ' || c == 0x7f) return false;
    return true;
}

std::string describe(const tls::LocalCert& c) {
    return fmt::format("subject={} names={} not_before={} not_after={}", cell(c.identity.subject),
                       join(c.identity.names()), iso8601_utc(c.identity.not_before), iso8601_utc(c.identity.not_after));
}

} // namespace

void Gateway::cert_new(std::string name, admin::Done done) {
    if (!valid_tx_name(name)) return done(Reply::fail("a transaction name is 1 to 128 printable characters without spaces"));
    if (cert_tx_.count(name)) return done(Reply::fail(fmt::format("transaction {} already exists (cert abort {} first)", name, name)));
    if (cert_tx_.size() >= kMaxTransactions)
        return done(Reply::fail(fmt::format("too many open transactions (at most {})", kMaxTransactions)));
    cert_tx_[name] = CertTx{};
    log::info(kCtx, "certificate transaction {} opened", name);
    done(Reply::ok({fmt::format("new transaction {}: stage a certificate with cert set {} CERT KEY", name, name)}));
}

void Gateway::cert_set(std::string name, std::string cert_path, std::string key_path, admin::Done done) {
    auto it = cert_tx_.find(name);
    if (it == cert_tx_.end()) return done(Reply::fail(fmt::format("no transaction {} (cert new {} first)", name, name)));
    if (it->second.busy) return done(Reply::fail(fmt::format("transaction {} is busy with another cert set", name)));
    it->second.busy = true;
    struct Out {
        std::optional<Result<std::shared_ptr<tls::LocalCert>>> cert;
        tls::VerifyResult chain;
    };
    auto out = std::make_shared<Out>();
    const tls::TrustStore* trust = &trust_;
    // Key loading and chain verification off the loop: traffic keeps flowing.
    net::run_in_pool(
        loop_,
        [out, trust, cert_path, key_path] {
            out->cert = tls::load_cert_files(cert_path, key_path);
            if (*out->cert) out->chain = tls::verify_chain(*trust, (**out->cert)->chain_der, std::time(nullptr));
        },
        [this, out, name, done = std::move(done)]() mutable {
            auto it = cert_tx_.find(name);
            if (it == cert_tx_.end()) return done(Reply::fail(fmt::format("transaction {} was aborted meanwhile", name)));
            CertTx& tx = it->second;
            tx.busy = false;
            // A failed set leaves the transaction as it was (empty or with
            // the certificate staged before).
            if (!*out->cert) return done(Reply::fail(out->cert->error()));
            auto cert = std::move(**out->cert);
            if (!out->chain.trusted)
                return done(Reply::fail(fmt::format("the chain does not verify ({}): {}", tls::to_string(out->chain.reason),
                                                    out->chain.error)));
            if (domain_names(*cert).empty())
                return done(Reply::fail("the certificate names no domain (wildcards cannot be local domains)"));
            bool replaces = cert_by_subject(cert->identity.subject) != nullptr;
            std::vector<std::string> lines{
                fmt::format("staged in {}: {}", name, describe(*cert)),
                "key matches the certificate; chain verifies against the trust store",
                fmt::format("cert commit {} will {}", name,
                            replaces ? "replace the loaded certificate with the same subject" : "add it"),
            };
            tx.cert = std::move(cert);
            tx.chain = "verified";
            log::info(kCtx, "certificate transaction {}: staged {}", name, describe(*tx.cert));
            done(Reply::ok(std::move(lines)));
        });
}

void Gateway::cert_commit(std::string name, admin::Done done) {
    auto it = cert_tx_.find(name);
    if (it == cert_tx_.end()) return done(Reply::fail(fmt::format("no transaction {}", name)));
    CertTx& tx = it->second;
    if (tx.busy) return done(Reply::fail(fmt::format("transaction {} is busy with a cert set", name)));
    if (!tx.cert) return done(Reply::fail(fmt::format("transaction {} is empty (cert set {} CERT KEY first)", name, name)));
    if (stopping_) return done(Reply::fail("gateway shutting down"));
    // Everything that can fail is checked before anything changes.
    auto cert = tx.cert;
    if (cert->identity.not_after < std::time(nullptr))
        return done(Reply::fail(fmt::format("the staged certificate expired on {}", iso8601_utc(cert->identity.not_after))));
    auto old = cert_by_subject(cert->identity.subject);
    for (const auto& n : domain_names(*cert)) {
        auto other = certs_.find(n);
        if (!other || other == old) continue;
        const auto on = other->identity.names(); // a wildcard covering n is no conflict
        if (std::find(on.begin(), on.end(), n) != on.end())
            return done(Reply::fail(fmt::format("{} is served by another certificate ({}): cert remove {} first", n,
                                                other->identity.subject, n)));
    }
    cert_tx_.erase(it);
    log::info(kCtx, "certificate transaction {} committed", name);
    install_cert(cert, old != nullptr, [name, done = std::move(done)](Reply r) {
        r.lines.insert(r.lines.begin(), fmt::format("committed {}", name));
        done(std::move(r));
    });
}

void Gateway::cert_abort(std::string name, admin::Done done) {
    auto it = cert_tx_.find(name);
    if (it == cert_tx_.end()) return done(Reply::fail(fmt::format("no transaction {}", name)));
    cert_tx_.erase(it);
    log::info(kCtx, "certificate transaction {} aborted", name);
    done(Reply::ok({fmt::format("aborted {}: nothing changed", name)}));
}

void Gateway::cert_show(std::string name, admin::Done done) {
    if (name.empty()) {
        Table t{{"KIND"}, {"NAME"}, {"STATE"}, {"EXPIRES"}, {"NAMES"}, {"SUBJECT"}};
        for (const auto& [n, tx] : cert_tx_) {
            std::string state = tx.busy ? "loading" : !tx.cert ? "empty"
                                : cert_by_subject(tx.cert->identity.subject) ? "staged:replace"
                                                                             : "staged:add";
            t.add({"transaction", n, state, tx.cert ? iso8601_utc(tx.cert->identity.not_after) : "-",
                   tx.cert ? join(tx.cert->identity.names()) : "-", tx.cert ? cell(tx.cert->identity.subject) : "-"});
        }
        for (const auto& c : certs_.all())
            t.add({"live", cell(c->cert_path), "live", iso8601_utc(c->identity.not_after), join(c->identity.names()),
                   cell(c->identity.subject)});
        return done(Reply::ok(t.render()));
    }
    if (auto it = cert_tx_.find(name); it != cert_tx_.end()) {
        const CertTx& tx = it->second;
        std::vector<std::string> lines{fmt::format("transaction {}", name)};
        if (tx.busy) lines.push_back("state loading");
        if (!tx.cert) {
            lines.push_back("state empty");
        } else {
            lines.push_back(fmt::format("state staged ({})", cert_by_subject(tx.cert->identity.subject) ? "replace" : "add"));
            lines.push_back(describe(*tx.cert));
            lines.push_back(fmt::format("files cert={} key={}", tx.cert->cert_path, tx.cert->key_path));
            lines.push_back("chain " + tx.chain);
        }
        return done(Reply::ok(std::move(lines)));
    }
    auto c = certs_.find(name);
    if (!c) return done(Reply::fail(fmt::format("no transaction {} and no certificate serves it", name)));
    std::vector<std::string> lines{"live certificate", describe(*c),
                                   fmt::format("files cert={} key={}", c->cert_path.empty() ? "-" : c->cert_path,
                                               c->key_path.empty() ? "-" : c->key_path)};
    for (const auto& [id, p] : muxes_) {
        bool on = false;
        for (const auto& n : c->identity.names()) on = on || p->mux->ours_has(n);
        lines.push_back(fmt::format("s{} peer={} {}", id, cell(p->stream->session().remote_domain()),
                                    on ? "accepted" : "not-accepted"));
    }
    done(Reply::ok(std::move(lines)));
}

} // namespace s2smux
