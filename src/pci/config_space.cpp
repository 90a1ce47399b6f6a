#include "pci/config_space.h"

#include <string>

#include "util/error.h"

namespace rz::pci {
namespace {

constexpr uint16_t kCommandWritable = kCommandIo | kCommandMemory | kCommandBusMaster |
                                      kCommandParityErrorResponse | kCommandSerr |
                                      kCommandIntxDisable;
constexpr uint32_t kBarIoFlag = 0x1;
constexpr uint32_t kBarMem64Flag = 0x4;
constexpr uint32_t kBarPrefetchFlag = 0x8;
constexpr uint64_t k4GiB = 1ull << 32;
// A guest walking the list can meet at most this many dword-aligned
// capabilities between 0x40 and 0xff.
constexpr int kMaxCapabilities = (0x100 - kCfgCapabilitiesStart) / 4;

bool is_pow2(uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

uint16_t bar_offset(uint8_t index) { return static_cast<uint16_t>(kCfgBar0 + 4 * index); }

std::string bar_name(uint8_t index) { return "pci: BAR" + std::to_string(index); }

}  // namespace

PciConfigSpace::PciConfigSpace(const PciHeader& h, bool extended)
    : bytes_(extended ? kExtendedSize : kSize, 0),
      writable_(bytes_.size(), 0),
      w1c_(bytes_.size(), 0) {
  if (h.interrupt_pin > 4) throw Error("pci: interrupt pin must be 0..4");
  if (h.class_code > 0xffffff) throw Error("pci: class code has more than 24 bits");
  poke(kCfgVendorId, 2, h.vendor_id);
  poke(kCfgDeviceId, 2, h.device_id);
  bytes_[kCfgRevision] = h.revision;
  bytes_[kCfgClassCode + 0] = static_cast<uint8_t>(h.class_code);
  bytes_[kCfgClassCode + 1] = static_cast<uint8_t>(h.class_code >> 8);
  bytes_[kCfgClassCode + 2] = static_cast<uint8_t>(h.class_code >> 16);
  bytes_[kCfgHeaderType] = 0x00;  // type 0, single function
  poke(kCfgSubsystemVendorId, 2, h.subsystem_vendor_id);
  poke(kCfgSubsystemId, 2, h.subsystem_id);
  bytes_[kCfgInterruptPin] = h.interrupt_pin;

  writable_[kCfgCommand] = static_cast<uint8_t>(kCommandWritable);
  writable_[kCfgCommand + 1] = static_cast<uint8_t>(kCommandWritable >> 8);
  w1c_[kCfgStatus] = static_cast<uint8_t>(kStatusW1cBits);
  w1c_[kCfgStatus + 1] = static_cast<uint8_t>(kStatusW1cBits >> 8);
  writable_[kCfgCacheLineSize] = 0xff;
  writable_[kCfgInterruptLine] = 0xff;
}

bool PciConfigSpace::valid_access(size_t space, uint16_t offset, unsigned size) {
  if (size != 1 && size != 2 && size != 4) return false;
  if (offset % size != 0) return false;
  return static_cast<size_t>(offset) + size <= space;
}

uint32_t PciConfigSpace::read(uint16_t offset, unsigned size) const {
  if (!valid_access(bytes_.size(), offset, size)) return 0xffffffffu;
  uint32_t v = 0;
  for (unsigned i = 0; i < size; ++i) v |= static_cast<uint32_t>(bytes_[offset + i]) << (8 * i);
  return v;
}

void PciConfigSpace::write(uint16_t offset, unsigned size, uint32_t value) {
  if (!valid_access(bytes_.size(), offset, size)) return;
  for (unsigned i = 0; i < size; ++i) {
    const size_t at = offset + i;
    const uint8_t v = static_cast<uint8_t>(value >> (8 * i));
    uint8_t b = static_cast<uint8_t>((bytes_[at] & ~writable_[at]) | (v & writable_[at]));
    b = static_cast<uint8_t>(b & ~(v & w1c_[at]));
    bytes_[at] = b;
  }
}

void PciConfigSpace::poke(uint16_t offset, unsigned size, uint32_t value) {
  if (!valid_access(bytes_.size(), offset, size))
    throw Error("pci: invalid config space poke at " + std::to_string(offset));
  for (unsigned i = 0; i < size; ++i) bytes_[offset + i] = static_cast<uint8_t>(value >> (8 * i));
}

uint32_t PciConfigSpace::raw32(uint16_t offset) const { return read(offset, 4); }

void PciConfigSpace::set_raw32(uint16_t offset, uint32_t value) { poke(offset, 4, value); }

void PciConfigSpace::set_mask32(std::vector<uint8_t>& mask, uint16_t offset, uint32_t value) {
  for (unsigned i = 0; i < 4; ++i) mask[offset + i] = static_cast<uint8_t>(value >> (8 * i));
}

void PciConfigSpace::set_interrupt_status(bool asserted) {
  if (asserted)
    bytes_[kCfgStatus] |= kStatusInterrupt;
  else
    bytes_[kCfgStatus] &= static_cast<uint8_t>(~kStatusInterrupt);
}

void PciConfigSpace::add_bar(uint8_t index, BarType type, uint64_t size, bool prefetchable) {
  if (index >= kNumBars) throw Error(bar_name(index) + " does not exist");
  const bool wide = type == BarType::Mem64;
  if (wide && index + 1 >= static_cast<int>(kNumBars))
    throw Error(bar_name(index) + ": a 64-bit BAR needs the next BAR too");
  if (bars_[index].present || (wide && bars_[index + 1].present))
    throw Error(bar_name(index) + " is already in use");
  if (!is_pow2(size)) throw Error(bar_name(index) + ": size must be a power of two");
  switch (type) {
    case BarType::Io:
      if (size < 4 || size > 256) throw Error(bar_name(index) + ": I/O BARs hold 4..256 bytes");
      if (prefetchable) throw Error(bar_name(index) + ": an I/O BAR cannot be prefetchable");
      break;
    case BarType::Mem32:
      if (size < 16 || size > k4GiB / 2)
        throw Error(bar_name(index) + ": 32-bit memory BARs hold 16 bytes..2 GiB");
      break;
    case BarType::Mem64:
      if (size < 16 || size > (1ull << 63)) throw Error(bar_name(index) + ": bad 64-bit BAR size");
      break;
  }

  bars_[index] = Bar{true, false, type, prefetchable, size};
  const uint16_t off = bar_offset(index);
  if (type == BarType::Io) {
    set_raw32(off, kBarIoFlag);
    set_mask32(writable_, off, static_cast<uint32_t>(~(size - 1)) & ~0x3u);
    return;
  }
  uint32_t flags = prefetchable ? kBarPrefetchFlag : 0;
  if (wide) flags |= kBarMem64Flag;
  set_raw32(off, flags);
  set_mask32(writable_, off, static_cast<uint32_t>(~(size - 1)) & ~0xfu);
  if (wide) {
    bars_[index + 1] = Bar{true, true, type, prefetchable, size};
    set_raw32(off + 4, 0);
    set_mask32(writable_, off + 4, static_cast<uint32_t>(~(size - 1) >> 32));
  }
}

uint64_t PciConfigSpace::bar_address(uint8_t index) const {
  const Bar& b = bars_[index];
  const uint32_t lo = raw32(bar_offset(index));
  switch (b.type) {
    case BarType::Io:
      return lo & ~0x3u;
    case BarType::Mem32:
      return lo & ~0xfu;
    case BarType::Mem64:
      return (lo & ~0xfull) | (static_cast<uint64_t>(raw32(bar_offset(index) + 4)) << 32);
  }
  return 0;
}

bool PciConfigSpace::bar_mapped(uint8_t index, uint64_t address) const {
  const Bar& b = bars_[index];
  if (address == 0) return false;
  const uint64_t last = address + (b.size - 1);
  if (last < address) return false;  // wraps
  switch (b.type) {
    case BarType::Io:
      return io_enabled() && last <= 0xffff;
    case BarType::Mem32:
      // The top of 4 GiB is where a sizing write leaves a 32-bit BAR.
      return memory_enabled() && last < 0xffffffffull;
    case BarType::Mem64:
      return memory_enabled() && last != ~0ull;
  }
  return false;
}

void PciConfigSpace::set_bar_address(uint8_t index, uint64_t address) {
  if (index >= kNumBars || !bars_[index].present || bars_[index].upper_half)
    throw Error(bar_name(index) + " is not declared");
  const Bar& b = bars_[index];
  if (address & (b.size - 1)) throw Error(bar_name(index) + ": address not aligned to its size");
  const uint64_t limit = b.type == BarType::Io      ? 0x10000
                         : b.type == BarType::Mem32 ? k4GiB
                                                    : 0;
  if (limit && (address >= limit || b.size > limit - address))
    throw Error(bar_name(index) + ": address out of range for its type");
  const uint16_t off = bar_offset(index);
  const uint32_t flags = raw32(off) & (b.type == BarType::Io ? 0x3u : 0xfu);
  set_raw32(off, static_cast<uint32_t>(address) | flags);
  if (b.type == BarType::Mem64) set_raw32(off + 4, static_cast<uint32_t>(address >> 32));
}

std::optional<BarInfo> PciConfigSpace::bar(uint8_t index) const {
  if (index >= kNumBars || !bars_[index].present || bars_[index].upper_half) return std::nullopt;
  const Bar& b = bars_[index];
  BarInfo info;
  info.index = index;
  info.type = b.type;
  info.prefetchable = b.prefetchable;
  info.size = b.size;
  info.address = bar_address(index);
  info.mapped = bar_mapped(index, info.address);
  return info;
}

std::vector<BarInfo> PciConfigSpace::bars() const {
  std::vector<BarInfo> out;
  for (uint8_t i = 0; i < kNumBars; ++i)
    if (auto b = bar(i)) out.push_back(*b);
  return out;
}

uint8_t PciConfigSpace::add_capability(std::span<const uint8_t> body,
                                       std::span<const uint8_t> writable) {
  if (body.size() < 2) throw Error("pci: a capability needs at least an id and a next pointer");
  if (!writable.empty() && writable.size() != body.size())
    throw Error("pci: capability mask and body differ in length");
  const size_t at = next_capability_;
  if (at + body.size() > kSize) throw Error("pci: no room for another capability");
  for (size_t i = 0; i < body.size(); ++i) {
    bytes_[at + i] = body[i];
    writable_[at + i] = (i < 2 || writable.empty()) ? 0 : writable[i];
  }
  bytes_[at + 1] = 0;  // new tail
  if (last_capability_ == 0) {
    bytes_[kCfgCapabilityPtr] = static_cast<uint8_t>(at);
    bytes_[kCfgStatus] |= kStatusCapabilityList;
  } else {
    bytes_[last_capability_ + 1] = static_cast<uint8_t>(at);
  }
  last_capability_ = static_cast<uint8_t>(at);
  next_capability_ = static_cast<uint16_t>((at + body.size() + 3) & ~size_t{3});
  return static_cast<uint8_t>(at);
}

std::optional<uint8_t> PciConfigSpace::find_capability(uint8_t id) const {
  if (!(status() & kStatusCapabilityList)) return std::nullopt;
  uint8_t ptr = bytes_[kCfgCapabilityPtr] & 0xfc;
  for (int n = 0; n < kMaxCapabilities && ptr >= kCfgCapabilitiesStart; ++n) {
    if (bytes_[ptr] == id) return ptr;
    ptr = bytes_[ptr + 1] & 0xfc;
  }
  return std::nullopt;
}

}  // namespace rz::pci
