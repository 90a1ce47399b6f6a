// The command line: parsing is pure (testable) and reports problems as
// rz::UsageError with one line naming the offending flag or value.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace rz::cli {

enum class Command { Help, Version, Run, Doctor };

// --net tap=NAME[,mac=MAC]
struct NetOption {
  std::string tap;
  std::string mac;  // empty: a random locally administered address
};

struct RunOptions {
  std::string kernel;
  std::string initrd;
  std::string cmdline;
  uint32_t cpus = 1;
  uint64_t memory = 512ULL << 20;
  std::string log_level;
  // Devices. The specs are validated here (UsageError) and parsed again by
  // the device factories, which own their formats.
  std::vector<std::string> disks;   // --disk path=FILE[,readonly=on][,engine=sync|io_uring]
  std::vector<NetOption> nets;      // --net tap=NAME[,mac=MAC]
  bool rng = false;                 // --rng
  std::string vsock;                // --vsock cid=N,socket=PATH
};

struct Options {
  Command command = Command::Help;
  std::string help_topic;  // "", "run" or "doctor"
  RunOptions run;
};

Options parse(const std::vector<std::string>& args);  // args exclude argv[0]

// "512", "512M", "512MiB", "2G", "2GiB" (case-insensitive); a bare number is
// MiB. Throws UsageError naming `flag` for malformed or zero sizes.
uint64_t parse_memory_size(const std::string& s, const std::string& flag = "--memory");
uint32_t parse_u32(const std::string& s, const std::string& flag);
NetOption parse_net_option(const std::string& spec);

std::string usage_text();
std::string run_help_text();
std::string doctor_help_text();

}  // namespace rz::cli
