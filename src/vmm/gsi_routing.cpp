#include "vmm/gsi_routing.h"

#include "kvm/kvm.h"

namespace rz::vmm {

GsiRouting::GsiRouting(kvm::Vm& vm) : vm_(vm) {}

std::vector<kvm_irq_routing_entry> GsiRouting::legacy_routes() {
  std::vector<kvm_irq_routing_entry> t;
  auto add = [&t](uint32_t gsi, uint32_t chip, uint32_t pin) {
    kvm_irq_routing_entry e{};
    e.gsi = gsi;
    e.type = KVM_IRQ_ROUTING_IRQCHIP;
    e.u.irqchip.irqchip = chip;
    e.u.irqchip.pin = pin;
    t.push_back(e);
  };
  for (uint32_t i = 0; i < 16; ++i) {
    if (i == 2) continue;
    add(i, i < 8 ? KVM_IRQCHIP_PIC_MASTER : KVM_IRQCHIP_PIC_SLAVE, i % 8);
  }
  for (uint32_t i = 0; i < kIoapicPins; ++i) {
    if (i == 2) continue;
    add(i, KVM_IRQCHIP_IOAPIC, i == 0 ? 2 : i);
  }
  return t;
}

uint32_t GsiRouting::allocate_msi() {
  std::lock_guard<std::mutex> lk(mu_);
  return next_gsi_++;
}

void GsiRouting::set_msi(uint32_t gsi, uint64_t address, uint32_t data, bool masked) {
  std::lock_guard<std::mutex> lk(mu_);
  if (masked) {
    msi_.erase(gsi);
  } else {
    kvm_irq_routing_entry e{};
    e.gsi = gsi;
    e.type = KVM_IRQ_ROUTING_MSI;
    e.u.msi.address_lo = static_cast<uint32_t>(address);
    e.u.msi.address_hi = static_cast<uint32_t>(address >> 32);
    e.u.msi.data = data;
    msi_[gsi] = e;
  }
  commit_locked();
}

void GsiRouting::commit() {
  std::lock_guard<std::mutex> lk(mu_);
  commit_locked();
}

void GsiRouting::commit_locked() {
  auto t = legacy_routes();
  for (const auto& [gsi, e] : msi_) t.push_back(e);
  vm_.set_gsi_routing(t);
}

}  // namespace rz::vmm
