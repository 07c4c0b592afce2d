// Parses serialized top-level elements (stanzas we wrote ourselves, e.g.
// kept for stream management) back into Node trees, one at a time. For the
// rare paths (a broken stream's unacknowledged stanzas), not the data path.
#pragma once

#include "xml/element.h"

#include <functional>
#include <string>
#include <string_view>

namespace s2smux::xml {

// Calls `fn` for each element of `xml` (a concatenation of elements in the
// jabber:server namespace). Returns false, with *error set, when the bytes
// are not well-formed; the elements before the fault have been reported.
bool for_each_element(std::string_view xml, const std::function<void(const Node&)>& fn, std::string* error);

} // namespace s2smux::xml
