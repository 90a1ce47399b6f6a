// ringzero's command-line entry point: parse flags, check the host, build
// the machine, run it, and turn how it ended into an exit status.
#include <signal.h>
#include <sys/signalfd.h>
#include <termios.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "boot/kernel_loader.h"
#include "cli/options.h"
#include "util/error.h"
#include "util/fd.h"
#include "util/log.h"
#include "vmm/host_check.h"
#include "vmm/machine.h"

namespace {

constexpr int kExitUsage = 2;

// Puts a terminal stdin into raw mode and restores it on every exit path
// of the scope (normal return, exception).
class RawTerminal {
 public:
  explicit RawTerminal(int fd) : fd_(fd) {
    if (!::isatty(fd_) || ::tcgetattr(fd_, &saved_) != 0) return;
    termios raw = saved_;
    cfmakeraw(&raw);
    raw.c_oflag |= OPOST | ONLCR;  // keep output post-processing for stderr
    if (::tcsetattr(fd_, TCSANOW, &raw) == 0) active_ = true;
  }
  ~RawTerminal() {
    if (active_) ::tcsetattr(fd_, TCSANOW, &saved_);
  }
  RawTerminal(const RawTerminal&) = delete;
  RawTerminal& operator=(const RawTerminal&) = delete;

 private:
  int fd_;
  termios saved_{};
  bool active_ = false;
};

uint64_t host_ram_bytes() {
  const long pages = sysconf(_SC_PHYS_PAGES);
  const long size = sysconf(_SC_PAGESIZE);
  return pages > 0 && size > 0 ? static_cast<uint64_t>(pages) * static_cast<uint64_t>(size) : 0;
}

int cmd_run(const rz::cli::RunOptions& o) {
  rz::log::Level lvl;
  if (!o.log_level.empty() && rz::log::parse_level(o.log_level, &lvl)) rz::log::set_level(lvl);
  else if (const char* env = std::getenv("RZ_LOG"); env && rz::log::parse_level(env, &lvl)) rz::log::set_level(lvl);

  // Files first: a typo in a path is the most likely mistake.
  rz::boot::check_readable(o.kernel, "kernel");
  if (!o.initrd.empty()) rz::boot::check_readable(o.initrd, "initrd");

  const uint64_t host_ram = host_ram_bytes();
  if (host_ram && o.memory > host_ram)
    throw rz::UsageError("--memory " + std::to_string(o.memory >> 20) + " MiB is more than the host's " +
                         std::to_string(host_ram >> 20) + " MiB of RAM");

  const rz::vmm::HostKvm host = rz::vmm::detect_host_kvm();
  if (const std::string n = rz::vmm::emulator_notice(host); !n.empty()) std::cerr << n << std::endl;

  // SIGINT/SIGTERM are taken synchronously through a signalfd by the event
  // loop, so they stop the VM in order and the terminal is restored.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  sigdelset(&set, SIGPIPE);
  rz::UniqueFd sfd(::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!sfd.valid()) throw rz::Error(rz::errno_message("signalfd", errno));

  rz::vmm::MachineConfig cfg;
  cfg.kernel = o.kernel;
  cfg.initrd = o.initrd;
  cfg.cmdline = o.cmdline;
  cfg.cpus = o.cpus;
  cfg.memory = o.memory;
  cfg.disks = o.disks;
  for (const auto& n : o.nets) cfg.nets.push_back({n.tap, n.mac});
  cfg.rng = o.rng;
  cfg.vsock = o.vsock;
  rz::vmm::Machine machine(cfg, host);

  rz::vmm::ExitStatus st;
  {
    RawTerminal term(STDIN_FILENO);
    st = machine.run(sfd.get());
  }
  std::cerr << "ringzero: " << st.message << std::endl;
  return st.exit_code();
}

}  // namespace

int main(int argc, char** argv) {
  using namespace rz::cli;
  std::vector<std::string> args(argv + 1, argv + argc);
  try {
    const Options o = parse(args);
    switch (o.command) {
      case Command::Help:
        if (o.help_topic == "run") std::cout << run_help_text();
        else if (o.help_topic == "doctor") std::cout << doctor_help_text();
        else std::cout << usage_text();
        return args.empty() ? kExitUsage : 0;
      case Command::Version:
        std::cout << "ringzero 0.1.0\n";
        return 0;
      case Command::Doctor: {
        std::string report;
        const int st = rz::vmm::doctor_report(report);
        std::cout << report;
        return st;
      }
      case Command::Run:
        return cmd_run(o.run);
    }
  } catch (const rz::UsageError& e) {
    std::cerr << "ringzero: error: " << e.what() << std::endl;
    return kExitUsage;
  } catch (const std::exception& e) {
    std::cerr << "ringzero: error: " << e.what() << std::endl;
    return 1;
  }
  return 1;
}
