// A strict parser for the shape nearly every stanza has, in front of libxml2.
//
// Forwarding spent most of its CPU in libxml2 and in the framer that feeds
// it (bench/RESULTS.md, "Where s2smuxd spends its CPU"). Between top-level
// elements, StreamParser offers each element to this parser first. It
// reads the element once, where it lies, and builds the Node tree libxml2's
// events would have built, provided the element stays inside a subset it
// judges completely:
//   ASCII names; prefixes declared inside the element (xml: on attributes);
//   namespace names xmlParseURI() accepts (libxml2's own test); the five
//   predefined entities and character references; no CDATA section,
//   comment or processing instruction; no CR anywhere and no tab or line
//   feed in attribute values (libxml2 normalizes those); no duplicate
//   attribute or namespace declaration; within the Limits.
// Anything else, well-formed or not, is declined, and libxml2 parses it:
// libxml2 stays the judge of every error and of its wording.
// tests/fuzz/fuzz_fast_element.cc checks that the two give the same tree.
#pragma once

#include "xml/arena.h"
#include "xml/element.h"
#include "xml/stream_parser.h"

#include <string_view>

namespace s2smux::xml {

// Parses the top-level element that begins at bytes[0] (its '<'); `bytes`
// may go on past its end. `default_ns` is the namespace its unprefixed
// names get unless they declare one (the stream header's xmlns). Returns
// the element, allocated in `arena` (names, values and text included:
// nothing points into `bytes`), and its size in *len; or nullptr when it
// declines, or when the element does not end within `bytes` (nor within
// lim.max_stanza_bytes). A declined element's allocations stay in `arena`
// until its next reset.
const Node* parse_fast_element(std::string_view bytes, std::string_view default_ns, const Limits& lim,
                               Arena& arena, std::size_t* len);

} // namespace s2smux::xml
