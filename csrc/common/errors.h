// Exceptions that the bindings translate into Python's ValueError and TypeError.
#pragma once

#include <stdexcept>
#include <string>

namespace ck {

struct ValueError : std::invalid_argument {  // nanobind maps std::invalid_argument to ValueError
  using std::invalid_argument::invalid_argument;
};

struct TypeError : std::runtime_error {  // translated explicitly in csrc/bindings/module.cpp
  using std::runtime_error::runtime_error;
};

inline void check(bool ok, const std::string& message) {
  if (!ok) throw ValueError(message);
}

}  // namespace ck
