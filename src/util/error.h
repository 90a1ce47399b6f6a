// The one exception type ringzero throws for conditions a user can act on.
// what() is a single line naming what is wrong; main() prints it and exits.
#pragma once

#include <stdexcept>
#include <string>

namespace rz {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// An error in the user's input (flags, files): exit status 2.
class UsageError : public Error {
 public:
  using Error::Error;
};

// Builds "what: strerror(errnum)".
std::string errno_message(const std::string& what, int errnum);

}  // namespace rz
