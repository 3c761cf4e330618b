#include <crunch/kinds.hpp>

#include <stdexcept>

namespace crunch {

kind_declaration builtin_kind(std::string_view name) {
  for (auto& kind : builtin_kinds()) {
    if (kind.name == name) return kind;
  }
  throw std::out_of_range("no built-in kind " + std::string(name));
}

std::vector<kind_setting> settings_of(const std::vector<kind_declaration>& kinds) {
  std::vector<kind_setting> all;
  for (const auto& kind : kinds) all.insert(all.end(), kind.settings.begin(), kind.settings.end());
  return all;
}

config with_kind_defaults(config cfg, const std::vector<kind_declaration>& kinds) {
  for (const auto& setting : settings_of(kinds)) {
    if (setting.text) {
      cfg.texts.try_emplace(setting.name);
    } else {
      cfg.settings.try_emplace(setting.name, setting.default_value);
    }
  }
  return cfg;
}

job_registry build_jobs(const std::vector<kind_declaration>& kinds, const config& cfg) {
  const auto complete = with_kind_defaults(cfg, kinds);
  job_registry jobs;
  for (const auto& kind : kinds) {
    if (kind.check) {
      if (auto why = kind.check(complete)) throw config_error("crunchd: " + *why);
    }
    auto built = kind.build(complete);
    built.isolated = kind.isolation.has_value();
    jobs.add(std::move(built));
  }
  return jobs;
}

job_registry default_jobs(const config& cfg) { return build_jobs(builtin_kinds(), cfg); }

}  // namespace crunch
