// PCI bus 0 of a ringzero machine: 32 device slots (function 0 only), the
// host bridge in slot 0, and the two ways a guest reaches config space:
// configuration mechanism #1 (ports 0xcf8 / 0xcfc) and ECAM (MMIO).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>

#include "devices/bus_device.h"
#include "pci/pci_device.h"
#include "x86/acpi.h"
#include "x86/layout.h"

namespace rz::pci {

inline constexpr uint8_t kNumSlots = 32;
inline constexpr uint32_t kClassHostBridge = 0x060000;

// Legacy INTx routing of bus 0 (pin 0 = INTA#): the rule the DSDT's _PRT
// describes (x86::pci_intx_gsi, GSI 16 + (slot + pin) % 4).
constexpr uint32_t intx_gsi(uint8_t slot, uint8_t pin) { return x86::pci_intx_gsi(slot, pin); }

// The host bridge: class 0x060000, no BARs, no interrupt. The default ids are
// those of the virtual host bridge other VMMs expose (Intel 0x0d57), which
// Linux drives with no chipset quirks.
class PciHostBridge : public PciDevice {
 public:
  explicit PciHostBridge(uint16_t vendor_id = 0x8086, uint16_t device_id = 0x0d57);
};

// Bus 0. Slots are filled while the machine is built; lookups are
// thread-safe, and config accesses are serialized per device by PciDevice.
class PciBus {
 public:
  // Puts a PciHostBridge in slot 0.
  PciBus();
  // Puts `host_bridge` in slot 0 (it must not be null).
  explicit PciBus(std::shared_ptr<PciDevice> host_bridge);

  // Places `device` in `slot` (1..31) or, without one, the lowest free slot;
  // returns the slot. If the device has an interrupt pin, its interrupt line
  // register is set to intx_gsi(slot, pin - 1). Throws rz::Error if the slot
  // is taken or out of range, or the bus is full.
  uint8_t add_device(std::shared_ptr<PciDevice> device, std::optional<uint8_t> slot = std::nullopt);
  std::shared_ptr<PciDevice> device(uint8_t slot) const;  // null if empty

  // Config access by address. Anything but bus 0, function 0 of a present
  // device reads all-ones and drops writes; so do bad offsets/sizes.
  uint32_t config_read(uint8_t bus, uint8_t slot, uint8_t function, uint16_t offset,
                       unsigned size) const;
  void config_write(uint8_t bus, uint8_t slot, uint8_t function, uint16_t offset, unsigned size,
                    uint32_t value);

 private:
  std::shared_ptr<PciDevice> lookup(uint8_t bus, uint8_t slot, uint8_t function) const;

  mutable std::mutex mu_;
  std::array<std::shared_ptr<PciDevice>, kNumSlots> slots_;
};

// Configuration mechanism #1, claiming ports 0xcf8..0xcff on the PIO bus.
// 0xcf8 is the 32-bit address register (bit 31 enable, bus 23:16, device
// 15:11, function 10:8, register 7:2); 0xcfc..0xcff is the data window, any
// size, the low address bits picking the byte in the dword. Byte writes to
// 0xcf9 are the chipset's reset control register: setting bit 2 (reset CPU)
// asks the machine for a reset.
class PciConfigIo : public devices::BusDevice {
 public:
  static constexpr uint16_t kBase = 0xcf8;
  static constexpr uint16_t kSize = 8;

  explicit PciConfigIo(std::shared_ptr<PciBus> bus, devices::GuestRequestHandler on_request = {});

  void read(uint64_t offset, std::span<uint8_t> data) override;
  void write(uint64_t offset, std::span<const uint8_t> data) override;

 private:
  std::shared_ptr<PciBus> bus_;
  devices::GuestRequestHandler on_request_;
  std::mutex mu_;
  uint32_t address_ = 0;
};

// ECAM on the MMIO bus at kPciEcamBase, bus 0 only: offset =
// device << 15 | function << 12 | register. 1-, 2- and 4-byte naturally
// aligned accesses; others read all-ones / are ignored.
class PciConfigMmio : public devices::BusDevice {
 public:
  static constexpr uint64_t kBase = x86::kPciEcamBase;
  static constexpr uint64_t kSize = x86::kPciEcamSize;

  explicit PciConfigMmio(std::shared_ptr<PciBus> bus);

  void read(uint64_t offset, std::span<uint8_t> data) override;
  void write(uint64_t offset, std::span<const uint8_t> data) override;

 private:
  std::shared_ptr<PciBus> bus_;
};

}  // namespace rz::pci
