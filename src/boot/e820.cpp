#include "boot/e820.h"

#include <algorithm>

#include "x86/layout.h"

namespace rz::boot {

std::vector<E820Entry> build_e820(uint64_t ram_bytes, uint64_t ecam_base, uint64_t ecam_size) {
  using namespace rz::x86;
  std::vector<E820Entry> map;
  const uint64_t low_end = std::min(ram_bytes, kMmioHoleStart);
  map.push_back({0, std::min(low_end, kEbdaStart), E820Type::Ram});
  if (low_end > kEbdaStart)
    map.push_back({kEbdaStart, std::min(low_end, kHighMemStart) - kEbdaStart, E820Type::Reserved});
  if (low_end > kHighMemStart) map.push_back({kHighMemStart, low_end - kHighMemStart, E820Type::Ram});
  if (ecam_size) map.push_back({ecam_base, ecam_size, E820Type::Reserved});
  if (ram_bytes > low_end) map.push_back({kRamAbove4gStart, ram_bytes - low_end, E820Type::Ram});
  return map;
}

}  // namespace rz::boot
