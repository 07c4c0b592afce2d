#include "daemon/capture_file.h"

#include "common/log.h"

#include <fmt/format.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ctime>
#include <map>
#include <utility>

namespace s2smux {

namespace {

constexpr const char* kCtx = "capture";

// Files this process wrote, by (device, inode): the header they start with
// and their size when it closed them. Appending to one of them, unchanged,
// with the same header keeps it one run.
struct Started {
    std::string header;
    std::uint64_t size = 0;
};
std::map<std::pair<std::uint64_t, std::uint64_t>, Started>& started_files() {
    static std::map<std::pair<std::uint64_t, std::uint64_t>, Started> m;
    return m;
}

} // namespace

struct CaptureFile::Req {
    uv_fs_t fs{};
    std::shared_ptr<CaptureFile> self; // the file lives until its last request is done
    int n = 0;                         // rotate_try(): the attempt
};

std::shared_ptr<CaptureFile> CaptureFile::create(uv_loop_t* loop, std::string path, TimeMs origin, std::string header,
                                                 std::size_t max_queue) {
    return std::shared_ptr<CaptureFile>(
        new CaptureFile(loop, std::move(path), origin, std::move(header), max_queue));
}

CaptureFile::CaptureFile(uv_loop_t* loop, std::string path, TimeMs origin, std::string header, std::size_t max_queue)
    : loop_(loop), path_(std::move(path)), origin_(origin), header_(std::move(header)), max_queue_(max_queue) {}

CaptureFile::~CaptureFile() {
    // Only when dropped without close() and no request in flight.
    if (fd_ >= 0) ::close(fd_);
}

CaptureFile::Req* CaptureFile::req() {
    auto* r = new Req;
    r->self = shared_from_this();
    r->fs.data = r;
    return r;
}

// ------------------------------------------------------------------ opening

void CaptureFile::open(OpenDone done) {
    if (state_ != State::New) {
        if (done) done("already opened");
        return;
    }
    state_ = State::Opening;
    open_done_ = std::move(done);
    open_path();
}

void CaptureFile::open_path() {
    Req* r = req();
    int rc = uv_fs_open(loop_, &r->fs, path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600,
                        [](uv_fs_t* f) {
                            std::unique_ptr<Req> r(static_cast<Req*>(f->data));
                            ssize_t res = f->result;
                            uv_fs_req_cleanup(f);
                            r->self->opened(res);
                        });
    if (rc < 0) {
        uv_fs_req_cleanup(&r->fs);
        delete r;
        fail_open(uv_strerror(rc));
    }
}

void CaptureFile::opened(ssize_t result) {
    if (result < 0) return fail_open(uv_strerror(static_cast<int>(result)));
    fd_ = static_cast<uv_file>(result);
    Req* r = req();
    int rc = uv_fs_fstat(loop_, &r->fs, fd_, [](uv_fs_t* f) {
        std::unique_ptr<Req> r(static_cast<Req*>(f->data));
        int res = static_cast<int>(f->result);
        uv_stat_t st = f->statbuf;
        uv_fs_req_cleanup(f);
        r->self->statted(res, st);
    });
    if (rc < 0) {
        uv_fs_req_cleanup(&r->fs);
        delete r;
        fail_open(uv_strerror(rc));
    }
}

void CaptureFile::statted(int result, const uv_stat_t& st) {
    if (result < 0) return fail_open(uv_strerror(result));
    if (!S_ISREG(st.st_mode)) return fail_open("not a regular file");
    dev_ = st.st_dev;
    ino_ = st.st_ino;
    if (st.st_size > 0) {
        auto it = started_files().find({dev_, ino_});
        if (it == started_files().end() || it->second.header != header_ ||
            it->second.size != static_cast<std::uint64_t>(st.st_size)) {
            if (rotate_ && rotated_to_.empty()) return rotate(st.st_mtim.tv_sec);
            return fail_open(fmt::format("the file is not empty ({} bytes): a capture starts a new file (move this "
                                         "one away; s2smux-replay reads one run of s2smuxd per file)",
                                         st.st_size));
        }
    }
    need_header_ = st.st_size == 0;
    size_at_open_ = static_cast<std::uint64_t>(st.st_size);
    if ((st.st_mode & 077) == 0) return ready();
    Req* r = req();
    int rc = uv_fs_fchmod(loop_, &r->fs, fd_, 0600, [](uv_fs_t* f) {
        std::unique_ptr<Req> r(static_cast<Req*>(f->data));
        int res = static_cast<int>(f->result);
        uv_fs_req_cleanup(f);
        r->self->chmodded(res);
    });
    if (rc < 0) {
        uv_fs_req_cleanup(&r->fs);
        delete r;
        chmodded(rc);
    }
}

// The file holds something else (a capture of an earlier run): renamed to
// "<path>.<its mtime, UTC>" (then "-1", "-2"... if taken), and a new file
// opened in its place.
void CaptureFile::rotate(std::int64_t mtime) {
    std::time_t t = static_cast<std::time_t>(mtime);
    std::tm tm{};
    ::gmtime_r(&t, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y%m%dT%H%M%SZ", &tm);
    rotate_base_ = path_ + "." + buf;
    rotate_try(0);
}

void CaptureFile::rotate_try(int n) {
    rotated_to_ = n == 0 ? rotate_base_ : fmt::format("{}-{}", rotate_base_, n);
    Req* r = req();
    r->n = n;
    int rc = uv_fs_lstat(loop_, &r->fs, rotated_to_.c_str(), [](uv_fs_t* f) {
        std::unique_ptr<Req> r(static_cast<Req*>(f->data));
        int res = static_cast<int>(f->result);
        uv_fs_req_cleanup(f);
        CaptureFile& self = *r->self;
        if (res == 0 && r->n < 1000) return self.rotate_try(r->n + 1); // taken
        if (res != UV_ENOENT)
            return self.fail_open(fmt::format("cannot move the capture of an earlier run aside: {}: {}",
                                              self.rotated_to_, uv_strerror(res)));
        self.rotate_rename();
    });
    if (rc < 0) {
        uv_fs_req_cleanup(&r->fs);
        delete r;
        fail_open(uv_strerror(rc));
    }
}

void CaptureFile::rotate_rename() {
    Req* r = req();
    int rc = uv_fs_rename(loop_, &r->fs, path_.c_str(), rotated_to_.c_str(), [](uv_fs_t* f) {
        std::unique_ptr<Req> r(static_cast<Req*>(f->data));
        int res = static_cast<int>(f->result);
        uv_fs_req_cleanup(f);
        CaptureFile& self = *r->self;
        if (res < 0)
            return self.fail_open(fmt::format("cannot move the capture of an earlier run aside to {}: {}",
                                              self.rotated_to_, uv_strerror(res)));
        log::info(kCtx, "{}: not empty (an earlier run?): moved to {}, a new capture starts", self.path_,
                  self.rotated_to_);
        // The descriptor still points at the renamed file: closed, then the
        // path opened again.
        Req* c = self.req();
        uv_file fd = self.fd_;
        self.fd_ = -1;
        int rc2 = uv_fs_close(self.loop_, &c->fs, fd, [](uv_fs_t* f) {
            std::unique_ptr<Req> c(static_cast<Req*>(f->data));
            uv_fs_req_cleanup(f);
            c->self->open_path();
        });
        if (rc2 < 0) {
            uv_fs_req_cleanup(&c->fs);
            delete c;
            ::close(fd);
            self.open_path();
        }
    });
    if (rc < 0) {
        uv_fs_req_cleanup(&r->fs);
        delete r;
        fail_open(uv_strerror(rc));
    }
}

void CaptureFile::chmodded(int result) {
    if (result < 0)
        return fail_open(fmt::format("cannot make it private (mode 0600): {}", uv_strerror(result)));
    ready();
}

void CaptureFile::ready() {
    started_files()[{dev_, ino_}] = Started{header_, ~std::uint64_t{0}}; // not to be appended to while open
    state_ = close_requested_ ? State::Closing : State::Open;
    if (need_header_) queue_.insert(0, header_ + "\n");
    if (auto done = std::exchange(open_done_, nullptr)) done("");
    pump();
}

void CaptureFile::fail_open(std::string why) {
    error_ = std::move(why);
    dropped_ += queue_.size();
    queue_.clear();
    queue_.shrink_to_fit();
    if (fd_ >= 0) {
        Req* r = req();
        int rc = uv_fs_close(loop_, &r->fs, fd_, [](uv_fs_t* f) {
            std::unique_ptr<Req> r(static_cast<Req*>(f->data));
            uv_fs_req_cleanup(f);
        });
        if (rc < 0) {
            uv_fs_req_cleanup(&r->fs);
            delete r;
        }
        fd_ = -1;
    }
    state_ = State::Closed;
    if (auto done = std::exchange(open_done_, nullptr)) done(error_);
    if (auto done = std::exchange(close_done_, nullptr)) done();
}

// ------------------------------------------------------------------ writing

void CaptureFile::drop(std::size_t n) {
    dropped_ += n;
    drop_note_ += n;
    if (!drop_logged_) {
        drop_logged_ = true;
        log::warn(kCtx, "{}: more than {} MiB waiting to be written: records dropped (counted in s2smuxctl "
                        "captures; the file notes where)",
                  path_, max_queue_ >> 20);
    }
}

void CaptureFile::capture_write(std::string_view lines) {
    if (lines.empty()) return;
    if (close_requested_ || state_ == State::Closing || state_ == State::Closed) {
        dropped_ += lines.size();
        return;
    }
    std::string note;
    if (drop_note_) note = fmt::format("# {} bytes of records dropped\n", drop_note_);
    if (bytes_queued() + note.size() + lines.size() > max_queue_) {
        drop(lines.size());
        return;
    }
    if (drop_note_) {
        queue_ += note;
        drop_note_ = 0;
    }
    queue_ += lines;
    pump();
}

void CaptureFile::pump() {
    if (writing_ || (state_ != State::Open && state_ != State::Closing)) return;
    if (inflight_.empty()) {
        if (queue_.empty()) {
            if (state_ == State::Closing) finish_close();
            return;
        }
        inflight_.swap(queue_);
        queue_.clear();
    }
    Req* r = req();
    uv_buf_t b = uv_buf_init(inflight_.data(), static_cast<unsigned>(inflight_.size()));
    int rc = uv_fs_write(loop_, &r->fs, fd_, &b, 1, -1, [](uv_fs_t* f) {
        std::unique_ptr<Req> r(static_cast<Req*>(f->data));
        ssize_t res = f->result;
        uv_fs_req_cleanup(f);
        r->self->wrote(res);
    });
    if (rc < 0) {
        uv_fs_req_cleanup(&r->fs);
        delete r;
        wrote(rc);
        return;
    }
    writing_ = true;
}

void CaptureFile::wrote(ssize_t result) {
    writing_ = false;
    if (result < 0) {
        error_ = fmt::format("write failed: {}", uv_strerror(static_cast<int>(result)));
        log::error(kCtx, "{}: {}; nothing more is recorded into it", path_, error_);
        dropped_ += inflight_.size() + queue_.size();
        inflight_.clear();
        queue_.clear();
        state_ = State::Closing;
        close_requested_ = true;
        finish_close();
        return;
    }
    written_ += static_cast<std::uint64_t>(result);
    inflight_.erase(0, static_cast<std::size_t>(result));
    if (inflight_.capacity() > (1u << 20) && inflight_.empty()) inflight_.shrink_to_fit();
    pump();
}

// ------------------------------------------------------------------ closing

void CaptureFile::close(std::function<void()> done) {
    close_done_ = std::move(done);
    close_requested_ = true;
    switch (state_) {
    case State::New:
        state_ = State::Closed;
        [[fallthrough]];
    case State::Closed:
        if (auto d = std::exchange(close_done_, nullptr)) d();
        return;
    case State::Opening: return; // ready() or fail_open() goes on
    case State::Open:
        state_ = State::Closing;
        pump();
        return;
    case State::Closing: return; // finish_close() runs once the queue is written
    }
}

void CaptureFile::finish_close() {
    if (fd_ < 0) {
        state_ = State::Closed;
        if (auto d = std::exchange(close_done_, nullptr)) d();
        return;
    }
    Req* r = req();
    uv_file fd = fd_;
    fd_ = -1;
    int rc = uv_fs_close(loop_, &r->fs, fd, [](uv_fs_t* f) {
        std::unique_ptr<Req> r(static_cast<Req*>(f->data));
        int res = static_cast<int>(f->result);
        uv_fs_req_cleanup(f);
        CaptureFile& self = *r->self;
        if (res < 0 && self.error_.empty()) {
            self.error_ = fmt::format("close failed: {}", uv_strerror(res));
            log::error(kCtx, "{}: {}", self.path_, self.error_);
        }
        self.state_ = State::Closed;
        if (res >= 0 && self.error_.empty())
            started_files()[{self.dev_, self.ino_}] = Started{self.header_, self.size_at_open_ + self.written_};
        if (auto d = std::exchange(self.close_done_, nullptr)) d();
    });
    if (rc < 0) {
        uv_fs_req_cleanup(&r->fs);
        delete r;
        ::close(fd);
        state_ = State::Closed;
        if (auto d = std::exchange(close_done_, nullptr)) d();
    }
}

} // namespace s2smux
