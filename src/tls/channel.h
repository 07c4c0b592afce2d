// One TLS session over memory buffers (GnuTLS push/pull on in-memory queues),
// so the protocol core stays sans-I/O: ciphertext in, plaintext out and back.
// TLS 1.2+ (1.3 preferred), AEAD ciphers (AES-GCM first), ECDHE only.
#pragma once

#include "common/result.h"
#include "tls/certs.h"

#include <gnutls/gnutls.h>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace s2smux::tls {

enum class Role { Client, Server };

struct ChannelOptions {
    Role role = Role::Client;
    // Client: SNI to send (the remote domain). Server: fallback certificate
    // selector when the client sends no SNI (the stream's `to`).
    std::string server_name;
    // Client: which local certificate to present if the server asks
    // (our `from` domain); empty = none.
    std::string client_cert_domain;
    // Offer / require ALPN "xmpp-server" (direct TLS, XEP-0368).
    // Client: offers "xmpp-server"; a server that ignores ALPN is accepted,
    // check alpn() == "xmpp-server" afterwards if it is required.
    // Server: a client that offers ALPN without "xmpp-server" is refused
    // (no_application_protocol alert, RFC 7301); a client that sends no ALPN
    // at all is accepted with alpn() == "" so the caller decides.
    bool alpn_xmpp_server = false;
    // Server: request (not require) a client certificate, for SASL EXTERNAL.
    bool request_client_cert = true;
};

enum class IoStatus { Ok, Closed, Error };

class Channel {
public:
    // `store` must outlive the channel (certificates are looked up during the
    // handshake, so live changes to the store apply to new handshakes).
    Channel(const CertStore& store, ChannelOptions opts);
    ~Channel();
    Channel(const Channel&) = delete;
    Channel& operator=(const Channel&) = delete;

    // Starts the handshake (a client queues its ClientHello into outbound()).
    Result<void> start();

    // Consumes ciphertext from the network; appends decrypted application
    // data to `plaintext`. Drives the handshake as needed (so check
    // outbound() after every feed). Ok: more input welcome. Closed: the peer
    // sent close_notify (ours is queued in outbound(); flush, then close).
    // Error: fatal, see error() ("TLS handshake failed: ...", "TLS error: ...");
    // an alert for the peer may be queued in outbound(). Closed and Error
    // are sticky. `data` is not referenced after the call returns.
    IoStatus feed(const char* data, std::size_t len, std::string& plaintext);

    // Encrypts application data (only after handshake_done(), else Error);
    // ciphertext is appended to outbound(). Large inputs become several
    // records; never blocks. Closed after shutdown().
    IoStatus write(std::string_view plaintext);

    // Sends close_notify (once). Later write() calls return Closed.
    void shutdown();

    // Ciphertext waiting to be written to the socket; the caller takes it
    // (e.g. std::swap with an empty string, or clear() after writing).
    std::string& outbound() { return out_; }

    bool handshake_done() const { return handshake_done_; }
    const std::string& error() const { return error_; } // last fatal error text

    // After the handshake.
    std::string version() const;            // "TLS1.3"
    std::string cipher() const;             // "AES-256-GCM"
    std::string alpn() const;               // negotiated ALPN or ""
    std::string sni() const;                // server: name the client asked for; client: name sent
    std::vector<std::string> peer_chain_der() const; // leaf first; empty if none
    bool is_tls13() const;
    // The local certificate this side presented (nullptr if none).
    const std::shared_ptr<LocalCert>& local_cert() const { return selected_cert_; }
    // RFC 5705 / RFC 8446 §7.5 exporter (used by the mux proof, RFC 9266 label).
    // Fails on TLS 1.2 without extended master secret (RFC 9266 §3).
    Result<std::string> exporter(std::string_view label, std::string_view context, std::size_t len) const;

    // Internal, for GnuTLS callbacks.
    struct Io;
    const CertStore& store() const { return store_; }
    const ChannelOptions& options() const { return opts_; }

private:
    IoStatus handshake_step();
    IoStatus read_records(std::string& plaintext);
    IoStatus fail(const char* what, int gnutls_err);
    const CertStore& store_;
    ChannelOptions opts_;
    gnutls_session_t session_ = nullptr;
    std::string in_;      // ciphertext not yet consumed by GnuTLS
    std::size_t in_off_ = 0;
    std::size_t pulled_ = 0; // ciphertext bytes handed to GnuTLS so far (progress detection)
    const char* feed_data_ = nullptr; // caller's buffer during feed(), read before copying
    std::size_t feed_len_ = 0;
    std::string out_;     // ciphertext produced by GnuTLS
    bool handshake_done_ = false;
    bool failed_ = false;     // fatal error, see error_
    bool peer_closed_ = false; // close_notify received
    bool close_sent_ = false;  // close_notify sent
    std::shared_ptr<LocalCert> selected_cert_; // kept alive while GnuTLS uses its pcerts
    std::string error_;
};

// Global GnuTLS init and shared credentials; call once per process
// (idempotent and thread-safe; Channel::start() calls it too).
void global_init();

// The priority string every channel uses (TLS 1.3/1.2, AEAD, ECDHE).
const char* priority_string();

} // namespace s2smux::tls
