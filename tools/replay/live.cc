#include "live.h"

#include "capture/replay.h"
#include "tls/certs.h"
#include "tls/channel.h"

#include <fmt/format.h>

#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <vector>

namespace s2smux::replay {

namespace {

using Clock = std::chrono::steady_clock;

// Without --all-output, stanzas (message, presence, iq at stream level) are
// left out of the comparison: the gateway routes them from and to servers
// that need not behave as they did when the capture was made.
std::string strip_stanzas(std::string_view s) {
    std::string out;
    int depth = 0, skip_until = -1;
    std::size_t i = 0;
    while (i < s.size()) {
        std::size_t end;
        bool tag = s[i] == '<';
        if (tag) {
            end = s.find('>', i);
            end = end == std::string_view::npos ? s.size() : end + 1;
        } else {
            end = s.find('<', i);
            if (end == std::string_view::npos) end = s.size();
        }
        std::string_view tok = s.substr(i, end - i);
        i = end;
        bool keep = skip_until < 0;
        if (tag && tok.size() > 1 && tok[1] != '?' && tok[1] != '!') {
            if (tok[1] == '/') {
                --depth;
                if (skip_until >= 0 && depth == skip_until) {
                    skip_until = -1;
                    continue;
                }
            } else {
                bool self_closing = tok.size() > 2 && tok[tok.size() - 2] == '/';
                if (depth == 1 && skip_until < 0) {
                    std::string_view name = tok.substr(1, tok.find_first_of(" />\t\r\n", 1) - 1);
                    if (name == "message" || name == "presence" || name == "iq") {
                        if (!self_closing) skip_until = depth;
                        keep = false;
                    }
                }
                if (!self_closing) ++depth;
            }
        }
        if (keep) out += tok;
    }
    return out;
}

class Conn {
public:
    ~Conn() {
        if (fd_ >= 0) ::close(fd_);
    }
    std::string error;

    bool connect(const std::string& host, const std::string& port) {
        addrinfo hints{};
        hints.ai_socktype = SOCK_STREAM;
        addrinfo* res = nullptr;
        if (int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &res); rc != 0) {
            error = fmt::format("{}:{}: {}", host, port, gai_strerror(rc));
            return false;
        }
        for (addrinfo* a = res; a; a = a->ai_next) {
            fd_ = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
            if (fd_ >= 0 && ::connect(fd_, a->ai_addr, a->ai_addrlen) == 0) break;
            error = fmt::format("connect to {}:{}: {}", host, port, std::strerror(errno));
            if (fd_ >= 0) ::close(fd_);
            fd_ = -1;
        }
        freeaddrinfo(res);
        return fd_ >= 0;
    }

    bool start_tls(const tls::CertStore& store, tls::ChannelOptions o, double timeout_s) {
        tls_ = std::make_unique<tls::Channel>(store, std::move(o));
        if (auto r = tls_->start(); !r) {
            error = r.error();
            return false;
        }
        auto until = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(timeout_s));
        while (!tls_->handshake_done()) {
            if (Clock::now() >= until) {
                error = "TLS handshake: timed out";
                return false;
            }
            if (!flush_tls() || !pump(until, true)) {
                if (error.empty()) error = "TLS handshake: " + tls_->error();
                return false;
            }
            if (!tls_->error().empty()) {
                error = tls_->error();
                return false;
            }
        }
        return flush_tls();
    }

    bool send(std::string_view plain) {
        if (tls_) {
            if (tls_->write(plain) != tls::IoStatus::Ok) {
                error = "TLS write: " + tls_->error();
                return false;
            }
            return flush_tls();
        }
        return write_all(plain);
    }

    // Reads what arrives until `until` (plaintext goes to received), or
    // only until the first read with `once`. False when the connection is over.
    bool pump(Clock::time_point until, bool once = false) {
        for (;;) {
            auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now()).count();
            if (left <= 0) return !eof_;
            pollfd p{fd_, POLLIN, 0};
            int n = ::poll(&p, 1, static_cast<int>(left));
            if (n <= 0) return !eof_;
            char buf[65536];
            ssize_t r = ::read(fd_, buf, sizeof buf);
            if (r <= 0) {
                eof_ = true;
                return false;
            }
            if (tls_) {
                auto st = tls_->feed(buf, static_cast<std::size_t>(r), received);
                flush_tls();
                if (st != tls::IoStatus::Ok) {
                    eof_ = true;
                    return false;
                }
                if (!tls_->handshake_done()) return true; // let the handshake loop look
            } else {
                received.append(buf, static_cast<std::size_t>(r));
            }
            if (once) return true;
        }
    }

    bool eof() const { return eof_; }
    std::string received;

private:
    bool flush_tls() {
        std::string out;
        out.swap(tls_->outbound());
        return write_all(out);
    }
    bool write_all(std::string_view d) {
        while (!d.empty()) {
            ssize_t w = ::send(fd_, d.data(), d.size(), MSG_NOSIGNAL);
            if (w <= 0) {
                error = fmt::format("write: {}", std::strerror(errno));
                return false;
            }
            d.remove_prefix(static_cast<std::size_t>(w));
        }
        return true;
    }

    int fd_ = -1;
    bool eof_ = false;
    std::unique_ptr<tls::Channel> tls_;
};

} // namespace

int run_live(const capture::Capture& cap, const LiveOptions& opt) {
    using capture::Kind;
    // The stream: the one asked for, or the first complete one the gateway accepted.
    std::uint64_t id = opt.stream;
    if (id == 0) {
        for (const auto& r : cap.records)
            if (r.kind == Kind::Stream && capture::token_value(r.args, "role") == "receiver" &&
                capture::token_value(r.args, "partial") != "1") {
                id = r.stream;
                break;
            }
        if (id == 0) {
            fmt::print(stderr, "s2smux-replay: no complete stream accepted by the gateway in this capture\n");
            return 2;
        }
    }
    std::vector<const capture::Record*> recs;
    for (const auto& r : cap.records)
        if (r.stream == id) recs.push_back(&r);
    if (recs.empty() || recs[0]->kind != Kind::Stream) {
        fmt::print(stderr, "s2smux-replay: stream {} not found (or has no S record)\n", id);
        return 2;
    }
    const auto& s = *recs[0];
    if (capture::token_value(s.args, "role") != "receiver") {
        fmt::print(stderr, "s2smux-replay: stream {} was opened by the gateway; --live plays streams it accepted\n", id);
        return 2;
    }

    tls::CertStore store;
    std::string client_domain;
    if (!opt.cert.empty()) {
        auto c = tls::load_cert_files(opt.cert, opt.key);
        if (!c) {
            fmt::print(stderr, "s2smux-replay: {}: {}\n", opt.cert, c.error());
            return 2;
        }
        auto names = (*c)->identity.names();
        if (!names.empty()) client_domain = names.front();
        store.add(*c);
    }

    Conn conn;
    if (!conn.connect(opt.host, opt.port)) {
        fmt::print(stderr, "s2smux-replay: {}\n", conn.error);
        return 2;
    }
    // SNI: the domain the peer addressed, from its first header.
    std::string sni = opt.server_name;
    for (const auto* r : recs)
        if (sni.empty() && r->kind == Kind::In) {
            auto to = r->data.find(" to='");
            if (to != std::string::npos) sni = r->data.substr(to + 5, r->data.find('\'', to + 5) - to - 5);
        }

    const auto t_start = Clock::now();
    const std::uint64_t t0 = s.ms;
    auto due = [&](const capture::Record& r) {
        if (opt.speed <= 0) return Clock::now();
        return t_start + std::chrono::duration_cast<Clock::duration>(
                             std::chrono::duration<double>(static_cast<double>(r.ms - t0) / 1000.0 / opt.speed));
    };
    std::string expected;
    std::size_t sent = 0, inputs = 0;
    for (std::size_t i = 1; i < recs.size(); ++i) {
        const auto& r = *recs[i];
        if (r.kind == Kind::Out) {
            expected += r.data;
        } else if (r.kind == Kind::In) {
            conn.pump(due(r));
            if (conn.eof()) break;
            if (!conn.send(r.data)) break;
            sent += r.data.size();
            ++inputs;
        } else if (r.kind == Kind::Call && r.name == "tls") {
            // STARTTLS: the gateway's <proceed/> comes first.
            auto until = Clock::now() + std::chrono::seconds(5);
            while (sent > 0 && conn.received.find("<proceed") == std::string::npos && Clock::now() < until &&
                   conn.pump(until, true)) {
            }
            tls::ChannelOptions o;
            o.role = tls::Role::Client;
            o.server_name = sni;
            o.client_cert_domain = client_domain;
            if (!conn.start_tls(store, o, 10)) {
                fmt::print(stderr, "s2smux-replay: TLS with the gateway failed: {}\n", conn.error);
                break;
            }
        }
    }
    // The last answers.
    if (!conn.eof()) conn.pump(Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                                  std::chrono::duration<double>(opt.linger_s)));

    std::string want = capture::normalise(expected), got = capture::normalise(conn.received);
    if (!opt.all_output) {
        want = strip_stanzas(want);
        got = strip_stanzas(got);
    }
    fmt::print("stream {} ({} {}): {} inputs, {} bytes sent, {} bytes received{}\n", id,
               capture::token_value(s.args, "kind", "?"), capture::token_value(s.args, "peer", "?"), inputs, sent,
               conn.received.size(), opt.all_output ? "" : " (stanzas not compared)");
    if (want == got) {
        fmt::print("live replay: the gateway answered as recorded\n");
        return 0;
    }
    fmt::print("live replay: the gateway answered differently\n{}", capture::xml_diff(want, got, opt.context));
    return 1;
}

} // namespace s2smux::replay
