// A tap on a Session: sees everything that makes its behaviour (capture),
// or supplies it (replay). With a tap set, the session reports every input
// (bytes, host calls), every callback to its host, every answer it got from
// its host or drew at random (stream ids, dialback keys), and every byte it
// wrote. Recording those is enough to re-run the session exactly:
// s2smux-replay feeds the inputs back and answers each question with the
// recorded answer (src/capture, s2smux-replay(1)).
#pragma once

#include "common/clock.h"

#include <initializer_list>
#include <string>
#include <string_view>

namespace s2smux::xmpp {

struct TlsState;

class SessionTap {
public:
    virtual ~SessionTap() = default;
    // Bytes from the peer (on_bytes), before parsing.
    virtual void tap_in(std::string_view bytes, TimeMs now) = 0;
    // Bytes the session wrote to out(), in order.
    virtual void tap_out(std::string_view bytes) = 0;
    // A call into the session. `nested`: made by the host from inside one of
    // the session's callbacks (it belongs to the callback before it).
    virtual void tap_call(std::string_view name, std::initializer_list<std::string_view> args, TimeMs now,
                          bool nested) = 0;
    // on_tls_established (its state has its own encoding).
    virtual void tap_tls(const TlsState& st, TimeMs now, bool nested) = 0;
    // The session calls its host (or its multiplexing handler).
    virtual void tap_callback(std::string_view name, std::initializer_list<std::string_view> args) = 0;
    // The session got `answer` to `query` (from its host, its multiplexing
    // handler, or a random draw) and will use what this returns: a capture
    // returns `answer`, a replay the recorded one.
    virtual std::string tap_answer(std::string_view query, std::initializer_list<std::string_view> args,
                                   std::string answer) = 0;
};

} // namespace s2smux::xmpp
