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
// Everything here is pure and thread-safe: the daemon runs it on the libuv
// thread pool.
#pragma once

#include "common/result.h"
#include "tls/certs.h"

#include <string>
#include <string_view>

namespace s2smux::mux {

enum class Signer { Initiator, Receiver };
const char* to_string(Signer s);

// The exact bytes that are signed.
std::string proof_message(std::string_view exporter, Signer signer, std::string_view stream_id,
                          std::string_view add_id, std::string_view domain, std::string_view leaf_der);

struct Signature {
    std::string alg;   // TLS 1.3 SignatureScheme name: ecdsa_secp256r1_sha256, rsa_pss_rsae_sha256, ed25519, ...
    std::string value; // raw signature bytes
};

// Signs with the certificate's key (the algorithm follows the key type).
Result<Signature> sign_proof(const tls::LocalCert& cert, std::string_view message);

// Verifies `sig` over `message` with the public key of `leaf_der`.
// Rejects algorithms that do not match the key, and unknown names.
Result<void> verify_proof(std::string_view leaf_der, std::string_view alg, std::string_view message,
                          std::string_view sig);

} // namespace s2smux::mux
