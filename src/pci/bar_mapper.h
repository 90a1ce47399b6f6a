// Keeps a PCI device's BARs on the machine's buses where the guest decodes
// them: each decoded BAR is a range on the MMIO bus (memory BARs) or the PIO
// bus (I/O BARs) whose accesses go to PciDevice::bar_read / bar_write.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>

#include "devices/bus.h"
#include "devices/bus_device.h"
#include "pci/pci_device.h"

namespace rz::pci {

// One BAR of a device, as a BusDevice.
class PciBarRegion : public devices::BusDevice {
 public:
  PciBarRegion(std::shared_ptr<PciDevice> device, uint8_t bar)
      : device_(std::move(device)), bar_(bar) {}
  void read(uint64_t offset, std::span<uint8_t> data) override {
    device_->bar_read(bar_, offset, data);
  }
  void write(uint64_t offset, std::span<const uint8_t> data) override {
    device_->bar_write(bar_, offset, data);
  }

 private:
  std::shared_ptr<PciDevice> device_;
  uint8_t bar_;
};

// Called when a BAR cannot go where the guest put it (it overlaps another
// range); the message names the device, BAR and address.
using BarConflictHandler = std::function<void(const std::string& message)>;

// Installs the device's BarMoveHandler: from now on every BAR the guest
// decodes is inserted into `mmio` or `pio` as "<name>.bar<i>" and removed
// again when it is moved or decoding is turned off. A BAR placed over a
// range that is already taken stays off the bus (guest accesses read
// all-ones) until it is moved somewhere free; `on_conflict` hears of it.
// The buses must outlive the device's use of the handler.
void connect_bars(const std::shared_ptr<PciDevice>& device, devices::Bus& mmio, devices::Bus& pio,
                  const std::string& name, BarConflictHandler on_conflict = {});

}  // namespace rz::pci
