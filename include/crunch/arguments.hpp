#pragma once
/// The parameters a job route declares, and a request's arguments read and checked against them —
/// from the path, the query string and a JSON body alike. The declarations are the one list that
/// validation, /v1/kinds and the documentation follow. Error messages name the parameter and its
/// bounds and never quote a value a client sent: a password is never echoed or logged.

#include <crunch/wiping.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace crunch {

/// Where an argument comes from.
enum class parameter_source { path, query, body };

/// What an argument holds.
enum class parameter_type { integer, string };

/// One parameter of a route.
struct parameter {
  std::string name;                              ///< e.g. "n", "password", "m_cost_kib"
  parameter_source in = parameter_source::body;  ///< path (the route's one {placeholder}), query or JSON body
  parameter_type type = parameter_type::integer; ///< integer, or string (UTF-8)
  std::uint64_t minimum = 0;                     ///< integer: smallest value; string: fewest bytes
  std::uint64_t maximum = 0;                     ///< integer: largest value; string: most bytes
  std::optional<std::uint64_t> default_value;    ///< integers only: when set, the argument may be left out
  std::string description;                       ///< one line, for /v1/kinds
  std::vector<std::string> one_of = {};          ///< strings only: the values allowed, when not any
  bool optional = false;                         ///< may be left out with no default: the kind decides

  /// Whether a request must give it.
  bool required() const noexcept { return !default_value.has_value() && !optional; }
};

/// "n must be an integer in 0..92", "password must be a string of 1..1024 bytes".
std::string bounds_message(const parameter& p);

/// Why a request's arguments were refused: becomes a 400 with code "invalid_argument".
struct invalid_argument {
  std::string message;                 ///< e.g. "n must be an integer in 0..92"
  std::string code = "invalid_argument";  ///< the error's code, for a kind with finer ones ("invalid_image")
};

/// A request's arguments, each checked against its parameter. Names are views of the
/// parameters' own names: the declarations outlive the arguments read against them.
class job_arguments {
 public:
  /// Room for `expected` arguments.
  explicit job_arguments(std::size_t expected = 0) { values_.reserve(expected); }
  /// The integer argument `name` (given, or its default). Throws std::out_of_range if the route
  /// declares no such integer: a bug in the kind, not in the request.
  std::uint64_t integer(std::string_view name) const;
  /// The string argument `name`, in memory that is wiped when it goes. Throws like integer().
  const secret& string(std::string_view name) const;
  /// Whether `name` was given or defaulted.
  bool has(std::string_view name) const { return find(name) != nullptr; }

  /// Sets an argument (used while reading); `name` must outlive this object.
  void set(std::string_view name, std::variant<std::uint64_t, secret> value);

 private:
  const std::variant<std::uint64_t, secret>* find(std::string_view name) const;
  // A handful at most: a vector searched in order beats a map's nodes and keys.
  std::vector<std::pair<std::string_view, std::variant<std::uint64_t, secret>>> values_;
};

/// Most nested containers a JSON body may open. Parameters are scalars, so the object itself is
/// the only one: `[[[[…` or a field holding an array is refused at its first bracket, and a body
/// costs no more to refuse for being deep.
inline constexpr std::size_t max_json_depth = 1;

/// Reads the arguments of one request: `path_segment` for the path parameter, `query` (without the
/// '?') for query parameters, and `json_body` — when the route takes one — for body parameters,
/// which must be a JSON object with no fields but the declared ones, each once.
std::variant<job_arguments, invalid_argument> read_arguments(const std::vector<parameter>& declared,
                                                             std::string_view path_segment, std::string_view query,
                                                             std::optional<std::string_view> json_body);

/// A query value's %XX escapes decoded (a client's URL library writes "icc,copyright" as
/// "icc%2Ccopyright"); nullopt for a '%' not followed by two hex digits.
std::optional<std::string> percent_decoded(std::string_view text);

/// The value of `name` in a query string ("a=1&b=2"), undecoded; nullopt when absent.
std::optional<std::string_view> query_value(std::string_view query, std::string_view name);

/// The first key that `query` (without the '?') gives more than once, as written: no parameter is
/// a list, so `width=1&width=999999` is refused rather than read as either.
std::optional<std::string_view> repeated_query_key(std::string_view query);

}  // namespace crunch
