// A thread's kept working memory (workers/worker_memory.cpp). How the pool charges it to the
// memory budget and gives it back is tested with the pool (worker_pool_test.cpp).
#include <crunch/worker_memory.hpp>

#include <gtest/gtest.h>

#include <cstdint>
#include <thread>

namespace crunch {
namespace {

constexpr std::uint64_t mib = 1 << 20;

TEST(worker_memory, is_kept_reused_in_whole_huge_pages_and_shrunk_when_far_too_large) {
  std::thread([] {
    auto first = worker_memory(5 * mib);
    EXPECT_EQ(first.size(), 6 * mib);
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(first.data()) % (2 * mib), 0u);
    first[0] = std::byte{42};
    first[first.size() - 1] = std::byte{7};
    auto again = worker_memory(3 * mib);  // fits: the same area, as it was left
    EXPECT_EQ(again.data(), first.data());
    EXPECT_EQ(again.size(), 6 * mib);
    EXPECT_EQ(again[0], std::byte{42});
    EXPECT_EQ(worker_memory_kept(), 6 * mib);
    EXPECT_EQ(worker_memory(40 * mib).size(), 40 * mib);  // grown
    EXPECT_EQ(worker_memory(9 * mib).size(), 40 * mib);   // not four times too large
    EXPECT_EQ(worker_memory(1).size(), 2 * mib);          // far too large: shrunk
    release_worker_memory();
    EXPECT_EQ(worker_memory_kept(), 0u);
  }).join();
}

}  // namespace
}  // namespace crunch
