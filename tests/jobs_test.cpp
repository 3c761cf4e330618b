// A kind's calibration deferred to its first job (job_kind::calibrate_on_first_job).
#include <crunch/jobs.hpp>
#include <crunch/kinds.hpp>

#include "work_kind.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <latch>
#include <stdexcept>
#include <thread>

namespace crunch {
namespace {

// A kind with one route whose jobs answer "ok", calibrated by `calibrate`.
job_kind kind_calibrated_by(std::function<double()> calibrate) {
  job_route route;
  route.name = "work";
  route.method = "GET";
  route.path = "/work";
  route.prepare = [](const job_arguments&, job_input&) -> std::variant<prepared_job, invalid_argument> {
    return prepared_job{[](std::stop_token) -> std::optional<job_output> { return job_output{"ok", "text/plain", 200}; },
                        1, 0};
  };
  job_kind kind;
  kind.name = "work";
  kind.calibrate = std::move(calibrate);
  kind.calibrate_on_first_job = true;
  kind.routes.push_back(std::move(route));
  return kind;
}

// Prepares and runs one job of `kind`'s route, as a worker would.
std::optional<job_output> run_one(const job_kind& kind) {
  job_input input;
  auto prepared = kind.routes.at(0).prepare(job_arguments{}, input);
  return std::get<prepared_job>(prepared).run(std::stop_token{});
}

TEST(calibrating_on_first_job, the_first_job_calibrates_once_and_carries_the_rate) {
  std::atomic<int> calls{0};
  const auto kind = calibrating_on_first_job(kind_calibrated_by([&] {
    ++calls;
    return 5.0;
  }));
  EXPECT_FALSE(kind.calibrate);  // nothing left for the server to run at start
  EXPECT_EQ(calls, 0);           // preparing the kind calibrates nothing

  const auto first = run_one(kind);
  ASSERT_TRUE(first);
  EXPECT_EQ(first->body, "ok");
  EXPECT_EQ(first->calibrated_ns_per_unit, 5.0);
  EXPECT_FALSE(first->representative);  // its time includes the calibration

  const auto second = run_one(kind);
  ASSERT_TRUE(second);
  EXPECT_EQ(second->calibrated_ns_per_unit, std::nullopt);
  EXPECT_TRUE(second->representative);
  EXPECT_EQ(calls, 1);
}

TEST(calibrating_on_first_job, first_jobs_that_race_calibrate_once_and_one_carries_the_rate) {
  std::atomic<int> calls{0};
  std::latch calibrating{1};
  std::latch finish{1};
  const auto kind = calibrating_on_first_job(kind_calibrated_by([&] {
    ++calls;
    calibrating.count_down();
    finish.wait();
    return 2.0;
  }));
  std::optional<job_output> a, b;
  std::thread first([&] { a = run_one(kind); });
  calibrating.wait();  // the first job is inside the calibration
  std::thread second([&] { b = run_one(kind); });
  finish.count_down();
  first.join();
  second.join();
  ASSERT_TRUE(a && b);
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(a->calibrated_ns_per_unit, 2.0);
  EXPECT_EQ(b->calibrated_ns_per_unit, std::nullopt);
}

TEST(calibrating_on_first_job, a_calibration_that_throws_leaves_the_job_to_answer_and_is_not_retried) {
  std::atomic<int> calls{0};
  const auto kind = calibrating_on_first_job(kind_calibrated_by([&]() -> double {
    ++calls;
    throw std::runtime_error("cannot load the library");
  }));
  const auto first = run_one(kind);
  ASSERT_TRUE(first);
  EXPECT_EQ(first->body, "ok");
  EXPECT_EQ(first->calibrated_ns_per_unit, std::nullopt);
  EXPECT_FALSE(first->representative);
  const auto second = run_one(kind);
  ASSERT_TRUE(second);
  EXPECT_TRUE(second->representative);  // the kind learns its rate from this one
  EXPECT_EQ(calls, 1);
}

// A kind declares its own flags (config.hpp names none of them), with their environment twins;
// build_jobs fills in their defaults and runs the kind's check.
TEST(build_jobs, reads_a_kinds_own_settings_and_runs_its_check) {
  const auto kinds = std::vector<kind_declaration>{testing::work_kind()};
  std::vector<std::string> names;
  for (const auto& s : settings_of(kinds)) names.push_back("--" + s.name + " " + s.env());
  EXPECT_EQ(names, std::vector<std::string>{"--work-max-ms CRUNCH_WORK_MAX_MS"});

  const auto jobs = build_jobs(kinds, config{});
  const auto& ms = jobs.find("work")->routes.at(0).parameters.at(0);
  EXPECT_EQ(ms.name, "ms");
  EXPECT_EQ(ms.maximum, 3'600'000u);  // --work-max-ms's default
  config shorter;
  shorter.settings["work-max-ms"] = 50;
  EXPECT_EQ(build_jobs(kinds, shorter).find("work")->routes.at(0).parameters.at(0).maximum, 50u);

  config none;
  none.settings["work-max-ms"] = 0;
  try {
    (void)build_jobs(kinds, none);
    ADD_FAILURE() << "a configuration its check refuses was accepted";
  } catch (const config_error& e) {
    EXPECT_STREQ(e.what(), "crunchd: invalid --work-max-ms: 0 leaves no work");
  }
}

}  // namespace
}  // namespace crunch
