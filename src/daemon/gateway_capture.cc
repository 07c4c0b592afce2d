// Captures from the admin socket (s2smuxctl capture start/stop, captures)
// and from the configuration ([[route]] capture). The recording itself is
// in daemon/captures.cc, the file in daemon/capture_file.cc.
#include "daemon/capture_file.h"
#include "daemon/gateway.h"
#include "daemon/listing.h"

#include "common/log.h"

#include <fmt/format.h>

#include <chrono>
#include <ctime>
#include <filesystem>

namespace s2smux {

using admin::Reply;

namespace {

constexpr const char* kCtx = "capture";

std::string summary(const Capture& c) {
    const auto& f = *c.file;
    return fmt::format("{} stream(s) recorded ({} partial), {} bytes written, {} bytes dropped{}", c.streams,
                       c.partial, f.bytes_written(), f.bytes_dropped(), f.error().empty() ? "" : "; " + f.error());
}

// [[route]] capture: file -> the route domains it takes.
std::map<std::string, std::vector<std::string>> route_captures(const std::vector<RouteConfig>& routes) {
    std::map<std::string, std::vector<std::string>> out;
    for (const auto& r : routes)
        if (!r.capture.empty()) out[r.capture].push_back(r.domain);
    return out;
}

} // namespace

std::string Gateway::capture_wall_clock() {
    auto now = std::chrono::system_clock::now();
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count();
    std::time_t secs = static_cast<std::time_t>(ms / 1000);
    std::tm tm{};
    ::gmtime_r(&secs, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
    return fmt::format("{}.{:03}Z", buf, ms % 1000);
}

std::string Gateway::capture_path(const std::string& file) const {
    std::filesystem::path p(file);
    if (p.is_absolute()) return p.lexically_normal().string();
    return (std::filesystem::path(cfg_.base_dir) / p).lexically_normal().string();
}

void Gateway::capture_start(std::string peer, std::string file, admin::Done done) {
    if (stopping_) return done(Reply::fail("gateway shutting down"));
    auto m = parse_capture_match(peer);
    if (!m) return done(Reply::fail(m.error()));
    if (file.empty()) return done(Reply::fail("empty file name"));
    std::string path = capture_path(file);
    if (path.empty() || path.back() == '/')
        return done(Reply::fail(fmt::format("{} is a directory, not a file", path)));
    std::string match = *m;
    auto started = captures_.start(path, {match}, "admin", [this, path, match, done](const std::string& err) {
        if (!err.empty()) {
            log::warn(kCtx, "capture of {} into {} not started: {}", match, path, err);
            return done(Reply::fail(fmt::format("cannot capture into {}: {}", path, err)));
        }
        auto c = captures_.find(path);
        if (!c || c->stopping)
            return done(Reply::fail(fmt::format("capture into {} stopped before its file opened", path)));
        std::vector<net::Stream*> live;
        for (const auto& [id, s] : streams_) live.push_back(s);
        std::sort(live.begin(), live.end(), [](auto* a, auto* b) { return a->id() < b->id(); });
        std::size_t n = captures_.attach_running(c, live);
        log::info(kCtx, "capture started: {} ({}): {} open stream(s) recorded from now on (partial), new streams from "
                        "their first byte",
                  path, match, n);
        done(Reply::ok({fmt::format("capturing {} into {}", match, path),
                        fmt::format("{} open stream(s) recorded from now on (partial: s2smux-replay skips them); new "
                                    "streams from their first byte",
                                    n)}));
    });
    if (!started) done(Reply::fail(started.error()));
}

void Gateway::capture_stop(std::string what, admin::Done done) {
    std::vector<std::shared_ptr<Capture>> hits;
    std::string match;
    if (!what.empty()) {
        if (auto m = parse_capture_match(what)) match = *m;
    }
    std::string path = what.empty() ? std::string() : capture_path(what);
    for (const auto& [p, c] : captures_.all()) {
        bool hit = what.empty() || p == path;
        for (const auto& m : c->matches) hit = hit || m == what || (!match.empty() && m == match);
        if (hit) hits.push_back(c);
    }
    if (hits.empty())
        return done(Reply::fail(what.empty() ? std::string("no capture is running")
                                             : fmt::format("no capture into or of {} (see s2smuxctl captures)", what)));
    struct Pending {
        std::size_t left = 0;
        std::vector<std::string> lines;
        admin::Done done;
    };
    auto st = std::make_shared<Pending>();
    st->left = hits.size();
    st->lines.resize(hits.size());
    st->done = std::move(done);
    for (std::size_t i = 0; i < hits.size(); ++i) {
        auto c = hits[i];
        captures_.stop(c, [st, c, i] {
            st->lines[i] = fmt::format("stopped {} ({}): {}", c->path, c->match_text(), summary(*c));
            if (--st->left == 0) st->done(Reply::ok(std::move(st->lines)));
        });
    }
}

void Gateway::captures(admin::Done done) {
    admin::Table t{{"FILE"}, {"PEER"}, {"SOURCE"}, {"STATE"}, {"STREAMS", admin::Table::Right},
                   {"LIVE", admin::Table::Right}, {"BYTES_WRITTEN", admin::Table::Right},
                   {"BYTES_DROPPED", admin::Table::Right}};
    for (const auto& [path, c] : captures_.all()) {
        const auto& f = *c->file;
        std::string state = !f.error().empty() ? "failed" : c->open ? "open" : "opening";
        t.add({cell(path), cell(c->match_text()), c->source, state, std::to_string(c->streams), std::to_string(c->live),
               std::to_string(f.bytes_written()), std::to_string(f.bytes_dropped())});
    }
    done(Reply::ok(t.render()));
}

std::vector<std::string> Gateway::apply_route_captures(const std::vector<RouteConfig>& old,
                                                       const std::vector<RouteConfig>& routes) {
    std::vector<std::string> lines;
    auto want = route_captures(routes);
    for (const auto& [path, domains] : route_captures(old)) {
        if (want.count(path)) continue;
        auto c = captures_.find(path);
        if (!c || c->source != "route") continue;
        lines.push_back(fmt::format("[[route]] capture {} ({}) stopped", path, c->match_text()));
        captures_.stop(c, nullptr);
    }
    for (const auto& [path, domains] : want) {
        if (auto c = captures_.find(path)) {
            if (c->source != "route") {
                lines.push_back(fmt::format("[[route]] capture {}: already written by a capture started with s2smuxctl "
                                            "(stop it, then reload)",
                                            path));
            } else if (c->matches != domains) {
                c->matches = domains; // new streams from now on
                lines.push_back(fmt::format("[[route]] capture {} now takes {}", path, c->match_text()));
            }
            continue;
        }
        std::string match = join(domains);
        auto started = captures_.start(path, domains, "route", [file = path, match](const std::string& err) {
            if (err.empty())
                log::info(kCtx, "capture started: {} ({}): [[route]] capture, streams from their first byte", file,
                          match);
            else
                log::error(kCtx, "[[route]] capture {} ({}) not started: {}", file, match, err);
        });
        if (!started) log::error(kCtx, "[[route]] capture {} ({}) not started: {}", path, match, started.error());
        else lines.push_back(fmt::format("[[route]] capture {} ({}) started", path, match));
    }
    return lines;
}

} // namespace s2smux
