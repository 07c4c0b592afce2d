#include "admin/server.h"

#include "common/log.h"

#include <fmt/format.h>

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <deque>
#include <memory>

namespace s2smux::admin {

namespace {

using Clock = std::chrono::steady_clock;
constexpr std::size_t kReadBuf = 16 * 1024;
constexpr int kBacklog = 16;

// What a pending command's Done holds: cleared when the connection closes,
// so a late answer is dropped instead of touching freed memory.
struct Token {
    Server::Conn* conn = nullptr;
};

struct Item {
    std::string line;
    std::string fatal; // non-empty: answer "ERR fatal" and close
};

std::string summary(const Reply& r) {
    if (!r.error.empty()) return "ERR " + r.error;
    if (r.lines.empty()) return "OK";
    return fmt::format("OK, {} line{}", r.lines.size(), r.lines.size() == 1 ? "" : "s");
}

long long ms_since(Clock::time_point t) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t).count();
}

std::string dir_of(const std::string& path) {
    auto slash = path.rfind('/');
    if (slash == std::string::npos) return ".";
    if (slash == 0) return "/";
    return path.substr(0, slash);
}

enum class Probe { Absent, Stale, Live, NotSocket, Failed };

// Is something listening on the socket file at `path`?
Probe probe_socket(const std::string& path, std::string& err) {
    struct stat st{};
    if (::lstat(path.c_str(), &st) != 0) {
        if (errno == ENOENT) return Probe::Absent;
        err = std::strerror(errno);
        return Probe::Failed;
    }
    if (!S_ISSOCK(st.st_mode)) return Probe::NotSocket;
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        err = std::strerror(errno);
        return Probe::Failed;
    }
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::memcpy(sa.sun_path, path.c_str(), path.size() + 1); // length checked by the caller
    int rc = ::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa);
    int e = errno;
    ::close(fd);
    if (rc == 0 || e == EAGAIN || e == EINPROGRESS) return Probe::Live; // EAGAIN: listening, backlog full
    if (e == ECONNREFUSED) return Probe::Stale;
    if (e == ENOENT) return Probe::Absent;
    err = std::strerror(e);
    return Probe::Failed;
}

} // namespace

// ---------------------------------------------------------------------------
// One connection. Freed by the close callback of its last handle; after
// close() it never touches the Server again.

struct Server::Conn {
    Conn(Server* s, std::uint64_t id_) : server(s), id(id_), ctx(fmt::format("admin c{}", id_)) { token->conn = this; }

    Server* server; // nullptr once closing
    std::uint64_t id;
    std::string ctx; // log context
    uv_pipe_t pipe{};
    uv_timer_t timer{};
    int handles = 0; // initialized handles not yet closed
    std::shared_ptr<Token> token = std::make_shared<Token>();

    std::array<char, kReadBuf> rbuf{};
    std::string inbuf;        // received bytes not yet split into lines
    std::deque<Item> queue;   // requests waiting for their turn
    std::size_t queued_bytes = 0;
    std::size_t out_bytes = 0; // reply bytes handed to uv_write, not yet written

    bool reading = false;
    bool stop_input = false;   // EOF, or a fatal error queued: read no more
    bool eof = false;
    bool busy = false;         // a command is running
    bool pumping = false;
    bool close_after_write = false;
    bool closing = false;

    struct WriteReq {
        uv_write_t req{};
        Conn* conn;
        std::string data;
    };

    void start_reading() {
        if (reading || closing || stop_input) return;
        if (uv_read_start(reinterpret_cast<uv_stream_t*>(&pipe), alloc_cb, read_cb) == 0) reading = true;
    }
    void stop_reading() {
        if (!reading) return;
        uv_read_stop(reinterpret_cast<uv_stream_t*>(&pipe));
        reading = false;
    }

    static void alloc_cb(uv_handle_t* h, std::size_t, uv_buf_t* buf) {
        auto* c = static_cast<Conn*>(h->data);
        *buf = uv_buf_init(c->rbuf.data(), static_cast<unsigned>(c->rbuf.size()));
    }

    static void read_cb(uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
        auto* c = static_cast<Conn*>(s->data);
        if (n > 0) {
            c->on_data(std::string_view(buf->base, static_cast<std::size_t>(n)));
        } else if (n == UV_EOF) {
            c->on_eof();
        } else if (n < 0) {
            log::debug(c->ctx, "read error: {}", uv_strerror(static_cast<int>(n)));
            c->close();
        }
    }

    void on_data(std::string_view data) {
        if (closing || stop_input) return;
        inbuf.append(data);
        split_lines(false);
        pump();
    }

    void on_eof() {
        eof = true;
        stop_input = true;
        stop_reading();
        split_lines(true);
        pump();
    }

    void push_line(std::string_view line) {
        if (std::all_of(line.begin(), line.end(), [](char ch) { return ch == ' ' || ch == '\t'; })) return;
        queued_bytes += line.size();
        queue.push_back(Item{std::string(line), {}});
    }

    void push_fatal(std::string msg) {
        queue.push_back(Item{{}, std::move(msg)});
        stop_input = true;
        stop_reading();
        inbuf.clear();
        inbuf.shrink_to_fit();
    }

    void split_lines(bool at_eof) {
        if (!server) return;
        const std::size_t max = server->limits_.max_line;
        std::size_t pos = 0;
        while (true) {
            auto nl = inbuf.find('\n', pos);
            if (nl == std::string::npos) break;
            std::string_view line(inbuf.data() + pos, nl - pos);
            pos = nl + 1;
            if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
            if (line.size() > max) {
                push_fatal(fmt::format("line too long ({} bytes, at most {})", line.size(), max));
                return;
            }
            push_line(line);
        }
        inbuf.erase(0, pos);
        if (inbuf.size() > max) {
            push_fatal(fmt::format("line too long (more than {} bytes)", max));
            return;
        }
        if (at_eof && !inbuf.empty()) { // a last line without "\n"
            push_line(inbuf);
            inbuf.clear();
        }
        if (queued_bytes > server->limits_.max_pending_bytes) stop_reading(); // resumed by pump()
    }

    // Runs queued requests one at a time. Re-entrant calls (a Done answering
    // at once) return and let the outer loop continue.
    void pump() {
        if (pumping || closing) return;
        pumping = true;
        while (!closing && !busy && !queue.empty() && out_bytes < server->limits_.max_output_bytes) {
            Item it = std::move(queue.front());
            queue.pop_front();
            queued_bytes -= it.line.size();
            if (!it.fatal.empty()) {
                log::info(ctx, "{}; closing the connection", it.fatal);
                write(format_reply(Reply::fail(it.fatal)));
                close_after_write = true;
                queue.clear();
                queued_bytes = 0;
                break;
            }
            run(it.line);
        }
        pumping = false;
        if (closing) return;
        if (!busy && queue.empty() && (eof || close_after_write) && out_bytes == 0) {
            close();
            return;
        }
        if (queued_bytes <= server->limits_.max_pending_bytes / 2) start_reading();
        arm_timer();
    }

    void run(const std::string& line) {
        auto started = Clock::now();
        auto words = parse_command_line(line);
        // The log shows the parsed command (paths, never file contents); an
        // unparsable line is not logged verbatim.
        std::string desc = words ? server->dispatcher_.describe(*words) : std::string("(unparsable request)");
        busy = true;
        uv_timer_stop(&timer);
        auto answered = std::make_shared<bool>(false);
        Done done = [tok = token, answered, desc, started, lctx = ctx](Reply r) {
            if (*answered) {
                log::warn(lctx, "{}: answered twice; the second answer ({}) is ignored", desc, summary(r));
                return;
            }
            *answered = true;
            if (!tok->conn) {
                log::info(lctx, "{}: {} ({} ms; connection closed, reply dropped)", desc, summary(r),
                          ms_since(started));
                return;
            }
            tok->conn->finish(std::move(r), desc, started);
        };
        if (!words) {
            done(Reply::fail(words.error()));
            return;
        }
        server->dispatcher_.dispatch(*words, server->backend_, std::move(done));
    }

    void finish(Reply r, const std::string& desc, Clock::time_point started) {
        log::info(ctx, "{}: {} ({} ms)", desc, summary(r), ms_since(started));
        busy = false;
        write(format_reply(r));
        pump();
    }

    void write(std::string data) {
        if (closing) return;
        auto* w = new WriteReq{uv_write_t{}, this, std::move(data)};
        w->req.data = w;
        uv_buf_t b = uv_buf_init(w->data.data(), static_cast<unsigned>(w->data.size()));
        out_bytes += w->data.size();
        int rc = uv_write(&w->req, reinterpret_cast<uv_stream_t*>(&pipe), &b, 1, write_cb);
        if (rc != 0) {
            out_bytes -= w->data.size();
            delete w;
            log::debug(ctx, "write error: {}", uv_strerror(rc));
            close();
        }
    }

    static void write_cb(uv_write_t* req, int status) {
        std::unique_ptr<WriteReq> w(static_cast<WriteReq*>(req->data));
        Conn* c = w->conn;
        c->out_bytes -= w->data.size();
        if (c->closing) return;
        if (status < 0) {
            log::debug(c->ctx, "write error: {}", uv_strerror(status));
            c->close();
            return;
        }
        c->pump();
    }

    // Idle timer: runs while no command is running; any I/O restarts it.
    void arm_timer() {
        if (closing) return;
        std::uint64_t idle = server ? server->limits_.idle_timeout_ms : 0;
        if (busy || idle == 0) {
            uv_timer_stop(&timer);
            return;
        }
        uv_timer_start(&timer, timer_cb, idle, 0);
    }

    static void timer_cb(uv_timer_t* t) {
        auto* c = static_cast<Conn*>(t->data);
        log::info(c->ctx, "idle, closing the connection");
        c->close();
    }

    void close() {
        if (closing) return;
        closing = true;
        token->conn = nullptr;
        if (server) {
            server->forget(this);
            server = nullptr;
        }
        stop_reading();
        log::debug(ctx, "connection closed");
        uv_close(reinterpret_cast<uv_handle_t*>(&pipe), close_cb);
        uv_close(reinterpret_cast<uv_handle_t*>(&timer), close_cb);
    }

    static void close_cb(uv_handle_t* h) {
        auto* c = static_cast<Conn*>(h->data);
        if (--c->handles == 0) delete c;
    }
};

// ---------------------------------------------------------------------------

Server::Server(uv_loop_t* loop, Backend& backend) : loop_(loop), backend_(backend) {}

Server::~Server() { close(); }

Result<void> Server::listen(const std::string& path) {
    if (pipe_) return make_error(fmt::format("admin socket already listening on {}", path_));
    if (path.empty()) return make_error("admin socket: empty path");
    constexpr std::size_t max_len = sizeof(sockaddr_un::sun_path) - 1;
    if (path.size() > max_len)
        return make_error(fmt::format("admin socket path {} is too long ({} bytes, at most {})", path, path.size(),
                                      max_len));
    std::string dir = dir_of(path);
    struct stat st{};
    if (::stat(dir.c_str(), &st) != 0)
        return make_error(fmt::format("cannot create admin socket {}: directory {}: {}", path, dir,
                                      errno == ENOENT ? "does not exist" : std::strerror(errno)));
    if (!S_ISDIR(st.st_mode))
        return make_error(fmt::format("cannot create admin socket {}: {} is not a directory", path, dir));

    std::string err;
    switch (probe_socket(path, err)) {
    case Probe::Absent: break;
    case Probe::Live: return make_error(fmt::format("admin socket {} is in use by another process", path));
    case Probe::NotSocket:
        return make_error(fmt::format("cannot create admin socket {}: the file exists and is not a socket", path));
    case Probe::Failed: return make_error(fmt::format("cannot check admin socket {}: {}", path, err));
    case Probe::Stale:
        if (::unlink(path.c_str()) != 0 && errno != ENOENT)
            return make_error(fmt::format("cannot remove stale admin socket {}: {}", path, std::strerror(errno)));
        log::info("", "removed stale admin socket {}", path);
        break;
    }

    pipe_ = new uv_pipe_t{};
    uv_pipe_init(loop_, pipe_, 0);
    pipe_->data = this;
    // Mode 0600 from the start (umask), and chmod in case the umask was not applied.
    mode_t old_mask = ::umask(0177);
    int rc = uv_pipe_bind(pipe_, path.c_str());
    ::umask(old_mask);
    if (rc == 0 && ::chmod(path.c_str(), 0600) != 0) rc = -errno;
    if (rc == 0) rc = uv_listen(reinterpret_cast<uv_stream_t*>(pipe_), kBacklog, on_connection);
    if (rc != 0) {
        // Closing a bound pipe removes its socket file (libuv).
        uv_close(reinterpret_cast<uv_handle_t*>(pipe_), [](uv_handle_t* h) { delete reinterpret_cast<uv_pipe_t*>(h); });
        pipe_ = nullptr;
        return make_error(fmt::format("cannot listen on admin socket {}: {}", path, uv_strerror(rc)));
    }
    path_ = path;
    log::info("", "admin socket listening on {}", path_);
    return {};
}

void Server::close() {
    if (pipe_) {
        // libuv removes the socket file when the bound pipe is closed.
        uv_close(reinterpret_cast<uv_handle_t*>(pipe_), [](uv_handle_t* h) { delete reinterpret_cast<uv_pipe_t*>(h); });
        pipe_ = nullptr;
        log::info("", "admin socket {} closed", path_);
    }
    auto conns = std::move(conns_);
    conns_.clear();
    for (Conn* c : conns) {
        c->server = nullptr;
        c->close();
    }
}

void Server::forget(Conn* c) {
    auto it = std::find(conns_.begin(), conns_.end(), c);
    if (it != conns_.end()) conns_.erase(it);
}

void Server::on_connection(uv_stream_t* listener, int status) {
    auto* self = static_cast<Server*>(listener->data);
    if (status < 0) {
        log::warn("", "admin socket: accept error: {}", uv_strerror(status));
        return;
    }
    auto* c = new Conn(self, self->next_id_++);
    uv_pipe_init(self->loop_, &c->pipe, 0);
    uv_timer_init(self->loop_, &c->timer);
    c->pipe.data = c;
    c->timer.data = c;
    c->handles = 2;
    self->conns_.push_back(c);
    if (int rc = uv_accept(listener, reinterpret_cast<uv_stream_t*>(&c->pipe)); rc != 0) {
        log::warn("", "admin socket: accept error: {}", uv_strerror(rc));
        c->close();
        return;
    }
#ifdef SO_PEERCRED
    uv_os_fd_t fd;
    if (uv_fileno(reinterpret_cast<uv_handle_t*>(&c->pipe), &fd) == 0) {
        ucred cred{};
        socklen_t len = sizeof cred;
        if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0)
            c->ctx += fmt::format(" pid {} uid {}", cred.pid, cred.uid);
    }
#endif
    log::debug(c->ctx, "connection accepted");
    if (self->conns_.size() > self->limits_.max_connections) {
        c->push_fatal(fmt::format("too many admin connections (at most {})", self->limits_.max_connections));
        c->pump();
        return;
    }
    c->start_reading();
    c->arm_timer();
}

} // namespace s2smux::admin
