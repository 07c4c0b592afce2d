// The daemon's captures (s2smuxctl capture start/stop, [[route]] capture):
// which streams each one records, into which file (daemon/capture_file.h).
//
// A stream is recorded through a StreamCapture, the tap on its session
// (xmpp/session_tap.h), owned by the stream and freed with it. While any
// capture takes new streams, every new stream gets one before its session
// starts; its records wait in memory (at most kBufferBytes) until the
// stream's remote domain and peer address are known (outgoing: at once;
// incoming: when the peer's stream header arrived), then go to every
// matching capture, or are dropped and the tap detached. A capture started
// while a stream is up records it from then on, marked partial (replay
// skips it). A stream's records end with an E record: "closed: <reason>"
// once its session is over (written when the stream is freed, after its last
// byte), or "capture stopped".
//
// Without any capture, nothing here runs for a stream and nothing is
// allocated for it.
#pragma once

#include "capture/recorder.h"
#include "common/clock.h"
#include "common/result.h"
#include "net/stream.h"

#include <uv.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace s2smux {

class CaptureFile;
class Captures;

// One capture: a file and what it takes.
struct Capture {
    std::string path;                 // absolute
    std::vector<std::string> matches; // see capture_matches()
    std::string source;               // "admin", or "route" for [[route]] capture
    std::shared_ptr<CaptureFile> file;
    bool open = false;                // the file is open (lines written before wait in its queue)
    bool stopping = false;            // takes no new stream
    std::size_t live = 0;             // streams being recorded now
    std::uint64_t streams = 0;        // streams recorded, in all
    std::uint64_t partial = 0;        // of which attached mid-stream

    std::string match_text() const; // "b.test,127.0.0.1"
    bool takes_streams() const;     // not stopping, and its file has not failed
};

// Whether `match` takes a stream with this remote domain ("" while unknown)
// and peer address ("IP:PORT", "[IPv6]:PORT"): "*" every stream, "b.test"
// that domain, "*.b.test" its subdomains, "IP" or "IP:PORT" that address.
bool capture_matches(std::string_view match, std::string_view domain, std::string_view peer);
// Checks and normalises a PEER argument (domains lowercased, "[::1]:5269").
Result<std::string> parse_capture_match(std::string_view s);

// The tap on one stream's session: records it (capture::Recorder) into the
// captures it is attached to.
class StreamCapture final : public xmpp::SessionTap, public capture::Sink {
public:
    static constexpr std::size_t kBufferBytes = 256 * 1024;

    // from_start: a new stream (records wait in memory until decide());
    // otherwise a running one, attached with attach_partial().
    StreamCapture(Captures& owner, net::Stream& s, bool from_start);
    // E records for the captures still attached (the stream is being freed).
    ~StreamCapture() override;
    StreamCapture(const StreamCapture&) = delete;
    StreamCapture& operator=(const StreamCapture&) = delete;

    net::Stream& stream() { return stream_; }
    bool decided() const { return decided_; }
    bool overflowed() const { return overflow_; }
    // Decided and attached to no capture: to be detached.
    bool empty() const { return decided_ && targets_.empty(); }
    bool has(const Capture& c) const;

    // The records so far go to each of `caps`, and from now on all of them.
    void decide(const std::vector<std::shared_ptr<Capture>>& caps);
    // Records into `c` from now on, starting with an S record marked partial.
    void attach_partial(const std::shared_ptr<Capture>& c, TimeMs now);
    // The E record into `c`; records no more into it.
    void detach(Capture& c, std::string_view why, TimeMs now);
    // The session is over: the E record's reason.
    void set_closed(std::string_view reason);
    const std::string& end_reason() const { return end_; }

    // capture::Sink (what the recorder writes)
    void capture_write(std::string_view lines) override;
    TimeMs capture_origin() const override;

    // xmpp::SessionTap
    void tap_in(std::string_view bytes, TimeMs now) override;
    void tap_out(std::string_view bytes) override;
    void tap_call(std::string_view name, std::initializer_list<std::string_view> args, TimeMs now,
                  bool nested) override;
    void tap_tls(const xmpp::TlsState& st, TimeMs now, bool nested) override;
    void tap_callback(std::string_view name, std::initializer_list<std::string_view> args) override;
    std::string tap_answer(std::string_view query, std::initializer_list<std::string_view> args,
                           std::string answer) override;

private:
    // Records are formatted: for the buffer (undecided) or for a capture.
    bool recording() const { return decided_ ? !targets_.empty() : !overflow_; }
    void begin(TimeMs now);
    TimeMs now() const;
    void release(Capture& c);

    Captures& owner_;
    net::Stream& stream_;
    capture::Recorder rec_;
    bool begun_;             // an S record is written
    bool seen_;              // the session did something since the tap was set (or before: attached mid-stream)
    bool decided_;
    bool overflow_ = false;  // more than kBufferBytes before the decision: not recorded
    std::string buffer_;     // records until decided
    std::vector<std::shared_ptr<Capture>> targets_;
    std::string end_;
};

class Captures {
public:
    explicit Captures(uv_loop_t* loop);
    ~Captures();
    Captures(const Captures&) = delete;
    Captures& operator=(const Captures&) = delete;

    // Record times of every capture count from `origin` (loop time); `wall`
    // is that moment in RFC 3339 UTC, for the files' header line.
    void set_origin(TimeMs origin, std::string wall);
    TimeMs origin() const { return origin_; }
    uv_loop_t* loop() const { return loop_; }

    // A new capture into `path` (absolute): takes new streams at once (their
    // records wait in the file's queue until it is open); `opened` gets ""
    // once the file is open, or the error, and the capture is then gone.
    // Fails at once when `path` is already being written.
    Result<std::shared_ptr<Capture>> start(std::string path, std::vector<std::string> matches, std::string source,
                                           std::function<void(const std::string& error)> opened);
    // Attaches `c` to the running streams it matches (partial). Returns how many.
    std::size_t attach_running(const std::shared_ptr<Capture>& c, const std::vector<net::Stream*>& streams);
    // E records ("capture stopped", or how the stream closed) for its
    // streams, detached, file closed; `done` runs once it is closed.
    void stop(const std::shared_ptr<Capture>& c, std::function<void()> done);
    // Every capture (gateway stop).
    void stop_all();

    std::shared_ptr<Capture> find(std::string_view path) const;
    const std::map<std::string, std::shared_ptr<Capture>, std::less<>>& all() const { return captures_; }
    // Some capture takes new streams.
    bool accepting() const;

    // Stream events (the gateway is the streams' owner).
    void stream_opened(net::Stream& s);
    // From inside the session's callback: records the reason, decides if
    // still undecided; detaching waits for tick().
    void stream_closed(net::Stream& s, std::string_view reason);
    // Outside any session call (once per loop iteration): decides streams
    // whose remote domain became known, detaches taps that record nothing.
    void tick();
    bool has_pending() const { return !pending_.empty(); }

private:
    friend class StreamCapture;
    static StreamCapture* tap_of(net::Stream& s);
    bool decidable(StreamCapture& sc) const;
    void decide(StreamCapture& sc);
    void forget(StreamCapture* sc);
    void finish_stop(const std::shared_ptr<Capture>& c, std::function<void()> done);

    uv_loop_t* loop_;
    TimeMs origin_ = 0;
    std::string wall_;
    std::map<std::string, std::shared_ptr<Capture>, std::less<>> captures_; // by path
    std::set<StreamCapture*> taps_;      // every StreamCapture alive
    std::vector<StreamCapture*> pending_; // undecided, or recording nothing (to detach)
};

// The domain a stream is matched by: the session's remote domain, else the
// first domain it received from (dialback without a 'from' in the header).
std::string_view capture_domain(net::Stream& s);

} // namespace s2smux
