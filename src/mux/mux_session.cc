#include "mux/mux_session.h"

#include "common/base64.h"
#include "common/log.h"
#include "common/timefmt.h"
#include "xml/writer.h"
#include "xmpp/jid.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>

namespace s2smux::mux {

namespace {

constexpr std::size_t kMaxChainCerts = 8;
constexpr std::size_t kAnnounceChunk = 500;

Signer signer_of(xmpp::Role r) { return r == xmpp::Role::Initiator ? Signer::Initiator : Signer::Receiver; }
Signer peer_signer_of(xmpp::Role r) { return r == xmpp::Role::Initiator ? Signer::Receiver : Signer::Initiator; }

bool parse_id(std::string_view s, std::uint64_t& out) {
    if (s.empty() || s.size() > 19 || s[0] == '0') return false;
    auto r = std::from_chars(s.data(), s.data() + s.size(), out);
    return r.ec == std::errc() && r.ptr == s.data() + s.size();
}


std::string_view condition_of(const xml::Node& el) {
    for (const xml::Node* c = el.first; c; c = c->next)
        if (c->kind == xml::Node::Kind::Element && c->name != "text" && c->name != "name") return c->name;
    return {};
}

std::string text_child(const xml::Node& el) {
    const xml::Node* t = el.child(kNs, "text");
    return t ? t->text_content() : std::string();
}

std::vector<std::string> name_children(const xml::Node& el) {
    std::vector<std::string> names;
    for (const xml::Node* c = el.first; c; c = c->next)
        if (c->is(kNs, "name")) names.push_back(xmpp::lowercase_domain(c->text_content()));
    return names;
}

} // namespace

const char* to_string(Refusal r) {
    switch (r) {
    case Refusal::FromNotAccepted: return "from-not-multiplexed";
    case Refusal::ToNotAccepted: return "to-not-multiplexed";
    case Refusal::None: break;
    }
    return "none";
}

// ------------------------------------------------------------ name index

void MuxSession::NameIndex::add(const std::vector<std::string>& names) {
    for (const auto& n : names) ++count[n];
}

void MuxSession::NameIndex::remove(const std::vector<std::string>& names) {
    for (const auto& n : names) {
        auto it = count.find(n);
        if (it != count.end() && --it->second <= 0) count.erase(it);
    }
}

bool MuxSession::NameIndex::has(std::string_view domain) const {
    if (domain.empty()) return false;
    // A reused scratch key keeps the per-stanza lookup free of allocations.
    thread_local std::string key;
    key.assign(domain);
    if (count.count(key)) return true;
    auto dot = domain.find('.');
    if (dot == std::string_view::npos || dot == 0) return false;
    key.assign("*");
    key.append(domain.substr(dot));
    return count.count(key) != 0;
}

std::vector<std::string> MuxSession::usable_names(const std::vector<std::string>& names) {
    std::vector<std::string> out;
    for (const auto& n : names) {
        if (n.rfind("*.", 0) == 0) {
            // "*.test" would cover every .test domain: RFC 6125 wildcards
            // need a registered domain under them (tls::dns_name_matches agrees).
            std::string_view rest = std::string_view(n).substr(2);
            if (rest.find('.') == std::string_view::npos || rest.find('*') != std::string_view::npos) continue;
        } else if (n.find('*') != std::string::npos) {
            continue;
        }
        out.push_back(n);
    }
    return out;
}

std::size_t MuxSession::SubjectIndex::find(const std::vector<CertEntry>& v, std::string_view subject) const {
    if (subject.empty()) return npos;
    auto [b, e] = at.equal_range(std::hash<std::string_view>{}(subject));
    for (auto it = b; it != e; ++it)
        if (v[it->second].subject == subject) return it->second;
    return npos;
}

void MuxSession::SubjectIndex::insert(std::string_view subject, std::size_t idx) {
    if (!subject.empty()) at.emplace(std::hash<std::string_view>{}(subject), idx);
}

void MuxSession::SubjectIndex::erase(const std::vector<CertEntry>& v, std::size_t idx) {
    if (!v[idx].subject.empty()) {
        auto [b, e] = at.equal_range(std::hash<std::string_view>{}(v[idx].subject));
        for (auto it = b; it != e; ++it) {
            if (it->second == idx) {
                at.erase(it);
                break;
            }
        }
    }
    for (auto& [h, i] : at)
        if (i > idx) --i;
}

void MuxSession::pending_insert(const std::string& id, PendingAdd pa) {
    ++pending_domains_[pa.domain];
    lower_deadline(pa.sent_at + limits_.add_timeout_ms);
    pending_out_[id] = std::move(pa);
}

void MuxSession::pending_erase(std::map<std::string, PendingAdd, std::less<>>::iterator it) {
    if (!it->second.timed_out) pending_timed_out(it->second);
    pending_out_.erase(it);
}

void MuxSession::pending_timed_out(PendingAdd& pa) {
    pa.timed_out = true;
    if (auto d = pending_domains_.find(pa.domain); d != pending_domains_.end() && --d->second <= 0)
        pending_domains_.erase(d);
}

// ------------------------------------------------------------ lifecycle

MuxSession::MuxSession(xmpp::Session& s, MuxHost& host, Binding b, Limits limits, TimeMs now)
    : session_(&s), host_(host), bind_(std::move(b)), limits_(limits), alive_(std::make_shared<bool>(true)),
      tokens_(limits.add_burst), last_refill_(now), now_(now) {
    // The handshake certificates are the first accepted certificate of each
    // side: both were verified before multiplexing could be enabled.
    CertEntry ours{bind_.our_tls.subject, usable_names(bind_.our_tls.names()), bind_.our_tls.not_after, "tls"};
    CertEntry peer{bind_.peer_tls.subject, usable_names(bind_.peer_tls.names()), bind_.peer_tls.not_after, "tls"};
    ours_names_.add(ours.names);
    peer_names_.add(peer.names);
    ours_subjects_.insert(ours.subject, 0);
    peer_subjects_.insert(peer.subject, 0);
    peer_name_total_ = peer.names.size();
    ours_.push_back(std::move(ours));
    peer_.push_back(std::move(peer));
}

MuxSession::MuxSession(xmpp::Session& s, MuxHost& host, Binding b, Limits limits, TimeMs now, MuxSession&& prev)
    : session_(&s), host_(host), bind_(std::move(b)), limits_(limits), alive_(std::make_shared<bool>(true)),
      ours_(std::move(prev.ours_)), peer_(std::move(prev.peer_)), ours_names_(std::move(prev.ours_names_)),
      peer_names_(std::move(prev.peer_names_)), ours_subjects_(std::move(prev.ours_subjects_)),
      peer_subjects_(std::move(prev.peer_subjects_)), pending_out_(std::move(prev.pending_out_)),
      pending_domains_(std::move(prev.pending_domains_)),
      failed_ours_(std::move(prev.failed_ours_)), expected_peer_(std::move(prev.expected_peer_)),
      withdrawn_peer_(std::move(prev.withdrawn_peer_)), removed_at_(std::move(prev.removed_at_)),
      out_id_(prev.out_id_), last_peer_id_(prev.last_peer_id_), peer_announce_complete_(prev.peer_announce_complete_),
      peer_name_total_(prev.peer_name_total_), tokens_(prev.tokens_), last_refill_(now), now_(now),
      stats_(std::move(prev.stats_)) {
    *prev.alive_ = false;
    // Ids reserved on the old stream and never sent are skipped (the peer
    // only checks that ids increase); what was waiting in the outbox is
    // gone with it: our adds go again (reissue_pending), the peer's adds we
    // were still verifying are sent again by the peer (they are pending on
    // its side too).
    sent_id_ = out_id_;
}

void MuxSession::reissue_pending(TimeMs now) {
    std::map<std::string, PendingAdd, std::less<>> old;
    old.swap(pending_out_);
    pending_domains_.clear();
    for (auto& [id, pa] : old) {
        log::info(session_->log_context(), "mux: adding {} again (id {} was in flight when the stream broke)",
                  pa.domain, id);
        add(pa.cert, pa.domain, now);
    }
}

MuxSession::~MuxSession() { *alive_ = false; }

std::int64_t MuxSession::unix_now() const { return (now_ + bind_.unix_offset_ms) / 1000; }

TimeMs MuxSession::mono_from_unix(std::int64_t unix_s) const { return unix_s * 1000 - bind_.unix_offset_ms; }

// -------------------------------------------------------------- sending

std::uint64_t MuxSession::reserve_id() { return ++out_id_; }

void MuxSession::emit(std::uint64_t id, std::string xml) {
    outbox_[id] = std::move(xml);
    while (!outbox_.empty() && outbox_.begin()->first == sent_id_ + 1) {
        if (!outbox_.begin()->second.empty() && !session_->closed()) session_->send_raw(outbox_.begin()->second);
        sent_id_ = outbox_.begin()->first;
        outbox_.erase(outbox_.begin());
    }
}

void MuxSession::announce(const std::vector<std::string>& domains) {
    // Chunked to stay far below stanza size limits; the last chunk says
    // final='true' so the peer knows which of our domains will never come.
    std::size_t i = 0;
    do {
        std::size_t end = std::min(domains.size(), i + kAnnounceChunk);
        std::string x;
        xml::Writer w(x);
        w.open("announce").xmlns(kNs);
        if (end == domains.size()) w.attr("final", "true");
        for (std::size_t j = i; j < end; ++j) w.open("domain").text(domains[j]).close();
        w.close();
        session_->send_raw(x);
        i = end;
    } while (i < domains.size());
}

void MuxSession::add(std::shared_ptr<const tls::LocalCert> cert, const std::string& domain_in, TimeMs now) {
    now_ = std::max(now_, now);
    if (!cert || cert->chain_der.empty()) return;
    // The wire carries the domain lowercased and the receiver verifies the
    // proof over what it received: sign exactly that.
    std::string domain = xmpp::lowercase_domain(domain_in);
    std::uint64_t id = reserve_id();
    std::string ids = std::to_string(id);
    std::string message = proof_message(bind_.exporter, signer_of(bind_.role), bind_.stream_id, ids, domain,
                                        cert->chain_der.front());
    pending_insert(ids, PendingAdd{domain, cert, now_});
    failed_ours_.erase(domain);
    log::debug(session_->log_context(), "mux: adding {} (id {})", domain, ids);
    host_.mux_sign(cert, std::move(message), [this, alive = alive_, id, ids, domain, cert](Result<Signature> sig) {
        if (!*alive) return;
        if (!sig) {
            if (auto it = pending_out_.find(ids); it != pending_out_.end()) pending_erase(it);
            emit(id, {});
            failed_ours_[domain] = "signing failed";
            ++stats_.failures["signing-failed"];
            log::error(session_->log_context(), "mux: cannot sign the add of {}: {}", domain, sig.error());
            host_.mux_add_answered(domain, false, AddFailure::Malformed, sig.error());
            return;
        }
        std::string x;
        x.reserve(512 + cert->chain_der.size() * 1024);
        xml::Writer w(x);
        w.open("add").xmlns(kNs).attr("id", ids).attr("domain", domain);
        std::string b64;
        for (const auto& der : cert->chain_der) {
            b64.clear();
            base64_encode(b64, der);
            w.open("cert").text(b64).close();
        }
        b64.clear();
        base64_encode(b64, sig->value);
        w.open("proof").attr("alg", sig->alg).text(b64).close();
        w.close();
        ++stats_.adds_sent;
        emit(id, std::move(x));
    });
}

bool MuxSession::remove(std::string_view domain, TimeMs now) {
    now_ = std::max(now_, now);
    deadline_dirty_ = true;
    // An add (e.g. a renewal) of a certificate carrying the name, still
    // waiting for its answer, is withdrawn too: its answer will be ignored.
    bool cancelled = false;
    for (auto it = pending_out_.begin(); it != pending_out_.end();) {
        auto names = it->second.cert->identity.names();
        if (it->second.domain == domain || std::find(names.begin(), names.end(), domain) != names.end()) {
            pending_erase(it++);
            cancelled = true;
        } else {
            ++it;
        }
    }
    for (std::size_t i = 0; i < ours_.size(); ++i) {
        const auto& names = ours_[i].names;
        if (std::find(names.begin(), names.end(), domain) == names.end()) continue;
        std::string d(domain);
        drop_our_cert(i); // stop sending from its names at once
        std::uint64_t id = reserve_id();
        std::string x;
        xml::Writer(x).open("remove").xmlns(kNs).attr("id", std::to_string(id)).attr("domain", d).close();
        emit(id, std::move(x));
        host_.mux_names_changed();
        return true;
    }
    if (cancelled) {
        // Nothing accepted yet, but the peer may be verifying it: tell it.
        std::uint64_t id = reserve_id();
        std::string x;
        xml::Writer(x).open("remove").xmlns(kNs).attr("id", std::to_string(id)).attr("domain", domain).close();
        emit(id, std::move(x));
        return true;
    }
    return false;
}

void MuxSession::send_failed(std::string_view id, std::string_view domain, AddFailure why, std::string_view text) {
    ++stats_.peer_adds_failed;
    ++stats_.peer_failures[to_string(why)];
    std::string x;
    xml::Writer w(x);
    w.open("failed").xmlns(kNs).attr("id", id, true).attr("domain", domain, true);
    w.open(to_string(why)).close();
    if (!text.empty()) w.open("text").text(text).close();
    w.close();
    session_->send_raw(x);
    log::warn(session_->log_context(), "mux: refused the peer's add of {} (id {}): {}: {}", domain, id,
              to_string(why), text);
}

// ------------------------------------------------------------- receiving

void MuxSession::mux_element(const xml::Node& el, TimeMs now) {
    // The deadline only moves earlier through lower_deadline() (new
    // certificates, new adds) or is recomputed after removals.
    now_ = now;
    if (el.name == "add") recv_add(el, now);
    else if (el.name == "added") recv_added(el);
    else if (el.name == "failed") recv_failed(el);
    else if (el.name == "remove") recv_remove(el);
    else if (el.name == "removed") recv_removed(el);
    else if (el.name == "revoke") recv_revoke(el);
    else if (el.name == "announce") recv_announce(el);
    else if (el.name == "refused") recv_refused(el);
    else session_->close(xmpp::StreamError::UnsupportedStanzaType, fmt::format("unknown mux element <{}/>", el.name));
}

void MuxSession::refill(TimeMs now) {
    if (now > last_refill_) {
        tokens_ = std::min(limits_.add_burst, tokens_ + limits_.add_rate * double(now - last_refill_) / 1000.0);
        last_refill_ = now;
    }
}

void MuxSession::recv_add(const xml::Node& el, TimeMs now) {
    ++stats_.peer_adds;
    std::string_view ids = el.attr("id");
    std::string domain = xmpp::lowercase_domain(el.attr("domain"));
    std::uint64_t id = 0;
    if (!parse_id(ids, id)) return send_failed(ids, domain, AddFailure::Malformed, "id must be a positive decimal number");
    // Ids only ever increase: an id seen before (or older) is a replay.
    if (id <= last_peer_id_)
        return send_failed(ids, domain, AddFailure::Replayed,
                           fmt::format("id {} is not above the last id {}", id, last_peer_id_));
    last_peer_id_ = id;
    refill(now);
    if (tokens_ < 1.0)
        return send_failed(ids, domain, AddFailure::RateLimited,
                           fmt::format("more than {:.0f} adds per second", limits_.add_rate));
    tokens_ -= 1.0;
    if (domain.empty() || !xmpp::valid_domain(domain))
        return send_failed(ids, domain, AddFailure::Malformed, "missing or invalid 'domain'");
    if (host_.mux_is_local(domain))
        return send_failed(ids, domain, AddFailure::PolicyViolation, fmt::format("{} is a domain of this gateway", domain));
    // Early refusal before any crypto when the stream is full, except for a
    // name already accepted (a renewal replaces, it does not grow); the
    // exact count is checked once the certificate's names are known.
    if (peer_name_total_ + verifying_ >= limits_.max_domains && !peer_names_.has(domain))
        return send_failed(ids, domain, AddFailure::TooManyDomains,
                           fmt::format("at most {} domains per stream", limits_.max_domains));
    if (verifying_ >= limits_.max_pending)
        return send_failed(ids, domain, AddFailure::Busy,
                           fmt::format("{} adds already being verified", verifying_));

    AddCheckInput in;
    in.domain = domain;
    std::size_t total = 0;
    for (const xml::Node* c = el.first; c; c = c->next) {
        if (!c->is(kNs, "cert")) continue;
        if (in.chain_der.size() >= kMaxChainCerts)
            return send_failed(ids, domain, AddFailure::ChainTooLarge, fmt::format("more than {} certificates", kMaxChainCerts));
        std::string der;
        std::string b64 = c->text_content();
        if (b64.size() / 4 * 3 > limits_.max_chain_bytes)
            return send_failed(ids, domain, AddFailure::ChainTooLarge, fmt::format("chain over {} bytes", limits_.max_chain_bytes));
        if (!base64_decode(der, b64) || der.empty())
            return send_failed(ids, domain, AddFailure::Malformed, "certificate is not valid base64");
        total += der.size();
        if (total > limits_.max_chain_bytes)
            return send_failed(ids, domain, AddFailure::ChainTooLarge, fmt::format("chain over {} bytes", limits_.max_chain_bytes));
        in.chain_der.push_back(std::move(der));
    }
    if (in.chain_der.empty()) return send_failed(ids, domain, AddFailure::Malformed, "no certificate");
    const xml::Node* proof = el.child(kNs, "proof");
    if (!proof || proof->attr("alg").empty() || !base64_decode(in.signature, proof->text_content()) ||
        in.signature.empty())
        return send_failed(ids, domain, AddFailure::Malformed, "missing or invalid <proof/>");
    in.alg = std::string(proof->attr("alg"));
    in.message = proof_message(bind_.exporter, peer_signer_of(bind_.role), bind_.stream_id, ids, domain,
                               in.chain_der.front());
    in.now = unix_now();
    ++verifying_;
    ++expected_peer_[domain];
    host_.mux_verify(std::move(in), [this, alive = alive_, ids = std::string(ids), domain](AddCheckResult res) mutable {
        if (!*alive) return;
        --verifying_;
        if (auto it = expected_peer_.find(domain); it != expected_peer_.end() && --it->second <= 0)
            expected_peer_.erase(it);
        if (session_->closed()) return;
        if (res.failure != AddFailure::None) {
            send_failed(ids, domain, res.failure, res.text);
            host_.mux_names_changed(); // routes waiting for it give up
            return;
        }
        // The peer removed the name after sending this add: the later
        // request wins, the verified add is not applied.
        std::uint64_t add_id = 0;
        parse_id(ids, add_id);
        for (const auto& n : res.names) {
            if (auto r = removed_at_.find(n); r != removed_at_.end() && r->second > add_id) {
                send_failed(ids, domain, AddFailure::PolicyViolation,
                            fmt::format("{} was removed (id {}) before this add was verified", n, r->second));
                return;
            }
        }
        accept_peer(std::move(ids), std::move(domain), std::move(res));
    });
}

void MuxSession::accept_peer(std::string id, std::string domain, AddCheckResult res) {
    res.names = usable_names(res.names);
    // Every name becomes valid, so none may be (or cover) one of ours: a
    // certificate naming c.test and our e.test must not let the peer send
    // from e.test.
    for (const auto& n : res.names) {
        if (host_.mux_is_local(n))
            return send_failed(id, domain, AddFailure::PolicyViolation,
                               fmt::format("the certificate also names {}, a domain of this gateway", n));
    }
    // Same subject as an accepted certificate: a renewal, replaced in place.
    std::size_t same = peer_subjects_.find(peer_, res.identity.subject);
    std::size_t replaced = same == SubjectIndex::npos ? 0 : peer_[same].names.size();
    if (peer_name_total_ - std::min(peer_name_total_, replaced) + res.names.size() > limits_.max_domains)
        return send_failed(id, domain, AddFailure::TooManyDomains,
                           fmt::format("{} more name(s) would exceed {} domains per stream", res.names.size(),
                                       limits_.max_domains));
    // Replaced in place, so the names it keeps never stop being valid. An
    // empty subject (allowed when the names are in SANs) identifies
    // nothing: such certificates never replace each other (not indexed).
    for (const auto& n : res.names) withdrawn_peer_.erase(n);
    // Accepted now: no longer merely expected (announced).
    expected_peer_.erase(domain);
    for (const auto& n : res.names) expected_peer_.erase(n);
    if (res.identity.not_after) lower_deadline(mono_from_unix(res.identity.not_after + 1));
    if (same != SubjectIndex::npos) {
        auto it = peer_.begin() + static_cast<std::ptrdiff_t>(same);
        peer_names_.add(res.names); // add first: no gap for names in both
        peer_names_.remove(it->names);
        peer_name_total_ = peer_name_total_ - it->names.size() + res.names.size();
        it->names = res.names;
        it->not_after = res.identity.not_after;
        it->add_id = id;
        log::info(session_->log_context(), "mux: replaced the peer's certificate {} (now valid until {})",
                  res.identity.subject, iso8601_utc(res.identity.not_after));
    } else {
        peer_names_.add(res.names);
        peer_name_total_ += res.names.size();
        peer_subjects_.insert(res.identity.subject, peer_.size());
        peer_.push_back(CertEntry{std::move(res.identity.subject), res.names, res.identity.not_after, id});
    }
    ++stats_.peer_adds_ok;
    std::string x;
    xml::Writer w(x);
    w.open("added").xmlns(kNs).attr("id", id).attr("domain", domain).attr("expires", iso8601_utc(res.identity.not_after));
    for (const auto& n : res.names) w.open("name").text(n).close();
    w.close();
    session_->send_raw(x);
    log::info(session_->log_context(), "mux: accepted the peer's {} (id {}, {} name(s))", domain, id, res.names.size());
    host_.mux_names_changed();
}

void MuxSession::recv_added(const xml::Node& el) {
    std::string id(el.attr("id"));
    auto it = pending_out_.find(id);
    if (it == pending_out_.end()) {
        log::debug(session_->log_context(), "mux: <added/> for unknown id {} ignored", id);
        return;
    }
    PendingAdd pa = it->second;
    pending_erase(it);
    // The peer lists what it now accepts; keep only names of our certificate.
    std::vector<std::string> cert_names = usable_names(pa.cert->identity.names());
    std::vector<std::string> names;
    for (auto& n : name_children(el))
        if (std::find(cert_names.begin(), cert_names.end(), n) != cert_names.end()) names.push_back(std::move(n));
    const std::string& subject = pa.cert->identity.subject;
    if (pa.cert->identity.not_after) lower_deadline(mono_from_unix(pa.cert->identity.not_after + 1));
    if (std::size_t same = ours_subjects_.find(ours_, subject); same != SubjectIndex::npos) {
        auto e = ours_.begin() + static_cast<std::ptrdiff_t>(same);
        ours_names_.add(names);
        ours_names_.remove(e->names);
        e->names = names;
        e->not_after = pa.cert->identity.not_after;
        e->add_id = id;
    } else {
        ours_names_.add(names);
        ours_subjects_.insert(subject, ours_.size());
        ours_.push_back(CertEntry{subject, names, pa.cert->identity.not_after, id});
    }
    ++stats_.adds_ok;
    stats_.add_round_trip.observe_ms(now_ - pa.sent_at);
    if (pa.timed_out) --stats_.adds_failed;
    failed_ours_.erase(pa.domain);
    log::info(session_->log_context(), "mux: the peer accepted {} (id {}, {} name(s))", pa.domain, id, names.size());
    host_.mux_add_answered(pa.domain, true, AddFailure::None, {});
    host_.mux_names_changed();
}

void MuxSession::recv_failed(const xml::Node& el) {
    std::string id(el.attr("id"));
    auto it = pending_out_.find(id);
    if (it == pending_out_.end()) {
        log::debug(session_->log_context(), "mux: <failed/> for unknown id {} ignored", id);
        return;
    }
    std::string domain = it->second.domain;
    bool already_reported = it->second.timed_out;
    stats_.add_round_trip.observe_ms(now_ - it->second.sent_at);
    pending_erase(it);
    std::string_view cond = condition_of(el);
    AddFailure why = AddFailure::Malformed;
    parse_add_failure(cond, why);
    std::string text = text_child(el);
    failed_ours_[domain] = text.empty() ? std::string(cond) : fmt::format("{}: {}", cond, text);
    if (already_reported) return;
    ++stats_.adds_failed;
    ++stats_.failures[to_string(why)]; // parsed: the peer cannot invent label values
    log::warn(session_->log_context(), "mux: the peer refused our add of {} (id {}): {}{}{}", domain, id, cond,
              text.empty() ? "" : ": ", text);
    host_.mux_add_answered(domain, false, why, text);
    host_.mux_names_changed();
}

void MuxSession::recv_remove(const xml::Node& el) {
    std::string_view ids = el.attr("id");
    std::string domain = xmpp::lowercase_domain(el.attr("domain"));
    std::uint64_t id = 0;
    if (!parse_id(ids, id) || id <= last_peer_id_) {
        log::warn(session_->log_context(), "mux: <remove/> with a stale or invalid id '{}' ignored", ids);
        return;
    }
    last_peer_id_ = id;
    removed_at_[domain] = id;
    std::vector<std::string> removed;
    for (std::size_t i = 0; i < peer_.size(); ++i) {
        const auto& names = peer_[i].names;
        if (std::find(names.begin(), names.end(), domain) == names.end()) continue;
        removed = names;
        drop_peer_cert(i, "removed by the peer");
        break;
    }
    std::string x;
    xml::Writer w(x);
    w.open("removed").xmlns(kNs).attr("id", ids).attr("domain", domain);
    for (const auto& n : removed) w.open("name").text(n).close();
    w.close();
    session_->send_raw(x);
    if (!removed.empty()) host_.mux_names_changed();
}

void MuxSession::recv_removed(const xml::Node& el) {
    log::info(session_->log_context(), "mux: the peer confirmed the removal of {}", el.attr("domain"));
}

void MuxSession::recv_revoke(const xml::Node& el) {
    std::string domain = xmpp::lowercase_domain(el.attr("domain"));
    for (std::size_t i = 0; i < ours_.size(); ++i) {
        const auto& names = ours_[i].names;
        if (std::find(names.begin(), names.end(), domain) == names.end()) continue;
        log::warn(session_->log_context(), "mux: the peer no longer accepts our {} ({})", domain, condition_of(el));
        drop_our_cert(i);
        host_.mux_names_changed();
        return;
    }
}

void MuxSession::recv_announce(const xml::Node& el) {
    for (const xml::Node* c = el.first; c; c = c->next) {
        if (!c->is(kNs, "domain")) continue;
        std::string d = xmpp::lowercase_domain(c->text_content());
        if (xmpp::valid_domain(d) && expected_peer_.size() < limits_.max_domains) ++expected_peer_[d];
    }
    if (el.attr("final") == "true") peer_announce_complete_ = true;
    // A hint only: it is never authority to send anything to those names.
    host_.mux_names_changed();
}

void MuxSession::recv_refused(const xml::Node& el) {
    xmpp::StanzaHead h{el.attr("stanza"), el.attr("from"), el.attr("to"), el.attr("id"), el.attr("type")};
    std::string_view cond = condition_of(el);
    Refusal why = cond == "from-not-multiplexed" ? Refusal::FromNotAccepted : Refusal::ToNotAccepted;
    ++stats_.refused_out;
    std::string text = text_child(el);
    log::warn(session_->log_context(), "mux: the peer refused <{}/> from {} to {}: {}", h.name, h.from, h.to, cond);
    host_.mux_refused(h, why, text);
}

void MuxSession::drop_peer_cert(std::size_t idx, const char* why) {
    deadline_dirty_ = true;
    log::info(session_->log_context(), "mux: peer certificate {} dropped ({})", peer_[idx].subject, why);
    for (const auto& n : peer_[idx].names) withdrawn_peer_[n] = why;
    peer_names_.remove(peer_[idx].names);
    peer_name_total_ -= std::min(peer_name_total_, peer_[idx].names.size());
    peer_subjects_.erase(peer_, idx);
    peer_.erase(peer_.begin() + static_cast<std::ptrdiff_t>(idx));
}

void MuxSession::drop_our_cert(std::size_t idx) {
    deadline_dirty_ = true;
    ours_names_.remove(ours_[idx].names);
    ours_subjects_.erase(ours_, idx);
    ours_.erase(ours_.begin() + static_cast<std::ptrdiff_t>(idx));
}

// ---------------------------------------------------------------- routing

bool MuxSession::ours_has(std::string_view d) const { return ours_names_.has(d); }
bool MuxSession::peer_has(std::string_view d) const { return peer_names_.has(d); }

bool MuxSession::ours_pending(std::string_view d) const { return pending_domains_.find(d) != pending_domains_.end(); }

bool MuxSession::peer_expected(std::string_view d) const { return expected_peer_.count(std::string(d)) != 0; }

bool MuxSession::peer_withdrew(std::string_view d) const {
    return !peer_names_.has(d) && withdrawn_peer_.count(std::string(d)) != 0;
}

const std::string* MuxSession::ours_failure(std::string_view d) const {
    auto it = failed_ours_.find(std::string(d));
    return it == failed_ours_.end() ? nullptr : &it->second;
}

bool MuxSession::mux_send_allowed(std::string_view from, std::string_view to) const {
    return ours_names_.has(from) && peer_names_.has(to);
}

bool MuxSession::mux_check_receive(std::string_view from, std::string_view to, const char** reason) const {
    if (!peer_names_.has(from)) {
        *reason = to_string(Refusal::FromNotAccepted);
        return false;
    }
    if (!ours_names_.has(to)) {
        *reason = to_string(Refusal::ToNotAccepted);
        return false;
    }
    return true;
}

void MuxSession::mux_refuse(const xml::Node& el, const xmpp::StanzaRoute& r, const char* reason) {
    ++stats_.refused_in;
    Refusal why = std::string_view(reason) == "from-not-multiplexed" ? Refusal::FromNotAccepted : Refusal::ToNotAccepted;
    std::string text = why == Refusal::FromNotAccepted
                           ? fmt::format("{} was not multiplexed on this stream", r.from_domain)
                           : fmt::format("{} is not multiplexed on this stream", r.to_domain.empty() ? r.head.to : r.to_domain);
    host_.mux_refusing(r.head, why);
    if (limits_.strict) {
        session_->close(xmpp::StreamError::PolicyViolation,
                       fmt::format("<{}/> from {} to {}: {}", el.name, r.head.from, r.head.to, text));
        return;
    }
    std::string x;
    xml::Writer w(x);
    w.open("refused").xmlns(kNs).attr("stanza", el.name).attr("from", r.head.from).attr("to", r.head.to)
        .attr("id", r.head.id, true).attr("type", r.head.type, true);
    w.open(reason).close();
    w.open("text").text(text).close();
    w.close();
    session_->send_raw(x);
}

// ----------------------------------------------------------------- timers

void MuxSession::mux_timer(TimeMs now) {
    deadline_dirty_ = true;
    now_ = now;
    std::int64_t t = unix_now();
    bool changed = false;
    // Accepted peer certificates that expired: drop them and tell the peer.
    for (std::size_t i = 0; i < peer_.size();) {
        // notAfter is the last valid second (RFC 5280 §4.1.2.5).
        if (peer_[i].not_after == 0 || peer_[i].not_after >= t) {
            ++i;
            continue;
        }
        std::string name = peer_[i].names.empty() ? std::string() : peer_[i].names.front();
        std::string x;
        xml::Writer w(x);
        w.open("revoke").xmlns(kNs).attr("domain", name).open("expired").close();
        w.open("text").text(fmt::format("certificate {} expired on {}", peer_[i].subject, iso8601_utc(peer_[i].not_after))).close();
        w.close();
        drop_peer_cert(i, "expired");
        session_->send_raw(x);
        changed = true;
    }
    // Our own certificates stop being usable when they expire, too.
    for (std::size_t i = 0; i < ours_.size();) {
        if (ours_[i].not_after == 0 || ours_[i].not_after >= t) {
            ++i;
            continue;
        }
        log::warn(session_->log_context(), "mux: our certificate {} expired", ours_[i].subject);
        drop_our_cert(i);
        changed = true;
    }
    // Adds the peer never answered: failed for the router, but a late
    // <added/> is still honoured so both sides end up agreeing; forgotten
    // after ten timeouts.
    for (auto it = pending_out_.begin(); it != pending_out_.end();) {
        if (it->second.timed_out) {
            if (now - it->second.sent_at >= 10 * limits_.add_timeout_ms) pending_erase(it++);
            else ++it;
            continue;
        }
        if (now - it->second.sent_at < limits_.add_timeout_ms) {
            ++it;
            continue;
        }
        std::string domain = it->second.domain;
        pending_timed_out(it->second);
        ++it;
        failed_ours_[domain] = "timeout";
        ++stats_.adds_failed;
        ++stats_.failures["timeout"];
        host_.mux_add_answered(domain, false, AddFailure::Busy,
                               fmt::format("no answer within {} s", limits_.add_timeout_ms / 1000));
        changed = true;
    }
    if (changed) host_.mux_names_changed();
}

TimeMs MuxSession::mux_deadline() const {
    if (!deadline_dirty_) return deadline_cache_;
    deadline_dirty_ = false;
    TimeMs d = kNever;
    for (const auto& c : peer_)
        if (c.not_after) d = std::min(d, mono_from_unix(c.not_after + 1));
    for (const auto& c : ours_)
        if (c.not_after) d = std::min(d, mono_from_unix(c.not_after + 1));
    for (const auto& [id, p] : pending_out_)
        d = std::min(d, p.sent_at + (p.timed_out ? 10 : 1) * limits_.add_timeout_ms);
    deadline_cache_ = d;
    return d;
}

} // namespace s2smux::mux
