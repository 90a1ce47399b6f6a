// An address-range map for PIO or MMIO: finds the device that claims an
// address and forwards the access with the offset inside its range.
// Thread-safe: ranges may be inserted and removed (e.g. when the guest moves
// a PCI BAR) while vCPU threads dispatch. The lock covers only the lookup, so
// a device may itself insert or remove ranges from inside read/write, and a
// removed device can still see an access that was already dispatched.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <shared_mutex>
#include <span>
#include <string>

#include "devices/bus_device.h"

namespace rz::devices {

class Bus {
 public:
  // Claims [base, base+size) for `device`; throws rz::Error on an empty
  // range, a range that wraps, or one that overlaps an existing range.
  void insert(std::shared_ptr<BusDevice> device, uint64_t base, uint64_t size,
              std::string name);

  // Releases the range that starts at `base`; false if no range starts there.
  bool remove(uint64_t base);

  // Forward an access. Returns false (and touches nothing but `data`, which a
  // read fills with all-ones) when no device claims the whole access.
  bool read(uint64_t addr, std::span<uint8_t> data) const;
  bool write(uint64_t addr, std::span<const uint8_t> data) const;

  // Name of the device at addr, or empty.
  std::string name_at(uint64_t addr) const;

 private:
  struct Range {
    uint64_t size;
    std::shared_ptr<BusDevice> device;
    std::string name;
  };
  // Returns the range containing [addr, addr+len) and its base, or null.
  // Caller holds mu_.
  const Range* find(uint64_t addr, uint64_t len, uint64_t* base) const;
  // The device claiming [addr, addr+len) and the offset of addr in its range.
  std::shared_ptr<BusDevice> resolve(uint64_t addr, uint64_t len, uint64_t* offset) const;

  mutable std::shared_mutex mu_;
  std::map<uint64_t, Range> ranges_;  // keyed by base
};

}  // namespace rz::devices
