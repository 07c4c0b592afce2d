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
    // data to `plaintext`. Drives the handshake as needed.
    IoStatus feed(const char* data, std::size_t len, std::string& plaintext);

    // Encrypts application data (only after handshake_done()); ciphertext is
    // appended to outbound(). Large inputs become several records.
    IoStatus write(std::string_view plaintext);

    // Sends close_notify.
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
    std::string sni() const;                // server: name the client asked for
    std::vector<std::string> peer_chain_der() const; // leaf first; empty if none
    bool is_tls13() const;
    // RFC 5705 / RFC 8446 §7.5 exporter (used by the mux proof, RFC 9266 label).
    Result<std::string> exporter(std::string_view label, std::string_view context, std::size_t len) const;

    // Internal, for GnuTLS callbacks.
    struct Io;
    const CertStore& store() const { return store_; }
    const ChannelOptions& options() const { return opts_; }

private:
    IoStatus handshake_step();
    const CertStore& store_;
    ChannelOptions opts_;
    gnutls_session_t session_ = nullptr;
    std::string in_;      // ciphertext not yet consumed by GnuTLS
    std::size_t in_off_ = 0;
    std::string out_;     // ciphertext produced by GnuTLS
    bool handshake_done_ = false;
    std::string error_;
};

// Global GnuTLS init and shared credentials; call once per process.
void global_init();

} // namespace s2smux::tls
