// Backpressure at the router: a destination that cannot keep up slows down
// the streams that feed it (their TCP window closes) instead of growing
// buffers. Streams account their own output (net::Stream::fed_by, drained);
// here are the route queues and the limits from [limits].
//
// A route queue (no stream ready yet) holds the stream that delivered to it
// once it reaches half of max_queue_stanzas, and lets it go when the queue is
// down to a quarter (flushed, bounced or expired); the bounce with
// <resource-constraint/> at max_queue_stanzas stays as the hard cap for what
// the paused source had already read.
#include "daemon/gateway.h"

#include <algorithm>

namespace s2smux {

void Gateway::apply_buffer_limits() {
    ctx_.limits.high = cfg_.stream_write_buffer;
    ctx_.limits.global_high = cfg_.max_buffered_bytes;
}

std::size_t Gateway::queue_pause_mark() const { return std::max<std::size_t>(1, cfg_.max_queue_stanzas / 2); }

void Gateway::queue_grew(Route& r) {
    if (r.ready) r.ready->fed_by(current_source_);
    if (!current_source_ || current_source_->finished() || r.queue.size() < queue_pause_mark()) return;
    if (!r.hold_id) r.hold_id = next_id_++; // shares the stream id space: never a stream's
    ctx_.pauses.hold(r.hold_id, current_source_->id(), *current_source_);
}

void Gateway::queue_shrunk(Route& r) {
    if (r.hold_id && r.queue.size() <= queue_pause_mark() / 2 && ctx_.pauses.holding(r.hold_id))
        ctx_.pauses.release(r.hold_id);
}

} // namespace s2smux
