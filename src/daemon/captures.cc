#include "daemon/captures.h"

#include "capture/format.h"
#include "common/log.h"
#include "daemon/capture_file.h"
#include "daemon/config.h"

#include <fmt/format.h>

#include <algorithm>

namespace s2smux {

namespace {
constexpr const char* kCtx = "capture";

// "1.2.3.4:5" -> "1.2.3.4", "[::1]:5" -> "::1".
std::string_view host_of(std::string_view peer) {
    if (!peer.empty() && peer.front() == '[') {
        auto close = peer.find(']');
        return close == std::string_view::npos ? peer : peer.substr(1, close - 1);
    }
    auto colon = peer.rfind(':');
    return colon == std::string_view::npos ? peer : peer.substr(0, colon);
}
} // namespace

std::string Capture::match_text() const {
    std::string s;
    for (const auto& m : matches) s += (s.empty() ? "" : ",") + m;
    return s;
}

bool capture_matches(std::string_view m, std::string_view domain, std::string_view peer) {
    if (m == "*") return true;
    if (m.size() > 2 && m.substr(0, 2) == "*.")
        return domain.size() > m.size() - 1 && domain.substr(domain.size() - (m.size() - 1)) == m.substr(1);
    if (!domain.empty() && m == domain) return true;
    if (peer.empty()) return false;
    return m == peer || m == host_of(peer);
}

Result<std::string> parse_capture_match(std::string_view s) {
    if (s == "*") return std::string(s);
    if (is_ip_literal(s)) return std::string(s);
    if (s.size() > 2 && s.front() == '[' && s.back() == ']' && is_ip_literal(s.substr(1, s.size() - 2)))
        return std::string(s.substr(1, s.size() - 2));
    if (s.find(':') != std::string_view::npos || (!s.empty() && s.front() == '[')) {
        auto ep = parse_endpoint(s);
        if (ep && is_ip_literal(ep->host)) return ep->to_string();
        return make_error(fmt::format("'{}' is not a peer: expected a domain, *.domain, an IP address, IP:PORT "
                                      "or * (every stream)",
                                      s));
    }
    bool wildcard = s.size() > 2 && s.substr(0, 2) == "*.";
    auto d = normalize_domain(wildcard ? s.substr(2) : s);
    if (!d)
        return make_error(fmt::format("'{}' is not a peer ({}): expected a domain, *.domain, an IP address, IP:PORT "
                                      "or * (every stream)",
                                      s, d.error()));
    return wildcard ? "*." + *d : *d;
}

std::string_view capture_domain(net::Stream& s) {
    const auto& sess = s.session();
    if (!sess.remote_domain().empty()) return sess.remote_domain();
    if (!sess.pairs_in().empty()) return sess.pairs_in().begin()->first;
    return {};
}

// ------------------------------------------------------------ StreamCapture

StreamCapture::StreamCapture(Captures& owner, net::Stream& s, bool from_start)
    : owner_(owner), stream_(s), rec_(*this, s.id()), begun_(false), seen_(!from_start), decided_(!from_start) {
    owner_.taps_.insert(this);
}

StreamCapture::~StreamCapture() {
    auto all = std::move(targets_);
    targets_.clear();
    for (auto& c : all) {
        if (begun_) {
            targets_ = {c};
            rec_.end(end_.empty() ? std::string_view("closed") : std::string_view(end_), now());
            targets_.clear();
        }
        release(*c);
    }
    owner_.forget(this);
}

TimeMs StreamCapture::now() const { return static_cast<TimeMs>(uv_now(owner_.loop_)); }
TimeMs StreamCapture::capture_origin() const { return owner_.origin_; }

bool StreamCapture::has(const Capture& c) const {
    return std::any_of(targets_.begin(), targets_.end(), [&](const auto& t) { return t.get() == &c; });
}

void StreamCapture::release(Capture& c) {
    if (c.live > 0) --c.live;
}

void StreamCapture::begin(TimeMs now) {
    if (begun_) return;
    begun_ = true;
    for (const auto& c : targets_) ++c->streams; // undecided: counted by decide()
    rec_.begin(net::to_string(stream_.kind()), stream_.peer(), stream_.session().config(), false, now);
}

void StreamCapture::capture_write(std::string_view lines) {
    if (!decided_) {
        if (overflow_) return;
        if (buffer_.size() + lines.size() > kBufferBytes) {
            overflow_ = true;
            std::string().swap(buffer_);
            return;
        }
        buffer_ += lines;
        return;
    }
    for (const auto& c : targets_) c->file->capture_write(lines);
}

void StreamCapture::decide(const std::vector<std::shared_ptr<Capture>>& caps) {
    if (decided_) return;
    decided_ = true;
    if (!overflow_) {
        for (const auto& c : caps) {
            if (!buffer_.empty()) c->file->capture_write(buffer_);
            targets_.push_back(c);
            ++c->live;
            if (begun_) ++c->streams; // otherwise once something happens (begin())
        }
    }
    std::string().swap(buffer_);
}

void StreamCapture::attach_partial(const std::shared_ptr<Capture>& c, TimeMs now) {
    if (!decided_ || has(*c)) return;
    ++c->live;
    if (!seen_) { // nothing happened on the session yet: a full capture after all
        targets_.push_back(c);
        if (begun_) ++c->streams;
        return;
    }
    ++c->streams;
    ++c->partial;
    auto others = std::move(targets_);
    targets_ = {c};
    rec_.begin(net::to_string(stream_.kind()), stream_.peer(), stream_.session().config(), true, now);
    begun_ = true; // the records from now on follow that S record (no full one later)
    others.push_back(c);
    targets_ = std::move(others);
}

void StreamCapture::detach(Capture& c, std::string_view why, TimeMs now) {
    auto it = std::find_if(targets_.begin(), targets_.end(), [&](const auto& t) { return t.get() == &c; });
    if (it == targets_.end()) return;
    std::shared_ptr<Capture> keep = *it;
    targets_.erase(it);
    if (begun_) {
        auto others = std::move(targets_);
        targets_ = {keep};
        rec_.end(why, now);
        targets_ = std::move(others);
    }
    release(c);
}

void StreamCapture::set_closed(std::string_view reason) {
    end_ = reason.empty() ? std::string("closed") : fmt::format("closed: {}", reason);
}

void StreamCapture::tap_in(std::string_view bytes, TimeMs now) {
    seen_ = true;
    if (!recording()) return;
    begin(now);
    rec_.tap_in(bytes, now);
}

void StreamCapture::tap_out(std::string_view bytes) {
    seen_ = true;
    if (!recording()) return;
    begin(now());
    rec_.tap_out(bytes);
}

void StreamCapture::tap_call(std::string_view name, std::initializer_list<std::string_view> args, TimeMs now,
                             bool nested) {
    seen_ = true;
    if (!recording()) return;
    begin(now);
    rec_.tap_call(name, args, now, nested);
}

void StreamCapture::tap_tls(const xmpp::TlsState& st, TimeMs now, bool nested) {
    seen_ = true;
    if (!recording()) return;
    begin(now);
    rec_.tap_tls(st, now, nested);
}

void StreamCapture::tap_callback(std::string_view name, std::initializer_list<std::string_view> args) {
    seen_ = true;
    if (!recording()) return;
    begin(now());
    rec_.tap_callback(name, args);
}

std::string StreamCapture::tap_answer(std::string_view query, std::initializer_list<std::string_view> args,
                                      std::string answer) {
    seen_ = true;
    if (!recording()) return answer;
    begin(now());
    return rec_.tap_answer(query, args, std::move(answer));
}

// ----------------------------------------------------------------- Captures

Captures::Captures(uv_loop_t* loop) : loop_(loop) {}

Captures::~Captures() {
    // Streams are freed before the gateway; a tap left now would point here.
    for (StreamCapture* sc : std::vector<StreamCapture*>(taps_.begin(), taps_.end())) sc->stream().set_tap(nullptr);
}

void Captures::set_origin(TimeMs origin, std::string wall) {
    origin_ = origin;
    wall_ = std::move(wall);
}

bool Capture::takes_streams() const { return !stopping && file->error().empty(); }

bool Captures::accepting() const {
    return std::any_of(captures_.begin(), captures_.end(), [](const auto& kv) { return kv.second->takes_streams(); });
}

std::shared_ptr<Capture> Captures::find(std::string_view path) const {
    auto it = captures_.find(path);
    return it == captures_.end() ? nullptr : it->second;
}

StreamCapture* Captures::tap_of(net::Stream& s) { return dynamic_cast<StreamCapture*>(s.tap()); }

Result<std::shared_ptr<Capture>> Captures::start(std::string path, std::vector<std::string> matches,
                                                 std::string source,
                                                 std::function<void(const std::string& error)> opened) {
    if (auto c = find(path))
        return make_error(fmt::format("{} is already being written by a capture of {}", path, c->match_text()));
    auto c = std::make_shared<Capture>();
    c->path = path;
    c->matches = std::move(matches);
    c->source = std::move(source);
    c->file = CaptureFile::create(loop_, path, origin_, capture::header_line(wall_));
    // A [[route]] capture outlives restarts: the file of an earlier run is
    // moved aside. One asked for by hand is refused instead.
    c->file->set_rotate(c->source == "route");
    captures_[path] = c;
    std::weak_ptr<Capture> weak = c;
    c->file->open([this, weak, opened = std::move(opened)](const std::string& err) {
        auto c = weak.lock();
        if (!c) return;
        if (err.empty()) {
            c->open = true;
            if (opened) opened("");
            return;
        }
        // The streams that took it meanwhile record nothing into it.
        c->stopping = true;
        TimeMs now = static_cast<TimeMs>(uv_now(loop_));
        for (StreamCapture* sc : std::vector<StreamCapture*>(taps_.begin(), taps_.end())) {
            if (!sc->has(*c)) continue;
            sc->detach(*c, "capture failed", now);
            if (sc->empty()) pending_.push_back(sc);
        }
        auto it = captures_.find(c->path);
        if (it != captures_.end() && it->second == c) captures_.erase(it);
        if (opened) opened(err);
    });
    return c;
}

std::size_t Captures::attach_running(const std::shared_ptr<Capture>& c, const std::vector<net::Stream*>& streams) {
    if (!c->takes_streams()) return 0;
    TimeMs now = static_cast<TimeMs>(uv_now(loop_));
    std::size_t n = 0;
    for (net::Stream* s : streams) {
        if (s->finished()) continue;
        std::string_view domain = capture_domain(*s);
        bool hit = std::any_of(c->matches.begin(), c->matches.end(),
                               [&](const std::string& m) { return capture_matches(m, domain, s->peer()); });
        if (!hit) continue;
        StreamCapture* sc = tap_of(*s);
        if (sc && (!sc->decided() || sc->has(*c))) continue; // undecided: decide() will see this capture
        if (!sc) {
            auto fresh = std::make_unique<StreamCapture>(*this, *s, false);
            sc = fresh.get();
            s->set_tap(std::move(fresh));
        }
        sc->attach_partial(c, now);
        ++n;
    }
    return n;
}

void Captures::stop(const std::shared_ptr<Capture>& c, std::function<void()> done) {
    c->stopping = true;
    TimeMs now = static_cast<TimeMs>(uv_now(loop_));
    for (StreamCapture* sc : std::vector<StreamCapture*>(taps_.begin(), taps_.end())) {
        if (!taps_.count(sc) || !sc->has(*c)) continue;
        sc->detach(*c, sc->end_reason().empty() ? std::string_view("capture stopped") : sc->end_reason(), now);
        if (sc->empty()) sc->stream().set_tap(nullptr); // frees sc
    }
    auto it = captures_.find(c->path);
    if (it != captures_.end() && it->second == c) captures_.erase(it);
    finish_stop(c, std::move(done));
}

void Captures::finish_stop(const std::shared_ptr<Capture>& c, std::function<void()> done) {
    c->file->close([c, done = std::move(done)] {
        const auto& f = *c->file;
        log::info(kCtx, "capture stopped: {} ({}): {} stream(s) ({} partial), {} bytes written, {} bytes dropped{}",
                  c->path, c->match_text(), c->streams, c->partial, f.bytes_written(), f.bytes_dropped(),
                  f.error().empty() ? "" : "; " + f.error());
        if (done) done();
    });
}

void Captures::stop_all() {
    std::vector<std::shared_ptr<Capture>> all;
    for (const auto& [path, c] : captures_) all.push_back(c);
    for (const auto& c : all) stop(c, nullptr);
    for (StreamCapture* sc : std::vector<StreamCapture*>(taps_.begin(), taps_.end()))
        if (taps_.count(sc)) sc->stream().set_tap(nullptr);
    pending_.clear();
}

void Captures::stream_opened(net::Stream& s) {
    if (!accepting()) return;
    auto sc = std::make_unique<StreamCapture>(*this, s, true);
    pending_.push_back(sc.get());
    s.set_tap(std::move(sc));
}

void Captures::stream_closed(net::Stream& s, std::string_view reason) {
    StreamCapture* sc = tap_of(s);
    if (!sc) return;
    sc->set_closed(reason);
    if (!sc->decided()) decide(*sc);
    if (sc->empty() && std::find(pending_.begin(), pending_.end(), sc) == pending_.end()) pending_.push_back(sc);
}

bool Captures::decidable(StreamCapture& sc) const {
    net::Stream& s = sc.stream();
    if (sc.overflowed() || s.finished()) return true;
    return !s.peer().empty() && !capture_domain(s).empty();
}

void Captures::decide(StreamCapture& sc) {
    net::Stream& s = sc.stream();
    std::vector<std::shared_ptr<Capture>> caps;
    std::string_view domain = capture_domain(s);
    for (const auto& [path, c] : captures_) {
        if (!c->takes_streams()) continue;
        if (std::any_of(c->matches.begin(), c->matches.end(),
                        [&](const std::string& m) { return capture_matches(m, domain, s.peer()); }))
            caps.push_back(c);
    }
    if (sc.overflowed() && !caps.empty())
        log::warn(s.session().log_context(), "not captured: more than {} KiB before its remote domain was known",
                  StreamCapture::kBufferBytes / 1024);
    sc.decide(caps);
}

void Captures::tick() {
    auto list = std::move(pending_);
    pending_.clear();
    std::vector<StreamCapture*> keep;
    for (StreamCapture* sc : list) {
        if (!taps_.count(sc)) continue; // freed meanwhile
        if (!sc->decided()) {
            if (!decidable(*sc)) {
                keep.push_back(sc);
                continue;
            }
            decide(*sc);
        }
        if (sc->empty()) sc->stream().set_tap(nullptr); // frees sc
    }
    for (StreamCapture* sc : keep)
        if (taps_.count(sc) && std::find(pending_.begin(), pending_.end(), sc) == pending_.end())
            pending_.push_back(sc);
}

void Captures::forget(StreamCapture* sc) {
    taps_.erase(sc);
    pending_.erase(std::remove(pending_.begin(), pending_.end(), sc), pending_.end());
}

} // namespace s2smux
