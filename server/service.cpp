// A service's main(): crunchd's, and that of a service built on crunch (include/crunch/service.hpp).
#include <crunch/service.hpp>

#include <crunch/config.hpp>
#include <crunch/kinds.hpp>
#include "server/openapi.hpp"
#include "server/probe.hpp"
#include <crunch/server.hpp>

#include <boost/system/system_error.hpp>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include <fcntl.h>
#include <unistd.h>

#include "workers/fatal_signals.hpp"

namespace crunch {

int run_service(int argc, char** argv, const std::vector<kind_declaration>& kinds) {
  // Started by crunchd as a helper process: nothing of the service is read, parsed or opened.
  if (is_helper_invocation(argc, argv)) run_helper(argc, argv, kinds);
  // A peer or a log reader that is gone is an error to handle (EPIPE), never the end of the
  // process: sockets already send with MSG_NOSIGNAL; this covers stdout and stderr too.
  std::signal(SIGPIPE, SIG_IGN);
  // Started with stdin, stdout or stderr closed, the first socket or file crunchd opens would take
  // that number, and a log line or an error meant for the terminal would go into it.
  for (int fd = 0; fd <= 2; ++fd) {
    if (fcntl(fd, F_GETFD) == -1 && errno == EBADF) (void)open("/dev/null", O_RDWR);
  }
  const std::vector<std::string> args(argv + 1, argv + argc);
  auto parsed = parse_config(args, process_env(), settings_of(kinds));
  if (auto* done = std::get_if<config_exit>(&parsed)) {
    std::fprintf(done->exit_code == 0 ? stdout : stderr, "%s\n", done->message.c_str());
    return done->exit_code;
  }
  const auto& cfg = std::get<config>(parsed);
  // A fatal signal leaves one line in the log: the signal, the thread, the stack and the requests
  // in flight (workers/fatal_signals.hpp).
  install_fatal_signal_report(STDOUT_FILENO, cfg.log_format_ == log_format::json ? fatal_report_style::json
                                                                                 : fatal_report_style::text);
  if (cfg.probe) {
    const auto result = probe(cfg);
    std::fprintf(result.ok ? stdout : stderr, "crunchd: probe /readyz: %s\n", result.summary.c_str());
    return result.ok ? 0 : 1;
  }
  try {
    for (const auto& kind : kinds) {
      for (const auto& command : kind.commands) {
        if (const auto given = cfg.texts.find(command.setting); given != cfg.texts.end() && !given->second.empty()) {
          return command.run(with_kind_defaults(resolve_defaults(cfg), kinds));
        }
      }
    }
    if (cfg.print_openapi) {
      std::fputs(openapi_document(build_jobs(kinds, cfg)).c_str(), stdout);
      return 0;
    }
    server running(cfg, kinds);
    running.stop_on_signals();
    running.run();
  } catch (const config_error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 2;
  } catch (const boost::system::system_error& e) {
    std::fprintf(stderr, "crunchd: cannot listen on %s:%u: %s\n", cfg.address.c_str(), cfg.port,
                 e.code().message().c_str());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "crunchd: %s\n", e.what());
    return 1;
  }
  return 0;
}

}  // namespace crunch
