// Run a function on the libuv thread pool and its continuation on the loop.
// The work function must not touch loop-owned state; the continuation runs
// on the loop thread (even when the loop is closing, so it must check that
// its target still exists).
#pragma once

#include <uv.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <utility>

namespace s2smux::net {

// Jobs queued or running on the libuv thread pool, for every loop of the
// process (a metrics gauge). Changed on loop threads only.
inline std::atomic<std::uint64_t> pool_jobs{0};

template <class Work, class Done>
void run_in_pool(uv_loop_t* loop, Work work, Done done) {
    struct Job {
        uv_work_t req{};
        Work work;
        Done done;
    };
    auto* job = new Job{uv_work_t{}, std::move(work), std::move(done)};
    job->req.data = job;
    ++pool_jobs;
    int rc = uv_queue_work(
        loop, &job->req, [](uv_work_t* r) { static_cast<Job*>(r->data)->work(); },
        [](uv_work_t* r, int) {
            std::unique_ptr<Job> j(static_cast<Job*>(r->data));
            --pool_jobs;
            j->done();
        });
    if (rc != 0) { // cannot happen with a valid loop; run inline rather than lose it
        std::unique_ptr<Job> j(job);
        --pool_jobs;
        j->work();
        j->done();
    }
}

} // namespace s2smux::net
