// A virtual machine assembled from a configuration: guest memory, the
// in-kernel interrupt controllers, the legacy devices, one thread per vCPU,
// and an event loop on the calling thread for console input and signals.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "devices/bus.h"
#include "kvm/kvm.h"
#include "memory/guest_memory.h"
#include "util/event_loop.h"
#include "vmm/console_output.h"
#include "vmm/gsi_routing.h"
#include "vmm/host_check.h"

namespace rz::devices {
class Uart16550;
}

namespace rz::vmm {
class PciPlatform;
}

namespace rz::vmm {

struct MachineConfig {
  std::string kernel;
  std::string initrd;
  std::string cmdline;
  uint32_t cpus = 1;
  uint64_t memory = 512ULL << 20;
  int console_in_fd = 0;    // -1: no console input
  int console_out_fd = 1;
  // Devices on PCI (specs as the command line gives them; see cli/options.h).
  std::vector<std::string> disks;
  struct Net {
    std::string tap;
    std::string mac;  // empty: random
  };
  std::vector<Net> nets;
  bool rng = false;
  std::string vsock;
};

// How a run ended. Exit codes are ringzero's contract with its caller.
enum class ExitKind { PowerOff, Reset, Panic, Fault, Interrupted, Terminated };

struct ExitStatus {
  ExitKind kind = ExitKind::PowerOff;
  std::string message;  // one line (Fault: a multi-line report)
  int exit_code() const;
};

class Machine {
 public:
  // Builds the whole machine; throws UsageError for bad configuration
  // (status 2) and Error for host failures.
  Machine(const MachineConfig& cfg, const HostKvm& host);
  ~Machine();
  Machine(const Machine&) = delete;
  Machine& operator=(const Machine&) = delete;

  // Starts the vCPUs and runs until the guest powers off, resets, panics,
  // faults, or a signal (SIGINT/SIGTERM, which must be blocked in the calling
  // thread) arrives.
  ExitStatus run(int signal_fd);

  // Requests the end of the run (first request wins). Thread-safe.
  void request_exit(ExitStatus status);

 private:
  struct VcpuThread;
  void setup_devices();
  void setup_pci_devices();
  void load_guest();
  void vcpu_loop(VcpuThread& t);
  bool handle_exit(VcpuThread& t);  // false: stop this vCPU
  std::string fault_report(VcpuThread& t, const std::string& what);
  void kick_vcpus();
  void note_unclaimed(bool pio, uint64_t addr, size_t len, bool is_write);

  MachineConfig cfg_;
  HostKvm host_;
  kvm::System sys_;
  kvm::Vm vm_;
  memory::GuestMemory mem_;
  GsiRouting gsi_routing_;
  devices::Bus pio_;
  devices::Bus mmio_;
  ConsoleOutput console_out_;
  std::shared_ptr<devices::Uart16550> uart_;
  EventLoop loop_;                       // must outlive pci_
  std::unique_ptr<PciPlatform> pci_;
  std::vector<std::unique_ptr<VcpuThread>> vcpus_;

  std::mutex exit_mu_;
  bool exit_requested_ = false;
  ExitStatus exit_status_;
  std::atomic<bool> stopping_{false};
  UniqueFd exit_event_;    // eventfd: wakes run() when an exit is requested
  UniqueFd input_event_;   // eventfd: the UART has room for more input

  std::mutex unclaimed_mu_;
  std::vector<uint64_t> unclaimed_seen_;
};

}  // namespace rz::vmm
