#include "tls/certs.h"

#include <gnutls/x509.h>

#include <algorithm>
#include <fstream>
#include <set>
#include <sstream>

namespace s2smux::tls {

namespace {

std::string normalize(std::string_view name) {
    if (!name.empty() && name.back() == '.') name.remove_suffix(1);
    std::string r(name);
    for (char& c : r)
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    return r;
}

Result<std::string> read_file(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) return make_error("cannot open " + path);
    std::ostringstream ss;
    ss << f.rdbuf();
    if (!f && !f.eof()) return make_error("cannot read " + path);
    return ss.str();
}

gnutls_datum_t datum(std::string_view s) {
    return gnutls_datum_t{reinterpret_cast<unsigned char*>(const_cast<char*>(s.data())),
                          static_cast<unsigned>(s.size())};
}

std::string err(const char* what, int r) { return std::string(what) + ": " + gnutls_strerror(r); }

Result<std::string> pubkey_id(gnutls_pubkey_t key) {
    unsigned char buf[64];
    std::size_t size = sizeof buf;
    int r = gnutls_pubkey_get_key_id(key, GNUTLS_KEYID_USE_SHA256, buf, &size);
    if (r < 0) return make_error(err("cannot compute key id", r));
    return std::string(reinterpret_cast<char*>(buf), size);
}

// Puts the leaf first and each issuer after the certificate it signed
// (files often list the chain in another order). Unrelated extras go last.
void sort_chain(gnutls_x509_crt_t* crts, unsigned n) {
    if (n < 2) return;
    // The leaf is the certificate that issued none of the others.
    unsigned leaf = 0;
    for (unsigned i = 0; i < n; ++i) {
        bool issued_other = false;
        for (unsigned j = 0; j < n && !issued_other; ++j)
            issued_other = j != i && gnutls_x509_crt_check_issuer(crts[j], crts[i]);
        if (!issued_other) {
            leaf = i;
            break;
        }
    }
    std::swap(crts[0], crts[leaf]);
    for (unsigned k = 1; k < n; ++k) {
        for (unsigned j = k; j < n; ++j) {
            if (gnutls_x509_crt_check_issuer(crts[k - 1], crts[j])) {
                std::swap(crts[k], crts[j]);
                break;
            }
        }
    }
}

} // namespace

LocalCert::~LocalCert() {
    for (auto& p : pcerts) gnutls_pcert_deinit(&p);
    if (key) gnutls_privkey_deinit(key);
}

Result<std::shared_ptr<LocalCert>> load_cert_pem(std::string_view chain_pem, std::string_view key_pem) {
    auto cert = std::make_shared<LocalCert>();

    gnutls_x509_crt_t* crts = nullptr;
    unsigned n = 0;
    gnutls_datum_t pem = datum(chain_pem);
    int r = gnutls_x509_crt_list_import2(&crts, &n, &pem, GNUTLS_X509_FMT_PEM, 0);
    if (r < 0) return make_error(err("cannot parse certificate chain", r));
    if (n == 0) {
        gnutls_free(crts);
        return make_error("no certificate in PEM data");
    }
    sort_chain(crts, n);

    std::string failure;
    cert->pcerts.reserve(n);
    for (unsigned i = 0; i < n; ++i) {
        gnutls_datum_t der{};
        if (failure.empty()) {
            r = gnutls_x509_crt_export2(crts[i], GNUTLS_X509_FMT_DER, &der);
            if (r < 0) failure = err("cannot export certificate", r);
        }
        if (failure.empty()) {
            cert->chain_der.emplace_back(reinterpret_cast<const char*>(der.data), der.size);
            gnutls_pcert_st pc{};
            r = gnutls_pcert_import_x509(&pc, crts[i], 0);
            if (r < 0)
                failure = err("cannot import certificate", r);
            else
                cert->pcerts.push_back(pc);
        }
        gnutls_free(der.data);
        gnutls_x509_crt_deinit(crts[i]);
    }
    gnutls_free(crts);
    if (!failure.empty()) return make_error(failure);

    // Re-encode the (sorted) chain as PEM so chain_pem matches chain_der.
    for (const auto& d : cert->chain_der) {
        gnutls_datum_t in = datum(d), out{};
        if (gnutls_pem_base64_encode2("CERTIFICATE", &in, &out) >= 0) {
            cert->chain_pem.append(reinterpret_cast<const char*>(out.data), out.size);
            gnutls_free(out.data);
        }
    }

    auto id = identity_from_der(cert->chain_der.front());
    if (!id) return make_error(id.error());
    cert->identity = std::move(*id);

    r = gnutls_privkey_init(&cert->key);
    if (r < 0) {
        cert->key = nullptr;
        return make_error(err("gnutls_privkey_init", r));
    }
    gnutls_datum_t kd = datum(key_pem);
    r = gnutls_privkey_import_x509_raw(cert->key, &kd, GNUTLS_X509_FMT_PEM, nullptr, 0);
    if (r < 0) return make_error(err("cannot parse private key", r));

    // The key must belong to the leaf.
    gnutls_pubkey_t pub = nullptr;
    r = gnutls_pubkey_init(&pub);
    if (r < 0) return make_error(err("gnutls_pubkey_init", r));
    r = gnutls_pubkey_import_privkey(pub, cert->key, 0, 0);
    if (r < 0) {
        gnutls_pubkey_deinit(pub);
        return make_error(err("cannot derive public key", r));
    }
    auto key_id = pubkey_id(pub);
    gnutls_pubkey_deinit(pub);
    if (!key_id) return make_error(key_id.error());
    auto leaf_id = pubkey_id(cert->pcerts.front().pubkey);
    if (!leaf_id) return make_error(leaf_id.error());
    if (*key_id != *leaf_id) return make_error("private key does not match the certificate");

    return cert;
}

Result<std::shared_ptr<LocalCert>> load_cert_files(const std::string& cert_path, const std::string& key_path) {
    auto chain = read_file(cert_path);
    if (!chain) return make_error(chain.error());
    auto key = read_file(key_path);
    if (!key) return make_error(key.error());
    auto cert = load_cert_pem(*chain, *key);
    if (!cert) return make_error(cert_path + " (key " + key_path + "): " + cert.error());
    (*cert)->cert_path = cert_path;
    (*cert)->key_path = key_path;
    return cert;
}

void CertStore::add(std::shared_ptr<LocalCert> cert) {
    if (!cert) return;
    for (const auto& name : cert->identity.names()) by_name_[name] = cert;
}

bool CertStore::remove(std::string_view domain) {
    auto cert = find(domain);
    if (!cert) return false;
    std::erase_if(by_name_, [&](const auto& kv) { return kv.second == cert; });
    return true;
}

bool CertStore::remove_cert(const std::shared_ptr<LocalCert>& cert) {
    return cert && std::erase_if(by_name_, [&](const auto& kv) { return kv.second == cert; }) > 0;
}

std::shared_ptr<LocalCert> CertStore::find(std::string_view domain) const {
    std::string name = normalize(domain);
    if (name.empty()) return nullptr;
    if (auto it = by_name_.find(name); it != by_name_.end()) return it->second;
    auto dot = name.find('.');
    if (dot == std::string::npos || dot == 0) return nullptr;
    // (Built in two steps: GCC 12 at -O3 reports a false -Wrestrict on "*" + substr.)
    std::string wildcard = "*";
    wildcard += std::string_view(name).substr(dot);
    if (auto it = by_name_.find(wildcard); it != by_name_.end()) return it->second;
    return nullptr;
}

std::shared_ptr<LocalCert> CertStore::any() const {
    return by_name_.empty() ? nullptr : by_name_.begin()->second;
}

std::vector<std::shared_ptr<LocalCert>> CertStore::all() const {
    std::vector<std::shared_ptr<LocalCert>> out;
    std::set<const LocalCert*> seen;
    for (const auto& [name, cert] : by_name_)
        if (seen.insert(cert.get()).second) out.push_back(cert);
    return out;
}

} // namespace s2smux::tls
