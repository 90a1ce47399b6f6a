#include "vmm/pci_platform.h"

#include "vmm/gsi_routing.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "pci/bar_mapper.h"
#include "util/error.h"
#include "util/log.h"

namespace rz::vmm {

// ------------------------------------------------------------- KvmPlatformVm

void KvmPlatformVm::set_gsi_routing(const std::vector<kvm_irq_routing_entry>& entries) {
  vm_.set_gsi_routing(entries);
}
void KvmPlatformVm::irqfd(int eventfd, uint32_t gsi, bool assign) { vm_.irqfd(eventfd, gsi, assign); }
void KvmPlatformVm::ioeventfd(int eventfd, uint64_t addr, uint32_t len, bool assign) {
  vm_.ioeventfd(eventfd, addr, len, /*pio=*/false, assign);
}
void KvmPlatformVm::irq_line(uint32_t gsi, bool level) { vm_.irq_line(gsi, level); }

std::vector<kvm_irq_routing_entry> default_irqchip_routes() {
  // Not KVM's own default (GSI 0 -> IOAPIC pin 0): the PIT's IRQ 0 must
  // arrive on IOAPIC pin 2, as the MADT's interrupt source override says,
  // or Linux's timer never ticks. One definition for the whole machine.
  return GsiRouting::legacy_routes();
}

// ----------------------------------------------------------------- PciPlatform

struct PciPlatform::Slot {
  size_t index = 0;
  std::string name;
  std::shared_ptr<virtio::VirtioPciDevice> dev;
  uint8_t slot = 0;
  uint32_t intx_gsi = 0;
  std::vector<uint32_t> gsis;     // per MSI-X vector
  std::vector<UniqueFd> irqfds;   // per MSI-X vector, bound to gsis[v]
  std::optional<uint64_t> bar_at;       // where BAR 0 sits on the MMIO bus
  std::optional<uint64_t> notifiers_at; // BAR base the ioeventfds are registered for
};

PciPlatform::PciPlatform(kvm::Vm& vm, const memory::GuestMemory& mem, devices::Bus& pio,
                         devices::Bus& mmio, EventLoop& loop, uint64_t mmio64_start,
                         uint64_t mmio64_end, devices::GuestRequestHandler on_request)
    : PciPlatform(std::make_unique<KvmPlatformVm>(vm), mem, pio, mmio, loop, mmio64_start,
                  mmio64_end, std::move(on_request)) {}

PciPlatform::PciPlatform(std::unique_ptr<PlatformVm> vm, const memory::GuestMemory& mem,
                         devices::Bus& pio, devices::Bus& mmio, EventLoop& loop,
                         uint64_t mmio64_start, uint64_t mmio64_end,
                         devices::GuestRequestHandler on_request)
    : vm_(std::move(vm)),
      mem_(mem),
      pio_(pio),
      mmio_(mmio),
      loop_(loop),
      mmio64_start_(mmio64_end > mmio64_start ? mmio64_start : 0),
      mmio64_end_(mmio64_end > mmio64_start ? mmio64_end : 0),
      bus_(std::make_shared<pci::PciBus>()),
      bars_(x86::kPciMmio32Start, x86::kPciMmio32End, mmio64_start_, mmio64_end_) {
  pio_.insert(std::make_shared<pci::PciConfigIo>(bus_, std::move(on_request)),
              pci::PciConfigIo::kBase, pci::PciConfigIo::kSize, "pci-config-io");
  try {
    mmio_.insert(std::make_shared<pci::PciConfigMmio>(bus_), ecam_base(), ecam_size(), "pci-ecam");
  } catch (...) {
    pio_.remove(pci::PciConfigIo::kBase);
    throw;
  }
}

PciPlatform::~PciPlatform() {
  // Devices that never went live have nothing running on the loop; only
  // live ones need the (loop-thread) reset here.
  const bool any_live = std::any_of(slots_.begin(), slots_.end(),
                                    [](const auto& s) { return s->dev->activated(); });
  if (!reset_done_ && any_live) {
    try {
      reset_all();
    } catch (const std::exception& e) {
      log::error(std::string("pci: reset at teardown: ") + e.what());
    }
  }
  for (auto& s : slots_) teardown(*s);
  mmio_.remove(ecam_base());
  pio_.remove(pci::PciConfigIo::kBase);
}

void PciPlatform::teardown(Slot& s) {
  // Devices can outlive the platform (the bus and in-flight accesses hold
  // references): cut every hook that points back here.
  s.dev->set_bar_move_handler({});
  s.dev->set_intx_handler({});
  s.dev->msix()->set_route_handler({});
  s.dev->msix()->set_deliver({});
  std::lock_guard lock(map_mu_);
  if (s.bar_at) mmio_.remove(*s.bar_at);
  s.bar_at.reset();
  try {
    if (s.notifiers_at) register_notifiers(s, *s.notifiers_at, false);
    for (size_t v = 0; v < s.irqfds.size(); ++v) vm_->irqfd(s.irqfds[v].get(), s.gsis[v], false);
  } catch (const std::exception& e) {
    log::warn("pci: " + s.name + " teardown: " + e.what());
  }
  s.notifiers_at.reset();
}

uint8_t PciPlatform::add_virtio_device(std::unique_ptr<virtio::VirtioDevice> device) {
  if (!device) throw Error("pci: no device");
  auto slot = std::make_unique<Slot>();
  Slot& s = *slot;
  s.index = slots_.size();
  s.name = device->name();
  s.dev = std::make_shared<virtio::VirtioPciDevice>(std::move(device), mem_, &loop_);
  const uint16_t vectors = s.dev->msix()->vectors();
  if (next_gsi_ + vectors > kMaxGsi) throw Error("pci: out of GSIs for " + s.name + "'s MSI-X vectors");

  s.slot = bus_->add_device(s.dev);
  s.name.append(1, '@').append(std::to_string(s.slot));  // (not "@" + ...: GCC 12 -Wrestrict false positive)
  s.intx_gsi = pci::intx_gsi(s.slot, 0);
  try {
    bars_.assign(*s.dev, s.name);

    // MSI-X: one GSI and one irqfd per vector. The routes start empty (a
    // vector is masked until the guest programs and unmasks it); the
    // table's route hook keeps them equal to the guest's messages.
    for (uint16_t v = 0; v < vectors; ++v) {
      UniqueFd fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
      if (!fd.valid()) throw Error(errno_message("pci: eventfd", errno));
      s.gsis.push_back(next_gsi_ + v);
      s.irqfds.push_back(std::move(fd));
    }
    {
      std::lock_guard lock(routing_mu_);
      for (uint32_t gsi : s.gsis) msi_routes_.emplace_back(gsi, pci::MsiMessage{});
      push_routing_locked();
    }
    next_gsi_ += vectors;
    for (uint16_t v = 0; v < vectors; ++v) vm_->irqfd(s.irqfds[v].get(), s.gsis[v], true);
  } catch (...) {
    // The slot stays taken on the bus (PciBus has no removal); the device is
    // inert: no BAR mapping, no interrupts.
    for (size_t v = 0; v < s.irqfds.size(); ++v) {
      try { vm_->irqfd(s.irqfds[v].get(), s.gsis[v], false); } catch (...) {}
    }
    throw;
  }

  Slot* sp = &s;
  s.dev->msix()->set_route_handler([this, sp](uint16_t v, const pci::MsiMessage& msg, bool masked) {
    // A masked vector is never delivered, so its route may lag; it is
    // brought up to date the moment the vector is unmasked (the table calls
    // this before delivering what was pending).
    if (!masked && v < sp->gsis.size()) update_route(sp->gsis[v], msg);
  });
  s.dev->msix()->set_deliver([sp](uint16_t v, const pci::MsiMessage&) {
    if (v >= sp->irqfds.size()) return;
    const uint64_t one = 1;
    ssize_t r = ::write(sp->irqfds[v].get(), &one, sizeof one);
    (void)r;
  });
  {
    std::lock_guard lock(intx_mu_);
    intx_levels_.push_back(false);
    slots_.push_back(std::move(slot));
  }
  s.dev->set_intx_handler([this, sp](bool level) { set_intx(sp->intx_gsi, sp->index, level); });
  s.dev->set_bar_move_handler([this, sp](const pci::BarMove& m) { map_bar(*sp, m); });
  log::debug("pci: " + s.name + " (" + s.dev->device().name() + "), INTx GSI " +
             std::to_string(s.intx_gsi) + ", MSI-X GSIs " + std::to_string(s.gsis.front()) + ".." +
             std::to_string(s.gsis.back()));
  return s.slot;
}

void PciPlatform::map_bar(Slot& s, const pci::BarMove& m) {
  if (m.index != virtio::VirtioPciDevice::kBar) return;
  std::lock_guard lock(map_mu_);
  if (s.bar_at) mmio_.remove(*s.bar_at);
  s.bar_at.reset();
  if (s.notifiers_at) register_notifiers(s, *s.notifiers_at, false);
  s.notifiers_at.reset();
  if (!m.new_address) return;
  const std::string range = s.name + ".bar0";
  try {
    mmio_.insert(std::make_shared<pci::PciBarRegion>(s.dev, m.index), *m.new_address, m.size, range);
  } catch (const Error& e) {
    // Placed over another range: leave it off the bus until it moves.
    log::warn("pci: " + range + " left unmapped: " + e.what());
    return;
  }
  s.bar_at = *m.new_address;
  try {
    register_notifiers(s, *m.new_address, true);
    s.notifiers_at = *m.new_address;
  } catch (const std::exception& e) {
    // Notifications still work, as MMIO exits (VirtioPciDevice::region_write).
    log::warn("pci: " + range + ": no ioeventfd, notifications take the slow path: " + e.what());
  }
}

// One ioeventfd per queue at its notify address. Linux writes 16 bits there;
// with len 0 KVM matches any width. Hosts without KVM_CAP_IOEVENTFD_ANY_LENGTH
// get len 2, and other widths take the MMIO-exit path.
void PciPlatform::register_notifiers(Slot& s, uint64_t bar_base, bool assign) {
  const uint16_t n = s.dev->num_queues();
  for (uint16_t q = 0; q < n; ++q) {
    const int fd = s.dev->queue_eventfd(q);
    const uint64_t addr = bar_base + virtio::VirtioPciDevice::notify_offset(q);
    if (!notify_len_) {
      try {
        vm_->ioeventfd(fd, addr, 0, assign);
        notify_len_ = 0;
        continue;
      } catch (const Error&) {
        notify_len_ = 2;
      }
    }
    try {
      vm_->ioeventfd(fd, addr, *notify_len_, assign);
    } catch (...) {
      if (assign) {  // undo the ones already registered
        for (uint16_t u = 0; u < q; ++u) {
          try {
            vm_->ioeventfd(s.dev->queue_eventfd(u),
                           bar_base + virtio::VirtioPciDevice::notify_offset(u), *notify_len_, false);
          } catch (...) {}
        }
        throw;
      }
    }
  }
}

void PciPlatform::update_route(uint32_t gsi, const pci::MsiMessage& msg) {
  std::lock_guard lock(routing_mu_);
  auto it = std::find_if(msi_routes_.begin(), msi_routes_.end(),
                         [gsi](const auto& r) { return r.first == gsi; });
  if (it == msi_routes_.end() || it->second == msg) return;
  it->second = msg;
  try {
    push_routing_locked();
  } catch (const std::exception& e) {
    // KVM refused the guest's message (e.g. a bad destination format): the
    // vector stays on its old route.
    log::warn(std::string("pci: MSI route for GSI ") + std::to_string(gsi) + ": " + e.what());
  }
}

void PciPlatform::push_routing_locked() {
  std::vector<kvm_irq_routing_entry> table = default_irqchip_routes();
  for (const auto& [gsi, msg] : msi_routes_) {
    kvm_irq_routing_entry e{};
    e.gsi = gsi;
    e.type = KVM_IRQ_ROUTING_MSI;
    e.u.msi.address_lo = static_cast<uint32_t>(msg.address);
    e.u.msi.address_hi = static_cast<uint32_t>(msg.address >> 32);
    e.u.msi.data = msg.data;
    table.push_back(e);
  }
  vm_->set_gsi_routing(table);
  last_routing_ = std::move(table);
}

void PciPlatform::set_intx(uint32_t gsi, size_t index, bool level) {
  std::lock_guard lock(intx_mu_);
  if (index >= intx_levels_.size()) return;
  intx_levels_[index] = level;
  bool any = false;
  for (const auto& s : slots_)
    if (s->intx_gsi == gsi && s->index < intx_levels_.size() && intx_levels_[s->index]) any = true;
  auto it = intx_gsi_level_.find(gsi);
  if (it != intx_gsi_level_.end() && it->second == any) return;
  intx_gsi_level_[gsi] = any;
  try {
    vm_->irq_line(gsi, any);
  } catch (const std::exception& e) {
    log::warn(std::string("pci: INTx GSI ") + std::to_string(gsi) + ": " + e.what());
  }
}

void PciPlatform::reset_all() {
  for (auto& s : slots_) s->dev->reset_device();  // lowers INTx through the ISR
  reset_done_ = true;
}

void PciPlatform::fill_acpi(x86::AcpiConfig& cfg) const {
  cfg.ecam_base = ecam_base();
  cfg.pci_bus_end = bus_end();
  cfg.pci_mmio32_start = mmio32_start();
  cfg.pci_mmio32_end = mmio32_end();
  cfg.pci_mmio64_start = mmio64_start_;
  cfg.pci_mmio64_end = mmio64_end_;
}

std::vector<std::shared_ptr<virtio::VirtioPciDevice>> PciPlatform::virtio_devices() const {
  std::vector<std::shared_ptr<virtio::VirtioPciDevice>> out;
  for (const auto& s : slots_) out.push_back(s->dev);
  return out;
}

std::vector<kvm_irq_routing_entry> PciPlatform::routing() const {
  std::lock_guard lock(routing_mu_);
  return last_routing_;
}

uint32_t PciPlatform::msi_gsi(size_t index, uint16_t vector) const {
  return slots_.at(index)->gsis.at(vector);
}

uint32_t PciPlatform::intx_gsi(size_t index) const { return slots_.at(index)->intx_gsi; }

}  // namespace rz::vmm
