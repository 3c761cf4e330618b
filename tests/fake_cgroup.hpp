#pragma once
// A fake cgroup tree in a temporary folder, for the tests of what crunch reads from cgroups: the
// fixture's root holds "proc_cgroup" (what /proc/self/cgroup would say) and "sys" (/sys/fs/cgroup).

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include <unistd.h>

namespace crunch::testing {

namespace fs = std::filesystem;

class fake_cgroup : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() /
            ("crunch-cgroup-" + std::to_string(getpid()) + "-" +
             ::testing::UnitTest::GetInstance()->current_test_info()->test_suite_name() + "-" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    fs::create_directories(root_ / "sys" / "kubepods" / "pod1");
  }
  void TearDown() override { fs::remove_all(root_); }
  void write(const fs::path& relative, const std::string& text) { std::ofstream(root_ / relative) << text; }

  fs::path root_;
};

}  // namespace crunch::testing
