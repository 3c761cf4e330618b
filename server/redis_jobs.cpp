#include "server/redis_jobs.hpp"

namespace crunch {

namespace {

// Stores the job's hash and queues its id, in one step: a job is never stored unqueued.
constexpr const char* enqueue_script = R"(
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
return redis.call('XADD', KEYS[2], '*', 'id', ARGV[1])
)";

// A job that has ended (or expired) is not started again.
constexpr const char* start_script = R"(
local s = redis.call('HGET', KEYS[1], 'status')
if s == 'queued' or s == 'running' then
  redis.call('HSET', KEYS[1], 'status', 'running', 'started_at', ARGV[1], 'replica', ARGV[2])
  return 1
end
return 0
)";

// The first end stored wins; the entry is acknowledged and deleted either way.
constexpr const char* finish_script = R"(
local s = redis.call('HGET', KEYS[1], 'status')
local stored = 0
if s == 'queued' or s == 'running' then
  redis.call('HSET', KEYS[1], unpack(ARGV, 4))
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  stored = 1
end
redis.call('XACK', KEYS[2], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[2], ARGV[2])
return stored
)";

// [[entry, [field, value, ...]], ...] → entries with their job ids (a deleted entry is nil).
std::vector<redis_entry> entries_of(const redis_reply& list) {
  std::vector<redis_entry> out;
  if (list.kind != redis_reply::type::array) return out;
  for (const auto& e : list.elements) {
    if (e.kind != redis_reply::type::array || e.elements.size() < 2) continue;
    const auto& fields = e.elements[1].elements;
    for (std::size_t i = 0; i + 1 < fields.size(); i += 2) {
      if (fields[i].text == "id") out.push_back({e.elements[0].text, fields[i + 1].text});
    }
  }
  return out;
}

}  // namespace

redis_jobs::redis_jobs(redis_link& commands, std::string consumer, std::string prefix)
    : link_(commands), consumer_(std::move(consumer)), prefix_(std::move(prefix)), stream_(prefix_ + ":jobs") {}

void redis_jobs::prepare(std::function<void(bool, std::string)> done) {
  link_.send({"XGROUP", "CREATE", stream_, group_, "0", "MKSTREAM"}, [done = std::move(done)](redis_reply r) {
    const bool exists = r.kind == redis_reply::type::error && r.text.starts_with("BUSYGROUP");
    done(r.ok() || exists, r.ok() || exists ? std::string() : r.text);
  });
}

void redis_jobs::enqueue(const std::string& id, const redis_job_fields& fields, std::function<void(bool)> done) {
  std::vector<std::string> words = {"EVAL", enqueue_script, "2", job_key(id), stream_, id};
  for (const auto& [name, value] : fields) {
    words.push_back(name);
    words.push_back(value);
  }
  link_.send(std::move(words), [done = std::move(done)](redis_reply r) { done(r.kind == redis_reply::type::string); });
}

void redis_jobs::take(std::size_t count, std::function<void(std::vector<redis_entry>)> done) {
  link_.send({"XREADGROUP", "GROUP", group_, consumer_, "COUNT", std::to_string(count), "STREAMS", stream_, ">"},
             [done = std::move(done)](redis_reply r) {
               // [[stream, [entries]]], or nil when there is nothing new.
               if (r.kind != redis_reply::type::array || r.elements.empty()) return done({});
               done(entries_of(r.elements[0].elements.size() > 1 ? r.elements[0].elements[1] : redis_reply{}));
             });
}

void redis_jobs::claim_stale(std::chrono::milliseconds min_idle, std::size_t count,
                             std::function<void(std::vector<redis_entry>)> done) {
  link_.send({"XAUTOCLAIM", stream_, group_, consumer_, std::to_string(min_idle.count()), "0-0", "COUNT",
              std::to_string(count)},
             [done = std::move(done)](redis_reply r) {
               // [next cursor, [entries], [deleted ids]]
               if (r.kind != redis_reply::type::array || r.elements.size() < 2) return done({});
               done(entries_of(r.elements[1]));
             });
}

void redis_jobs::heartbeat(const std::vector<std::string>& entries, std::function<void(bool)> done) {
  if (entries.empty()) return done(true);
  std::vector<std::string> words = {"XCLAIM", stream_, group_, consumer_, "0"};
  words.insert(words.end(), entries.begin(), entries.end());
  words.push_back("JUSTID");
  link_.send(std::move(words), [done = std::move(done)](redis_reply r) { done(r.ok()); });
}

void redis_jobs::start(const std::string& id, std::function<void(bool)> done) {
  const auto now = std::chrono::duration_cast<std::chrono::milliseconds>(
                       std::chrono::system_clock::now().time_since_epoch())
                       .count();
  link_.send({"EVAL", start_script, "1", job_key(id), std::to_string(now), consumer_},
             [done = std::move(done)](redis_reply r) { done(r.kind == redis_reply::type::integer && r.integer == 1); });
}

void redis_jobs::finish(const std::string& id, const std::string& entry, const redis_job_fields& fields,
                        std::chrono::milliseconds keep, std::function<void(bool)> done) {
  std::vector<std::string> words = {"EVAL", finish_script, "2", job_key(id), stream_, group_, entry,
                                    std::to_string(std::max<std::int64_t>(1, keep.count()))};
  for (const auto& [name, value] : fields) {
    words.push_back(name);
    words.push_back(value);
  }
  link_.send(std::move(words),
             [done = std::move(done)](redis_reply r) { done(r.kind == redis_reply::type::integer && r.integer == 1); });
}

void redis_jobs::read(const std::string& id, std::function<void(redis_job_fields)> done) {
  link_.send({"HGETALL", job_key(id)}, [done = std::move(done)](redis_reply r) {
    redis_job_fields fields;
    for (std::size_t i = 0; i + 1 < r.elements.size(); i += 2) fields[r.elements[i].text] = r.elements[i + 1].text;
    done(std::move(fields));
  });
}

void redis_jobs::claim_key(const std::string& owner, const std::string& key, const std::string& value,
                           std::chrono::milliseconds keep, std::function<void(std::optional<std::string>)> done) {
  link_.send({"SET", prefix_ + ":key:" + owner + "\n" + key, value, "NX", "GET", "PX",
              std::to_string(std::max<std::int64_t>(1, keep.count()))},
             [done = std::move(done)](redis_reply r) {
               if (r.kind == redis_reply::type::string) return done(std::move(r.text));  // held already
               done(std::nullopt);
             });
}

void redis_jobs::backlog(std::function<void(std::int64_t, std::int64_t)> done) {
  link_.send({"XINFO", "GROUPS", stream_}, [this, done = std::move(done)](redis_reply r) {
    for (const auto& g : r.elements) {
      std::int64_t lag = 0;
      std::int64_t pending = 0;
      bool ours = false;
      for (std::size_t i = 0; i + 1 < g.elements.size(); i += 2) {
        const auto& name = g.elements[i].text;
        if (name == "name") ours = g.elements[i + 1].text == group_;
        if (name == "lag") lag = g.elements[i + 1].integer;
        if (name == "pending") pending = g.elements[i + 1].integer;
      }
      if (ours) return done(lag, pending);
    }
    done(0, 0);
  });
}

}  // namespace crunch
