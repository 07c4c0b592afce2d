#include "tls/channel.h"

#include <gnutls/abstract.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

namespace s2smux::tls {

namespace {

constexpr const char* kPriority =
    "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2:"
    "-CIPHER-ALL:+AES-256-GCM:+AES-128-GCM:+CHACHA20-POLY1305:-MAC-ALL:+AEAD:"
    "-KX-ALL:+ECDHE-ECDSA:+ECDHE-RSA:"
    "-GROUP-ALL:+GROUP-X25519:+GROUP-SECP256R1:+GROUP-SECP384R1:+GROUP-SECP521R1:"
    "-SIGN-RSA-SHA1:-SIGN-ECDSA-SHA1:%SERVER_PRECEDENCE";

constexpr char kAlpnXmppServer[] = "xmpp-server";

gnutls_certificate_credentials_t g_cred = nullptr;
gnutls_priority_t g_prio = nullptr;
std::once_flag g_once;

bool is_ip_literal(std::string_view name) {
    if (name.find(':') != std::string_view::npos || name.starts_with('[')) return true; // IPv6
    return name.find_first_not_of("0123456789.") == std::string_view::npos;              // IPv4
}

[[noreturn]] void die(const char* what, int r) {
    std::fprintf(stderr, "s2smux: TLS initialisation failed: %s: %s\n", what, gnutls_strerror(r));
    std::abort();
}

} // namespace

// GnuTLS callbacks; a nested class so they can reach Channel's internals.
struct Channel::Io {
    static Channel* self(gnutls_transport_ptr_t p) { return static_cast<Channel*>(p); }

    static ssize_t vec_push(gnutls_transport_ptr_t p, const giovec_t* iov, int iovcnt) {
        Channel* c = self(p);
        std::size_t total = 0;
        for (int i = 0; i < iovcnt; ++i) {
            c->out_.append(static_cast<const char*>(iov[i].iov_base), iov[i].iov_len);
            total += iov[i].iov_len;
        }
        return static_cast<ssize_t>(total);
    }

    static ssize_t pull(gnutls_transport_ptr_t p, void* data, size_t len) {
        Channel* c = self(p);
        auto* dst = static_cast<char*>(data);
        std::size_t n = 0;
        // Leftover bytes from earlier feeds first, then the caller's buffer.
        if (c->in_off_ < c->in_.size()) {
            n = std::min(len, c->in_.size() - c->in_off_);
            std::memcpy(dst, c->in_.data() + c->in_off_, n);
            c->in_off_ += n;
        }
        if (n < len && c->feed_len_ > 0) {
            std::size_t m = std::min(len - n, c->feed_len_);
            std::memcpy(dst + n, c->feed_data_, m);
            c->feed_data_ += m;
            c->feed_len_ -= m;
            n += m;
        }
        c->pulled_ += n;
        if (n == 0) {
            gnutls_transport_set_errno(c->session_, EAGAIN);
            return -1;
        }
        return static_cast<ssize_t>(n);
    }

    static int pull_timeout(gnutls_transport_ptr_t p, unsigned) {
        Channel* c = self(p);
        return (c->in_off_ < c->in_.size() || c->feed_len_ > 0) ? 1 : 0;
    }

    // Certificate selection at handshake time (both roles). The pcerts and
    // key are not copied by GnuTLS; selected_cert_ keeps them alive.
    static int retrieve(gnutls_session_t session, const gnutls_datum_t*, int, const gnutls_pk_algorithm_t*, int,
                        gnutls_pcert_st** pcert, unsigned int* pcert_length, gnutls_privkey_t* privkey) {
        auto* c = static_cast<Channel*>(gnutls_session_get_ptr(session));
        *pcert = nullptr;
        *pcert_length = 0;
        *privkey = nullptr;
        if (!c) return -1;
        std::shared_ptr<LocalCert> cert;
        if (c->opts_.role == Role::Server) {
            std::string sni = c->sni();
            if (!sni.empty()) cert = c->store_.find(sni);
            if (!cert && !c->opts_.server_name.empty()) cert = c->store_.find(c->opts_.server_name);
            if (!cert) cert = c->store_.any();
        } else if (!c->opts_.client_cert_domain.empty()) {
            cert = c->store_.find(c->opts_.client_cert_domain);
        }
        if (!cert || cert->pcerts.empty() || !cert->key) return 0; // nothing to present
        c->selected_cert_ = cert;
        *pcert = cert->pcerts.data();
        *pcert_length = static_cast<unsigned>(cert->pcerts.size());
        *privkey = cert->key;
        return 0;
    }
};

const char* priority_string() { return kPriority; }

void global_init() {
    std::call_once(g_once, [] {
        int r = gnutls_global_init();
        if (r < 0) die("gnutls_global_init", r);
        r = gnutls_certificate_allocate_credentials(&g_cred);
        if (r < 0) die("gnutls_certificate_allocate_credentials", r);
        gnutls_certificate_set_retrieve_function2(g_cred, &Channel::Io::retrieve);
        const char* where = nullptr;
        r = gnutls_priority_init(&g_prio, kPriority, &where);
        if (r < 0) die(where ? where : "gnutls_priority_init", r);
    });
}

Channel::Channel(const CertStore& store, ChannelOptions opts) : store_(store), opts_(std::move(opts)) {}

Channel::~Channel() {
    if (session_) gnutls_deinit(session_);
}

Result<void> Channel::start() {
    if (session_) return make_error("TLS channel already started");
    global_init();

    unsigned flags = (opts_.role == Role::Server ? GNUTLS_SERVER : GNUTLS_CLIENT) | GNUTLS_NONBLOCK | GNUTLS_NO_TICKETS;
    int r = gnutls_init(&session_, flags);
    if (r < 0) {
        session_ = nullptr;
        return make_error(std::string("gnutls_init: ") + gnutls_strerror(r));
    }
    gnutls_session_set_ptr(session_, this);
    gnutls_transport_set_ptr(session_, this);
    gnutls_transport_set_vec_push_function(session_, &Io::vec_push);
    gnutls_transport_set_pull_function(session_, &Io::pull);
    gnutls_transport_set_pull_timeout_function(session_, &Io::pull_timeout);
    gnutls_handshake_set_timeout(session_, 0); // the caller owns timeouts

    r = gnutls_priority_set(session_, g_prio);
    if (r < 0) return make_error(std::string("gnutls_priority_set: ") + gnutls_strerror(r));
    r = gnutls_credentials_set(session_, GNUTLS_CRD_CERTIFICATE, g_cred);
    if (r < 0) return make_error(std::string("gnutls_credentials_set: ") + gnutls_strerror(r));

    if (opts_.role == Role::Server) {
        // Request, never require; GnuTLS does not verify the peer (the caller
        // runs verify_chain() later), it only checks CertificateVerify.
        if (opts_.request_client_cert) gnutls_certificate_server_set_request(session_, GNUTLS_CERT_REQUEST);
    } else if (!opts_.server_name.empty() && !is_ip_literal(opts_.server_name)) { // RFC 6066 §3: no IPs in SNI
        r = gnutls_server_name_set(session_, GNUTLS_NAME_DNS, opts_.server_name.data(), opts_.server_name.size());
        if (r < 0) return make_error(std::string("gnutls_server_name_set: ") + gnutls_strerror(r));
    }

    if (opts_.alpn_xmpp_server) {
        gnutls_datum_t proto{reinterpret_cast<unsigned char*>(const_cast<char*>(kAlpnXmppServer)),
                             static_cast<unsigned>(sizeof kAlpnXmppServer - 1)};
        unsigned aflags = opts_.role == Role::Server ? GNUTLS_ALPN_MANDATORY : 0;
        r = gnutls_alpn_set_protocols(session_, &proto, 1, aflags);
        if (r < 0) return make_error(std::string("gnutls_alpn_set_protocols: ") + gnutls_strerror(r));
    }

    // A client queues its ClientHello; a server just finds no input yet.
    if (handshake_step() == IoStatus::Error) return make_error(error_);
    return {};
}

IoStatus Channel::fail(const char* what, int gnutls_err) {
    error_ = std::string(what) + gnutls_strerror(gnutls_err);
    if (opts_.role == Role::Server && !selected_cert_ &&
        (gnutls_err == GNUTLS_E_NO_CIPHER_SUITES || gnutls_err == GNUTLS_E_INSUFFICIENT_CREDENTIALS ||
         gnutls_err == GNUTLS_E_NO_CERTIFICATE_FOUND)) {
        std::string name = sni();
        if (name.empty()) name = opts_.server_name;
        error_ += " (no local certificate" + (name.empty() ? std::string() : " for " + name) + ")";
    }
    if (gnutls_err == GNUTLS_E_FATAL_ALERT_RECEIVED || gnutls_err == GNUTLS_E_WARNING_ALERT_RECEIVED) {
        if (const char* name = gnutls_alert_get_name(gnutls_alert_get(session_))) error_ += std::string(" (") + name + ")";
    } else {
        // Tell the peer why (queued into outbound()).
        gnutls_alert_send_appropriate(session_, gnutls_err);
    }
    failed_ = true;
    return IoStatus::Error;
}

IoStatus Channel::handshake_step() {
    for (;;) {
        int r = gnutls_handshake(session_);
        if (r == GNUTLS_E_SUCCESS) {
            handshake_done_ = true;
            return IoStatus::Ok;
        }
        if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED) return IoStatus::Ok;
        if (gnutls_error_is_fatal(r)) return fail("TLS handshake failed: ", r);
        // Non-fatal (e.g. a warning alert): keep going.
    }
}

IoStatus Channel::read_records(std::string& plaintext) {
    for (;;) {
        std::size_t pulled_before = pulled_;
        gnutls_packet_t packet = nullptr;
        ssize_t r = gnutls_record_recv_packet(session_, &packet);
        if (r > 0) {
            gnutls_datum_t d{};
            gnutls_packet_get(packet, &d, nullptr);
            plaintext.append(reinterpret_cast<const char*>(d.data), d.size);
            gnutls_packet_deinit(packet);
            continue;
        }
        if (packet) gnutls_packet_deinit(packet);
        if (r == 0) { // close_notify
            peer_closed_ = true;
            if (!close_sent_) {
                gnutls_bye(session_, GNUTLS_SHUT_WR);
                close_sent_ = true;
            }
            return IoStatus::Closed;
        }
        if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED) {
            // After a TLS 1.3 post-handshake message (NewSessionTicket,
            // KeyUpdate) GnuTLS returns E_AGAIN although records that came
            // in the same read may still wait in its buffer: read again as
            // long as the last call made progress.
            if (pulled_ != pulled_before || gnutls_record_check_pending(session_) > 0) continue;
            return IoStatus::Ok;
        }
        if (r == GNUTLS_E_REHANDSHAKE) { // TLS 1.2 renegotiation: refuse politely
            gnutls_alert_send(session_, GNUTLS_AL_WARNING, GNUTLS_A_NO_RENEGOTIATION);
            continue;
        }
        if (!gnutls_error_is_fatal(static_cast<int>(r))) continue;
        return fail("TLS error: ", static_cast<int>(r));
    }
}

IoStatus Channel::feed(const char* data, std::size_t len, std::string& plaintext) {
    if (failed_) return IoStatus::Error;
    if (peer_closed_) return IoStatus::Closed;
    if (!session_) {
        error_ = "TLS channel not started";
        failed_ = true;
        return IoStatus::Error;
    }

    feed_data_ = data;
    feed_len_ = len;
    IoStatus st = IoStatus::Ok;
    if (!handshake_done_) st = handshake_step();
    if (st == IoStatus::Ok && handshake_done_) st = read_records(plaintext);

    // Keep what GnuTLS did not pull yet (normally nothing).
    if (in_off_ == in_.size()) {
        in_.clear();
        in_off_ = 0;
    } else if (in_off_ > 0 && (in_off_ >= 65536 || in_off_ * 2 >= in_.size())) {
        in_.erase(0, in_off_);
        in_off_ = 0;
    }
    if (feed_len_ > 0) in_.append(feed_data_, feed_len_);
    feed_data_ = nullptr;
    feed_len_ = 0;
    return st;
}

IoStatus Channel::write(std::string_view plaintext) {
    if (failed_) return IoStatus::Error;
    if (close_sent_) return IoStatus::Closed;
    if (!handshake_done_) {
        error_ = "TLS write before the handshake completed";
        failed_ = true;
        return IoStatus::Error;
    }
    const char* p = plaintext.data();
    std::size_t left = plaintext.size();
    while (left > 0) {
        // GnuTLS sends at most one record (16 KiB) per call; push never blocks.
        ssize_t r = gnutls_record_send(session_, p, left);
        if (r > 0) {
            p += r;
            left -= static_cast<std::size_t>(r);
        } else if (r == GNUTLS_E_INTERRUPTED) {
            continue;
        } else {
            return fail("TLS write failed: ", r == 0 ? GNUTLS_E_INTERNAL_ERROR : static_cast<int>(r));
        }
    }
    return IoStatus::Ok;
}

void Channel::shutdown() {
    if (!session_ || close_sent_ || failed_) return;
    close_sent_ = true;
    if (handshake_done_)
        gnutls_bye(session_, GNUTLS_SHUT_WR);
    else
        gnutls_alert_send(session_, GNUTLS_AL_WARNING, GNUTLS_A_CLOSE_NOTIFY);
}

std::string Channel::version() const {
    if (!session_ || !handshake_done_) return {};
    const char* n = gnutls_protocol_get_name(gnutls_protocol_get_version(session_));
    return n ? n : "";
}

std::string Channel::cipher() const {
    if (!session_ || !handshake_done_) return {};
    const char* n = gnutls_cipher_get_name(gnutls_cipher_get(session_));
    return n ? n : "";
}

std::string Channel::alpn() const {
    if (!session_) return {};
    gnutls_datum_t d{};
    if (gnutls_alpn_get_selected_protocol(session_, &d) < 0) return {};
    return std::string(reinterpret_cast<const char*>(d.data), d.size);
}

std::string Channel::sni() const {
    if (opts_.role == Role::Client) return is_ip_literal(opts_.server_name) ? std::string() : opts_.server_name;
    if (!session_) return {};
    char buf[256];
    std::size_t size = sizeof buf;
    unsigned type = 0;
    if (gnutls_server_name_get(session_, buf, &size, &type, 0) < 0 || type != GNUTLS_NAME_DNS) return {};
    return std::string(buf, strnlen(buf, size));
}

std::vector<std::string> Channel::peer_chain_der() const {
    std::vector<std::string> out;
    if (!session_) return out;
    unsigned n = 0;
    const gnutls_datum_t* certs = gnutls_certificate_get_peers(session_, &n);
    if (!certs) return out;
    out.reserve(n);
    for (unsigned i = 0; i < n; ++i) out.emplace_back(reinterpret_cast<const char*>(certs[i].data), certs[i].size);
    return out;
}

bool Channel::is_tls13() const { return session_ && gnutls_protocol_get_version(session_) == GNUTLS_TLS1_3; }

Result<std::string> Channel::exporter(std::string_view label, std::string_view context, std::size_t len) const {
    if (!session_ || !handshake_done_) return make_error("TLS exporter before the handshake completed");
    if (!is_tls13() && !gnutls_session_ext_master_secret_status(session_))
        return make_error("TLS exporter unavailable: TLS 1.2 without extended master secret");
    std::string out(len, '\0');
    int r = gnutls_prf_rfc5705(session_, label.size(), label.data(), context.size(), context.data(), len, out.data());
    if (r < 0) return make_error(std::string("TLS exporter failed: ") + gnutls_strerror(r));
    return out;
}

} // namespace s2smux::tls
