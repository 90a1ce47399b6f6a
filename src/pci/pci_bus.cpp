#include "pci/pci_bus.h"

#include <algorithm>
#include <string>

#include "util/error.h"

namespace rz::pci {
namespace {

constexpr uint32_t kConfigEnable = 1u << 31;
constexpr uint8_t kResetCpu = 1u << 2;  // reset control register (0xcf9) bit

uint64_t get_le(std::span<const uint8_t> in) {
  uint64_t v = 0;
  for (size_t i = 0; i < in.size(); ++i) v |= static_cast<uint64_t>(in[i]) << (8 * i);
  return v;
}

void put_le(std::span<uint8_t> out, uint64_t v) {
  for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<uint8_t>(v >> (8 * i));
}

bool valid_size(size_t n) { return n == 1 || n == 2 || n == 4; }

}  // namespace

PciHostBridge::PciHostBridge(uint16_t vendor_id, uint16_t device_id)
    : PciDevice(PciConfigSpace(PciHeader{.vendor_id = vendor_id,
                                         .device_id = device_id,
                                         .class_code = kClassHostBridge})) {}

PciBus::PciBus() : PciBus(std::make_shared<PciHostBridge>()) {}

PciBus::PciBus(std::shared_ptr<PciDevice> host_bridge) {
  if (!host_bridge) throw Error("pci: host bridge missing");
  slots_[0] = std::move(host_bridge);
}

uint8_t PciBus::add_device(std::shared_ptr<PciDevice> device, std::optional<uint8_t> slot) {
  if (!device) throw Error("pci: null device");
  std::lock_guard lock(mu_);
  uint8_t s = 0;
  if (slot) {
    if (*slot == 0 || *slot >= kNumSlots)
      throw Error("pci: slot " + std::to_string(*slot) + " is not in 1..31");
    if (slots_[*slot]) throw Error("pci: slot " + std::to_string(*slot) + " is taken");
    s = *slot;
  } else {
    auto it = std::find(slots_.begin() + 1, slots_.end(), nullptr);
    if (it == slots_.end()) throw Error("pci: all 31 device slots are taken");
    s = static_cast<uint8_t>(it - slots_.begin());
  }
  const uint8_t pin = device->interrupt_pin();
  if (pin != 0) device->set_interrupt_line(static_cast<uint8_t>(intx_gsi(s, pin - 1)));
  slots_[s] = std::move(device);
  return s;
}

std::shared_ptr<PciDevice> PciBus::device(uint8_t slot) const {
  std::lock_guard lock(mu_);
  return slot < kNumSlots ? slots_[slot] : nullptr;
}

std::shared_ptr<PciDevice> PciBus::lookup(uint8_t bus, uint8_t slot, uint8_t function) const {
  if (bus != 0 || function != 0 || slot >= kNumSlots) return nullptr;
  std::lock_guard lock(mu_);
  return slots_[slot];
}

uint32_t PciBus::config_read(uint8_t bus, uint8_t slot, uint8_t function, uint16_t offset,
                             unsigned size) const {
  const auto dev = lookup(bus, slot, function);
  if (!dev) return 0xffffffffu;
  return dev->config_read(offset, size);
}

void PciBus::config_write(uint8_t bus, uint8_t slot, uint8_t function, uint16_t offset,
                          unsigned size, uint32_t value) {
  if (const auto dev = lookup(bus, slot, function)) dev->config_write(offset, size, value);
}

// --- Mechanism #1 ------------------------------------------------------------

PciConfigIo::PciConfigIo(std::shared_ptr<PciBus> bus, devices::GuestRequestHandler on_request)
    : bus_(std::move(bus)), on_request_(std::move(on_request)) {
  if (!bus_) throw Error("pci: config I/O needs a bus");
}

void PciConfigIo::read(uint64_t offset, std::span<uint8_t> data) {
  std::fill(data.begin(), data.end(), 0xff);
  if (offset == 0 && data.size() == 4) {
    std::lock_guard lock(mu_);
    put_le(data, address_);
    return;
  }
  if (offset == 1 && data.size() == 1) {  // reset control register
    data[0] = 0;
    return;
  }
  if (offset < 4 || offset >= kSize || !valid_size(data.size())) return;
  const unsigned byte = static_cast<unsigned>(offset - 4);
  if (byte % data.size() != 0 || byte + data.size() > 4) return;
  uint32_t addr;
  {
    std::lock_guard lock(mu_);
    addr = address_;
  }
  if (!(addr & kConfigEnable)) return;
  // Register bits 11:8 come from bits 27:24 (AMD's extended config access).
  const uint16_t reg = static_cast<uint16_t>(((addr >> 16) & 0xf00) | (addr & 0xfc)) + byte;
  const uint32_t v = bus_->config_read(static_cast<uint8_t>(addr >> 16), (addr >> 11) & 0x1f,
                                       (addr >> 8) & 0x7, reg, static_cast<unsigned>(data.size()));
  put_le(data, v);
}

void PciConfigIo::write(uint64_t offset, std::span<const uint8_t> data) {
  if (offset == 0 && data.size() == 4) {
    std::lock_guard lock(mu_);
    address_ = static_cast<uint32_t>(get_le(data)) & ~0x3u;
    return;
  }
  if (offset == 1 && data.size() == 1) {
    if ((data[0] & kResetCpu) && on_request_) on_request_(devices::GuestRequest::Reset);
    return;
  }
  if (offset < 4 || offset >= kSize || !valid_size(data.size())) return;
  const unsigned byte = static_cast<unsigned>(offset - 4);
  if (byte % data.size() != 0 || byte + data.size() > 4) return;
  uint32_t addr;
  {
    std::lock_guard lock(mu_);
    addr = address_;
  }
  if (!(addr & kConfigEnable)) return;
  const uint16_t reg = static_cast<uint16_t>(((addr >> 16) & 0xf00) | (addr & 0xfc)) + byte;
  bus_->config_write(static_cast<uint8_t>(addr >> 16), (addr >> 11) & 0x1f, (addr >> 8) & 0x7,
                     reg, static_cast<unsigned>(data.size()), static_cast<uint32_t>(get_le(data)));
}

// --- ECAM ---------------------------------------------------------------------

PciConfigMmio::PciConfigMmio(std::shared_ptr<PciBus> bus) : bus_(std::move(bus)) {
  if (!bus_) throw Error("pci: ECAM needs a bus");
}

void PciConfigMmio::read(uint64_t offset, std::span<uint8_t> data) {
  std::fill(data.begin(), data.end(), 0xff);
  if (!valid_size(data.size()) || offset % data.size() != 0 || offset >= kSize) return;
  const uint32_t v = bus_->config_read(static_cast<uint8_t>(offset >> 20), (offset >> 15) & 0x1f,
                                       (offset >> 12) & 0x7, offset & 0xfff,
                                       static_cast<unsigned>(data.size()));
  put_le(data, v);
}

void PciConfigMmio::write(uint64_t offset, std::span<const uint8_t> data) {
  if (!valid_size(data.size()) || offset % data.size() != 0 || offset >= kSize) return;
  bus_->config_write(static_cast<uint8_t>(offset >> 20), (offset >> 15) & 0x1f,
                     (offset >> 12) & 0x7, offset & 0xfff, static_cast<unsigned>(data.size()),
                     static_cast<uint32_t>(get_le(data)));
}

}  // namespace rz::pci
