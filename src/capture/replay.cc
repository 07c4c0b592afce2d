#include "capture/replay.h"

#include "capture/codec.h"
#include "xmpp/dialback.h"
#include "xmpp/errors.h"
#include "xmpp/session.h"
#include "xmpp/session_tap.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <map>
#include <regex>

namespace s2smux::capture {

namespace {

// Stands in for the multiplexing handler: what it decided and wrote was
// recorded (answers, nested calls), so it only has to exist.
struct ReplayMux final : xmpp::MuxHandler {
    void mux_element(const xml::Node&, TimeMs) override {}
    bool mux_send_allowed(std::string_view, std::string_view) const override { return true; }
    bool mux_check_receive(std::string_view, std::string_view, const char**) const override { return true; }
    void mux_refuse(const xml::Node&, const xmpp::StanzaRoute&, const char*) override {}
    void mux_timer(TimeMs) override {}
    TimeMs mux_deadline() const override { return kNever; }
};

bool stanza_error(std::string_view name, xmpp::StanzaError& out) {
    for (int i = 0; i <= static_cast<int>(xmpp::StanzaError::UndefinedCondition); ++i) {
        auto e = static_cast<xmpp::StanzaError>(i);
        if (name == xmpp::condition_name(e)) {
            out = e;
            return true;
        }
    }
    return false;
}

std::string describe(const Record& r) {
    std::string s = format_record(r);
    if (s.size() > 160) s = s.substr(0, 157) + "...";
    return s;
}

// Runs one stream: it is the session's host and its tap at once.
class Driver final : public xmpp::SessionHost, public xmpp::SessionTap {
public:
    Driver(const std::vector<const Record*>& recs, const ReplayOptions& opt, StreamOutcome& out)
        : recs_(recs), opt_(opt), out_(out) {}

    void run() {
        const Record& s = *recs_[0];
        auto cfg = decode_config(s.args);
        if (!cfg) return fail_at(s, "bad stream record: " + cfg.error());
        session_ = std::make_unique<xmpp::Session>(std::move(*cfg), *this, keys_);
        session_->set_tap(this);
        idx_ = 1;
        while (idx_ < recs_.size() && !stopped_) {
            const Record& r = *recs_[idx_];
            switch (r.kind) {
            case Kind::Out:
                expected_ += r.data;
                ++idx_;
                break;
            case Kind::In:
                step(r);
                if (!stopped_) session_->on_bytes(r.data, static_cast<TimeMs>(r.ms));
                break;
            case Kind::Call:
                step(r);
                if (!stopped_) apply(r);
                break;
            case Kind::End:
                ++idx_;
                idx_ = recs_.size();
                break;
            case Kind::Stream: return fail_at(r, "a second stream record for the same stream id");
            case Kind::Nested:
            case Kind::Callback:
            case Kind::Answer:
                return fail_at(r, "recorded, but the session did not do it here: " + describe(r));
            }
        }
        if (!stopped_) compare();
    }

    // xmpp::SessionHost: decisions come from the recording (tap_answer).
    void session_wants_write() override {}
    void session_start_tls() override {}
    bool session_hosts(std::string_view) override { return false; }
    bool session_has_cert(std::string_view) override { return false; }
    xmpp::DialbackVerdict session_dialback_request(const xmpp::DialbackRequest&) override {
        return xmpp::DialbackVerdict::Pending;
    }
    void session_authenticated(std::string_view, std::string_view, bool, xmpp::AuthMethod) override {}
    void session_verify_answer(std::string_view, std::string_view, std::string_view, bool) override {}
    void session_ready() override {}
    void session_stanza(const xml::Node&, const xmpp::StanzaRoute&) override {}
    void session_closed(const xmpp::CloseInfo&) override {}
    void session_mux_enabled() override { session_->set_mux(&mux_); }

    // xmpp::SessionTap
    void tap_in(std::string_view, TimeMs) override {}
    void tap_call(std::string_view, std::initializer_list<std::string_view>, TimeMs, bool) override {}
    void tap_tls(const xmpp::TlsState&, TimeMs, bool) override {}
    void tap_out(std::string_view bytes) override { actual_ += bytes; }

    void tap_callback(std::string_view name, std::initializer_list<std::string_view> args) override {
        if (stopped_) return;
        take_outputs_and_nested();
        const Record* r = expect(Kind::Callback, name, args);
        if (!r) return;
        ++idx_;
        take_outputs_and_nested(); // what the host did inside this callback
    }

    std::string tap_answer(std::string_view query, std::initializer_list<std::string_view> args,
                           std::string answer) override {
        if (stopped_) return answer;
        take_outputs_and_nested(); // what the host did while answering
        const Record* r = expect(Kind::Answer, query, args);
        if (!r) return answer;
        ++idx_;
        return r->answer;
    }

private:
    // A new input: what the previous one produced must match.
    void step(const Record& r) {
        compare();
        if (stopped_) return;
        step_ = &r;
        ++out_.inputs;
        ++idx_;
    }

    void take_outputs_and_nested() {
        while (idx_ < recs_.size() && !stopped_) {
            const Record& r = *recs_[idx_];
            if (r.kind == Kind::Out) {
                expected_ += r.data;
                ++idx_;
            } else if (r.kind == Kind::Nested) {
                ++idx_;
                apply(r);
            } else {
                return;
            }
        }
    }

    const Record* expect(Kind k, std::string_view name, std::initializer_list<std::string_view> args) {
        const char* what = k == Kind::Callback ? "callback" : "question";
        std::string got = fmt::format("{} {}", name, fmt::join(args, " "));
        if (idx_ >= recs_.size()) {
            fail_here(fmt::format("the session made a {} the recording does not have: {}", what, got));
            return nullptr;
        }
        const Record& r = *recs_[idx_];
        bool same = r.kind == k && r.name == name && r.args.size() == args.size() &&
                    std::equal(args.begin(), args.end(), r.args.begin());
        if (!same) {
            fail_here(fmt::format("the session made the {} '{}'; the recording has, at line {}: {}", what, got,
                                  r.line, describe(r)));
            return nullptr;
        }
        return &r;
    }

    void apply(const Record& r) {
        auto& s = *session_;
        const auto& a = r.args;
        auto arg = [&](std::size_t i) -> std::string_view { return i < a.size() ? std::string_view(a[i]) : ""; };
        auto now = static_cast<TimeMs>(r.ms);
        if (r.name == "start") {
            s.start(now);
        } else if (r.name == "tls") {
            auto st = decode_tls(a);
            if (!st) return fail_at(r, "bad TLS state: " + st.error());
            s.on_tls_established(std::move(*st), now);
        } else if (r.name == "eof") {
            s.on_transport_closed(arg(0));
        } else if (r.name == "timer") {
            s.on_timer(now);
        } else if (r.name == "dialback-result") {
            xmpp::StanzaError cond = xmpp::StanzaError::RemoteServerNotFound;
            if (!arg(4).empty() && !stanza_error(arg(4), cond)) return fail_at(r, "unknown stanza error condition");
            s.dialback_result(arg(0), arg(1), arg(2) == "valid", arg(3), cond);
        } else if (r.name == "db-verify") {
            s.send_db_verify(arg(0), arg(1), arg(2), arg(3));
        } else if (r.name == "request-pair") {
            s.request_pair(arg(0), arg(1));
        } else if (r.name == "send-stanza") {
            s.send_stanza_raw(arg(0));
        } else if (r.name == "send-raw") {
            s.send_raw(arg(0));
        } else if (r.name == "close") {
            if (a.empty()) return s.close();
            xmpp::StreamError e;
            if (!xmpp::parse_stream_error(arg(0), e)) return fail_at(r, "unknown stream error condition");
            s.close(e, arg(1));
        } else if (r.name == "abandon") {
            s.abandon(arg(0));
        } else if (r.name == "stanzas-done") {
            std::vector<std::uint32_t> seqs;
            std::string_view t = arg(0);
            while (!t.empty()) {
                std::uint32_t v = 0;
                auto [p, ec] = std::from_chars(t.data(), t.data() + t.size(), v);
                if (ec != std::errc()) return fail_at(r, "bad stanza numbers");
                seqs.push_back(v);
                t.remove_prefix(static_cast<std::size_t>(p - t.data()));
                if (!t.empty() && t.front() == ' ') t.remove_prefix(1);
            }
            s.stanzas_done(seqs.data(), seqs.size());
        } else if (r.name == "limits") {
            std::uint64_t v[5];
            for (std::size_t i = 0; i < 5; ++i) {
                auto t = arg(i);
                auto [p, ec] = std::from_chars(t.data(), t.data() + t.size(), v[i]);
                if (ec != std::errc() || p != t.data() + t.size() || t.empty()) return fail_at(r, "bad limits");
            }
            xml::Limits l;
            l.max_stanza_bytes = v[0];
            l.max_header_bytes = v[1];
            l.max_depth = static_cast<unsigned>(v[2]);
            l.max_attrs = static_cast<unsigned>(v[3]);
            l.max_attr_value = v[4];
            s.set_limits(l);
        } else {
            fail_at(r, fmt::format("unknown call '{}'", r.name));
        }
    }

    void compare() {
        if (stopped_) return;
        std::string want = opt_.exact ? expected_ : normalise(expected_);
        std::string got = opt_.exact ? actual_ : normalise(actual_);
        out_.bytes_out += actual_.size();
        if (want != got) {
            std::string where = step_ ? fmt::format("after the input at line {}: {}", step_->line, describe(*step_))
                                      : std::string("before any input");
            fail(fmt::format("output differs {}\n{}", where, xml_diff(want, got, opt_.context)));
        }
        expected_.clear();
        actual_.clear();
    }

    void fail_at(const Record& r, const std::string& why) { fail(fmt::format("line {}: {}", r.line, why)); }
    void fail_here(const std::string& why) {
        std::string where = step_ ? fmt::format(" (input at line {})", step_->line) : "";
        fail(why + where);
    }
    void fail(std::string report) {
        if (stopped_) return;
        stopped_ = true;
        out_.status = StreamOutcome::Failed;
        out_.report = std::move(report);
    }

    const std::vector<const Record*>& recs_;
    const ReplayOptions& opt_;
    StreamOutcome& out_;
    xmpp::DialbackKeys keys_{"s2smux-replay"};
    ReplayMux mux_;
    std::unique_ptr<xmpp::Session> session_;
    std::size_t idx_ = 0;
    const Record* step_ = nullptr;
    std::string expected_, actual_;
    bool stopped_ = false;
};

// One line per element start/end or text run, for diffs.
std::vector<std::string_view> xml_lines(std::string_view s) {
    std::vector<std::string_view> out;
    std::size_t i = 0;
    while (i < s.size()) {
        std::size_t end;
        if (s[i] == '<') {
            end = s.find('>', i);
            end = end == std::string_view::npos ? s.size() : end + 1;
        } else {
            end = s.find('<', i);
            if (end == std::string_view::npos) end = s.size();
        }
        out.push_back(s.substr(i, end - i));
        i = end;
    }
    return out;
}

std::string show(std::string_view line) {
    std::string out;
    escape(out, line, false);
    return out;
}

} // namespace

std::string normalise(std::string_view xml) {
    static const std::regex kStreamId(R"((<stream:stream\b[^>]*?\sid=')[^']*')");
    static const std::regex kDbId(R"((<db:verify\b[^>]*?\sid=')[^']*')");
    static const std::regex kDbKey(R"((<db:(?:result|verify)\b[^>/]*>)[^<]+)");
    static const std::regex kProof(R"((<proof\b[^>]*>)[^<]+)");
    std::string s(xml);
    s = std::regex_replace(s, kStreamId, "$1*'");
    s = std::regex_replace(s, kDbId, "$1*'");
    s = std::regex_replace(s, kDbKey, "$1*");
    s = std::regex_replace(s, kProof, "$1*");
    return s;
}

std::string xml_diff(std::string_view recorded, std::string_view replayed, std::size_t context) {
    if (recorded == replayed) return {};
    auto a = xml_lines(recorded), b = xml_lines(replayed);
    // Common prefix and suffix first; the LCS only runs on what is left.
    std::size_t pre = 0;
    while (pre < a.size() && pre < b.size() && a[pre] == b[pre]) ++pre;
    std::size_t suf = 0;
    while (suf < a.size() - pre && suf < b.size() - pre && a[a.size() - 1 - suf] == b[b.size() - 1 - suf]) ++suf;
    const std::size_t n = a.size() - pre - suf, m = b.size() - pre - suf;
    // Edit script: ' ' same, '-' recorded only, '+' replayed only.
    std::vector<std::pair<char, std::string_view>> ops;
    for (std::size_t i = 0; i < pre; ++i) ops.emplace_back(' ', a[i]);
    if (n * m <= 4'000'000) {
        std::vector<std::uint32_t> L((n + 1) * (m + 1), 0);
        auto at = [&](std::size_t i, std::size_t j) -> std::uint32_t& { return L[i * (m + 1) + j]; };
        for (std::size_t i = n; i-- > 0;)
            for (std::size_t j = m; j-- > 0;)
                at(i, j) = a[pre + i] == b[pre + j] ? at(i + 1, j + 1) + 1 : std::max(at(i + 1, j), at(i, j + 1));
        std::size_t i = 0, j = 0;
        while (i < n || j < m) {
            if (i < n && j < m && a[pre + i] == b[pre + j]) {
                ops.emplace_back(' ', a[pre + i++]);
                ++j;
            } else if (j < m && (i == n || at(i, j + 1) >= at(i + 1, j))) {
                ops.emplace_back('+', b[pre + j++]);
            } else {
                ops.emplace_back('-', a[pre + i++]);
            }
        }
    } else { // too big for the table: everything in between differs
        for (std::size_t i = 0; i < n; ++i) ops.emplace_back('-', a[pre + i]);
        for (std::size_t j = 0; j < m; ++j) ops.emplace_back('+', b[pre + j]);
    }
    for (std::size_t i = a.size() - suf; i < a.size(); ++i) ops.emplace_back(' ', a[i]);

    std::string out = "  --- recorded\n  +++ replayed\n";
    std::vector<bool> keep(ops.size(), false);
    for (std::size_t i = 0; i < ops.size(); ++i) {
        if (ops[i].first == ' ') continue;
        std::size_t lo = i >= context ? i - context : 0, hi = std::min(ops.size(), i + context + 1);
        for (std::size_t k = lo; k < hi; ++k) keep[k] = true;
    }
    bool gap = false;
    for (std::size_t i = 0; i < ops.size(); ++i) {
        if (!keep[i]) {
            gap = true;
            continue;
        }
        if (gap) out += "  ...\n";
        gap = false;
        out += fmt::format("  {} {}\n", ops[i].first, show(ops[i].second));
    }
    if (gap) out += "  ...\n";
    return out;
}

std::vector<StreamOutcome> replay(const Capture& c, const ReplayOptions& opt) {
    std::map<std::uint64_t, std::vector<const Record*>> streams;
    for (const auto& r : c.records)
        if (opt.only == 0 || r.stream == opt.only) streams[r.stream].push_back(&r);
    std::vector<StreamOutcome> out;
    for (auto& [id, recs] : streams) {
        StreamOutcome o;
        o.stream = id;
        const Record& first = *recs[0];
        if (first.kind != Kind::Stream) {
            o.status = StreamOutcome::Failed;
            o.title = std::to_string(id);
            o.report = fmt::format("line {}: the stream's first record is not its S record", first.line);
            out.push_back(std::move(o));
            continue;
        }
        o.title = fmt::format("{} {} {} {}", id, token_value(first.args, "kind", "?"),
                              token_value(first.args, "peer", "?"), token_value(first.args, "role", "?"));
        if (token_value(first.args, "partial") == "1") {
            o.status = StreamOutcome::Skipped;
            o.report = "captured from the middle of the stream: nothing to replay from";
        } else {
            Driver d(recs, opt, o);
            d.run();
        }
        out.push_back(std::move(o));
    }
    return out;
}

} // namespace s2smux::capture
