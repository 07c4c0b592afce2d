// systemd's readiness protocol (sd_notify(3)) without libsystemd: one
// datagram to $NOTIFY_SOCKET. Without that variable (not started by systemd
// with Type=notify / notify-reload) every call is a no-op, so the daemon
// runs the same with or without systemd.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace s2smux::sd {

// True when $NOTIFY_SOCKET is set (a path, or "@name" for the abstract namespace).
bool enabled();
// Sends `state`, e.g. "READY=1\nSTATUS=serving". Non-blocking; failures are
// returned (for a log line), never fatal.
bool notify(std::string_view state, std::string* err = nullptr);
// CLOCK_MONOTONIC in microseconds, as RELOADING=1 wants in MONOTONIC_USEC=.
std::uint64_t monotonic_usec();

} // namespace s2smux::sd
