#include "server/redis_jobs.hpp"

namespace crunch {

namespace {

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Stores the job's hash and queues its id, in one step: a job is never stored unqueued. With an
// idempotency key (KEYS[3]), only if the key is free; the key is taken in the same step, and the
// job's hash names it, so that it expires with the job.
constexpr const char* enqueue_script = R"(
if #KEYS == 3 then
  local held = redis.call('GET', KEYS[3])
  if held then return {0, held} end
  redis.call('SET', KEYS[3], ARGV[2], 'PX', ARGV[3])
  redis.call('HSET', KEYS[1], 'idempotency', KEYS[3])
end
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
local entry = redis.call('XADD', KEYS[2], '*', 'id', ARGV[1])
redis.call('HSET', KEYS[1], 'entry', entry)
return {1, entry}
)";

// DELETE: a queued job ends here and leaves the stream; a running one is flagged.
constexpr const char* cancel_script = R"(
local f = redis.call('HMGET', KEYS[1], 'status', 'owner', 'entry', 'idempotency')
if not f[1] or f[2] ~= ARGV[4] then return 'missing' end
if f[1] == 'queued' then
  redis.call('HSET', KEYS[1], unpack(ARGV, 5))
  redis.call('HDEL', KEYS[1], 'body')
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  if f[4] then redis.call('PEXPIRE', f[4], ARGV[3]) end
  if f[3] then
    redis.call('XACK', KEYS[2], ARGV[1], f[3])
    redis.call('XDEL', KEYS[2], f[3])
  end
  return 'cancelled'
end
if f[1] == 'running' then
  redis.call('HSET', KEYS[1], 'cancel', '1')
  return 'flagged'
end
return 'ended'
)";

// Which of the jobs (KEYS, with their ids in ARGV) are flagged to stop.
constexpr const char* cancel_requests_script = R"(
local out = {}
for i, key in ipairs(KEYS) do
  if redis.call('HGET', key, 'cancel') == '1' then table.insert(out, ARGV[i]) end
end
return out
)";

// The backlog: entries in the stream (each is deleted once its job ends) less those delivered
// and not acknowledged; and the oldest never delivered, after the group's last-delivered-id.
constexpr const char* backlog_script = R"(
local length = redis.call('XLEN', KEYS[1])
local pending = redis.call('XPENDING', KEYS[1], ARGV[1])[1]
local last = '0-0'
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local name, delivered
  for i = 1, #g, 2 do
    if g[i] == 'name' then name = g[i + 1] end
    if g[i] == 'last-delivered-id' then delivered = g[i + 1] end
  end
  if name == ARGV[1] then last = delivered end
end
local first = redis.call('XRANGE', KEYS[1], '(' .. last, '+', 'COUNT', 1)
local oldest = ''
if #first > 0 then oldest = first[1][1] end
return {length, pending, oldest}
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
  local key = redis.call('HGET', KEYS[1], 'idempotency')
  if key then redis.call('PEXPIRE', key, ARGV[3]) end
  redis.call('HDEL', KEYS[1], 'body')
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

void redis_jobs::enqueue(const std::string& id, const redis_job_fields& fields,
                         const std::optional<redis_key_claim>& key, std::function<void(redis_enqueued)> done) {
  std::vector<std::string> words = {"EVAL", enqueue_script};
  if (key) {
    words.insert(words.end(), {"3", job_key(id), stream_, idempotency_key(key->owner, key->key), id, key->value,
                               std::to_string(std::max<std::int64_t>(1, key->keep.count()))});
  } else {
    words.insert(words.end(), {"2", job_key(id), stream_, id, "", ""});
  }
  for (const auto& [name, value] : fields) {
    words.push_back(name);
    words.push_back(value);
  }
  link_.send(std::move(words), [done = std::move(done)](redis_reply r) {
    // [1, entry] queued, or [0, the value the key holds]
    if (r.kind != redis_reply::type::array || r.elements.size() != 2) return done({});
    if (r.elements[0].integer == 1) return done({.ok = true, .held = std::nullopt});
    done({.ok = true, .held = std::move(r.elements[1].text)});
  });
}

void redis_jobs::enqueue(const std::string& id, const redis_job_fields& fields, std::function<void(bool)> done) {
  enqueue(id, fields, std::nullopt, [done = std::move(done)](redis_enqueued e) { done(e.ok && !e.held); });
}

void redis_jobs::shared_secret(const std::string& mine, std::function<void(std::optional<std::string>)> done) {
  link_.send({"SET", prefix_ + ":fingerprint-key", mine, "NX", "GET"}, [mine, done = std::move(done)](redis_reply r) {
    if (r.kind == redis_reply::type::nil) return done(mine);  // ours was set
    if (r.kind == redis_reply::type::string) return done(std::move(r.text));
    done(std::nullopt);
  });
}

void redis_jobs::cancel(const std::string& owner, const std::string& id, const redis_job_fields& end,
                        std::chrono::milliseconds keep, std::function<void(redis_cancel)> done) {
  std::vector<std::string> words = {"EVAL", cancel_script, "2", job_key(id), stream_, group_,
                                    std::to_string(now_ms()), std::to_string(std::max<std::int64_t>(1, keep.count())),
                                    owner};
  for (const auto& [name, value] : end) {
    words.push_back(name);
    words.push_back(value);
  }
  link_.send(std::move(words), [done = std::move(done)](redis_reply r) {
    if (r.kind != redis_reply::type::string && r.kind != redis_reply::type::status) return done(redis_cancel::failed);
    done(r.text == "cancelled" ? redis_cancel::cancelled
         : r.text == "flagged" ? redis_cancel::flagged
         : r.text == "ended"   ? redis_cancel::ended
                               : redis_cancel::missing);
  });
}

void redis_jobs::cancel_requests(const std::vector<std::string>& ids, std::function<void(std::vector<std::string>)> done) {
  if (ids.empty()) return done({});
  std::vector<std::string> words = {"EVAL", cancel_requests_script, std::to_string(ids.size())};
  for (const auto& id : ids) words.push_back(job_key(id));
  words.insert(words.end(), ids.begin(), ids.end());
  link_.send(std::move(words), [done = std::move(done)](redis_reply r) {
    std::vector<std::string> flagged;
    for (auto& e : r.elements) flagged.push_back(std::move(e.text));
    done(std::move(flagged));
  });
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
  link_.send({"EVAL", start_script, "1", job_key(id), std::to_string(now_ms()), consumer_},
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

void redis_jobs::read(const std::string& id, const std::vector<std::string>& names,
                      std::function<void(redis_job_fields)> done) {
  std::vector<std::string> words = {"HMGET", job_key(id)};
  words.insert(words.end(), names.begin(), names.end());
  link_.send(std::move(words), [names, done = std::move(done)](redis_reply r) {
    redis_job_fields fields;
    for (std::size_t i = 0; i < r.elements.size() && i < names.size(); ++i) {
      if (r.elements[i].kind == redis_reply::type::string) fields[names[i]] = std::move(r.elements[i].text);
    }
    done(std::move(fields));
  });
}

void redis_jobs::backlog(std::function<void(std::optional<redis_backlog>)> done) {
  link_.send({"EVAL", backlog_script, "1", stream_, group_}, [done = std::move(done)](redis_reply r) {
    // [length, pending, oldest waiting entry's id or ""]
    if (r.kind != redis_reply::type::array || r.elements.size() != 3) return done(std::nullopt);
    redis_backlog b;
    b.pending = r.elements[1].integer;
    b.waiting = std::max<std::int64_t>(0, r.elements[0].integer - b.pending);
    const auto& oldest = r.elements[2].text;
    if (const auto dash = oldest.find('-'); dash != std::string::npos && dash > 0) {
      b.oldest_ms = std::stoll(oldest.substr(0, dash));  // a stream id is <ms>-<sequence>
    }
    done(b);
  });
}

}  // namespace crunch
