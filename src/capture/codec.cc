#include "capture/codec.h"

#include "capture/format.h"

#include <fmt/format.h>

#include <charconv>

namespace s2smux::capture {

namespace {

std::string kv(std::string_view k, std::string_view v) { return fmt::format("{}={}", k, v); }
std::string kvb(std::string_view k, bool v) { return kv(k, std::string_view(v ? "1" : "0")); }
std::string kv(std::string_view k, std::uint64_t v) { return fmt::format("{}={}", k, v); }
std::string kv(std::string_view k, std::int64_t v) { return fmt::format("{}={}", k, v); }

std::string join(const std::vector<std::string>& v) {
    std::string out;
    for (const auto& s : v) {
        if (!out.empty()) out += ',';
        out += s;
    }
    return out;
}

std::vector<std::string> split_list(std::string_view s) {
    std::vector<std::string> out;
    while (!s.empty()) {
        auto c = s.find(',');
        out.emplace_back(s.substr(0, c));
        if (c == std::string_view::npos) break;
        s.remove_prefix(c + 1);
    }
    return out;
}

// Reads keys from tokens; the first bad value is remembered.
struct Reader {
    const std::vector<std::string>& t;
    std::string err;

    std::string_view str(std::string_view k, std::string_view d = {}) const { return token_value(t, k, d); }
    bool flag(std::string_view k, bool d) {
        auto v = token_value(t, k);
        if (v.empty()) return d;
        if (v != "0" && v != "1" && err.empty()) err = fmt::format("{}={}: expected 0 or 1", k, v);
        return v == "1";
    }
    template <class N>
    N num(std::string_view k, N d) {
        auto v = token_value(t, k);
        if (v.empty()) return d;
        N n{};
        auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
        if ((ec != std::errc() || p != v.data() + v.size()) && err.empty())
            err = fmt::format("{}={}: expected a number", k, v);
        return n;
    }
};

void encode_identity(std::vector<std::string>& out, std::string_view p, const tls::Identity& id) {
    out.push_back(kv(fmt::format("{}subject", p), id.subject));
    if (!id.common_name.empty()) out.push_back(kv(fmt::format("{}cn", p), id.common_name));
    if (!id.dns.empty()) out.push_back(kv(fmt::format("{}dns", p), join(id.dns)));
    if (!id.srv.empty()) out.push_back(kv(fmt::format("{}srv", p), join(id.srv)));
    if (!id.xmpp.empty()) out.push_back(kv(fmt::format("{}xmpp", p), join(id.xmpp)));
    out.push_back(kv(fmt::format("{}not_before", p), id.not_before));
    out.push_back(kv(fmt::format("{}not_after", p), id.not_after));
}

tls::Identity decode_identity(Reader& r, std::string_view p) {
    tls::Identity id;
    id.subject = r.str(fmt::format("{}subject", p));
    id.common_name = r.str(fmt::format("{}cn", p));
    id.dns = split_list(r.str(fmt::format("{}dns", p)));
    id.srv = split_list(r.str(fmt::format("{}srv", p)));
    id.xmpp = split_list(r.str(fmt::format("{}xmpp", p)));
    id.not_before = r.num<std::int64_t>(fmt::format("{}not_before", p), 0);
    id.not_after = r.num<std::int64_t>(fmt::format("{}not_after", p), 0);
    return id;
}

} // namespace

std::vector<std::string> encode_config(const xmpp::SessionConfig& c) {
    std::vector<std::string> t;
    t.push_back(kv("role", c.role == xmpp::Role::Initiator ? "initiator" : "receiver"));
    t.push_back(kv("tls", xmpp::to_string(c.tls_policy)));
    t.push_back(kvb("tls_possible", c.tls_possible));
    t.push_back(kvb("verify_peer", c.verify_peer));
    t.push_back(kvb("offer_external", c.offer_external));
    t.push_back(kvb("use_external", c.use_external));
    t.push_back(kvb("offer_dialback", c.offer_dialback));
    t.push_back(kvb("use_dialback", c.use_dialback));
    t.push_back(kvb("offer_bidi", c.offer_bidi));
    t.push_back(kvb("want_bidi", c.want_bidi));
    if (!c.from.empty()) t.push_back(kv("from", c.from));
    if (!c.to.empty()) t.push_back(kv("to", c.to));
    t.push_back(kvb("verify_only", c.verify_only));
    t.push_back(kvb("offer_mux", c.offer_mux));
    t.push_back(kvb("want_mux", c.want_mux));
    t.push_back(kv("max_stanza_bytes", std::uint64_t(c.limits.max_stanza_bytes)));
    t.push_back(kv("max_header_bytes", std::uint64_t(c.limits.max_header_bytes)));
    t.push_back(kv("max_depth", std::uint64_t(c.limits.max_depth)));
    t.push_back(kv("max_attrs", std::uint64_t(c.limits.max_attrs)));
    t.push_back(kv("max_attr_value", std::uint64_t(c.limits.max_attr_value)));
    t.push_back(kv("auth_timeout_ms", std::uint64_t(c.auth_timeout_ms)));
    t.push_back(kv("keepalive_ms", std::uint64_t(c.keepalive_ms)));
    t.push_back(kv("dead_peer_ms", std::uint64_t(c.dead_peer_ms)));
    t.push_back(kvb("stream_mgmt", c.stream_mgmt));
    t.push_back(kv("ack_delay_ms", std::uint64_t(c.ack_delay_ms)));
    t.push_back(kv("max_unacked_bytes", std::uint64_t(c.max_unacked_bytes)));
    t.push_back(kvb("ack_after_forward", c.ack_after_forward));
    t.push_back(kv("resume_max_s", std::uint64_t(c.resume_max_s)));
    if (!c.resume_previd.empty()) {
        t.push_back(kv("resume_previd", c.resume_previd));
        t.push_back(kv("resume_h", std::uint64_t(c.resume_h)));
    }
    return t;
}

Result<xmpp::SessionConfig> decode_config(const std::vector<std::string>& tokens) {
    Reader r{tokens, {}};
    xmpp::SessionConfig c;
    auto role = r.str("role");
    if (role != "initiator" && role != "receiver") return make_error(fmt::format("role '{}': expected initiator or receiver", role));
    c.role = role == "initiator" ? xmpp::Role::Initiator : xmpp::Role::Receiver;
    auto pol = xmpp::parse_tls_policy(r.str("tls", "required"));
    if (!pol) return make_error(fmt::format("tls '{}': expected required, optional or disabled", r.str("tls")));
    c.tls_policy = *pol;
    c.tls_possible = r.flag("tls_possible", c.tls_possible);
    c.verify_peer = r.flag("verify_peer", c.verify_peer);
    c.offer_external = r.flag("offer_external", c.offer_external);
    c.use_external = r.flag("use_external", c.use_external);
    c.offer_dialback = r.flag("offer_dialback", c.offer_dialback);
    c.use_dialback = r.flag("use_dialback", c.use_dialback);
    c.offer_bidi = r.flag("offer_bidi", c.offer_bidi);
    c.want_bidi = r.flag("want_bidi", c.want_bidi);
    c.from = r.str("from");
    c.to = r.str("to");
    c.verify_only = r.flag("verify_only", c.verify_only);
    c.offer_mux = r.flag("offer_mux", c.offer_mux);
    c.want_mux = r.flag("want_mux", c.want_mux);
    c.limits.max_stanza_bytes = r.num<std::size_t>("max_stanza_bytes", c.limits.max_stanza_bytes);
    c.limits.max_header_bytes = r.num<std::size_t>("max_header_bytes", c.limits.max_header_bytes);
    c.limits.max_depth = r.num<unsigned>("max_depth", c.limits.max_depth);
    c.limits.max_attrs = r.num<unsigned>("max_attrs", c.limits.max_attrs);
    c.limits.max_attr_value = r.num<std::size_t>("max_attr_value", c.limits.max_attr_value);
    c.auth_timeout_ms = r.num<TimeMs>("auth_timeout_ms", c.auth_timeout_ms);
    c.keepalive_ms = r.num<TimeMs>("keepalive_ms", c.keepalive_ms);
    c.dead_peer_ms = r.num<TimeMs>("dead_peer_ms", c.dead_peer_ms);
    c.stream_mgmt = r.flag("stream_mgmt", c.stream_mgmt);
    c.ack_delay_ms = r.num<TimeMs>("ack_delay_ms", c.ack_delay_ms);
    c.max_unacked_bytes = r.num<std::size_t>("max_unacked_bytes", c.max_unacked_bytes);
    c.ack_after_forward = r.flag("ack_after_forward", c.ack_after_forward);
    c.resume_max_s = r.num<std::uint32_t>("resume_max_s", c.resume_max_s);
    c.resume_previd = r.str("resume_previd");
    c.resume_h = r.num<std::uint32_t>("resume_h", c.resume_h);
    if (!r.err.empty()) return make_error(r.err);
    return c;
}

std::vector<std::string> encode_tls(const xmpp::TlsState& st) {
    std::vector<std::string> t;
    t.push_back(kv("version", st.version));
    t.push_back(kv("cipher", st.cipher));
    t.push_back(kvb("tls13", st.tls13));
    // The exporter is secret-derived: only whether there was one.
    t.push_back(kv("exporter", st.exporter.empty() ? "none" : "omitted"));
    t.push_back(kvb("peer", st.peer.present));
    if (st.peer.present) {
        t.push_back(kvb("trusted", st.peer.trusted));
        if (!st.peer.error.empty()) t.push_back(kv("error", st.peer.error));
        encode_identity(t, "peer_", st.peer.identity);
    }
    if (!st.local.subject.empty() || !st.local.dns.empty()) encode_identity(t, "local_", st.local);
    if (st.peer_expires_at != kNever) t.push_back(kv("peer_expires_at", std::int64_t(st.peer_expires_at)));
    return t;
}

Result<xmpp::TlsState> decode_tls(const std::vector<std::string>& tokens) {
    Reader r{tokens, {}};
    xmpp::TlsState st;
    st.active = true;
    st.version = r.str("version");
    st.cipher = r.str("cipher");
    st.tls13 = r.flag("tls13", false);
    if (r.str("exporter") == "omitted") st.exporter = kReplayExporter;
    st.peer.present = r.flag("peer", false);
    if (st.peer.present) {
        st.peer.trusted = r.flag("trusted", false);
        st.peer.error = r.str("error");
        st.peer.identity = decode_identity(r, "peer_");
    }
    st.local = decode_identity(r, "local_");
    st.peer_expires_at = r.num<TimeMs>("peer_expires_at", kNever);
    if (!r.err.empty()) return make_error(r.err);
    return st;
}

} // namespace s2smux::capture
