#include <crunch/arguments.hpp>

#include "server/decimal.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <stdexcept>

namespace crunch {

namespace {

// A JSON value type whose strings and nodes are wiped when freed: the lexer's buffer, where every
// string of the body — the password among them — is decoded, is one of them.
using wiping_string = std::basic_string<char, std::char_traits<char>, wiping_allocator<char>>;
using body_json = nlohmann::basic_json<std::map, std::vector, wiping_string, bool, std::int64_t, std::uint64_t, double,
                                       wiping_allocator>;

// A name the client sent, fit to quote in an error: at most 64 bytes (JSON escaping does the rest).
std::string quote_name(std::string_view name) {
  constexpr std::size_t most = 64;
  std::string quoted(1, '\'');
  quoted.append(name.substr(0, most));
  quoted.append(name.size() > most ? "...'" : "'");
  return quoted;
}

std::optional<invalid_argument> check_string(const parameter& p, std::string_view value) {
  if (value.size() < p.minimum || value.size() > p.maximum) return invalid_argument{bounds_message(p)};
  if (!p.one_of.empty() && std::find(p.one_of.begin(), p.one_of.end(), value) == p.one_of.end()) {
    return invalid_argument{bounds_message(p)};
  }
  return std::nullopt;
}

// Reads a JSON body as the route's body parameters arrive, and stops at the first thing that is
// not one: an unknown or repeated field, a value of the wrong type or out of bounds, a nested
// container. nlohmann's SAX parser is iterative, so nothing here recurses whatever the input.
class body_reader final : public nlohmann::json_sax<body_json> {
 public:
  body_reader(const std::vector<parameter>& declared, job_arguments& out) : declared_(declared), out_(out) {}

  std::optional<invalid_argument> error;

  bool null() override { return wrong_type(); }
  bool boolean(bool) override { return wrong_type(); }
  bool number_integer(number_integer_t) override { return wrong_type(); }  // negative: never in bounds
  bool number_float(number_float_t, const string_t&) override { return wrong_type(); }
  bool binary(binary_t&) override { return wrong_type(); }

  bool number_unsigned(number_unsigned_t value) override {
    if (!field_ || field_->type != parameter_type::integer) return wrong_type();
    if (value < field_->minimum || value > field_->maximum) return fail(bounds_message(*field_));
    out_.set(field_->name, std::uint64_t{value});
    field_ = nullptr;
    return true;
  }

  bool string(string_t& value) override {
    const bool fits = field_ && field_->type == parameter_type::string;
    if (fits) {
      if (auto bad = check_string(*field_, value)) return fail(std::move(bad->message));
      out_.set(field_->name, secret(value));
      field_ = nullptr;
    }
    // Heap copies are wiped by the allocator; a short value sits in the string object itself.
    wipe(value.data(), value.capacity());
    return fits || wrong_type();
  }

  bool start_object(std::size_t) override {
    if (depth_ == 0 && !field_) {
      ++depth_;
      return true;
    }
    return wrong_type();  // nested: no parameter is an object
  }
  bool end_object() override {
    --depth_;
    return true;
  }
  bool start_array(std::size_t) override { return wrong_type(); }
  bool end_array() override { return true; }

  bool key(string_t& name) override {
    const auto it = std::find_if(declared_.begin(), declared_.end(), [&](const parameter& p) {
      return p.in == parameter_source::body && std::string_view(p.name) == std::string_view(name);
    });
    if (it == declared_.end()) return fail("unknown field " + quote_name({name.data(), name.size()}));
    if (out_.has(it->name)) return fail("field " + quote_name(it->name) + " is given twice");
    field_ = &*it;
    return true;
  }

  bool parse_error(std::size_t position, const std::string&, const nlohmann::detail::exception&) override {
    // Not nlohmann's message: it quotes the input around the error.
    return fail("the body is not valid JSON (at byte " + std::to_string(position) + ")");
  }

 private:
  bool wrong_type() {
    if (depth_ == 0 || !field_) return fail("the body must be a JSON object");
    return fail(bounds_message(*field_));
  }
  bool fail(std::string message) {
    if (!error) error = invalid_argument{std::move(message)};
    return false;
  }

  const std::vector<parameter>& declared_;
  job_arguments& out_;
  const parameter* field_ = nullptr;  // the field whose value comes next
  std::size_t depth_ = 0;
};

std::optional<invalid_argument> read_text(const parameter& p, std::string_view text, job_arguments& out) {
  if (p.type == parameter_type::integer) {
    const auto value = parse_decimal(text, p.minimum, p.maximum);
    if (!value) return invalid_argument{bounds_message(p)};
    out.set(p.name, *value);
    return std::nullopt;
  }
  if (auto bad = check_string(p, text)) return bad;
  out.set(p.name, secret(text));
  return std::nullopt;
}

}  // namespace

std::string bounds_message(const parameter& p) {
  if (!p.one_of.empty()) {
    std::string values;
    for (const auto& v : p.one_of) values += (values.empty() ? "" : ", ") + v;
    return p.name + " must be one of " + values;
  }
  const auto range = std::to_string(p.minimum) + ".." + std::to_string(p.maximum);
  if (p.type == parameter_type::integer) return p.name + " must be an integer in " + range;
  return p.name + " must be a string of " + range + " bytes";
}

const std::variant<std::uint64_t, secret>* job_arguments::find(std::string_view name) const {
  for (const auto& [n, value] : values_) {
    if (n == name) return &value;
  }
  return nullptr;
}

void job_arguments::set(std::string_view name, std::variant<std::uint64_t, secret> value) {
  for (auto& [n, v] : values_) {
    if (n == name) {
      v = std::move(value);
      return;
    }
  }
  values_.emplace_back(name, std::move(value));
}

std::uint64_t job_arguments::integer(std::string_view name) const {
  const auto* value = find(name);
  if (!value || !std::holds_alternative<std::uint64_t>(*value)) {
    throw std::out_of_range("no integer argument " + std::string(name));
  }
  return std::get<std::uint64_t>(*value);
}

const secret& job_arguments::string(std::string_view name) const {
  const auto* value = find(name);
  if (!value || !std::holds_alternative<secret>(*value)) {
    throw std::out_of_range("no string argument " + std::string(name));
  }
  return std::get<secret>(*value);
}

std::optional<std::string_view> query_value(std::string_view query, std::string_view name) {
  while (!query.empty()) {
    const auto amp = query.find('&');
    const auto pair = query.substr(0, amp);
    const auto eq = pair.find('=');
    if (pair.substr(0, eq) == name) return eq == std::string_view::npos ? std::string_view{} : pair.substr(eq + 1);
    if (amp == std::string_view::npos) break;
    query.remove_prefix(amp + 1);
  }
  return std::nullopt;
}

std::optional<std::string_view> repeated_query_key(std::string_view query) {
  // A handful of keys: each compared with those before it.
  std::array<std::string_view, 32> seen{};
  std::size_t count = 0;
  while (!query.empty()) {
    const auto amp = query.find('&');
    const auto pair = query.substr(0, amp);
    const auto key = pair.substr(0, pair.find('='));
    if (!key.empty() && std::find(seen.begin(), seen.begin() + static_cast<std::ptrdiff_t>(count), key) !=
        seen.begin() + static_cast<std::ptrdiff_t>(count)) {
      return key;
    }
    if (count < seen.size()) seen[count++] = key;
    if (amp == std::string_view::npos) break;
    query.remove_prefix(amp + 1);
  }
  return std::nullopt;
}

std::optional<std::string> percent_decoded(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '%') {
      out += text[i];
      continue;
    }
    const int high = i + 2 < text.size() ? hex(text[i + 1]) : -1;
    const int low = high >= 0 ? hex(text[i + 2]) : -1;
    if (low < 0) return std::nullopt;
    out += static_cast<char>(high * 16 + low);
    i += 2;
  }
  return out;
}


std::variant<job_arguments, invalid_argument> read_arguments(const std::vector<parameter>& declared,
                                                             std::string_view path_segment, std::string_view query,
                                                             std::optional<std::string_view> json_body) {
  job_arguments args(declared.size());
  if (json_body) {
    body_reader reader(declared, args);
    // The JSON parser itself, as body_json::sax_parse() calls it: that function would also
    // instantiate the binary-format readers, which assume std::string for their strings.
    auto input = nlohmann::detail::input_adapter(json_body->data(), json_body->data() + json_body->size());
    const bool read = nlohmann::detail::parser<body_json, decltype(input)>(std::move(input)).sax_parse(&reader, true);
    // The lexer kept a short string in its own buffer on this stack.
    wipe_stack_below();
    if (!read) return reader.error.value_or(invalid_argument{"the body is not valid JSON"});
  }
  for (const auto& p : declared) {
    std::optional<std::string_view> text;
    if (p.in == parameter_source::path) text = path_segment;
    std::optional<std::string> decoded;
    if (p.in == parameter_source::query) {
      text = query_value(query, p.name);
      if (text && text->find('%') != std::string_view::npos) {
        decoded = percent_decoded(*text);
        if (!decoded) return invalid_argument{p.name + " has a '%' that is not followed by two hex digits"};
        text = *decoded;
      }
    }
    if (text) {
      if (auto bad = read_text(p, *text, args)) return *bad;
    } else if (!args.has(p.name)) {
      if (p.required()) return invalid_argument{p.name + " is missing: " + bounds_message(p).substr(p.name.size() + 1)};
      if (p.default_value) args.set(p.name, *p.default_value);
    }
  }
  return args;
}

}  // namespace crunch
