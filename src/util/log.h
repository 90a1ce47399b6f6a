// Minimal leveled logging to stderr. The level is process-wide and set once
// at start-up (from --log-level or RZ_LOG) before any thread starts.
#pragma once

#include <string>

namespace rz::log {

enum class Level { Error = 0, Warn = 1, Info = 2, Debug = 3 };

void set_level(Level l);
Level level();
bool enabled(Level l);
// Parses "error", "warn", "info", "debug"; returns false if unknown.
bool parse_level(const std::string& s, Level* out);

void error(const std::string& msg);
void warn(const std::string& msg);
void info(const std::string& msg);
void debug(const std::string& msg);

}  // namespace rz::log
