#include <crunch/cpu_budget.hpp>

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

TEST(usable_cpus, is_at_least_one_and_at_most_the_affinity_mask) {
  EXPECT_GE(usable_cpus(), 1u);
  EXPECT_LE(usable_cpus(), affinity_cpus());
}

}  // namespace
}  // namespace crunch
