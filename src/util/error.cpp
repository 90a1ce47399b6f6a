#include "util/error.h"

#include <cstring>

namespace rz {

std::string errno_message(const std::string& what, int errnum) {
  return what + ": " + std::strerror(errnum);
}

}  // namespace rz
