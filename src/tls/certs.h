// Local certificates and keys for the gateway's own domains. Servers select a
// certificate by SNI (falling back to the stream's `to`), clients present the
// one for their `from` domain when the peer requests a certificate.
#pragma once

#include "common/result.h"
#include "tls/identity.h"

#include <gnutls/abstract.h>
#include <gnutls/gnutls.h>

#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace s2smux::tls {

struct LocalCert {
    std::vector<std::string> chain_der; // leaf first
    std::string chain_pem;
    Identity identity;
    std::vector<gnutls_pcert_st> pcerts; // owned, deinit in destructor
    gnutls_privkey_t key = nullptr;      // owned
    std::string cert_path, key_path;     // where it came from (may be empty)

    LocalCert() = default;
    LocalCert(const LocalCert&) = delete;
    LocalCert& operator=(const LocalCert&) = delete;
    ~LocalCert();
};

// Parses a PEM chain and PEM private key; checks that the key matches the
// leaf certificate. Pure, thread-safe (can run on the thread pool).
Result<std::shared_ptr<LocalCert>> load_cert_pem(std::string_view chain_pem, std::string_view key_pem);
Result<std::shared_ptr<LocalCert>> load_cert_files(const std::string& cert_path, const std::string& key_path);

// Not thread-safe: used from the event loop thread (channels look it up
// during their handshakes). Names are compared lowercase, trailing dot ignored.
class CertStore {
public:
    // Adds a certificate; it becomes the one used for every name it carries
    // (Identity::names(), replacing an older certificate for those names).
    // A certificate without any usable name is ignored.
    void add(std::shared_ptr<LocalCert> cert);
    // Removes the certificate serving `domain` (as find() picks it), under
    // all its names. False if none. Channels using it keep their reference.
    bool remove(std::string_view domain);
    // Removes this certificate under every name it serves. False if it served none.
    bool remove_cert(const std::shared_ptr<LocalCert>& cert);
    // Exact name first, then a wildcard certificate for the parent domain.
    std::shared_ptr<LocalCert> find(std::string_view domain) const;
    std::shared_ptr<LocalCert> any() const;
    std::vector<std::shared_ptr<LocalCert>> all() const;

private:
    std::map<std::string, std::shared_ptr<LocalCert>, std::less<>> by_name_;
};

} // namespace s2smux::tls
