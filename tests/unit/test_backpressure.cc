// PauseRegistry: who holds whom, resumes once the last holder lets go,
// nothing dangles after a source or destination goes away.
#define BOOST_TEST_MODULE backpressure
#include <boost/test/unit_test.hpp>

#include "net/backpressure.h"

using s2smux::net::PauseRegistry;

namespace {

struct Source final : s2smux::net::Pausable {
    int pauses = 0, resumes = 0;
    bool paused = false;
    void pause_reading() override {
        ++pauses;
        paused = true;
    }
    void resume_reading() override {
        ++resumes;
        paused = false;
    }
};

} // namespace

BOOST_AUTO_TEST_CASE(one_destination_pauses_and_resumes) {
    PauseRegistry r;
    Source s;
    BOOST_TEST(r.hold(10, 1, s));
    BOOST_TEST(s.paused);
    BOOST_TEST(r.holding(10));
    BOOST_TEST(r.paused(1));
    // The same episode registers once and pauses once.
    BOOST_TEST(!r.hold(10, 1, s));
    BOOST_TEST(s.pauses == 1);
    BOOST_TEST(r.paused_count() == 1u);
    r.release(10);
    BOOST_TEST(!s.paused);
    BOOST_TEST(s.resumes == 1);
    BOOST_TEST(!r.holding(10));
    BOOST_TEST(r.paused_count() == 0u);
    // Releasing again (a drained stream writes on) is a no-op.
    r.release(10);
    BOOST_TEST(s.resumes == 1);
    BOOST_TEST(r.episodes() == 1u);
    // A new episode.
    BOOST_TEST(r.hold(10, 1, s));
    BOOST_TEST(s.pauses == 2);
    BOOST_TEST(r.episodes() == 2u);
}

BOOST_AUTO_TEST_CASE(resumed_only_when_every_holder_let_go) {
    PauseRegistry r;
    Source s;
    r.hold(10, 1, s);
    r.hold(11, 1, s);
    r.hold(s2smux::net::kGlobalHold, 1, s);
    BOOST_TEST(s.pauses == 1);
    r.release(11);
    BOOST_TEST(s.paused);
    r.release(s2smux::net::kGlobalHold);
    BOOST_TEST(s.paused);
    r.release(10);
    BOOST_TEST(!s.paused);
    BOOST_TEST(s.resumes == 1);
    BOOST_TEST(r.episodes() == 1u);
}

BOOST_AUTO_TEST_CASE(one_destination_holds_several_sources) {
    PauseRegistry r;
    Source a, b;
    r.hold(10, 1, a);
    r.hold(10, 2, b);
    BOOST_TEST(r.paused_count() == 2u);
    r.release(10);
    BOOST_TEST(!a.paused);
    BOOST_TEST(!b.paused);
}

BOOST_AUTO_TEST_CASE(a_closed_destination_resumes_its_sources) {
    PauseRegistry r;
    Source s;
    r.hold(10, 1, s);
    r.forget(10);
    BOOST_TEST(!s.paused);
    BOOST_TEST(!r.holding(10));
}

BOOST_AUTO_TEST_CASE(a_closed_source_is_never_touched_again) {
    PauseRegistry r;
    {
        Source s;
        r.hold(10, 1, s);
        r.hold(11, 1, s);
        r.forget(1);
        BOOST_TEST(r.paused_count() == 0u);
    } // gone: releasing its holders must not call it
    r.release(10);
    r.release(11);
    BOOST_TEST(!r.holding(10));
    BOOST_TEST(r.paused_count() == 0u);
}

BOOST_AUTO_TEST_CASE(a_source_that_is_also_a_destination) {
    // A stream paused by its own output (a peer that does not read what we
    // answer) and holding another stream.
    PauseRegistry r;
    Source self, other;
    r.hold(1, 1, self);
    r.hold(1, 2, other);
    r.forget(1); // the stream closes
    BOOST_TEST(!other.paused);
    BOOST_TEST(r.paused_count() == 0u);
    BOOST_TEST(!r.holding(1));
}

BOOST_AUTO_TEST_CASE(marks) {
    s2smux::net::BufferLimits l;
    BOOST_TEST(l.high == 1024u * 1024u);
    BOOST_TEST(l.low() == 512u * 1024u);
    BOOST_TEST(l.global_high == 64u * 1024u * 1024u);
    BOOST_TEST(l.global_low() == 32u * 1024u * 1024u);
}
