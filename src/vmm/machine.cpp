#include "vmm/machine.h"

#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "boot/boot_config.h"
#include "boot/e820.h"
#include "boot/kernel_loader.h"
#include "devices/acpi_pm.h"
#include "devices/cmos.h"
#include "devices/i8042.h"
#include "devices/pvpanic.h"
#include "devices/uart16550.h"
#include "util/log.h"
#include "virtio/blk.h"
#include "virtio/net.h"
#include "virtio/rng.h"
#include "virtio/tap.h"
#include "virtio/vsock.h"
#include "vmm/pci_platform.h"
#include "x86/acpi.h"
#include "x86/cpu_setup.h"
#include "x86/cpuid.h"
#include "x86/layout.h"

namespace rz::vmm {

namespace {

// vCPU threads are kicked out of KVM_RUN with this signal; its handler does
// nothing, the point is the EINTR.
constexpr int kKickSignal = SIGUSR1;

void kick_handler(int) {}

void install_kick_handler() {
  struct sigaction sa {};
  sa.sa_handler = kick_handler;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: KVM_RUN must return EINTR
  sigaction(kKickSignal, &sa, nullptr);
}

class KvmIrqLine : public devices::IrqLine {
 public:
  KvmIrqLine(kvm::Vm& vm, uint32_t gsi) : vm_(vm), gsi_(gsi) {}
  void set_level(bool high) override { vm_.irq_line(gsi_, high); }

 private:
  kvm::Vm& vm_;
  uint32_t gsi_;
};

std::string hex(uint64_t v, int width = 16) {
  char s[32];
  std::snprintf(s, sizeof s, "%0*llx", width, static_cast<unsigned long long>(v));
  return s;
}

const char* exit_reason_name(uint32_t r) {
  switch (r) {
    case KVM_EXIT_UNKNOWN: return "KVM_EXIT_UNKNOWN";
    case KVM_EXIT_EXCEPTION: return "KVM_EXIT_EXCEPTION";
    case KVM_EXIT_IO: return "KVM_EXIT_IO";
    case KVM_EXIT_HLT: return "KVM_EXIT_HLT";
    case KVM_EXIT_MMIO: return "KVM_EXIT_MMIO";
    case KVM_EXIT_SHUTDOWN: return "KVM_EXIT_SHUTDOWN (triple fault)";
    case KVM_EXIT_FAIL_ENTRY: return "KVM_EXIT_FAIL_ENTRY";
    case KVM_EXIT_INTERNAL_ERROR: return "KVM_EXIT_INTERNAL_ERROR";
    case KVM_EXIT_SYSTEM_EVENT: return "KVM_EXIT_SYSTEM_EVENT";
    default: return "unexpected exit";
  }
}

}  // namespace

int ExitStatus::exit_code() const {
  switch (kind) {
    case ExitKind::PowerOff:
    case ExitKind::Reset: return 0;
    case ExitKind::Panic: return 3;
    case ExitKind::Fault: return 1;
    case ExitKind::Interrupted: return 130;
    case ExitKind::Terminated: return 143;
  }
  return 1;
}

struct Machine::VcpuThread {
  explicit VcpuThread(kvm::Vcpu v) : vcpu(std::move(v)) {}
  kvm::Vcpu vcpu;
  std::thread thread;
};

Machine::Machine(const MachineConfig& cfg, const HostKvm& host)
    : cfg_(cfg),
      host_(host),
      sys_(),
      vm_(sys_.create_vm()),
      gsi_routing_(vm_),
      console_out_(cfg.console_out_fd) {
  sys_.require_capabilities();
  const int max = sys_.max_vcpus();
  if (cfg_.cpus == 0 || cfg_.cpus > static_cast<uint32_t>(max) || cfg_.cpus > 254)
    throw UsageError("--cpus " + std::to_string(cfg_.cpus) + " is out of range (1.." +
                     std::to_string(std::min(max, 254)) + ")");

  exit_event_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  input_event_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!exit_event_.valid() || !input_event_.valid()) throw Error(errno_message("eventfd", errno));

  // KVM needs three pages for the TSS and one for the identity map on
  // Intel; put them just below the IOAPIC, inside the MMIO hole.
  vm_.set_identity_map_addr(0xfeffc000);
  vm_.set_tss_addr(0xfeffd000);
  // Memory slots before the in-kernel devices: a slot change waits for an
  // SRCU grace period, which is quick on a fresh VM but takes milliseconds
  // right after KVM_CREATE_IRQCHIP/PIT2 (measured: 7-8 ms per start, see
  // bench/README.md).
  mem_ = memory::GuestMemory::create_x86(cfg_.memory);
  uint32_t slot = 0;
  for (const auto& r : mem_.regions()) vm_.set_user_memory_region(slot++, r.gpa, r.size, r.host);

  vm_.create_irqchip();
  gsi_routing_.commit();  // the PIT's IRQ 0 on IOAPIC pin 2, as the MADT says
  vm_.create_pit2();

  setup_devices();
  setup_pci_devices();
  load_guest();
}

Machine::~Machine() {
  stopping_.store(true);
  console_out_.close();
  kick_vcpus();
  for (auto& t : vcpus_)
    if (t->thread.joinable()) t->thread.join();
  if (pci_) {
    loop_.start();      // devices stop on the loop thread
    pci_->reset_all();
    loop_.stop();
    pci_.reset();
  }
}

void Machine::setup_pci_devices() {
  using namespace rz::x86;
  // The 64-bit BAR window starts at the first 1 GiB boundary above RAM.
  const uint64_t low = std::min(cfg_.memory, kMmioHoleStart);
  const uint64_t ram_top = kRamAbove4gStart + (cfg_.memory - low);
  const uint64_t mmio64_start = (ram_top + GiB - 1) & ~(GiB - 1);
  const uint64_t mmio64_end = mmio64_start + 64 * GiB;
  auto on_request = [this](devices::GuestRequest r) {
    if (r == devices::GuestRequest::Reset) request_exit({ExitKind::Reset, "guest requested a reset"});
  };
  pci_ = std::make_unique<PciPlatform>(vm_, mem_, pio_, mmio_, loop_, mmio64_start, mmio64_end, on_request);
  for (const auto& spec : cfg_.disks) {
    virtio::BlkConfig bc = virtio::parse_blk_config(spec);
    // One request queue per vCPU unless queues= says otherwise (as QEMU
    // does): the guest's blk-mq then maps each CPU to its own queue.
    if (bc.queues == 0) {
      bc.queues = static_cast<uint16_t>(std::min<uint32_t>(cfg_.cpus, virtio::VirtioBlk::kMaxQueues));
    }
    pci_->add_virtio_device(std::make_unique<virtio::VirtioBlk>(bc, &loop_));
  }
  for (const auto& n : cfg_.nets) {
    virtio::NetConfig nc;
    nc.mac = n.mac.empty() ? virtio::random_mac() : *virtio::parse_mac(n.mac);
    pci_->add_virtio_device(std::make_unique<virtio::VirtioNet>(loop_, virtio::Tap::open(n.tap), nc));
  }
  if (cfg_.rng) pci_->add_virtio_device(std::make_unique<virtio::VirtioRng>());
  if (!cfg_.vsock.empty())
    pci_->add_virtio_device(std::make_unique<virtio::VirtioVsock>(loop_, virtio::parse_vsock_spec(cfg_.vsock)));
}

void Machine::setup_devices() {
  using namespace rz::x86;
  auto on_request = [this](devices::GuestRequest r) {
    switch (r) {
      case devices::GuestRequest::PowerOff:
        request_exit({ExitKind::PowerOff, "guest powered off"});
        break;
      case devices::GuestRequest::Reset:
        request_exit({ExitKind::Reset, "guest requested a reset"});
        break;
      case devices::GuestRequest::Panic:
        request_exit({ExitKind::Panic, "guest kernel panicked (pvpanic)"});
        break;
    }
  };
  uart_ = std::make_shared<devices::Uart16550>(
      std::make_shared<KvmIrqLine>(vm_, kCom1Irq),
      [this](std::span<const uint8_t> b) { console_out_.append(b); },
      [this] {
        uint64_t one = 1;
        ssize_t r = ::write(input_event_.get(), &one, sizeof one);
        (void)r;
      });
  pio_.insert(uart_, kCom1Port, devices::Uart16550::kRegisterCount, "com1");

  auto i8042 = std::make_shared<devices::I8042>(on_request);
  devices::I8042::attach(pio_, i8042);

  const uint64_t low = std::min(cfg_.memory, kMmioHoleStart);
  pio_.insert(std::make_shared<devices::Cmos>(low, cfg_.memory - low), kCmosPort, 2, "cmos");
  pio_.insert(std::make_shared<devices::AcpiPm>(on_request), kAcpiPmBase, 16, "acpi-pm");
  pio_.insert(std::make_shared<devices::Pvpanic>(on_request), kPvpanicPort, 1, "pvpanic");
}

void Machine::load_guest() {
  using namespace rz::x86;
  const auto image = boot::read_file(cfg_.kernel, "kernel");
  const boot::LoadedKernel k = boot::load_kernel(mem_, image);

  boot::BootInputs in;
  in.cmdline = cfg_.cmdline;
  in.e820 = boot::build_e820(cfg_.memory, pci_->ecam_base(), pci_->ecam_size());
  if (!cfg_.initrd.empty()) {
    const auto initrd = boot::read_file(cfg_.initrd, "initrd");
    if (initrd.empty()) throw UsageError("initrd " + cfg_.initrd + " is empty");
    in.initrd_addr = boot::place_initrd(mem_, k, initrd);
    in.initrd_size = initrd.size();
  }

  AcpiConfig acfg;
  acfg.num_cpus = cfg_.cpus;
  pci_->fill_acpi(acfg);
  const AcpiImage acpi = build_acpi_tables(acfg);
  if (!mem_.write(acpi.base, acpi.bytes.data(), acpi.bytes.size()))
    throw Error("guest memory too small for the ACPI tables");
  in.rsdp_addr = acpi.rsdp_addr;

  boot::write_cmdline(mem_, in.cmdline, k.mode == boot::EntryMode::Pvh32 ? kCmdlineMax - 1 : k.cmdline_size);
  const CpuMode mode = k.mode == boot::EntryMode::Linux64 ? CpuMode::Long64 : CpuMode::Protected32;
  write_boot_structures(mem_, mode);
  if (k.mode == boot::EntryMode::Pvh32)
    boot::write_pvh_start_info(mem_, in);
  else
    boot::write_zero_page(mem_, k, in);

  const auto supported = sys_.supported_cpuid();
  const bool tsc_deadline = sys_.check_extension(KVM_CAP_TSC_DEADLINE_TIMER) > 0;
  const auto msr_list = sys_.msr_index_list();
  const auto msrs = boot_msrs(msr_list);
  for (uint32_t i = 0; i < cfg_.cpus; ++i) {
    auto t = std::make_unique<VcpuThread>(vm_.create_vcpu(i));
    kvm::Vcpu& v = t->vcpu;
    CpuidOptions co;
    co.cpu_index = i;
    co.cpu_count = cfg_.cpus;
    co.emulator_safe = host_.kind == KvmKind::Software;
    co.tsc_deadline = tsc_deadline;
    v.set_cpuid(build_cpuid(supported, co));
    v.set_msrs(msrs);
    v.set_fpu(boot_fpu());
    // LINT0 delivers the 8259's ExtINT, LINT1 NMIs, as firmware leaves them.
    kvm_lapic_state lapic = v.get_lapic();
    auto set_lvt = [&lapic](size_t off, uint32_t mode_bits) {
      uint32_t val;
      std::memcpy(&val, lapic.regs + off, 4);
      val = (val & ~0x700u) | mode_bits;
      val &= ~(1u << 16);  // unmasked
      std::memcpy(lapic.regs + off, &val, 4);
    };
    set_lvt(0x350, 0x700);  // LVT LINT0: ExtINT
    set_lvt(0x360, 0x400);  // LVT LINT1: NMI
    v.set_lapic(lapic);
    if (i == 0) {
      kvm_sregs s = v.get_sregs();
      setup_sregs(s, mode);
      v.set_sregs(s);
      const uint64_t info = k.mode == boot::EntryMode::Pvh32 ? kPvhStartInfoAddr : kZeroPageAddr;
      v.set_regs(k.mode == boot::EntryMode::Pvh32 ? boot_regs(k.entry, 0, info)
                                                  : boot_regs(k.entry, info, 0));
    }
    // Application processors stay in KVM's wait-for-SIPI state until the
    // guest starts them through its local APIC.
    vcpus_.push_back(std::move(t));
  }
}

void Machine::request_exit(ExitStatus status) {
  {
    std::lock_guard<std::mutex> lk(exit_mu_);
    if (exit_requested_) return;
    exit_requested_ = true;
    exit_status_ = std::move(status);
  }
  stopping_.store(true);
  kick_vcpus();
  uint64_t one = 1;
  ssize_t r = ::write(exit_event_.get(), &one, sizeof one);
  (void)r;
}

void Machine::kick_vcpus() {
  for (auto& t : vcpus_) {
    t->vcpu.set_immediate_exit(true);
    if (t->thread.joinable()) pthread_kill(t->thread.native_handle(), kKickSignal);
  }
}

void Machine::note_unclaimed(bool pio, uint64_t addr, size_t len, bool is_write) {
  if (!log::enabled(log::Level::Debug)) return;
  const uint64_t key = (addr << 1) | (pio ? 1 : 0);
  {
    std::lock_guard<std::mutex> lk(unclaimed_mu_);
    if (std::find(unclaimed_seen_.begin(), unclaimed_seen_.end(), key) != unclaimed_seen_.end()) return;
    if (unclaimed_seen_.size() >= 4096) return;  // bounded: a guest can probe every port
    unclaimed_seen_.push_back(key);
  }
  log::debug(std::string("unclaimed ") + (pio ? "port " : "MMIO ") + "0x" + hex(addr, pio ? 4 : 8) +
             (is_write ? " write" : " read") + " of " + std::to_string(len) + " bytes (logged once)");
}

std::string Machine::fault_report(VcpuThread& t, const std::string& what) {
  std::string s = what + " on vCPU " + std::to_string(t.vcpu.index());
  try {
    const kvm_regs r = t.vcpu.get_regs();
    const kvm_sregs sr = t.vcpu.get_sregs();
    s += " at RIP 0x" + hex(r.rip);
    s += "\n  rax=" + hex(r.rax) + " rbx=" + hex(r.rbx) + " rcx=" + hex(r.rcx) + " rdx=" + hex(r.rdx);
    s += "\n  rsi=" + hex(r.rsi) + " rdi=" + hex(r.rdi) + " rsp=" + hex(r.rsp) + " rbp=" + hex(r.rbp);
    s += "\n  r8 =" + hex(r.r8) + " r9 =" + hex(r.r9) + " r10=" + hex(r.r10) + " r11=" + hex(r.r11);
    s += "\n  r12=" + hex(r.r12) + " r13=" + hex(r.r13) + " r14=" + hex(r.r14) + " r15=" + hex(r.r15);
    s += "\n  rflags=" + hex(r.rflags, 8) + " cs=" + hex(sr.cs.selector, 4) + " cr0=" + hex(sr.cr0, 8) +
         " cr3=" + hex(sr.cr3) + " cr4=" + hex(sr.cr4, 8) + " efer=" + hex(sr.efer, 8);
    uint64_t gpa = 0;
    const uint64_t linear = sr.cs.base + r.rip;
    uint8_t bytes[16];
    if (t.vcpu.translate(linear, &gpa) && mem_.read(gpa, bytes, sizeof bytes)) {
      s += "\n  code at RIP:";
      for (uint8_t b : bytes) s += " " + hex(b, 2);
    } else {
      s += "\n  code at RIP: unreadable";
    }
  } catch (const Error& e) {
    s += std::string(" (registers unavailable: ") + e.what() + ")";
  }
  return s;
}

bool Machine::handle_exit(VcpuThread& t) {
  kvm_run* run = t.vcpu.run_struct();
  switch (run->exit_reason) {
    case KVM_EXIT_IO: {
      auto* base = reinterpret_cast<uint8_t*>(run) + run->io.data_offset;
      const size_t size = run->io.size;
      // A string instruction may carry several items; `count` is KVM's and
      // bounded by the kvm_run page.
      for (uint32_t i = 0; i < run->io.count; ++i) {
        std::span<uint8_t> data(base + i * size, size);
        if (run->io.direction == KVM_EXIT_IO_OUT) {
          if (!pio_.write(run->io.port, data)) note_unclaimed(true, run->io.port, size, true);
        } else {
          if (!pio_.read(run->io.port, data)) note_unclaimed(true, run->io.port, size, false);
        }
      }
      return true;
    }
    case KVM_EXIT_MMIO: {
      const size_t len = std::min<size_t>(run->mmio.len, sizeof run->mmio.data);
      std::span<uint8_t> data(run->mmio.data, len);
      if (run->mmio.is_write) {
        if (!mmio_.write(run->mmio.phys_addr, data)) note_unclaimed(false, run->mmio.phys_addr, len, true);
      } else if (!mmio_.read(run->mmio.phys_addr, data)) {
        note_unclaimed(false, run->mmio.phys_addr, len, false);
      }
      return true;
    }
    case KVM_EXIT_HLT:
      // With the in-kernel LAPIC, HLT is handled by KVM; an exit here means
      // the vCPU stopped for good.
      log::debug("vCPU " + std::to_string(t.vcpu.index()) + " halted");
      return false;
    case KVM_EXIT_SHUTDOWN:
      request_exit({ExitKind::Fault, fault_report(t, "guest triple fault (KVM_EXIT_SHUTDOWN)")});
      return false;
    case KVM_EXIT_INTERNAL_ERROR: {
      std::string what = "KVM_EXIT_INTERNAL_ERROR, suberror " + std::to_string(run->internal.suberror);
      if (run->internal.suberror == KVM_INTERNAL_ERROR_EMULATION) what += " (emulation failure)";
      std::string report = fault_report(t, what);
      if (run->internal.suberror == KVM_INTERNAL_ERROR_EMULATION &&
          (run->emulation_failure.flags & KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES)) {
        report += "\n  instruction bytes (from KVM):";
        const unsigned n = std::min<unsigned>(run->emulation_failure.insn_size, 15);
        for (unsigned i = 0; i < n; ++i) report += " " + hex(run->emulation_failure.insn_bytes[i], 2);
      }
      request_exit({ExitKind::Fault, report});
      return false;
    }
    case KVM_EXIT_FAIL_ENTRY:
      request_exit({ExitKind::Fault,
                    fault_report(t, "KVM_EXIT_FAIL_ENTRY, hardware entry failure reason 0x" +
                                        hex(run->fail_entry.hardware_entry_failure_reason))});
      return false;
    case KVM_EXIT_SYSTEM_EVENT:
      switch (run->system_event.type) {
        case KVM_SYSTEM_EVENT_SHUTDOWN: request_exit({ExitKind::PowerOff, "guest powered off"}); break;
        case KVM_SYSTEM_EVENT_RESET: request_exit({ExitKind::Reset, "guest requested a reset"}); break;
        case KVM_SYSTEM_EVENT_CRASH: request_exit({ExitKind::Panic, "guest crashed"}); break;
        default: request_exit({ExitKind::Fault, "unknown KVM system event " + std::to_string(run->system_event.type)});
      }
      return false;
    default:
      request_exit({ExitKind::Fault, fault_report(t, std::string("unhandled exit ") +
                                                         exit_reason_name(run->exit_reason) + " (" +
                                                         std::to_string(run->exit_reason) + ")")});
      return false;
  }
}

void Machine::vcpu_loop(VcpuThread& t) {
  // Only the kick signal is delivered to vCPU threads.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, kKickSignal);
  pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
  try {
    while (!stopping_.load()) {
      if (!t.vcpu.run()) continue;  // interrupted: re-check stopping_
      if (!handle_exit(t)) break;
    }
  } catch (const std::exception& e) {
    request_exit({ExitKind::Fault, std::string("vCPU ") + std::to_string(t.vcpu.index()) + ": " + e.what()});
  }
}

ExitStatus Machine::run(int signal_fd) {
  install_kick_handler();
  loop_.start();
  {
    // vCPU threads start with every signal blocked but the kick.
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    for (auto& t : vcpus_) {
      VcpuThread* tp = t.get();
      tp->thread = std::thread([this, tp] { vcpu_loop(*tp); });
    }
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
  }

  const int in_fd = cfg_.console_in_fd;
  std::vector<uint8_t> pending;  // console input the UART has not taken yet
  bool in_open = in_fd >= 0;
  while (true) {
    pollfd fds[5];
    nfds_t n = 0;
    fds[n++] = {exit_event_.get(), POLLIN, 0};
    fds[n++] = {signal_fd, POLLIN, 0};
    fds[n++] = {input_event_.get(), POLLIN, 0};
    fds[n++] = {console_out_.event_fd(), POLLIN, 0};
    const bool want_input = in_open && pending.empty();
    if (want_input) fds[n++] = {in_fd, POLLIN, 0};
    const int r = ::poll(fds, n, pending.empty() ? -1 : 50);
    if (r < 0 && errno != EINTR) throw Error(errno_message("poll", errno));
    if (fds[3].revents) console_out_.flush();
    if (fds[0].revents) break;
    if (signal_fd >= 0 && (fds[1].revents & POLLIN)) {
      signalfd_siginfo si{};
      if (::read(signal_fd, &si, sizeof si) == sizeof si) {
        if (si.ssi_signo == SIGINT)
          request_exit({ExitKind::Interrupted, "interrupted (SIGINT), VM stopped"});
        else
          request_exit({ExitKind::Terminated, "terminated (SIGTERM), VM stopped"});
      }
      continue;
    }
    if (fds[2].revents) {
      uint64_t v;
      ssize_t rr = ::read(input_event_.get(), &v, sizeof v);
      (void)rr;
    }
    if (want_input && n > 4 && fds[4].revents) {
      uint8_t buf[256];
      const ssize_t got = ::read(in_fd, buf, sizeof buf);
      if (got > 0)
        pending.assign(buf, buf + got);
      else if (got == 0 || (errno != EINTR && errno != EAGAIN))
        in_open = false;  // EOF: the guest simply gets no more input
    }
    if (!pending.empty()) {
      const size_t took = uart_->enqueue_input(pending);
      pending.erase(pending.begin(), pending.begin() + static_cast<long>(took));
    }
  }

  stopping_.store(true);
  console_out_.close();  // a vCPU blocked on a full console buffer must not hang the exit
  kick_vcpus();
  for (auto& t : vcpus_)
    if (t->thread.joinable()) t->thread.join();
  pci_->reset_all();  // devices stop on the loop thread, in-flight I/O is dropped
  loop_.stop();
  console_out_.flush();  // everything the guest printed, before the exit line
  std::lock_guard<std::mutex> lk(exit_mu_);
  return exit_status_;
}

}  // namespace rz::vmm
