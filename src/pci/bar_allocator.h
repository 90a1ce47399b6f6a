// Hands out guest address ranges for BARs: naturally aligned (a BAR's
// address is a multiple of its size), first fit, from three windows: 32-bit
// MMIO below 4 GiB, 64-bit MMIO above RAM, and I/O ports.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>

#include "pci/config_space.h"
#include "x86/layout.h"

namespace rz::pci {

class PciDevice;

enum class BarWindow : uint8_t { Io, Mmio32, Mmio64 };

class BarAllocator {
 public:
  // Windows are [start, end); an empty one (start == end) has no space.
  // Throws rz::Error if a window has start > end, the 32-bit one reaches past
  // 4 GiB or the I/O one past 0x10000.
  BarAllocator(uint64_t mmio32_start = x86::kPciMmio32Start,
               uint64_t mmio32_end = x86::kPciMmio32End, uint64_t mmio64_start = 0,
               uint64_t mmio64_end = 0, uint64_t io_start = 0x1000, uint64_t io_end = 0x10000);

  // A `size`-aligned range of `size` bytes (a power of two), or nullopt if
  // the window has no such hole left (or size is not a power of two).
  std::optional<uint64_t> allocate(BarWindow window, uint64_t size);
  // Gives back a range that allocate() returned. Throws rz::Error if it is
  // not wholly inside the window or overlaps free space (a double free).
  void release(BarWindow window, uint64_t base, uint64_t size);

  // The window a BAR is placed in: I/O BARs in Io, 32-bit ones in Mmio32,
  // 64-bit ones in Mmio64 if that window has room, else in Mmio32.
  std::optional<uint64_t> allocate_bar(const BarInfo& bar);
  // Allocates and programs every BAR of `device`. Throws rz::Error naming
  // `name` and the BAR if space runs out (giving back what it took).
  void assign(PciDevice& device, const std::string& name);

  // Bytes still free in a window (for diagnostics and tests).
  uint64_t free_bytes(BarWindow window) const;

 private:
  struct Window {
    uint64_t start = 0, end = 0;
    std::map<uint64_t, uint64_t> free;  // base -> end of each hole
  };
  std::optional<std::pair<BarWindow, uint64_t>> place(const BarInfo& bar);
  Window& window(BarWindow w);
  const Window& window(BarWindow w) const;

  Window io_, mmio32_, mmio64_;
};

}  // namespace rz::pci
