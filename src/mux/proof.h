// Proof of possession for a mux <add/> (see man/s2smux-protocol.7).
//
// The adding side signs, with the private key of the certificate it adds,
//   "s2smux mux add v0" 0x00
//   exporter (32 bytes, RFC 9266 tls-exporter of THIS TLS session) 0x00
//   role of the signer ("initiator" | "receiver") 0x00
//   stream id (the receiving entity's id of the current stream) 0x00
//   add id 0x00 domain 0x00
//   SHA-256 of the leaf certificate (DER)
// The exporter binds the proof to this TLS session (a proof copied from
// another stream fails), the role stops reflection to its sender, the id
// (unique per stream) stops replay within the stream, the leaf hash binds
// the proof to the certificate sent with it.
//
// The exporter and the hash have fixed sizes; the variable fields (stream
// id, add id, domain) may not contain 0x00 (XML 1.0 cannot carry it anyway),
// so the 0x00 separators make the encoding unambiguous: no two different
// inputs give the same bytes. proof_message() returns "" for inputs it
// refuses (a 0x00 in a variable field, an exporter that is not 32 bytes),
// and sign_proof() / verify_proof() refuse an empty message.
//
// Everything here is pure and thread-safe: the daemon runs it on the libuv
// thread pool (one LocalCert may sign on several threads at once).
#pragma once

#include "common/result.h"
#include "tls/certs.h"
#include "tls/ec_verify.h"

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

namespace s2smux::mux {

enum class Signer { Initiator, Receiver };
const char* to_string(Signer s);

// Size of the exporter field: RFC 9266 "EXPORTER-Channel-Binding", empty context, 32 bytes.
constexpr std::size_t kExporterSize = 32;

// The exact bytes that are signed; "" if refused (see above).
std::string proof_message(std::string_view exporter, Signer signer, std::string_view stream_id,
                          std::string_view add_id, std::string_view domain, std::string_view leaf_der);

struct Signature {
    std::string alg;   // TLS 1.3 SignatureScheme name: ecdsa_secp256r1_sha256, rsa_pss_rsae_sha256, ed25519, ...
    std::string value; // raw signature bytes (ECDSA: DER Ecdsa-Sig-Value, as in TLS)
};

// Supported names (RFC 8446 §4.2.3) and the keys they need:
//   ecdsa_secp256r1_sha256 / ecdsa_secp384r1_sha384 / ecdsa_secp521r1_sha512: ECDSA key on that curve
//   rsa_pss_rsae_sha256 / _sha384 / _sha512: RSA key (rsaEncryption)
//   rsa_pss_pss_sha256 / _sha384 / _sha512: RSASSA-PSS key
//   ed25519, ed448: EdDSA key of that curve
bool is_supported_alg(std::string_view alg);

// The scheme sign_proof() uses for the certificate's key: ECDSA P-256 ->
// ecdsa_secp256r1_sha256, P-384 -> ecdsa_secp384r1_sha384, P-521 ->
// ecdsa_secp521r1_sha512, RSA -> rsa_pss_rsae_sha256, RSA-PSS ->
// rsa_pss_pss_sha256, Ed25519 -> ed25519, Ed448 -> ed448.
Result<std::string> proof_alg_for(const tls::LocalCert& cert);

// Signs with the certificate's key (the algorithm follows the key type, see
// proof_alg_for()).
Result<Signature> sign_proof(const tls::LocalCert& cert, std::string_view message);

// Verifies `sig` over `message` with the public key of `leaf_der`.
// Rejects unknown names, algorithms that do not match the key (type, and
// curve for ECDSA), a leaf whose keyUsage lacks digitalSignature, an empty
// message or signature. Does not verify the certificate itself (check_add does).
Result<void> verify_proof(std::string_view leaf_der, std::string_view alg, std::string_view message,
                          std::string_view sig);

// What verify_proof() needs of a leaf, extracted once (parsing a certificate
// costs about ten times as much as importing its key): ChainCache keeps it
// for the chains it has seen.
struct ProofKey {
    std::string spki_der;        // the leaf's SubjectPublicKeyInfo, DER
    bool signing_allowed = true; // no keyUsage, or keyUsage with digitalSignature
    // ECDSA keys, ready for libcrypto (tls/ec_verify.h): a valid signature is
    // accepted there; anything else is checked by GnuTLS as before (same
    // results and texts). Null for other keys, or not built yet.
    std::shared_ptr<const tls::EcPublicKey> ec;
};
Result<ProofKey> proof_key_from_der(std::string_view leaf_der);
// Same checks and error texts as verify_proof(leaf_der, ...).
Result<void> verify_proof(const ProofKey& key, std::string_view alg, std::string_view message, std::string_view sig);

} // namespace s2smux::mux
