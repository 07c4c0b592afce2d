// RFC 6120 stream errors (§4.9) and stanza errors (§8.3), and the XML for
// them: <stream:error/> and error replies ("bounces") to stanzas.
#pragma once

#include <string>
#include <string_view>

namespace s2smux::xmpp {

// Stream error conditions (RFC 6120 §4.9.3), names exactly as on the wire.
enum class StreamError {
    BadFormat,
    BadNamespacePrefix,
    Conflict,
    ConnectionTimeout,
    HostGone,
    HostUnknown,
    ImproperAddressing,
    InternalServerError,
    InvalidFrom,
    InvalidNamespace,
    InvalidXml,
    NotAuthorized,
    NotWellFormed,
    PolicyViolation,
    RemoteConnectionFailed,
    Reset,
    ResourceConstraint,
    RestrictedXml,
    SeeOtherHost,
    SystemShutdown,
    UndefinedCondition,
    UnsupportedEncoding,
    UnsupportedFeature,
    UnsupportedStanzaType,
    UnsupportedVersion,
};

const char* condition_name(StreamError e);
bool parse_stream_error(std::string_view name, StreamError& out);

// Stanza error conditions (RFC 6120 §8.3.3) that a gateway generates.
enum class StanzaError {
    BadRequest,
    FeatureNotImplemented,
    Forbidden,
    InternalServerError,
    ItemNotFound,
    JidMalformed,
    NotAcceptable,
    NotAllowed,
    NotAuthorized,
    PolicyViolation,
    RecipientUnavailable,
    RemoteServerNotFound,
    RemoteServerTimeout,
    ResourceConstraint,
    ServiceUnavailable,
    UndefinedCondition,
};

const char* condition_name(StanzaError e);
// The error type RFC 6120 suggests for a condition: cancel, wait, modify, auth.
const char* default_error_type(StanzaError e);

// "<stream:error><COND xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>[<text>]</stream:error>"
void write_stream_error(std::string& out, StreamError cond, std::string_view text);

// What a bounce needs to know about the stanza it answers.
struct StanzaHead {
    std::string_view name; // message, presence, iq
    std::string_view from, to, id, type;
};

// True if RFC 6120 allows answering this stanza with an error (never answer
// an error, and iq results are not answered either).
bool may_bounce(const StanzaHead& s);

// An error reply: from/to swapped, same id and element, type='error',
// <error type=...><COND/><text/></error>. `payload` (the original children,
// already serialized for a jabber:server stream) is included when not empty.
void write_bounce(std::string& out, const StanzaHead& s, StanzaError cond, std::string_view text,
                  std::string_view payload = {});

} // namespace s2smux::xmpp
