// Bump allocator for one top-level element at a time. The parser resets it
// after each stanza, so steady-state parsing allocates nothing: chunks are
// kept and reused. Chunks start small and double (up to kMaxChunk): an
// idle stream that only ever saw its handshake holds a couple of KiB.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <string_view>
#include <utility>
#include <vector>

namespace s2smux::xml {

class Arena {
public:
    static constexpr std::size_t kMaxChunk = 32 * 1024;
    explicit Arena(std::size_t chunk = 2 * 1024) : chunk_size_(chunk) {}
    Arena(const Arena&) = delete;
    Arena& operator=(const Arena&) = delete;

    void* alloc(std::size_t n, std::size_t align = alignof(std::max_align_t)) {
        std::size_t off = (used_ + align - 1) & ~(align - 1);
        if (cur_ < chunks_.size() && off + n <= chunks_[cur_].size) {
            used_ = off + n;
            total_ += n;
            return chunks_[cur_].data.get() + off;
        }
        return alloc_slow(n, align);
    }

    template <class T, class... Args>
    T* make(Args&&... args) {
        return new (alloc(sizeof(T), alignof(T))) T(std::forward<Args>(args)...);
    }

    std::string_view copy(const char* s, std::size_t n) {
        if (n == 0) return {};
        char* p = static_cast<char*>(alloc(n, 1));
        std::memcpy(p, s, n);
        return {p, n};
    }
    std::string_view copy(std::string_view s) { return copy(s.data(), s.size()); }

    // Forget everything allocated; keep the chunks. Objects must be trivially
    // destructible (nodes and views are).
    void reset() {
        cur_ = 0;
        used_ = 0;
        total_ = 0;
    }

    // reset(), then free the chunks past the first `keep` bytes, so one
    // unusually large element does not pin its memory for good.
    void reset_and_trim(std::size_t keep) {
        reset();
        std::size_t n = 0, total = 0;
        while (n < chunks_.size() && total + chunks_[n].size <= keep) total += chunks_[n++].size;
        chunks_.erase(chunks_.begin() + static_cast<std::ptrdiff_t>(n), chunks_.end());
    }

    std::size_t bytes_used() const { return total_; }
    std::size_t bytes_reserved() const {
        std::size_t n = 0;
        for (const Chunk& c : chunks_) n += c.size;
        return n;
    }

private:
    struct Chunk {
        std::unique_ptr<char[]> data;
        std::size_t size;
    };

    void* alloc_slow(std::size_t n, std::size_t align) {
        // Move to the next chunk that fits, allocating one if needed.
        while (true) {
            if (cur_ < chunks_.size() && used_ != 0) ++cur_;
            used_ = 0;
            if (cur_ >= chunks_.size()) {
                const std::size_t want =
                    chunks_.empty() ? chunk_size_ : std::min(2 * chunks_.back().size, std::max(kMaxChunk, chunk_size_));
                const std::size_t sz = n + align > want ? n + align : want;
                chunks_.push_back({std::unique_ptr<char[]>(new char[sz]), sz});
                cur_ = chunks_.size() - 1;
            }
            std::size_t off = 0;
            auto base = reinterpret_cast<std::uintptr_t>(chunks_[cur_].data.get());
            off = ((base + align - 1) & ~(std::uintptr_t(align) - 1)) - base;
            if (off + n <= chunks_[cur_].size) {
                used_ = off + n;
                total_ += n;
                return chunks_[cur_].data.get() + off;
            }
            // Too small (a reused small chunk): try the next one.
            used_ = 1;
        }
    }

    std::size_t chunk_size_;
    std::vector<Chunk> chunks_;
    std::size_t cur_ = 0;
    std::size_t used_ = 0;
    std::size_t total_ = 0;
};

} // namespace s2smux::xml
