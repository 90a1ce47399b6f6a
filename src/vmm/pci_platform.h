// The machine's PCI platform: bus 0 with its host bridge, configuration
// access (ports 0xcf8-0xcff and ECAM), BAR allocation, and virtio-pci
// devices wired to KVM: BARs on the MMIO bus (following the guest's moves),
// queue notifications through ioeventfd, MSI-X vectors through irqfd and
// GSI routing, legacy INTx through the in-kernel IOAPIC.
//
// Machine usage (order matters):
//   PciPlatform pci(vm, mem, pio, mmio, loop, mmio64_start, mmio64_end);
//   pci.add_virtio_device(std::make_unique<virtio::VirtioRng>());   // ...
//   pci.fill_acpi(acpi_cfg);  e820 = boot::build_e820(ram, pci.ecam_base(), pci.ecam_size());
//   loop.start();  ...run vCPUs...  join vCPUs;
//   pci.reset_all();          // devices stop on the loop thread
//   loop.stop();              // then destroy pci, then the loop
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "devices/bus.h"
#include "devices/bus_device.h"
#include "kvm/kvm.h"
#include "memory/guest_memory.h"
#include "pci/bar_allocator.h"
#include "pci/msix.h"
#include "pci/pci_bus.h"
#include "util/event_loop.h"
#include "util/fd.h"
#include "virtio/device.h"
#include "virtio/pci_transport.h"
#include "x86/acpi.h"

namespace rz::vmm {

// The VM operations the platform needs, behind an interface so that it can
// be tested without /dev/kvm. Errors throw (kvm::KvmError for KVM).
class PlatformVm {
 public:
  virtual ~PlatformVm() = default;
  // KVM_SET_GSI_ROUTING: replaces the whole table.
  virtual void set_gsi_routing(const std::vector<kvm_irq_routing_entry>& entries) = 0;
  // KVM_IRQFD: writes to `eventfd` inject `gsi`.
  virtual void irqfd(int eventfd, uint32_t gsi, bool assign) = 0;
  // KVM_IOEVENTFD on the MMIO bus, no datamatch; `len` 0 = any write length.
  virtual void ioeventfd(int eventfd, uint64_t addr, uint32_t len, bool assign) = 0;
  // KVM_IRQ_LINE.
  virtual void irq_line(uint32_t gsi, bool level) = 0;
};

class KvmPlatformVm : public PlatformVm {
 public:
  explicit KvmPlatformVm(kvm::Vm& vm) : vm_(vm) {}
  void set_gsi_routing(const std::vector<kvm_irq_routing_entry>& entries) override;
  void irqfd(int eventfd, uint32_t gsi, bool assign) override;
  void ioeventfd(int eventfd, uint64_t addr, uint32_t len, bool assign) override;
  void irq_line(uint32_t gsi, bool level) override;

 private:
  kvm::Vm& vm_;
};

// KVM's own default routing (what KVM_CREATE_IRQCHIP installs): GSI i to
// IOAPIC pin i for 0..23 and, for 0..15, to PIC pin i % 8 of the master
// (i < 8) or slave. KVM_SET_GSI_ROUTING replaces the table wholesale, so
// these must stay in it or KVM_IRQ_LINE on legacy lines stops working.
std::vector<kvm_irq_routing_entry> default_irqchip_routes();

class PciPlatform {
 public:
  // First GSI handed to MSI-X vectors (0..23 are the IOAPIC's pins), and
  // KVM's limit on routing entries / GSIs.
  static constexpr uint32_t kFirstMsiGsi = 24;
  static constexpr uint32_t kMaxGsi = 4096;

  // Everything passed in must outlive the platform. The 64-bit BAR window
  // is [mmio64_start, mmio64_end) (empty: BARs go below 4 GiB); the 32-bit
  // one is [x86::kPciMmio32Start, x86::kPciMmio32End). `on_request` hears a
  // reset request through port 0xcf9.
  PciPlatform(kvm::Vm& vm, const memory::GuestMemory& mem, devices::Bus& pio, devices::Bus& mmio,
              EventLoop& loop, uint64_t mmio64_start, uint64_t mmio64_end,
              devices::GuestRequestHandler on_request = {});
  PciPlatform(std::unique_ptr<PlatformVm> vm, const memory::GuestMemory& mem, devices::Bus& pio,
              devices::Bus& mmio, EventLoop& loop, uint64_t mmio64_start, uint64_t mmio64_end,
              devices::GuestRequestHandler on_request = {});
  // If reset_all() was not called and a device is live (DRIVER_OK), resets
  // the devices first, which needs the loop running. Then takes everything
  // off the buses and out of KVM and cuts the devices' hooks back into the
  // platform (the buses may hold the devices a little longer).
  ~PciPlatform();
  PciPlatform(const PciPlatform&) = delete;
  PciPlatform& operator=(const PciPlatform&) = delete;

  // Puts `device` behind a virtio-pci transport in the lowest free slot,
  // allocates its BAR, and sets up its ioeventfds, MSI-X GSIs/irqfds and
  // INTx line. Returns the slot. Throws rz::Error when out of slots, BAR
  // space or GSIs, or if KVM refuses the setup.
  uint8_t add_virtio_device(std::unique_ptr<virtio::VirtioDevice> device);

  // Stops every device (VirtioDevice::reset on the event loop, as a guest
  // write of 0 to device_status would) and lowers the INTx lines. Call after
  // the vCPUs stopped and before the loop stops. Idempotent.
  void reset_all();

  // --- What the ACPI tables and the E820 map need ---------------------------
  uint64_t ecam_base() const { return pci::PciConfigMmio::kBase; }
  uint64_t ecam_size() const { return pci::PciConfigMmio::kSize; }
  uint8_t bus_end() const { return 0; }  // bus 0 only
  uint64_t mmio32_start() const { return x86::kPciMmio32Start; }
  uint64_t mmio32_end() const { return x86::kPciMmio32End; }
  uint64_t mmio64_start() const { return mmio64_start_; }
  uint64_t mmio64_end() const { return mmio64_end_; }
  // Sets ecam_base, pci_bus_end and both windows.
  void fill_acpi(x86::AcpiConfig& cfg) const;

  // --- Inspection -----------------------------------------------------------
  const std::shared_ptr<pci::PciBus>& bus() const { return bus_; }
  std::vector<std::shared_ptr<virtio::VirtioPciDevice>> virtio_devices() const;
  // The routing table last given to KVM.
  std::vector<kvm_irq_routing_entry> routing() const;
  // The MSI GSI of device `index`'s vector `vector`.
  uint32_t msi_gsi(size_t index, uint16_t vector) const;
  uint32_t intx_gsi(size_t index) const;

 private:
  struct Slot;
  void map_bar(Slot& s, const pci::BarMove& m);   // BAR move hook (device config lock held)
  void register_notifiers(Slot& s, uint64_t bar_base, bool assign);
  void update_route(uint32_t gsi, const pci::MsiMessage& msg);
  void push_routing_locked();
  void set_intx(uint32_t gsi, size_t index, bool level);
  void teardown(Slot& s);

  std::unique_ptr<PlatformVm> vm_;
  const memory::GuestMemory& mem_;
  devices::Bus& pio_;
  devices::Bus& mmio_;
  EventLoop& loop_;
  const uint64_t mmio64_start_, mmio64_end_;
  std::shared_ptr<pci::PciBus> bus_;
  pci::BarAllocator bars_;
  std::vector<std::unique_ptr<Slot>> slots_;
  bool reset_done_ = false;

  mutable std::mutex routing_mu_;
  std::vector<std::pair<uint32_t, pci::MsiMessage>> msi_routes_;  // gsi -> message
  std::vector<kvm_irq_routing_entry> last_routing_;
  uint32_t next_gsi_ = kFirstMsiGsi;

  std::mutex map_mu_;  // BAR mappings and ioeventfd registrations
  std::optional<uint32_t> notify_len_;  // 0 (any length) or 2, once known

  std::mutex intx_mu_;
  // Devices share the four INTx GSIs: a GSI is high while any of its
  // devices asserts it (KVM_IRQ_LINE from user space has a single source).
  std::vector<bool> intx_levels_;            // per device index
  std::map<uint32_t, bool> intx_gsi_level_;  // what KVM was last told
};

}  // namespace rz::vmm
