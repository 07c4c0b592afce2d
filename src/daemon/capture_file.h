// A capture file (s2smux-capture(5)) appended to without blocking the loop:
// opened, written and closed with libuv's file requests (thread pool), one
// write in flight carrying everything queued since the last one.
//
// The queue is bounded: beyond it records are dropped, counted and logged
// once, and the file gets a "# N bytes of records dropped" comment where
// writing resumes (the streams concerned no longer replay). Captures hold
// message content, so a new file is created with mode 0600 and an existing
// one is made 0600.
//
// The file starts with capture::header_line(); record times count from one
// origin (the gateway's start), so every capture of a run shares it. A file
// that is not empty is only appended to when this process wrote it with the
// same header and closed it as it is now (a capture stopped and started
// again); anything else (a capture of another run, any other file) is
// refused, or moved aside (set_rotate): s2smux-replay reads one run per
// file.
#pragma once

#include "capture/recorder.h"

#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace s2smux {

class CaptureFile final : public capture::Sink, public std::enable_shared_from_this<CaptureFile> {
public:
    static constexpr std::size_t kMaxQueueBytes = 64u << 20;

    // `header`: the file's first line, without "\n" (capture::header_line()).
    static std::shared_ptr<CaptureFile> create(uv_loop_t* loop, std::string path, TimeMs origin, std::string header,
                                               std::size_t max_queue = kMaxQueueBytes);
    ~CaptureFile() override;
    CaptureFile(const CaptureFile&) = delete;
    CaptureFile& operator=(const CaptureFile&) = delete;

    // Opens the file; `done` gets "" or the error ("permission denied", ...)
    // once that is known. Lines written meanwhile are queued.
    using OpenDone = std::function<void(const std::string& error)>;
    void open(OpenDone done);
    // Before open(): a file that cannot be appended to (a capture of an
    // earlier run) is renamed to "<path>.<its mtime, UTC>" and a new one
    // started, instead of refused ([[route]] capture across restarts).
    void set_rotate(bool on) { rotate_ = on; }
    // Where the old file went ("" if it was not moved).
    const std::string& rotated_to() const { return rotated_to_; }

    // capture::Sink: whole lines, queued for the next write.
    void capture_write(std::string_view lines) override;
    TimeMs capture_origin() const override { return origin_; }

    // Writes what is queued, then closes the file; `done` runs once it is
    // closed (at once if it never opened). Later lines are dropped.
    void close(std::function<void()> done);

    const std::string& path() const { return path_; }
    std::uint64_t bytes_written() const { return written_; }
    std::uint64_t bytes_dropped() const { return dropped_; }
    std::size_t bytes_queued() const { return queue_.size() + inflight_.size(); }
    bool is_open() const { return state_ == State::Open; }
    // Why writing stopped (a failed write), or "".
    const std::string& error() const { return error_; }

private:
    enum class State { New, Opening, Open, Closing, Closed };
    struct Req;

    CaptureFile(uv_loop_t* loop, std::string path, TimeMs origin, std::string header, std::size_t max_queue);

    Req* req();
    void open_path();
    void opened(ssize_t result);
    void rotate(std::int64_t mtime);
    void rotate_try(int n);
    void rotate_rename();
    void statted(int result, const uv_stat_t& st);
    void chmodded(int result);
    void ready();
    void fail_open(std::string why);
    void pump();
    void wrote(ssize_t result);
    void finish_close();
    void drop(std::size_t n);

    uv_loop_t* loop_;
    std::string path_;
    TimeMs origin_;
    std::string header_;
    std::size_t max_queue_;
    State state_ = State::New;
    uv_file fd_ = -1;
    bool need_header_ = false;
    bool writing_ = false;
    bool close_requested_ = false;
    OpenDone open_done_;
    std::function<void()> close_done_;
    std::string queue_;        // lines waiting for the next write
    std::string inflight_;     // the write in flight (what is left of it)
    std::uint64_t written_ = 0;
    std::uint64_t dropped_ = 0;
    std::uint64_t drop_note_ = 0; // dropped since the last comment line
    bool drop_logged_ = false;
    std::string error_;
    std::uint64_t dev_ = 0, ino_ = 0;
    std::uint64_t size_at_open_ = 0;
    bool rotate_ = false;
    std::string rotate_base_, rotated_to_;
};

} // namespace s2smux
