#pragma once
/// Naive recursive Fibonacci: the CPU-bound job crunch exists to offload.

#include <cstdint>
#include <optional>
#include <stop_token>

namespace crunch {

/// Largest n whose Fibonacci number fits in 64 bits (F(92) = 7540113804746346429).
inline constexpr unsigned fib_max_n = 92;

/// F(n) by plain exponential recursion — no memoisation, no closed form: the CPU work is the point.
/// Polls `stop` cheaply (once per subtree of some thousand calls) and returns nullopt when asked to stop.
/// Precondition: n <= fib_max_n.
std::optional<std::uint64_t> fib(unsigned n, std::stop_token stop = {});

/// How many calls fib(n) makes: 2·F(n+1) − 1, saturating at UINT64_MAX. The cost model for admission.
std::uint64_t fib_calls(unsigned n);

}  // namespace crunch
