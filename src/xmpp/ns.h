// XML namespaces used on server-to-server streams.
#pragma once

#include <string_view>

namespace s2smux::xmpp::ns {

inline constexpr std::string_view kStream = "http://etherx.jabber.org/streams";
inline constexpr std::string_view kServer = "jabber:server";
inline constexpr std::string_view kClient = "jabber:client";
inline constexpr std::string_view kDialback = "jabber:server:dialback";
inline constexpr std::string_view kDialbackFeature = "urn:xmpp:features:dialback";
inline constexpr std::string_view kTls = "urn:ietf:params:xml:ns:xmpp-tls";
inline constexpr std::string_view kSasl = "urn:ietf:params:xml:ns:xmpp-sasl";
inline constexpr std::string_view kStreams = "urn:ietf:params:xml:ns:xmpp-streams";
inline constexpr std::string_view kStanzas = "urn:ietf:params:xml:ns:xmpp-stanzas";
inline constexpr std::string_view kBidi = "urn:xmpp:bidi";                  // enable element
inline constexpr std::string_view kBidiFeature = "urn:xmpp:features:bidi";  // stream feature
inline constexpr std::string_view kSm = "urn:xmpp:sm:3";               // stream management (XEP-0198)
inline constexpr std::string_view kMux = "urn:s2smux:mux:0";           // s2smux multiplexing
inline constexpr std::string_view kXml = "http://www.w3.org/XML/1998/namespace";

} // namespace s2smux::xmpp::ns
