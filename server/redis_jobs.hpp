#pragma once
/// The job store's Redis side (issue 32, --jobs-store redis://...): what replicas share.
///
///   crunch:job:{id}   a hash: the job's request (so that any replica can prepare it again), its
///                     status and times, and once it has ended its answer; it expires --jobs-keep
///                     after the end
///   crunch:jobs       a stream of job ids, read by the consumer group "replicas": each replica
///                     takes only as many entries as it has free workers (XREADGROUP COUNT),
///                     keeps the ones it runs claimed (XCLAIM JUSTID, a heartbeat), and takes over
///                     entries idle past claim-after, whose replica died (XAUTOCLAIM)
///   crunch:key:{owner}\n{key}   an idempotency record: fingerprint and job id, taken in the same
///                     step as the job is queued; it expires with the job
///   crunch:fingerprint-key   the key of the fingerprints of idempotent requests, which replicas
///                     share (the first replica makes it)
///
/// A job is cancelled (DELETE) in Redis: a queued one ends there and leaves the stream; a running
/// one is flagged, and the replica running it sees the flag at its next poll and stops it.
///
/// Delivery is at least once; the first answer stored wins (a script checks the status), so a
/// job run twice is answered once. Every call here is one round trip on a redis_link: replies
/// come back on the I/O thread.

#include "server/redis_link.hpp"

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace crunch {

/// A job as the shared store holds it: fields by name (request fields, status, answer).
using redis_job_fields = std::map<std::string, std::string>;

/// An idempotency key taken with a job: its name in Redis's terms, the value it holds
/// (fingerprint and job id), and how long it is kept if the job never ends.
struct redis_key_claim {
  std::string owner;
  std::string key;
  std::string value;
  std::chrono::milliseconds keep{};
};

/// What queueing a job did: `ok` false when Redis did not take it; `held`, when the idempotency
/// key was taken already (nothing was queued): the value it holds.
struct redis_enqueued {
  bool ok = false;
  std::optional<std::string> held;
};

/// What DELETE found: no such job of this owner, a queued job now cancelled, a running job now
/// flagged (its replica stops it), or a job that had ended already.
enum class redis_cancel { missing, cancelled, flagged, ended, failed };

/// The stream's backlog: entries never delivered, entries delivered and not yet acknowledged
/// (running, or held by a dead replica), and the oldest waiting entry's time (ms since the epoch,
/// by Redis's clock), if any waits.
struct redis_backlog {
  std::int64_t waiting = 0;
  std::int64_t pending = 0;
  std::optional<std::int64_t> oldest_ms;
};

/// An entry a replica took from the stream: its stream id and the job's id.
struct redis_entry {
  std::string entry;  ///< the stream entry's id, e.g. "1796655755-0"
  std::string job;    ///< the job's id
};

class redis_jobs {
 public:
  /// `consumer`: this replica's name in the group (unique per process: host and pid).
  redis_jobs(redis_link& commands, std::string consumer, std::string prefix = "crunch");

  /// Creates the stream and the group if they are not there yet.
  void prepare(std::function<void(bool ok, std::string error)> done);

  /// Stores job `id` with `fields` (status queued) and queues it, atomically; with `key`, only if
  /// that idempotency key is free, and takes it in the same step.
  void enqueue(const std::string& id, const redis_job_fields& fields, const std::optional<redis_key_claim>& key,
               std::function<void(redis_enqueued)> done);
  void enqueue(const std::string& id, const redis_job_fields& fields, std::function<void(bool ok)> done);

  /// The fingerprint key replicas share: `mine` if none was there, else the one that was.
  void shared_secret(const std::string& mine, std::function<void(std::optional<std::string>)> done);

  /// DELETE of `owner`'s job `id`: a queued job ends with `end` (its status and answer) and leaves
  /// the stream; a running job is flagged for its replica to stop.
  void cancel(const std::string& owner, const std::string& id, const redis_job_fields& end,
              std::chrono::milliseconds keep, std::function<void(redis_cancel)> done);

  /// Which of `ids`, running here, are flagged to stop.
  void cancel_requests(const std::vector<std::string>& ids, std::function<void(std::vector<std::string>)> done);

  /// Takes up to `count` new entries for this replica, without waiting.
  void take(std::size_t count, std::function<void(std::vector<redis_entry>)> done);

  /// Takes over up to `count` entries idle for `min_idle` (their replica died), for this replica.
  void claim_stale(std::chrono::milliseconds min_idle, std::size_t count,
                   std::function<void(std::vector<redis_entry>)> done);

  /// Keeps `entries` this replica runs from looking idle (so that none is taken over).
  void heartbeat(const std::vector<std::string>& entries, std::function<void(bool ok)> done);

  /// Marks job `id` running on this replica, unless it has ended already (then `done(false)`).
  void start(const std::string& id, std::function<void(bool running)> done);

  /// Stores job `id`'s end — `fields` with its status and answer — unless another run stored one
  /// first, acknowledges `entry`, and lets the job expire `keep` later. `done(true)` when this
  /// end was the one stored.
  void finish(const std::string& id, const std::string& entry, const redis_job_fields& fields,
              std::chrono::milliseconds keep, std::function<void(bool stored)> done);

  /// Job `id`'s fields; empty when there is no such job (or it has expired).
  void read(const std::string& id, std::function<void(redis_job_fields)> done);
  /// Only the fields `names` (those it has): a status does not fetch a request's body.
  void read(const std::string& id, const std::vector<std::string>& names, std::function<void(redis_job_fields)> done);

  /// The stream's backlog, for the group; nullopt when Redis did not answer.
  void backlog(std::function<void(std::optional<redis_backlog>)> done);

 private:
  std::string job_key(const std::string& id) const { return prefix_ + ":job:" + id; }
  std::string idempotency_key(const std::string& owner, const std::string& key) const {
    return prefix_ + ":key:" + owner + "\n" + key;
  }

  redis_link& link_;
  std::string consumer_;
  std::string prefix_;
  std::string stream_;
  std::string group_ = "replicas";
};

}  // namespace crunch
