// RAII handles for /dev/kvm, a VM and a vCPU. Every KVM ioctl ringzero
// issues is in kvm.cpp; a failing ioctl throws rz::KvmError naming it.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <string>
#include <vector>

#include "util/error.h"
#include "util/fd.h"

namespace rz::kvm {

class KvmError : public Error {
 public:
  KvmError(const std::string& ioctl_name, int errnum);
  int errnum() const { return errnum_; }

 private:
  int errnum_;
};

class Vm;
class Vcpu;

// The KVM subsystem (/dev/kvm).
class System {
 public:
  // Opens /dev/kvm (or `path`); throws UsageError with a clear message when
  // it is missing or not accessible, and Error when the API version is wrong.
  explicit System(const std::string& path = "/dev/kvm");

  int check_extension(unsigned cap) const;  // KVM_CHECK_EXTENSION, 0 if absent
  // Throws Error("KVM lacks required capability KVM_CAP_...") if any is missing.
  void require_capabilities() const;
  int max_vcpus() const;
  int vcpu_mmap_size() const;
  std::vector<kvm_cpuid_entry2> supported_cpuid() const;
  std::vector<uint32_t> msr_index_list() const;

  Vm create_vm() const;
  int fd() const { return fd_.get(); }

 private:
  UniqueFd fd_;
};

// The in-kernel IRQ chip state, for snapshots later.
class Vm {
 public:
  Vm(UniqueFd fd, int vcpu_mmap_size);

  void set_tss_addr(uint64_t addr);
  void set_identity_map_addr(uint64_t addr);
  void create_irqchip();
  void create_pit2();
  void set_user_memory_region(uint32_t slot, uint64_t gpa, uint64_t size, void* host,
                              uint32_t flags = 0);
  // Level of a GSI on the in-kernel irqchip.
  void irq_line(uint32_t gsi, bool level);
  void set_gsi_routing(const std::vector<kvm_irq_routing_entry>& entries);
  void irqfd(int eventfd, uint32_t gsi, bool assign = true);
  void ioeventfd(int eventfd, uint64_t addr, uint32_t len, bool pio, bool assign = true);
  void signal_msi(uint64_t addr, uint32_t data);

  Vcpu create_vcpu(uint32_t index) const;
  int fd() const { return fd_.get(); }

 private:
  UniqueFd fd_;
  int vcpu_mmap_size_;
};

class Vcpu {
 public:
  Vcpu(UniqueFd fd, uint32_t index, int mmap_size);
  Vcpu(Vcpu&&) noexcept;
  Vcpu& operator=(Vcpu&&) = delete;
  Vcpu(const Vcpu&) = delete;
  Vcpu& operator=(const Vcpu&) = delete;
  ~Vcpu();

  uint32_t index() const { return index_; }
  kvm_run* run_struct() const { return run_; }

  // KVM_RUN. Returns false if interrupted (EINTR/EAGAIN): the caller checks
  // why and calls again. Throws on other errors.
  bool run();
  // Makes the next (or current) KVM_RUN return to user space at once.
  void set_immediate_exit(bool on) { run_->immediate_exit = on ? 1 : 0; }

  kvm_regs get_regs() const;
  void set_regs(const kvm_regs& r);
  kvm_sregs get_sregs() const;
  void set_sregs(const kvm_sregs& s);
  void set_fpu(const kvm_fpu& f);
  void set_cpuid(const std::vector<kvm_cpuid_entry2>& entries);
  void set_msrs(const std::vector<std::pair<uint32_t, uint64_t>>& msrs);
  kvm_lapic_state get_lapic() const;
  void set_lapic(const kvm_lapic_state& s);
  void set_mp_state(uint32_t state);
  // Translates a guest virtual address with the vCPU's current page tables.
  bool translate(uint64_t gva, uint64_t* gpa) const;
  int fd() const { return fd_.get(); }

 private:
  UniqueFd fd_;
  uint32_t index_;
  int mmap_size_;
  kvm_run* run_ = nullptr;
};

}  // namespace rz::kvm
