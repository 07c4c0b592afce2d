#include "xmpp/errors.h"

#include "xml/writer.h"
#include "xmpp/ns.h"

#include <array>

namespace s2smux::xmpp {

namespace {

constexpr std::array kStreamNames = {
    "bad-format", "bad-namespace-prefix", "conflict", "connection-timeout", "host-gone",
    "host-unknown", "improper-addressing", "internal-server-error", "invalid-from",
    "invalid-namespace", "invalid-xml", "not-authorized", "not-well-formed", "policy-violation",
    "remote-connection-failed", "reset", "resource-constraint", "restricted-xml",
    "see-other-host", "system-shutdown", "undefined-condition", "unsupported-encoding",
    "unsupported-feature", "unsupported-stanza-type", "unsupported-version",
};
static_assert(kStreamNames.size() == static_cast<std::size_t>(StreamError::UnsupportedVersion) + 1);

struct StanzaCond {
    const char* name;
    const char* type;
};
constexpr std::array<StanzaCond, 16> kStanzaConds = {{
    {"bad-request", "modify"},
    {"feature-not-implemented", "cancel"},
    {"forbidden", "auth"},
    {"internal-server-error", "cancel"},
    {"item-not-found", "cancel"},
    {"jid-malformed", "modify"},
    {"not-acceptable", "modify"},
    {"not-allowed", "cancel"},
    {"not-authorized", "auth"},
    {"policy-violation", "cancel"},
    {"recipient-unavailable", "wait"},
    {"remote-server-not-found", "cancel"},
    {"remote-server-timeout", "wait"},
    {"resource-constraint", "wait"},
    {"service-unavailable", "cancel"},
    {"undefined-condition", "cancel"},
}};
static_assert(kStanzaConds.size() == static_cast<std::size_t>(StanzaError::UndefinedCondition) + 1);

} // namespace

const char* condition_name(StreamError e) { return kStreamNames[static_cast<std::size_t>(e)]; }

bool parse_stream_error(std::string_view name, StreamError& out) {
    for (std::size_t i = 0; i < kStreamNames.size(); ++i) {
        if (name == kStreamNames[i]) {
            out = static_cast<StreamError>(i);
            return true;
        }
    }
    return false;
}

const char* condition_name(StanzaError e) { return kStanzaConds[static_cast<std::size_t>(e)].name; }
const char* default_error_type(StanzaError e) { return kStanzaConds[static_cast<std::size_t>(e)].type; }

void write_stream_error(std::string& out, StreamError cond, std::string_view text) {
    xml::Writer w(out);
    w.open("stream:error");
    w.open(condition_name(cond)).xmlns(ns::kStreams).close();
    if (!text.empty()) w.open("text").xmlns(ns::kStreams).attr("xml:lang", "en").text(text).close();
    w.close();
}

bool may_bounce(const StanzaHead& s) {
    if (s.type == "error") return false;
    if (s.name == "iq" && s.type == "result") return false;
    return !s.from.empty() && !s.to.empty();
}

void write_bounce(std::string& out, const StanzaHead& s, StanzaError cond, std::string_view text,
                  std::string_view payload) {
    xml::Writer w(out);
    w.open(s.name).attr("from", s.to).attr("to", s.from).attr("id", s.id, true).attr("type", "error");
    if (!payload.empty()) w.raw(payload);
    w.open("error").attr("type", default_error_type(cond));
    w.open(condition_name(cond)).xmlns(ns::kStanzas).close();
    if (!text.empty()) w.open("text").xmlns(ns::kStanzas).attr("xml:lang", "en").text(text).close();
    w.close();
    w.close();
}

} // namespace s2smux::xmpp
