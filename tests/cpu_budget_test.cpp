#include "workers/cpu_budget.hpp"

#include "fake_cgroup.hpp"

#include <gtest/gtest.h>

namespace crunch {
namespace {

using testing::fake_cgroup;
namespace fs = std::filesystem;

TEST(parse_cpu_max, reads_quota_over_period_rounded_down) {
  EXPECT_EQ(parse_cpu_max("max 100000"), std::nullopt);
  EXPECT_EQ(parse_cpu_max("100000 100000"), 1u);
  EXPECT_EQ(parse_cpu_max("150000 100000"), 1u);
  EXPECT_EQ(parse_cpu_max("200000 100000"), 2u);
  EXPECT_EQ(parse_cpu_max("50000 100000"), 1u);  // half a CPU still gets one worker
  EXPECT_EQ(parse_cpu_max("400000 100000"), 4u);
}

TEST(parse_cpu_max, rejects_junk) {
  EXPECT_EQ(parse_cpu_max(""), std::nullopt);
  EXPECT_EQ(parse_cpu_max("100000"), std::nullopt);
  EXPECT_EQ(parse_cpu_max("abc 100000"), std::nullopt);
  EXPECT_EQ(parse_cpu_max("100000 0"), std::nullopt);
}

TEST_F(fake_cgroup, no_cgroup_files_means_no_quota) {
  write("proc_cgroup", "1:cpu,cpuacct:/docker/abc\n0::/kubepods/pod1\n");
  EXPECT_EQ(cgroup_cpu_quota(root_ / "sys", root_ / "proc_cgroup"), std::nullopt);
}

TEST(parse_cfs_quota, reads_cgroup_v1_quota) {
  EXPECT_EQ(parse_cfs_quota("-1", "100000"), std::nullopt);
  EXPECT_EQ(parse_cfs_quota("150000", "100000"), 1u);
  EXPECT_EQ(parse_cfs_quota("200000", "100000"), 2u);
  EXPECT_EQ(parse_cfs_quota("50000", "100000"), 1u);
  EXPECT_EQ(parse_cfs_quota("junk", "100000"), std::nullopt);
  EXPECT_EQ(parse_cfs_quota("100000", "0"), std::nullopt);
}

TEST_F(fake_cgroup, cgroup_v1_cpu_controller) {
  write("proc_cgroup", "4:memory:/docker/abc\n2:cpu,cpuacct:/kubepods/pod1\n1:name=systemd:/x\n");
  fs::create_directories(root_ / "sys" / "cpu" / "kubepods" / "pod1");
  write("sys/cpu/kubepods/pod1/cpu.cfs_quota_us", "-1\n");
  write("sys/cpu/kubepods/pod1/cpu.cfs_period_us", "100000\n");
  write("sys/cpu/kubepods/cpu.cfs_quota_us", "300000\n");
  write("sys/cpu/kubepods/cpu.cfs_period_us", "100000\n");
  EXPECT_EQ(cgroup_cpu_quota(root_ / "sys", root_ / "proc_cgroup"), 3u);
}

TEST_F(fake_cgroup, cgroup_v1_container_sees_its_own_cgroup_at_the_root) {
  // podman/docker on v1 without a cgroup namespace: the host path is shown, the container's own
  // cgroup is what is mounted at /sys/fs/cgroup/cpu.
  write("proc_cgroup", "3:cpu:/libpod_parent/libpod-0123abcd\n0::/\n");
  fs::create_directories(root_ / "sys" / "cpu");
  write("sys/cpu/cpu.cfs_quota_us", "100000\n");
  write("sys/cpu/cpu.cfs_period_us", "100000\n");
  EXPECT_EQ(cgroup_cpu_quota(root_ / "sys", root_ / "proc_cgroup"), 1u);
}

TEST_F(fake_cgroup, hybrid_takes_the_smaller_of_v1_and_v2) {
  write("proc_cgroup", "1:cpu:/kubepods/pod1\n0::/kubepods/pod1\n");
  write("sys/kubepods/pod1/cpu.max", "400000 100000\n");
  fs::create_directories(root_ / "sys" / "cpu" / "kubepods" / "pod1");
  write("sys/cpu/kubepods/pod1/cpu.cfs_quota_us", "200000\n");
  write("sys/cpu/kubepods/pod1/cpu.cfs_period_us", "100000\n");
  EXPECT_EQ(cgroup_cpu_quota(root_ / "sys", root_ / "proc_cgroup"), 2u);
}

TEST_F(fake_cgroup, unlimited_means_no_quota) {
  write("proc_cgroup", "0::/kubepods/pod1\n");
  write("sys/kubepods/pod1/cpu.max", "max 100000\n");
  EXPECT_EQ(cgroup_cpu_quota(root_ / "sys", root_ / "proc_cgroup"), std::nullopt);
}

TEST_F(fake_cgroup, reads_the_process_cgroup) {
  write("proc_cgroup", "0::/kubepods/pod1\n");
  write("sys/kubepods/pod1/cpu.max", "300000 100000\n");
  EXPECT_EQ(cgroup_cpu_quota(root_ / "sys", root_ / "proc_cgroup"), 3u);
}

TEST_F(fake_cgroup, smallest_quota_up_the_tree_wins) {
  write("proc_cgroup", "0::/kubepods/pod1\n");
  write("sys/kubepods/pod1/cpu.max", "max 100000\n");
  write("sys/kubepods/cpu.max", "200000 100000\n");
  write("sys/cpu.max", "800000 100000\n");
  EXPECT_EQ(cgroup_cpu_quota(root_ / "sys", root_ / "proc_cgroup"), 2u);
}

TEST_F(fake_cgroup, container_namespace_root) {
  // Inside a container the cgroup namespace shows the container's own cgroup as "/".
  write("proc_cgroup", "0::/\n");
  write("sys/cpu.max", "100000 100000\n");
  EXPECT_EQ(cgroup_cpu_quota(root_ / "sys", root_ / "proc_cgroup"), 1u);
}

TEST(parse_cpu_stat, reads_v2_and_v1_bandwidth_lines) {
  const auto v2 = parse_cpu_stat(
      "usage_usec 1200\nuser_usec 1000\nsystem_usec 200\nnr_periods 131\nnr_throttled 119\n"
      "throttled_usec 4500000\nnr_bursts 0\nburst_usec 0\n");
  ASSERT_TRUE(v2);
  EXPECT_EQ(v2->periods, 131u);
  EXPECT_EQ(v2->throttled_periods, 119u);
  EXPECT_EQ(v2->throttled_ns, 4'500'000'000u);
  const auto v1 = parse_cpu_stat("nr_periods 10\nnr_throttled 3\nthrottled_time 2000000\n");
  ASSERT_TRUE(v1);
  EXPECT_EQ(v1->throttled_periods, 3u);
  EXPECT_EQ(v1->throttled_ns, 2'000'000u);
  // A cgroup without the bandwidth controller's lines (no cpu controller enabled there).
  EXPECT_EQ(parse_cpu_stat("usage_usec 1200\nuser_usec 1000\nsystem_usec 200\n"), std::nullopt);
  EXPECT_EQ(parse_cpu_stat(""), std::nullopt);
}

// The account that matters is the one of the cgroup whose quota binds: here the pod's, above the
// container's own unlimited cgroup.
TEST_F(fake_cgroup, the_cpu_stat_read_is_the_binding_quotas) {
  fs::create_directories(root_ / "sys" / "kubepods" / "pod1" / "c1");
  write("proc_cgroup", "0::/kubepods/pod1/c1\n");
  EXPECT_EQ(cgroup_cpu_stat_file(root_ / "sys", root_ / "proc_cgroup"), std::nullopt);  // no quota anywhere
  write("sys/kubepods/pod1/c1/cpu.max", "max 100000\n");
  write("sys/kubepods/pod1/cpu.max", "100000 100000\n");
  write("sys/kubepods/cpu.max", "400000 100000\n");
  write("sys/kubepods/pod1/cpu.stat", "nr_periods 5\nnr_throttled 2\nthrottled_usec 30\n");
  const auto file = cgroup_cpu_stat_file(root_ / "sys", root_ / "proc_cgroup");
  ASSERT_TRUE(file);
  EXPECT_EQ(*file, root_ / "sys" / "kubepods" / "pod1" / "cpu.stat");
  const auto stat = read_cpu_stat(*file);
  ASSERT_TRUE(stat);
  EXPECT_EQ(stat->throttled_periods, 2u);
  EXPECT_EQ(stat->throttled_ns, 30'000u);
}

TEST(usable_cpus, is_at_least_one_and_at_most_the_affinity_mask) {
  EXPECT_GE(usable_cpus(), 1u);
  EXPECT_LE(usable_cpus(), affinity_cpus());
}

}  // namespace
}  // namespace crunch
