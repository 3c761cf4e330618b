#include "workers/memory_budget.hpp"

#include "fake_cgroup.hpp"

#include <gtest/gtest.h>

namespace crunch {
namespace {

using testing::fake_cgroup;
namespace fs = std::filesystem;

constexpr std::uint64_t mib = 1024 * 1024;

TEST(parse_memory_max, reads_bytes_or_no_limit) {
  EXPECT_EQ(parse_memory_max("max"), std::nullopt);
  EXPECT_EQ(parse_memory_max("67108864"), 64 * mib);
  EXPECT_EQ(parse_memory_max(""), std::nullopt);
  EXPECT_EQ(parse_memory_max("64M"), std::nullopt);
}

TEST(parse_memory_limit_in_bytes, the_kernels_huge_number_is_no_limit) {
  EXPECT_EQ(parse_memory_limit_in_bytes("9223372036854771712"), std::nullopt);
  EXPECT_EQ(parse_memory_limit_in_bytes("67108864"), 64 * mib);
  EXPECT_EQ(parse_memory_limit_in_bytes("-1"), std::nullopt);
}

TEST(memory_budget_for, keeps_a_reserve_for_the_rest_of_the_process) {
  EXPECT_EQ(memory_budget_for(64 * mib), 48 * mib);       // the compose file's and manifests' limit
  EXPECT_EQ(memory_budget_for(1024 * mib), 768 * mib);    // a quarter of a larger one
  EXPECT_EQ(memory_budget_for(24 * mib), 12 * mib);       // never more than half
  EXPECT_EQ(memory_budget_for(0), 0u);
}

TEST_F(fake_cgroup, memory_v2_limit_up_the_tree) {
  write("proc_cgroup", "0::/kubepods/pod1\n");
  write("sys/kubepods/pod1/memory.max", "max\n");
  write("sys/kubepods/memory.max", "134217728\n");
  EXPECT_EQ(cgroup_memory_limit(root_ / "sys", root_ / "proc_cgroup"), 128 * mib);
}

TEST_F(fake_cgroup, memory_v1_container_sees_its_own_cgroup_at_the_root) {
  // podman on v1: /proc/self/cgroup shows the host's path; the container's cgroup is the mount root.
  write("proc_cgroup", "4:memory:/libpod_parent/libpod-0123abcd\n1:cpu:/x\n0::/\n");
  fs::create_directories(root_ / "sys" / "memory");
  write("sys/memory/memory.limit_in_bytes", "67108864\n");
  EXPECT_EQ(cgroup_memory_limit(root_ / "sys", root_ / "proc_cgroup"), 64 * mib);
}

TEST_F(fake_cgroup, memory_unlimited_everywhere) {
  write("proc_cgroup", "4:memory:/a\n0::/kubepods/pod1\n");
  write("sys/kubepods/pod1/memory.max", "max\n");
  fs::create_directories(root_ / "sys" / "memory" / "a");
  write("sys/memory/a/memory.limit_in_bytes", "9223372036854771712\n");
  EXPECT_EQ(cgroup_memory_limit(root_ / "sys", root_ / "proc_cgroup"), std::nullopt);
}

TEST_F(fake_cgroup, memory_hybrid_takes_the_smaller) {
  write("proc_cgroup", "4:memory:/a\n0::/kubepods/pod1\n");
  write("sys/kubepods/pod1/memory.max", "268435456\n");
  fs::create_directories(root_ / "sys" / "memory" / "a");
  write("sys/memory/a/memory.limit_in_bytes", "100663296\n");
  EXPECT_EQ(cgroup_memory_limit(root_ / "sys", root_ / "proc_cgroup"), 96 * mib);
}

TEST(default_memory_budget, is_below_physical_memory) {
  EXPECT_GT(physical_memory(), 0u);
  EXPECT_GT(default_memory_budget(), 0u);
  EXPECT_LT(default_memory_budget(), physical_memory());
}

}  // namespace
}  // namespace crunch
