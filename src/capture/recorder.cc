#include "capture/recorder.h"

#include "capture/codec.h"
#include "capture/format.h"

namespace s2smux::capture {

std::uint64_t Recorder::ms(TimeMs now) {
    if (now > last_) last_ = now;
    TimeMs origin = sink_.capture_origin();
    return last_ > origin ? static_cast<std::uint64_t>(last_ - origin) : 0;
}

void Recorder::emit() {
    line_ += '\n';
    sink_.capture_write(line_);
    line_.clear();
}

void Recorder::begin(std::string_view kind, std::string_view peer, const xmpp::SessionConfig& cfg, bool partial,
                     TimeMs now) {
    Record r;
    r.kind = Kind::Stream;
    r.ms = ms(now);
    r.stream = stream_;
    r.args.push_back("kind=" + std::string(kind));
    r.args.push_back("peer=" + std::string(peer));
    if (partial) r.args.push_back("partial=1");
    for (auto& t : encode_config(cfg)) r.args.push_back(std::move(t));
    line_ = format_record(r);
    emit();
}

void Recorder::end(std::string_view why, TimeMs now) {
    Record r;
    r.kind = Kind::End;
    r.ms = ms(now);
    r.stream = stream_;
    r.name = std::string(why);
    line_ = format_record(r);
    emit();
}

void Recorder::tap_in(std::string_view bytes, TimeMs now) {
    format_bytes(line_, Kind::In, ms(now), stream_, bytes);
    emit();
}

void Recorder::tap_out(std::string_view bytes) {
    format_bytes(line_, Kind::Out, ms(last_), stream_, bytes);
    emit();
}

void Recorder::tap_call(std::string_view name, std::initializer_list<std::string_view> args, TimeMs now,
                        bool nested) {
    format_call(line_, nested ? Kind::Nested : Kind::Call, ms(now), stream_, name, args);
    emit();
}

void Recorder::tap_tls(const xmpp::TlsState& st, TimeMs now, bool nested) {
    format_call(line_, nested ? Kind::Nested : Kind::Call, ms(now), stream_, "tls", encode_tls(st));
    emit();
}

void Recorder::tap_callback(std::string_view name, std::initializer_list<std::string_view> args) {
    format_call(line_, Kind::Callback, ms(last_), stream_, name, args);
    emit();
}

std::string Recorder::tap_answer(std::string_view query, std::initializer_list<std::string_view> args,
                                 std::string answer) {
    format_answer(line_, ms(last_), stream_, query, args, answer);
    emit();
    return answer;
}

} // namespace s2smux::capture
