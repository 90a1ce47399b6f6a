// Runs a child process with stdin from a string, capturing stdout and
// stderr, with a time limit; optionally sends it a signal after a delay.
#pragma once

#include <string>
#include <vector>

namespace rz::test {

struct ProcessResult {
  int exit_code = -1;     // exit status, or 128 + signal if killed by one
  bool timed_out = false;
  std::string out;
  std::string err;
};

struct ProcessOptions {
  std::string stdin_data;
  bool close_stdin = true;     // EOF after stdin_data
  int timeout_ms = 60000;
  int signal_after_ms = -1;    // send `signal` once this long has passed...
  int signal = 0;
  std::string signal_when_out_contains;  // ...and stdout contains this
  bool drop_privileges = false;          // run as nobody (65534)
};

ProcessResult run_process(const std::vector<std::string>& argv, const ProcessOptions& opt = {});

}  // namespace rz::test
