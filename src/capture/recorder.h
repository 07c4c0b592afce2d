// Records one Session into a capture (format.h) through a Sink: the daemon's
// sink appends to a file off the loop (daemon/capture_file.h); tests keep
// the text in memory.
#pragma once

#include "common/clock.h"
#include "xmpp/session.h"
#include "xmpp/session_tap.h"

#include <cstdint>
#include <string>
#include <string_view>

namespace s2smux::capture {

class Sink {
public:
    virtual ~Sink() = default;
    // Whole lines, each ending in '\n'.
    virtual void capture_write(std::string_view lines) = 0;
    // Loop time (TimeMs) the capture's times count from.
    virtual TimeMs capture_origin() const = 0;
};

class Recorder final : public xmpp::SessionTap {
public:
    Recorder(Sink& sink, std::uint64_t stream) : sink_(sink), stream_(stream) {}

    // The S record. `partial`: the session was already running, so the
    // capture cannot be replayed deterministically (replay skips it).
    void begin(std::string_view kind, std::string_view peer, const xmpp::SessionConfig& cfg, bool partial,
               TimeMs now);
    // The E record: the stream closed or the capture was stopped.
    void end(std::string_view why, TimeMs now);

    void tap_in(std::string_view bytes, TimeMs now) override;
    void tap_out(std::string_view bytes) override;
    void tap_call(std::string_view name, std::initializer_list<std::string_view> args, TimeMs now,
                  bool nested) override;
    void tap_tls(const xmpp::TlsState& st, TimeMs now, bool nested) override;
    void tap_callback(std::string_view name, std::initializer_list<std::string_view> args) override;
    std::string tap_answer(std::string_view query, std::initializer_list<std::string_view> args,
                           std::string answer) override;

private:
    std::uint64_t ms(TimeMs now);
    void emit();

    Sink& sink_;
    std::uint64_t stream_;
    TimeMs last_ = 0;
    std::string line_;
};

} // namespace s2smux::capture
