// What the admin socket can ask of the daemon (implemented by the Gateway).
//
// Each call answers through `done` exactly once, on the loop thread, possibly
// later (certificate loading runs on the thread pool; an add waits for the
// peers' answers), so the admin layer never blocks the event loop. Replies
// are data lines plus OK or an error message (the line protocol is in
// admin/protocol.h).
#pragma once

#include <functional>
#include <string>
#include <vector>

namespace s2smux::admin {

struct Reply {
    std::vector<std::string> lines; // data lines, any text: format_reply() escapes empty, "OK", "ERR..." lines
                                    // (listings: admin::Table in admin/protocol.h)
    std::string error;              // empty: success
    static Reply ok(std::vector<std::string> lines = {}) { return Reply{std::move(lines), {}}; }
    static Reply fail(std::string msg) { return Reply{{}, std::move(msg)}; }
};
using Done = std::function<void(Reply)>;

class Backend {
public:
    virtual ~Backend() = default;
    // Local domains and their state on each mux stream.
    virtual void domains(Done done) = 0;
    // Local and accepted peer certificates: subject, names, expiry.
    virtual void certs(Done done) = 0;
    // Streams: peer, direction, TLS version, mux on/off, domains each way, stanzas and bytes each way.
    virtual void streams(Done done) = 0;
    // Counters.
    virtual void stats(Done done) = 0;
    // Prometheus text exposition format 0.0.4, one data line per line.
    virtual void metrics(Done done) = 0;
    // Load CERT+KEY (PEM files), make its names local domains, add them to
    // every live mux stream; `replace` requires a certificate with the same
    // subject to exist (and replaces it with no gap).
    virtual void cert_add(std::string cert_path, std::string key_path, bool replace, Done done) = 0;
    // Remove the certificate serving DOMAIN and its names, on every stream.
    virtual void cert_remove(std::string domain, Done done) = 0;

    // Certificate transactions (HAProxy's runtime certificate API): `new`
    // opens an empty transaction NAME; `set` stages CERT+KEY in it, validated
    // at once (key matches, chain verifies, names parsed, dates); `commit`
    // swaps it in all-or-nothing (add, or replace the certificate with the
    // same subject) and adds it to every live mux stream; `abort` drops it;
    // `show` lists transactions and live certificates (NAME: one of either).
    virtual void cert_new(std::string name, Done done) = 0;
    virtual void cert_set(std::string name, std::string cert_path, std::string key_path, Done done) = 0;
    virtual void cert_commit(std::string name, Done done) = 0;
    virtual void cert_abort(std::string name, Done done) = 0;
    virtual void cert_show(std::string name, Done done) = 0; // "" = all

    // Re-read the configuration file and apply it to live streams; an
    // invalid file changes nothing.
    virtual void reload(Done done) = 0;
    // Close the streams of PEER (stream id "s12", remote domain or address)
    // with the stream error `condition` ("" = system-shutdown).
    virtual void close_stream(std::string peer, std::string condition, Done done) = 0;
    // The route/SRV answer the gateway would use for DOMAIN, and why.
    virtual void resolve(std::string domain, Done done) = 0;

    // Captures (s2smux-capture(5)): record the streams of PEER (remote
    // domain, "*.domain", IP address, IP:PORT or "*") into FILE (absolute,
    // or relative to the configuration file's directory); answers once the
    // file is open. `capture_stop` ends the captures of FILE or PEER ("" =
    // all) and answers once their files are closed; `captures` lists them.
    virtual void capture_start(std::string peer, std::string file, Done done) = 0;
    virtual void capture_stop(std::string what, Done done) = 0;
    virtual void captures(Done done) = 0;
};

} // namespace s2smux::admin
