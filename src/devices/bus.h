// An address-range map for PIO or MMIO: finds the device that claims an
// address and forwards the access with the offset inside its range.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
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
  const Range* find(uint64_t addr, uint64_t len, uint64_t* base) const;
  std::map<uint64_t, Range> ranges_;  // keyed by base
};

}  // namespace rz::devices
