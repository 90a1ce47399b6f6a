#include "pci/bar_allocator.h"

#include <vector>

#include "pci/pci_device.h"
#include "util/error.h"

namespace rz::pci {
namespace {

bool is_pow2(uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

}  // namespace

BarAllocator::BarAllocator(uint64_t mmio32_start, uint64_t mmio32_end, uint64_t mmio64_start,
                           uint64_t mmio64_end, uint64_t io_start, uint64_t io_end) {
  auto init = [](Window& w, uint64_t start, uint64_t end, uint64_t limit, const char* what) {
    if (start > end) throw Error(std::string("pci: ") + what + " window ends before it starts");
    if (limit && end > limit) throw Error(std::string("pci: ") + what + " window is too high");
    w.start = start;
    w.end = end;
    if (start < end) w.free.emplace(start, end);
  };
  init(mmio32_, mmio32_start, mmio32_end, 1ull << 32, "32-bit MMIO");
  init(mmio64_, mmio64_start, mmio64_end, 0, "64-bit MMIO");
  init(io_, io_start, io_end, 0x10000, "I/O port");
}

BarAllocator::Window& BarAllocator::window(BarWindow w) {
  return w == BarWindow::Io ? io_ : w == BarWindow::Mmio32 ? mmio32_ : mmio64_;
}

const BarAllocator::Window& BarAllocator::window(BarWindow w) const {
  return w == BarWindow::Io ? io_ : w == BarWindow::Mmio32 ? mmio32_ : mmio64_;
}

std::optional<uint64_t> BarAllocator::allocate(BarWindow which, uint64_t size) {
  if (!is_pow2(size)) return std::nullopt;
  Window& w = window(which);
  for (auto it = w.free.begin(); it != w.free.end(); ++it) {
    const uint64_t hole_start = it->first, hole_end = it->second;
    const uint64_t base = (hole_start + size - 1) & ~(size - 1);
    if (base < hole_start) continue;  // aligning wrapped
    if (base >= hole_end || size > hole_end - base) continue;
    w.free.erase(it);
    if (hole_start < base) w.free.emplace(hole_start, base);
    if (base + size < hole_end) w.free.emplace(base + size, hole_end);
    return base;
  }
  return std::nullopt;
}

void BarAllocator::release(BarWindow which, uint64_t base, uint64_t size) {
  Window& w = window(which);
  if (size == 0 || base < w.start || base > w.end || size > w.end - base)
    throw Error("pci: releasing a range outside its window");
  const uint64_t end = base + size;
  auto next = w.free.lower_bound(base);
  if (next != w.free.end() && next->first < end) throw Error("pci: range released twice");
  if (next != w.free.begin() && std::prev(next)->second > base)
    throw Error("pci: range released twice");
  uint64_t new_start = base, new_end = end;
  if (next != w.free.begin() && std::prev(next)->second == base) {
    auto prev = std::prev(next);
    new_start = prev->first;
    w.free.erase(prev);
  }
  if (next != w.free.end() && next->first == end) {
    new_end = next->second;
    w.free.erase(next);
  }
  w.free.emplace(new_start, new_end);
}

std::optional<std::pair<BarWindow, uint64_t>> BarAllocator::place(const BarInfo& bar) {
  auto in = [&](BarWindow w) -> std::optional<std::pair<BarWindow, uint64_t>> {
    if (auto a = allocate(w, bar.size)) return std::make_pair(w, *a);
    return std::nullopt;
  };
  switch (bar.type) {
    case BarType::Io:
      return in(BarWindow::Io);
    case BarType::Mem32:
      return in(BarWindow::Mmio32);
    case BarType::Mem64:
      if (auto p = in(BarWindow::Mmio64)) return p;
      return in(BarWindow::Mmio32);
  }
  return std::nullopt;
}

std::optional<uint64_t> BarAllocator::allocate_bar(const BarInfo& bar) {
  if (auto p = place(bar)) return p->second;
  return std::nullopt;
}

void BarAllocator::assign(PciDevice& device, const std::string& name) {
  const std::vector<BarInfo> bars = device.bars();
  std::vector<std::pair<BarWindow, uint64_t>> taken;
  for (const BarInfo& b : bars) {
    auto p = place(b);
    if (!p) {
      for (size_t i = 0; i < taken.size(); ++i)
        release(taken[i].first, taken[i].second, bars[i].size);
      throw Error("pci: no room for " + name + " BAR" + std::to_string(b.index) + " (" +
                  std::to_string(b.size) + " bytes)");
    }
    taken.push_back(*p);
  }
  for (size_t i = 0; i < bars.size(); ++i) device.set_bar_address(bars[i].index, taken[i].second);
}

uint64_t BarAllocator::free_bytes(BarWindow which) const {
  uint64_t n = 0;
  for (const auto& [start, end] : window(which).free) n += end - start;
  return n;
}

}  // namespace rz::pci
