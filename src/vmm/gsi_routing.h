// The machine's KVM GSI routing table: the legacy PIC/IOAPIC routes and the
// MSI routes of PCI devices. KVM_SET_GSI_ROUTING replaces the whole table,
// so one owner keeps all of it.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <map>
#include <mutex>
#include <vector>

namespace rz::kvm {
class Vm;
}

namespace rz::vmm {

class GsiRouting {
 public:
  static constexpr uint32_t kIoapicPins = 24;
  static constexpr uint32_t kFirstMsiGsi = kIoapicPins;

  explicit GsiRouting(kvm::Vm& vm);

  // The legacy routes, as a PC chipset wires them: ISA IRQs 0-15 to the
  // 8259 pair and every GSI 0-23 to the same IOAPIC pin, except that the
  // PIT's IRQ 0 arrives on IOAPIC pin 2 (the MADT's interrupt source
  // override says so) and GSI 2 (the cascade) has no route of its own.
  static std::vector<kvm_irq_routing_entry> legacy_routes();

  // Allocates a GSI for an MSI route (not yet committed). Thread-safe.
  uint32_t allocate_msi();
  // Sets (or, with masked, removes) the MSI message of an allocated GSI and
  // commits the table to KVM.
  void set_msi(uint32_t gsi, uint64_t address, uint32_t data, bool masked);
  // Writes the table to KVM.
  void commit();

 private:
  void commit_locked();
  kvm::Vm& vm_;
  std::mutex mu_;
  uint32_t next_gsi_ = kFirstMsiGsi;
  std::map<uint32_t, kvm_irq_routing_entry> msi_;  // gsi -> active route
};

}  // namespace rz::vmm
