#include "util/log.h"

#include <unistd.h>

#include <atomic>

namespace rz::log {

namespace {
std::atomic<Level> g_level{Level::Warn};  // set once at start-up

void emit(const char* tag, const std::string& msg) {
  std::string line = std::string("ringzero: ") + tag + msg + "\n";
  // One write(2) per line so lines from several threads do not interleave.
  ssize_t r = ::write(STDERR_FILENO, line.data(), line.size());
  (void)r;
}
}  // namespace

void set_level(Level l) { g_level.store(l); }
Level level() { return g_level.load(); }
bool enabled(Level l) { return static_cast<int>(l) <= static_cast<int>(g_level.load()); }

bool parse_level(const std::string& s, Level* out) {
  if (s == "error") *out = Level::Error;
  else if (s == "warn") *out = Level::Warn;
  else if (s == "info") *out = Level::Info;
  else if (s == "debug") *out = Level::Debug;
  else return false;
  return true;
}

void error(const std::string& m) { if (enabled(Level::Error)) emit("error: ", m); }
void warn(const std::string& m) { if (enabled(Level::Warn)) emit("warning: ", m); }
void info(const std::string& m) { if (enabled(Level::Info)) emit("", m); }
void debug(const std::string& m) { if (enabled(Level::Debug)) emit("debug: ", m); }

}  // namespace rz::log
