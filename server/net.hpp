#pragma once
/// Namespace aliases shared by crunch's Asio code (never `using namespace` in headers).

namespace boost::asio {}
namespace boost::system {}

namespace crunch {
namespace net = boost::asio;
namespace sys = boost::system;
}  // namespace crunch
